"""The CLI's choices are the specs' Literals (one source); counts read in the singular at 1; Ctrl-C is one line."""

from __future__ import annotations

from typing import get_args

from sp_planner.cli import calibrate_cmd, plan_cmd, run_cmd, simulate_cmd
from sp_planner.executor.config import Device, DType, Kernel
from sp_planner.flags.base import Framework
from sp_planner.flags.launch import Launcher
from sp_planner.plan import Recompute, RingLayout
from sp_planner.specs.hardware import FabricTopology


def _values(enum) -> list[str]:
    return [member.value for member in enum]


def test_choices_are_the_literals_of_the_specs():
    assert _values(plan_cmd.Framework) == [*get_args(Framework), "all"]
    assert _values(plan_cmd.LauncherChoice) == list(get_args(Launcher))
    assert _values(plan_cmd.RecomputeChoice) == list(get_args(Recompute))
    assert _values(run_cmd.DTypeChoice) == list(get_args(DType))
    assert _values(run_cmd.KernelChoice) == list(get_args(Kernel))
    assert _values(run_cmd.Layout) == list(get_args(RingLayout))
    assert _values(run_cmd.Device) == _values(calibrate_cmd.Device) == list(get_args(Device))
    assert _values(simulate_cmd.Topology) == ["profile", *get_args(FabricTopology)]


def test_a_choice_outside_the_literal_is_one_line(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--hardware", "a800", "--nodes", "1", "--seq-len", "4k",
                     "--recompute", "partial")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "'partial' is not one of 'none', 'selective', 'full'" in result.stderr


def test_one_token_one_sequence_one_node_read_in_the_singular(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--hardware", "a800", "--nodes", "1", "--gpus-per-node", "1",
                     "--seq-len", "1", "--global-batch", "1")
    assert result.stdout.startswith("Llama-3-8B at 1 token x 1 sequence on 1 x 1 A800: ")


def test_ctrl_c_during_the_search_is_one_line_and_exit_130(sp_plan, monkeypatch):
    from sp_planner.cli import plan_solve

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan_solve, "search", interrupted)
    result = sp_plan("--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k")
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted" and "Traceback" not in result.stderr
