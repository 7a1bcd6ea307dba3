"""The CLI's choices are the specs' Literals (one source); counts read in the singular at 1; Ctrl-C is one line."""

from __future__ import annotations

from typing import get_args, get_type_hints

from sp_planner.cli import calibrate_cmd, plan_cmd, run_cmd, simulate_cmd
from sp_planner.executor.config import Device, DType, Kernel
from sp_planner.flags.base import Framework
from sp_planner.flags.launch import Launcher
from sp_planner.plan import Recompute, RingLayout
from sp_planner.specs.hardware import FabricTopology


def _choices(command, name: str) -> tuple[str, ...]:
    """The values typer offers for option `name`: the Literal in its annotation (Optional unwrapped)."""
    annotation = get_type_hints(command, include_extras=True)[name]
    (inner, *_) = get_args(annotation)  # Annotated[X, OptionInfo]
    if type(None) in get_args(inner):  # Optional[X]
        (inner,) = [arg for arg in get_args(inner) if arg is not type(None)]
    return get_args(inner)


def test_choices_are_the_literals_of_the_specs():
    assert _choices(plan_cmd.plan, "framework") == (*get_args(Framework), "all")
    assert _choices(plan_cmd.plan, "launcher") == get_args(Launcher)
    assert _choices(plan_cmd.plan, "recompute") == get_args(Recompute)
    assert _choices(run_cmd.run, "dtype") == get_args(DType)
    assert _choices(run_cmd.run, "kernel") == get_args(Kernel)
    assert _choices(run_cmd.run, "ring_layout") == get_args(RingLayout)
    assert _choices(run_cmd.run, "device") == _choices(calibrate_cmd.calibrate, "device") == get_args(Device)
    assert _choices(simulate_cmd.simulate_command, "topology") == ("profile", *get_args(FabricTopology))


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
