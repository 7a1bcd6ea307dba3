"""Each framework's flags asked with its own FP8 recipe where the user gave none (sp-plan without
--fp8-recipe, FlagChoices.fp8_recipe_given false): the recipe sp-plan --framework X pins for it
(cli.option_checks.resolve_fp8_recipe). --framework all ranks FP8 plans with Megatron's delayed
scaling, which torchtitan's flags refuse (torchao float8 has none), so torchtitan's are asked with
its tensorwise, with a note saying so. One rule for the flags sp-plan prints for plan 1, the
framework a plan file names (cli.plan_file_out), the report's flags and summary.json's, and each
plan a framework's flags are looked for down the ranking (present.expressible).
"""

from __future__ import annotations

from sp_planner.choices import own_fp8_recipe
from sp_planner.flags import render_flags
from sp_planner.flags.base import FlagRequest, FrameworkFlags
from sp_planner.plan import Fp8Recipe, ParallelPlan


def framework_plan(plan: ParallelPlan, name: str, *, recipe_given: bool) -> ParallelPlan:
    """The plan with `name`'s own FP8 recipe where the user gave none and the plans were ranked with
    Megatron's default delayed scaling, as sp-plan --framework `name` pins it (torchtitan's tensorwise,
    where --framework all pinned delayed, which torchao float8 lacks); the plan itself where a recipe
    was given, it is not per-tensor FP8, or it was ranked with tensorwise (sp-plan --framework
    torchtitan), which every framework with FP8 runs."""
    if recipe_given or plan.precision != "fp8" or plan.fp8_recipe != "delayed":
        return plan
    return plan.model_copy(update={"fp8_recipe": own_fp8_recipe(name)})


def own_recipe_note(name: str, recipe: Fp8Recipe, ranked: Fp8Recipe) -> str:
    """The note on `name`'s flags asked with its own `recipe` where the plans were ranked with `ranked`."""
    return (f"{name} runs {recipe} FP8 scaling, its own, where the plans were ranked with {ranked} scaling; "
            f"sp-plan --framework {name} times them so.")


def own_recipe_flags(name: str, request: FlagRequest) -> FrameworkFlags:
    """`name`'s flags for the request's plan, asked with its own FP8 recipe where the user gave none
    (request.fp8_recipe_given false; framework_plan), with own_recipe_note last among its notes where
    that is not the plan's recipe."""
    own = framework_plan(request.plan, name, recipe_given=request.fp8_recipe_given)
    if own == request.plan:
        return render_flags(name, request)
    flags = render_flags(name, request.model_copy(update={"plan": own}))
    note = own_recipe_note(name, own.fp8_recipe, request.plan.fp8_recipe)
    return flags.model_copy(update={"notes": (*flags.notes, note)})
