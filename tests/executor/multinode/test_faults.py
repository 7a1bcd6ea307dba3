"""Faults of a two-host run (network namespaces): each ends the whole job within its timeout, exits
non-zero, names the failed host and rank (or the rendezvous host and port), and leaves no
process behind (the fixture then checks that no namespace or link is left either)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sp_planner.executor.fault import FAULT_ENV, fault_spec

from .jobs import NAMESPACE_PORT, error_line, namespace_endpoint, run_nodes, sp_run_argv
from ..netns import ADDRESSES, HOSTNAMES, processes_mentioning

JOIN_TIMEOUT_S = 4
TIMEOUT_S = 40
# A rank killed mid-ring: the other node's ranks may hold a posted send or receive to it, which gloo
# fails only at the group timeout (TIMEOUT_S after the op began), and that must come before sp-run's
# own kill at join timeout + timeout. A loaded two-core CI host once took over 30 s to get there, so
# the join timeout is generous (it costs nothing when the nodes join at once).
KILLED_RANK_JOIN_TIMEOUT_S = 90


def _no_strays(hosts, tmp_path) -> None:
    assert hosts.pids() == [], "processes left in the namespaces"
    assert processes_mentioning(str(tmp_path)) == []


def test_rank_killed_in_ring_backward_ends_the_job(two_hosts, tmp_path):
    endpoint = namespace_endpoint()
    join_s = KILLED_RANK_JOIN_TIMEOUT_S
    argv = {n: sp_run_argv(n, endpoint, join_timeout_s=join_s, timeout_s=TIMEOUT_S) for n in (0, 1)}
    runs = run_nodes(two_hosts, argv,
                     tmp_path, deadline_s=join_s + TIMEOUT_S + 20, env={FAULT_ENV: fault_spec(3, "ring-backward-1")})
    assert runs[0].returncode == 1 and runs[1].returncode == 1
    # The killed rank's node names it; the other node names the host its connection came from.
    assert error_line(runs[1]).startswith(f"error: rank 3 on host {HOSTNAMES[1]} died while 'running attention' "
                                          "without reporting an error (exit code -9: killed by SIGKILL)")
    assert f"({ADDRESSES[1]} is host {HOSTNAMES[1]}: ranks 2, 3)" in error_line(runs[0]), runs[0].stderr[-4000:]
    assert error_line(runs[0]).startswith("error: rank ")
    # torchrun's own output goes to the log the line names, not the terminal; its summary agrees: SIGKILL.
    log = Path(error_line(runs[1]).rsplit(" ", 1)[1])
    assert "exitcode  : -9" in log.read_text() and "exitcode" not in runs[1].stderr
    assert max(r.elapsed_s for r in runs.values()) < join_s + TIMEOUT_S
    _no_strays(two_hosts, tmp_path)


def test_agent_that_never_joins_times_out_the_rendezvous(two_hosts, tmp_path):
    endpoint = namespace_endpoint()
    runs = run_nodes(two_hosts, {0: sp_run_argv(0, endpoint, join_timeout_s=JOIN_TIMEOUT_S, timeout_s=TIMEOUT_S)},
                     tmp_path, deadline_s=JOIN_TIMEOUT_S + TIMEOUT_S + 20)
    assert runs[0].returncode == 1
    assert error_line(runs[0]).startswith(
        f"error: no rank started on host {HOSTNAMES[0]}: the c10d rendezvous at {endpoint} (id usp-test) "
        "did not gather 2 nodes in ")
    assert f"(join timeout {JOIN_TIMEOUT_S} s); a node never joined, or cannot reach {endpoint}" in error_line(runs[0])
    # torchrun gives up at the join timeout, well before sp-run's own kill (join timeout + timeout).
    assert runs[0].elapsed_s < JOIN_TIMEOUT_S + TIMEOUT_S
    _no_strays(two_hosts, tmp_path)


def test_rendezvous_port_in_use(two_hosts, tmp_path):
    holder = two_hosts.start(0, [sys.executable, "-c", (
        "import socket, sys, time\n"
        f"s = socket.create_server(('{ADDRESSES[0]}', {NAMESPACE_PORT}))\n"
        "print('listening', flush=True)\n"
        "time.sleep(300)\n")], env={}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "listening"
    endpoint = namespace_endpoint()
    runs = run_nodes(two_hosts, {n: sp_run_argv(n, endpoint, join_timeout_s=JOIN_TIMEOUT_S, timeout_s=TIMEOUT_S)
                                 for n in (0, 1)}, tmp_path, deadline_s=JOIN_TIMEOUT_S + TIMEOUT_S + 20)
    # The rendezvous host refuses at once (bad input: exit 2), before starting torchrun.
    assert runs[0].returncode == 2
    assert error_line(runs[0]) == (
        f"error: port {NAMESPACE_PORT} on the rendezvous host {HOSTNAMES[0]} ({ADDRESSES[0]}) is already in use; "
        f"stop what holds it or pick a free port for --rdzv-endpoint {ADDRESSES[0]}:PORT on every node")
    assert runs[0].elapsed_s < 10
    # The other node reached something that is not a c10d store and gives up at the join timeout.
    assert runs[1].returncode == 1
    assert error_line(runs[1]).startswith(f"error: no rank started on host {HOSTNAMES[1]}: the c10d rendezvous at "
                                          f"{endpoint}")
    assert runs[1].elapsed_s < JOIN_TIMEOUT_S + TIMEOUT_S
    holder.kill()
    holder.wait()
    _no_strays(two_hosts, tmp_path)
