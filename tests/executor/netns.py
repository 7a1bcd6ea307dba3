"""Two real network hosts on one machine: two network namespaces joined by a veth pair.

Each namespace gets one end of the pair with an address from 192.0.2.0/24 (TEST-NET-1, RFC 5737:
reserved for documentation, never routed), its own `lo`, and a hosts file (/etc/netns/<ns>/hosts,
which `ip netns exec` bind-mounts over /etc/hosts) naming both hosts. Commands run in a fresh UTS
namespace with the host's name, so each "node" has its own host name and address, as two machines
would. Needs root and iproute2; `TwoHosts.close` removes everything even after a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ADDRESSES = ("192.0.2.1", "192.0.2.2")
HOSTNAMES = ("sp-node0", "sp-node1")
NETNS_ETC = Path("/etc/netns")


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (skip), or None. Root without iproute2 is an error:
    CI runs as root and installs iproute2 (.ci/run), so it must not skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the suite as root, as CI does"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        raise RuntimeError("root but no `ip` (iproute2) or `unshare` (util-linux): install them (.ci/run does)")
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class TwoHosts:
    tag: str
    namespaces: tuple[str, str] = ()
    veths: tuple[str, str] = ()
    processes: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def create(cls) -> "TwoHosts":
        tag = f"{os.getpid() % 100000}{int(time.monotonic() * 1000) % 1000}"
        hosts = cls(tag=tag, namespaces=(f"sp{tag}n0", f"sp{tag}n1"), veths=(f"sp{tag}v0", f"sp{tag}v1"))
        try:
            hosts._build()
        except BaseException:
            hosts.close()
            raise
        return hosts

    def _build(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "add", ns)
        _ip("link", "add", self.veths[0], "type", "veth", "peer", "name", self.veths[1])
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for a, h in zip(ADDRESSES, HOSTNAMES))
        for ns, veth, address in zip(self.namespaces, self.veths, ADDRESSES):
            _ip("link", "set", veth, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", veth, "up")
            (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / ns / "hosts").write_text(hosts_file)

    def wrap(self, node: int, argv: list[str]) -> list[str]:
        """argv run in namespace `node`, under its own host name."""
        return ["ip", "netns", "exec", self.namespaces[node], "unshare", "--uts", "sh", "-c",
                f'hostname {HOSTNAMES[node]} && exec "$@"', "sh", *argv]

    def start(self, node: int, argv: list[str], *, env: dict[str, str], **popen) -> subprocess.Popen:
        """Start argv in namespace `node`, in its own process group (killed by close)."""
        proc = subprocess.Popen(self.wrap(node, argv), env=env, start_new_session=True, **popen)
        self.processes.append(proc)
        return proc

    def counter(self, node: int, interface: str, name: str) -> int:
        """A byte counter of an interface as seen inside namespace `node` (ip netns exec mounts
        that namespace's /sys)."""
        path = f"/sys/class/net/{interface}/statistics/{name}"
        done = subprocess.run(["ip", "netns", "exec", self.namespaces[node], "cat", path], check=True,
                              capture_output=True, text=True, timeout=10)
        return int(done.stdout)

    def veth_tx_bytes(self, node: int) -> int:
        return self.counter(node, self.veths[node], "tx_bytes")

    def lo_tx_bytes(self, node: int) -> int:
        return self.counter(node, "lo", "tx_bytes")

    def pids(self) -> list[int]:
        """Processes still running inside either namespace."""
        found = []
        for ns in self.namespaces:
            done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            found += [int(p) for p in done.stdout.split()]
        return found

    def close(self) -> None:
        for proc in self.processes:
            kill_group(proc)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        try:
            NETNS_ETC.rmdir()  # only if empty: other namespaces' files stay
        except OSError:
            pass
        # Deleting a namespace destroys its end of the pair, and with it the other end.
        for veth in self.veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)

    def leftovers(self) -> list[str]:
        """Namespaces or links of this pair that still exist (should be none after close)."""
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
        return [n for n in (*self.namespaces, *self.veths) if n in names or f" {n}@" in links or f" {n}:" in links]


def kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM a process group started with start_new_session, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.wait(timeout=grace_s)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (strays of a run)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                state = (proc / "stat").read_text().split()[2]
            except (OSError, IndexError):
                continue
            if text in cmdline and state != "Z":
                found.append(int(proc.name))
    return found
