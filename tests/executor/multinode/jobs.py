"""The two-node USP job of the scale-out tests and benchmarks/fault_latency.py, and how to start
one sp-run agent per "node": in two network namespaces (tests/executor/netns.py) or as two agents
on 127.0.0.1 with their own ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sp_planner.executor.config import RunConfig
from sp_planner.executor.predict import predicted_comm_bytes
from ..netns import ADDRESSES, TwoHosts, kill_group

NAMESPACE_PORT = 29400  # fresh namespaces: nothing else listens there
# USP: ulysses 2 inside each node, ring 2 across them; causal zigzag, GQA (8 query, 2 KV heads),
# fp32, one validated forward+backward (iters 0). Sizes make ring and Ulysses traffic about 2 MiB
# and 2.5 MiB per node, far above gloo's and the rendezvous' own (~50 KB measured).
USP_CONFIG = RunConfig(ulysses=2, ring=2, seq_len=2048, num_heads=8, num_kv_heads=2, head_dim=32, causal=True,
                       ring_layout="zigzag", dtype="float32", iters=0, nproc_per_node=2)
USP_ARGS = ["--ulysses", "2", "--ring", "2", "--seq-len", "2048", "--heads", "8", "--kv-heads", "2",
            "--head-dim", "32", "--causal", "--ring-layout", "zigzag", "--dtype", "float32", "--iters", "0",
            "--nodes", "2", "--nproc-per-node", "2"]
PER_RANK = predicted_comm_bytes(USP_CONFIG)


def sp_run_argv(node_rank: int | None, endpoint: str, *, join_timeout_s: float, timeout_s: float,
                extra: list[str] = ()) -> list[str]:
    rank = ["--node-rank", str(node_rank)] if node_rank is not None else []
    return [sys.executable, "-m", "sp_planner.cli.run_cmd", *USP_ARGS, "--rdzv-endpoint", endpoint,
            "--rdzv-id", "usp-test", "--join-timeout", f"{join_timeout_s:g}", "--timeout", f"{timeout_s:g}",
            *rank, *extra]


@dataclass
class Loopback:
    """Two "nodes" on this machine's 127.0.0.1, one agent each (no namespaces)."""

    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, node: int, argv: list[str], *, env: dict[str, str], **popen) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, **popen)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            kill_group(proc)


@dataclass(frozen=True)
class NodeRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float  # from the start of the first agent to this agent's exit


def node_env(hosts: TwoHosts | Loopback, node: int, tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's environment: gloo binds the node's address (veth end, or lo), TMPDIR under tmp so
    the test can find strays by path."""
    ifname = hosts.veths[node] if isinstance(hosts, TwoHosts) else "lo"
    return dict(os.environ, GLOO_SOCKET_IFNAME=ifname, TMPDIR=str(tmp), PYTHONUNBUFFERED="1", **(extra or {}))


def run_nodes(hosts: TwoHosts | Loopback, argvs: dict[int, list[str]], tmp: Path, *, deadline_s: float,
              env: dict[str, str] | None = None) -> dict[int, NodeRun]:
    """Start one agent per entry of argvs (node -> argv) together and wait for all of them."""
    start = time.monotonic()
    procs = {node: hosts.start(node, argv, env=node_env(hosts, node, tmp, env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for node, argv in argvs.items()}
    ends: dict[int, float] = {}
    while len(ends) < len(procs) and time.monotonic() - start < deadline_s:
        for node, proc in procs.items():
            if node not in ends and proc.poll() is not None:
                ends[node] = time.monotonic() - start
        time.sleep(0.05)
    runs = {}
    for node, proc in procs.items():
        if node not in ends:
            kill_group(proc)  # over the deadline: the test fails on the return code below
            ends[node] = time.monotonic() - start
        out, err = proc.communicate()
        runs[node] = NodeRun(returncode=proc.returncode, stdout=out, stderr=err, elapsed_s=ends[node])
    return runs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def namespace_endpoint() -> str:
    return f"{ADDRESSES[0]}:{NAMESPACE_PORT}"


def error_line(run: NodeRun) -> str:
    """sp-run's own one-line verdict on stderr (after torchrun's output)."""
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else ""
