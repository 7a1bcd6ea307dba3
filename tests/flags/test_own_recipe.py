"""flags.own_recipe: each framework's flags asked with its own FP8 recipe where --fp8-recipe was not given."""

from __future__ import annotations

import tomllib

import pytest

from sp_planner.cli.option_checks import resolve_fp8_recipe
from sp_planner.flags import FRAMEWORKS, render_flags
from sp_planner.choices import own_fp8_recipe
from sp_planner.flags.own_recipe import framework_plan, own_recipe_flags

NOTE = ("torchtitan runs tensorwise FP8 scaling, its own, where the plans were ranked with delayed scaling; "
        "sp-plan --framework torchtitan times them so.")


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_each_frameworks_own_recipe_is_the_one_sp_plan_pins_for_it(name):
    assert own_fp8_recipe(name) == resolve_fp8_recipe(None, name, "fp8")


def _delayed(build, *, given: bool):
    request = build.request(build.llama3_8b, 8192, 64, tp=2, pp=4, vpp=2, precision="fp8", fp8_recipe="delayed")
    # torchtitan 0.2.2's TOML (0.3's config functions are tested in test_torchtitan_v03.py).
    return request.model_copy(update={"fp8_recipe_given": given, "framework_version": "0.2.2"})


def test_torchtitan_is_asked_with_tensorwise_where_no_recipe_was_given(build):
    # --framework all ranked with Megatron's delayed; torchao float8 has none, so torchtitan's flags are
    # those of the plan with its own tensorwise, and the last note says so.
    flags = own_recipe_flags("torchtitan", _delayed(build, given=False))
    recipe = framework_plan(_delayed(build, given=False).plan, "torchtitan", recipe_given=False).fp8_recipe
    assert (flags.supported, recipe) == (True, "tensorwise")
    assert tomllib.loads(flags.text)["quantize"]["linear"]["float8"]["recipe_name"] == "tensorwise"
    assert flags.notes[-1] == NOTE
    # Megatron-LM runs the delayed scaling it was ranked with: its flags as they are, no note.
    megatron = own_recipe_flags("megatron", _delayed(build, given=False))
    assert megatron == render_flags("megatron", _delayed(build, given=True))
    assert framework_plan(_delayed(build, given=False).plan, "megatron", recipe_given=False).fp8_recipe == "delayed"
    assert "--fp8-recipe delayed" in megatron.text


def test_a_given_delayed_recipe_is_refused_by_torchtitan(build):
    flags = own_recipe_flags("torchtitan", _delayed(build, given=True))
    assert framework_plan(_delayed(build, given=True).plan, "torchtitan", recipe_given=True).fp8_recipe == "delayed"
    assert (flags.supported, flags.notes) == (False, ())
    assert flags.reason.startswith("fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao)")


def test_plans_ranked_with_tensorwise_or_in_bf16_are_asked_as_ranked(build):
    # sp-plan --framework torchtitan ranks with tensorwise, which Megatron-LM runs too: not turned into
    # its delayed default. A bf16 plan reads no recipe.
    tensorwise = _delayed(build, given=False).plan.model_copy(update={"fp8_recipe": "tensorwise"})
    bf16 = _delayed(build, given=False).plan.model_copy(update={"precision": "bf16"})
    for name in FRAMEWORKS:
        assert framework_plan(tensorwise, name, recipe_given=False) == tensorwise
        assert framework_plan(bf16, name, recipe_given=False) == bf16
