"""The public API: render_flags / render_all dispatch, FlagRequest validation, FlagChoices, no torch import."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from sp_planner.errors import UserInputError
from sp_planner.flags import FRAMEWORKS, FlagChoices, FlagRequest, render_all, render_flags


def test_unknown_framework_lists_known_ones(build):
    with pytest.raises(UserInputError) as err:
        render_flags("colossalai", build.cases["llama3_8b_128k_usp_tp2"])
    assert str(err.value) == (
        "unknown framework 'colossalai'; choose one of: megatron, mindspeed, deepspeed, yunchang, torchtitan"
    )


def test_render_all_covers_every_framework(build):
    flags = render_all(build.cases["llama3_8b_128k_usp_tp2"])
    assert list(flags) == list(FRAMEWORKS)
    assert {name: f.supported for name, f in flags.items()} == {
        "megatron": True, "mindspeed": True, "deepspeed": False, "yunchang": False, "torchtitan": False,
    }
    assert all(f.framework == name for name, f in flags.items())


def test_world_size_must_match_the_cluster(build):
    case = build.cases["llama3_8b_128k_usp_tp2"]
    with pytest.raises(pydantic.ValidationError) as err:
        FlagRequest(model=case.model, workload=case.workload, plan=case.plan, num_nodes=1, gpus_per_node=8)
    assert "1*8 = 8 GPUs" in str(err.value) and "= 16" in str(err.value)


def test_flag_choices_build_the_request_of_any_plan(build):
    """FlagChoices.request is the spelled-out FlagRequest with the choices' fields, and a request's
    `choices` give them back: one value carries every choice to each plan's request."""
    case = build.request(build.llama3_8b, 131072, 8, ring=8, dp=2, recompute="full")  # torchtitan expresses it
    choices = FlagChoices(framework_version="0.2.2", attention_kernel="fa3")
    where = dict(model=case.model, workload=case.workload, num_nodes=case.num_nodes, gpus_per_node=case.gpus_per_node)
    request = choices.request(case.plan, **where)
    assert request == FlagRequest(plan=case.plan, **where, framework_version="0.2.2", attention_kernel="fa3")
    assert request.choices == choices and type(request.choices) is FlagChoices
    assert set(FlagChoices.model_fields) < set(FlagRequest.model_fields)  # a request holds every choice
    assert FlagChoices().request(case.plan, **where) == case  # no choice: the framework's own kernel, newest release
    # What each choice renders: torchtitan 0.2.2's TOML file (0.3.x: command-line overrides), and
    # fa3 selected by Megatron's --attention-backend flash (flags.kernel_choice), the one line added.
    assert render_flags("torchtitan", request).text.splitlines()[:2] == [
        "# 16 GPUs = dp 2 x cp 8 x tp 1 x pp 1", "[training]"]
    assert render_flags("torchtitan", case).text.splitlines()[:2] == [
        "# 16 GPUs = dp 2 x cp 8 x tp 1 x pp 1; torchtitan 0.3.x", "TORCHTITAN_ARGS=("]
    assert render_flags("megatron", request).text == render_flags("megatron", case).text.replace(
        "\n)", "\n    # attention kernel the plan was timed with\n    --attention-backend flash\n)")


def test_plan_rule_violation_makes_every_framework_unsupported(build):
    # The plan's zigzag rule: seq % (2*ring) = 131072 % 6 != 0, so no framework may print flags.
    request = build.request(build.llama3_8b, 131072, 1, gpus_per_node=3, ring=3)
    for name, flags in render_all(request).items():
        assert not flags.supported, name
        assert "seq_len 131072 is not divisible by 6" in flags.reason, name


def test_importing_flags_leaves_torch_out():
    code = "import sys, sp_planner.flags; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
