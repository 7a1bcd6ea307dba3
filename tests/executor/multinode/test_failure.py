"""Naming the root cause of a failed run from its ranks' files (sp_planner.executor.failure)."""

from __future__ import annotations

import json

from sp_planner.executor.failure import root_cause, stages

LOST = ("RuntimeError: [gloo/transport/tcp/pair.cc:537] Read error [192.0.2.2]:44776: Connection reset by peer. "
        "This is typically caused by a remote worker hanging")
WORLD = [{"rank": r, "host": f"sp-node{r // 2}", "address": f"192.0.2.{r // 2 + 1}"} for r in range(4)]


def _write(tmp_path, rank, stage, error=None, time=0.0):
    (tmp_path / f"rank{rank}.stage").write_text(stage)
    if error is not None:
        (tmp_path / f"rank{rank}.error.json").write_text(json.dumps({"rank": rank, "time": time, "error": error}))


def test_a_silent_death_is_named_before_the_lost_connections_it_caused(tmp_path):
    _write(tmp_path, 2, "running attention", LOST, time=2.0)
    _write(tmp_path, 3, "running attention")
    assert root_cause(tmp_path, host="sp-node1") == (
        "rank 3 on host sp-node1 died while 'running attention' without reporting an error (killed by a signal or "
        "crashed) (ranks [2] failed after it)")
    assert root_cause(tmp_path, host="sp-node1", exit_codes={3: -9}) == (
        "rank 3 on host sp-node1 died while 'running attention' without reporting an error (exit code -9: "
        "killed by SIGKILL) (ranks [2] failed after it)")


# Rank 1's lost connection, mapped to the host on the other end (WORLD), named as the root cause.
LOST_PEER_CAUSE = ("rank 1 on host sp-node0 lost a peer: RuntimeError: Read error [192.0.2.2]:44776: Connection "
                   "reset by peer (192.0.2.2 is host sp-node1: ranks 2, 3) (ranks [0] failed after it)")


def test_a_lost_peer_is_mapped_to_its_host(tmp_path):
    (tmp_path / "world.json").write_text(json.dumps(WORLD))
    _write(tmp_path, 0, "running attention", "Terminated: terminated by SIGTERM", time=1.0)
    _write(tmp_path, 1, "running attention", LOST, time=2.0)
    assert root_cause(tmp_path, host="sp-node0") == LOST_PEER_CAUSE


def test_a_ranks_own_error_comes_first(tmp_path):
    _write(tmp_path, 0, "running attention", LOST, time=1.0)
    _write(tmp_path, 1, "running attention", "ValueError: bad shape", time=2.0)
    _write(tmp_path, 2, "running attention")
    assert root_cause(tmp_path) == "rank 1 failed: ValueError: bad shape (ranks [0] failed after it)"


def test_no_failure(tmp_path):
    _write(tmp_path, 0, "done")
    assert root_cause(tmp_path) is None


def test_a_connection_lost_to_another_node_is_preferred(tmp_path):
    (tmp_path / "world.json").write_text(json.dumps(WORLD))
    local = LOST.replace("[192.0.2.2]", "[192.0.2.1]")
    _write(tmp_path, 0, "running attention", local, time=1.0)  # rank 0 lost rank 1, which lost node 1
    _write(tmp_path, 1, "running attention", LOST, time=2.0)
    assert root_cause(tmp_path, host="sp-node0").startswith(
        "rank 1 on host sp-node0 lost a peer: RuntimeError: Read error [192.0.2.2]:44776")


def test_torchrun_exit_codes_are_read_from_its_failure_summary():
    from sp_planner.executor.failure import torchrun_exit_codes

    summary = """Failures:
[1]:
  time      : 2026-12-02_05:30:00
  host      : sp-node0
  rank      : 3 (local_rank: 1)
  exitcode  : 1 (pid: 4312)
Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_05:29:59
  host      : sp-node0
  rank      : 2 (local_rank: 0)
  exitcode  : -9 (pid: 4311)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4311
"""
    assert torchrun_exit_codes(summary) == {3: 1, 2: -9}


TIMEOUT = ("RuntimeError: [../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 40000ms "
           "for send operation to complete")


def test_a_timeout_is_a_symptom_ranked_after_a_lost_peer(tmp_path):
    # A send to a stalled local rank times out first; the lost connection to the other node, seen
    # later, names the failed host (the first failure by time is not the most telling one).
    (tmp_path / "world.json").write_text(json.dumps(WORLD))
    _write(tmp_path, 0, "running attention", TIMEOUT, time=1.0)
    _write(tmp_path, 1, "running attention", LOST, time=2.0)
    assert root_cause(tmp_path, host="sp-node0") == LOST_PEER_CAUSE


def test_a_timeout_alone_is_named_before_the_terminated_ranks(tmp_path):
    _write(tmp_path, 0, "running attention", "Terminated: terminated by SIGTERM", time=1.0)
    _write(tmp_path, 1, "running attention", TIMEOUT, time=2.0)
    assert root_cause(tmp_path).startswith("rank 1 timed out: RuntimeError: Timed out waiting 40000ms for send")


def test_ring_requests_are_waited_receives_first():
    from sp_planner.executor.comm import send_recv_order

    assert send_recv_order(["send k", "send v", "recv k", "recv v"], 2) == ["recv k", "recv v", "send k", "send v"]


def test_stages_name_consecutive_ranks_at_one_stage_once(tmp_path):
    # A timeout on a node of 8: each rank's part made 8 parts of one line; 1000 CPU ranks, 23 KB.
    for rank in (0, 1, 2, 3, 5, 6):
        _write(tmp_path, rank, "running attention")
    _write(tmp_path, 4, "debug hang injected")
    assert stages(tmp_path, list(range(8))) == ("ranks 0-3: running attention; rank 4: debug hang injected; "
                                                "ranks 5-6: running attention; rank 7: not started")
    assert stages(tmp_path, [4, 5]) == "rank 4: debug hang injected; rank 5: running attention"
    assert stages(tmp_path, list(range(8, 1000))) == "ranks 8-999: not started"
