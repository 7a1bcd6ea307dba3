"""A bad-input line of sp-calibrate (and sp-run) under torchrun/SLURM: said by each node's first
rank only, every rank exiting 2 (cli.joined, cli.common.run_app's once_per_node)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import sp_planner
from sp_planner.cli import joined
from sp_planner.cli.common import run_app
from sp_planner.errors import UserInputError

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@pytest.fixture(autouse=True)
def _no_launch(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _refusing_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def refuse() -> None:
        raise UserInputError("--out x is wrong")

    return app


def _stopped_while_waiting(monkeypatch) -> None:
    """torchrun's stop of a node's other ranks once one exited: SIGTERM sent to this process from
    within the quiet rank's wait (its handler is in place then: SIGTERM would otherwise end pytest)."""
    real_sleep = joined.sleep

    def sleep(seconds: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        real_sleep(seconds)

    monkeypatch.setattr(joined, "sleep", sleep)


@pytest.mark.parametrize("env, quiet", [
    ({}, False),  # no launch: sp-calibrate on its own
    ({"LOCAL_RANK": "1"}, False),  # LOCAL_RANK without RANK and WORLD_SIZE is no launch
    ({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}, False),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}, True),
    ({"RANK": "4", "WORLD_SIZE": "8", "LOCAL_RANK": "0"}, False),  # the second node's first rank
    ({"RANK": "3", "WORLD_SIZE": "4"}, False),  # no local rank to tell by: said
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}, True),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "4", "SLURM_LOCALID": "0"}, False),
])
def test_only_a_nodes_first_rank_speaks(monkeypatch, env, quiet):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert joined.quiet_rank() is quiet


def test_a_quiet_torchrun_rank_stays_quiet_once_stopped_and_speaks_if_not(monkeypatch):
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    # Not stopped within the grace: the first rank did not refuse, so this rank's line is the only one.
    assert joined.stays_quiet(grace_s=0.2) is False
    _stopped_while_waiting(monkeypatch)
    assert joined.stays_quiet(grace_s=30) is True
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    # srun stops no task when one exits: its quiet tasks leave at once, the first task says the line.
    for name, value in {"SLURM_NTASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    monkeypatch.setattr(joined, "sleep", lambda seconds: pytest.fail("waited under srun"))
    assert joined.stays_quiet() is True


def test_run_app_once_per_node_exits_2_on_every_rank_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(joined, "LAUNCHER_GRACE_S", 30.0)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    _stopped_while_waiting(monkeypatch)
    with pytest.raises(SystemExit) as done:
        run_app(_refusing_app(), [], once_per_node=True)
    assert done.value.code == 2 and capsys.readouterr().err == ""
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as done:
        run_app(_refusing_app(), [], once_per_node=True)
    assert done.value.code == 2 and capsys.readouterr().err == "error: --out x is wrong\n"


def test_sp_calibrate_under_torchrun_says_a_bad_option_once(tmp_path):
    # Three ranks refusing `--out .yaml` printed the line two or three times (a rank torchrun
    # stopped first said none); now local rank 0 says it and exits 2, and the quiet ranks exit 2 once
    # torchrun stops them, or die of that stop (-15) where it comes while they still import (a loaded
    # machine skews the ranks' start-up: cli.joined), saying nothing either way.
    env = {**os.environ, "PYTHONPATH": str(Path(sp_planner.__file__).parents[1])}
    for name in LAUNCH_VARIABLES:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3",
                           "-m", "sp_planner.cli.calibrate_cmd", "--out", ".yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert [line for line in output.splitlines() if line.startswith("error:")] == [
        "error: Invalid value for '--out': .yaml is an extension alone, with no file name before .yaml "
        "(\"$NAME.yaml\" with NAME unset?); give a name before it, e.g. out.yaml"]
    codes = re.findall(r"exitcode\s+: (-?\d+)", output)  # the failure table, not the log line
    assert len(codes) == 3 and codes.count("2") >= 1 and set(codes) <= {"2", "-15"}, output
    assert re.search(r"Root Cause.*?local_rank: 0.*?exitcode\s+: 2 ", output, re.S), output


def _interrupted_app(stop: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def interrupted() -> None:
        raise stop

    return app


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), typer.Abort()])
def test_ctrl_c_under_torchrun_is_said_by_each_nodes_first_rank_only(monkeypatch, capsys, stop):
    # Ctrl-C reaches every rank of a node: each of them said 'interrupted' (N lines); now local
    # rank 0 says it, at once (no wait for a stop: torchrun forwards SIGINT), and every rank exits 130.
    monkeypatch.setattr(joined, "sleep", lambda seconds: pytest.fail("waited for a stop"))
    for name, value in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as done:
        run_app(_interrupted_app(stop), [], once_per_node=True)
    assert done.value.code == 130 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as done:  # a command not run as every rank (sp-plan) says it anyway
        run_app(_interrupted_app(stop), [])
    assert done.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as done:
        run_app(_interrupted_app(stop), [], once_per_node=True)
    assert done.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"
