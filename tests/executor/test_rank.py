"""The shared rank entry (sp_planner.executor.rank), the groups' timeout, and the NCCL hint in
the failure summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sp_planner.executor.failure import root_cause
from sp_planner.executor.rank import Terminated, run_rank, shutdown
from sp_planner.executor.spawn import free_port


@pytest.fixture
def rank3(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_an_error_is_written_and_raised(tmp_path, rank3):
    def body():
        raise ValueError("bad shape")

    with pytest.raises(ValueError, match="bad shape"):
        run_rank(body, tmp_path)
    report = json.loads((tmp_path / "rank3.error.json").read_text())
    assert report["rank"] == 3 and report["error"] == "ValueError: bad shape"
    assert "in body" in report["traceback"]


def test_sigterm_becomes_a_reported_error(tmp_path, rank3):
    def body():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with pytest.raises(Terminated):
        run_rank(body, tmp_path)
    report = json.loads((tmp_path / "rank3.error.json").read_text())
    assert report["error"].startswith("Terminated: terminated by SIGTERM")


def _sigterm_and_wait():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)


def test_a_sigterm_during_shutdown_reports_the_error_that_was_unwinding(tmp_path, rank3):
    def body():
        try:
            raise RuntimeError("collective failed")
        finally:  # as destroy_process_group might be interrupted by the agent's SIGTERM
            shutdown(_sigterm_and_wait)

    with pytest.raises(RuntimeError, match="collective failed"):
        run_rank(body, tmp_path)
    assert json.loads((tmp_path / "rank3.error.json").read_text())["error"] == "RuntimeError: collective failed"


def test_a_sigterm_during_a_clean_shutdown_is_reported(tmp_path, rank3):
    def body():
        try:
            return 1
        finally:
            shutdown(_sigterm_and_wait)

    with pytest.raises(Terminated):
        run_rank(body, tmp_path)
    assert json.loads((tmp_path / "rank3.error.json").read_text())["error"].startswith("Terminated: ")


def test_a_sigterm_while_library_code_handles_its_own_error_is_a_sigterm(tmp_path, rank3):
    # As importlib's path-cache miss (`except KeyError:`) when torchrun's SIGTERM arrives: the handled
    # KeyError is the Terminated's __context__ but was never this rank's error.
    def body():
        try:
            {}["missing"]
        except KeyError:
            _sigterm_and_wait()

    with pytest.raises(Terminated):
        run_rank(body, tmp_path)
    assert json.loads((tmp_path / "rank3.error.json").read_text())["error"].startswith("Terminated: ")


def test_result_passes_through(tmp_path, rank3):
    assert run_rank(lambda: 42, tmp_path) == 42
    assert not (tmp_path / "rank3.error.json").exists()


def test_silent_death_under_nccl_names_the_timeout(tmp_path):
    (tmp_path / "rank1.stage").write_text("running attention")
    (tmp_path / "rank0.stage").write_text("done")
    assert root_cause(tmp_path, nccl_timeout_s=120) == (
        "rank 1 died while 'running attention' without reporting an error: most likely an NCCL collective ran "
        "past the 120 s timeout (--timeout) and NCCL's watchdog aborted the process (a crash is also possible)")
    assert "NCCL" not in root_cause(tmp_path)


GROUP_TIMEOUT = """
import datetime, torch, torch.distributed as dist
from sp_planner.executor.usp import build_sequence_groups
dist.init_process_group("gloo", rank=0, world_size=1, timeout=datetime.timedelta(seconds=11))
groups = build_sequence_groups(1, 1, 7.0)
timeouts = [g._get_backend(torch.device("cpu")).options._timeout.total_seconds()
            for g in (groups.ulysses_group, groups.ring_group, dist.new_group([0]))]
print(timeouts)
dist.destroy_process_group()
"""


def test_subgroups_take_the_run_timeout_not_the_backend_default():
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-c", GROUP_TIMEOUT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    ulysses_s, ring_s, default_s = json.loads(done.stdout)
    assert ulysses_s == ring_s == 7.0
    assert default_s >= 600  # what new_group gives without a timeout: the backend's default


def test_join_on_cuda_asks_nccl_to_raise_in_the_rank_before_the_group_exists(monkeypatch):
    import torch
    import torch.distributed as dist

    from sp_planner.executor.rank import NCCL_ERROR_HANDLING_ENV, join

    seen = {}
    monkeypatch.delenv(NCCL_ERROR_HANDLING_ENV, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: seen.setdefault("device", str(device)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: seen.update(
        backend=backend, timeout_s=timeout.total_seconds(), mode=os.environ.get(NCCL_ERROR_HANDLING_ENV)))
    assert str(join("cuda", 42.0)) == "cuda:0"
    assert seen == {"device": "cuda:0", "backend": "nccl", "timeout_s": 42.0, "mode": "2"}
    monkeypatch.setenv(NCCL_ERROR_HANDLING_ENV, "1")  # the user's choice stands
    join("cuda", 42.0)
    assert seen["mode"] == "1"


def test_launcher_names_an_nccl_timeout_for_a_silent_death(tmp_path):
    from sp_planner.executor.launch import run_local

    # A "rank" that records its stage and dies by SIGKILL without an error file, as NCCL's
    # watchdog tears a process down.
    code = (f"import os, signal, pathlib; pathlib.Path({str(tmp_path)!r}, 'rank0.stage')"
            ".write_text('running attention'); os.kill(os.getpid(), signal.SIGKILL)")
    outcome = run_local([sys.executable, "-c", code], result_dir=tmp_path, world_size=1, timeout_s=30,
                        nccl_timeout_s=30)
    assert outcome.returncode != 0
    assert outcome.failure.startswith("rank 0 died while 'running attention' without reporting an error: most "
                                      "likely an NCCL collective ran past the 30 s timeout")
