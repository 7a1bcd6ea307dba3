"""How long each fault of a two-node sp-run takes to surface (issue 6).

Runs the two-node USP job of tests/executor/multinode (ulysses 2 per node, ring 2 across) on two
network namespaces (root) or two agents on 127.0.0.1 (--loopback), and measures:
  1. a rank SIGKILLed in the ring backward: kill -> each node's sp-run exits;
  2. an agent that never joins: start -> the lone agent exits (join timeout J);
  3. the rendezvous port held by another process: start -> each node's sp-run exits.
Timings include interpreter and torch start-up (~3-5 s per process on a busy 2-core machine).

    sudo python benchmarks/fault_latency.py [--join-timeout 4] [--loopback]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from sp_planner.executor.fault import FAULT_ENV, MARK_ENV, fault_spec  # noqa: E402
from tests.executor.multinode.jobs import (  # noqa: E402
    Loopback, error_line, free_port, namespace_endpoint, run_nodes, sp_run_argv)
from tests.executor.netns import TwoHosts, unavailable_reason  # noqa: E402

TIMEOUT_S = 60


def _hosts(loopback: bool):
    return Loopback() if loopback else TwoHosts.create()


def _endpoint(loopback: bool) -> str:
    return f"127.0.0.1:{free_port()}" if loopback else namespace_endpoint()


def killed_rank(loopback: bool, join_s: float, tmp: Path) -> list[tuple[str, float, str]]:
    hosts = _hosts(loopback)
    try:
        endpoint, mark = _endpoint(loopback), tmp / "killed_at"
        start = time.time()
        runs = run_nodes(hosts, {n: sp_run_argv(n, endpoint, join_timeout_s=30, timeout_s=TIMEOUT_S) for n in (0, 1)},
                         tmp, deadline_s=30 + TIMEOUT_S + 20,
                         env={FAULT_ENV: fault_spec(3, "ring-backward-1"), MARK_ENV: str(mark)})
        killed = float(mark.read_text())
    finally:
        hosts.close()
    return [(f"rank 3 SIGKILLed in ring backward: node {n} exits (rc {r.returncode})", start + r.elapsed_s - killed,
             error_line(r)) for n, r in runs.items()]


def never_joins(loopback: bool, join_s: float, tmp: Path) -> list[tuple[str, float, str]]:
    hosts = _hosts(loopback)
    try:
        runs = run_nodes(hosts, {0: sp_run_argv(0, _endpoint(loopback), join_timeout_s=join_s, timeout_s=TIMEOUT_S)},
                         tmp, deadline_s=join_s + TIMEOUT_S + 20)
    finally:
        hosts.close()
    return [(f"node 1 never joins: node 0 exits (rc {runs[0].returncode}), from its start", runs[0].elapsed_s,
             error_line(runs[0]))]


def port_in_use(loopback: bool, join_s: float, tmp: Path) -> list[tuple[str, float, str]]:
    hosts = _hosts(loopback)
    try:
        endpoint = _endpoint(loopback)
        address, port = endpoint.rsplit(":", 1)
        holder = hosts.start(0, [sys.executable, "-c", (
            f"import socket, time\ns = socket.create_server(('{address}', {port}))\nprint('up', flush=True)\n"
            "time.sleep(300)\n")], env=dict(os.environ), stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        runs = run_nodes(hosts, {n: sp_run_argv(n, endpoint, join_timeout_s=join_s, timeout_s=TIMEOUT_S)
                                 for n in (0, 1)}, tmp, deadline_s=join_s + TIMEOUT_S + 20)
    finally:
        hosts.close()
    return [(f"port {port} held: node {n} exits (rc {r.returncode}), from its start", r.elapsed_s, error_line(r))
            for n, r in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--join-timeout", type=float, default=4.0)
    parser.add_argument("--loopback", action="store_true", help="two agents on 127.0.0.1 instead of namespaces")
    args = parser.parse_args()
    loopback = args.loopback
    if not loopback and unavailable_reason() is not None:
        print(f"{unavailable_reason()}; measuring on 127.0.0.1 instead")
        loopback = True
    console = Console()
    table = Table(title=f"fault latency, two nodes ({'127.0.0.1' if loopback else 'network namespaces'}), "
                        f"join timeout {args.join_timeout:g} s")
    for col in ("fault", "seconds", "message"):
        table.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    for case in (killed_rank, never_joins, port_in_use):
        with tempfile.TemporaryDirectory(prefix="sp-fault-") as tmp:
            for name, seconds, message in case(loopback, args.join_timeout, Path(tmp)):
                table.add_row(name, f"{seconds:.1f}", Text(message))
    console.print(table)


if __name__ == "__main__":
    main()
