"""Render a chosen plan as each training framework's flags or config, and as launch commands."""

from __future__ import annotations

from typing import Callable

from sp_planner.cost.expert_padding import ROUTER_PADS
from sp_planner.cost.runtime import Runtime, framework_runtime
from sp_planner.errors import UserInputError
from sp_planner.flags import deepspeed, megatron, megatron_moe, mindspeed, torchtitan, yunchang
from sp_planner.flags.base import FRAMEWORKS, FlagChoices, FlagRequest, Framework, FrameworkFlags
from sp_planner.flags.launch import LAUNCHERS, render_launch
from sp_planner.specs.model import ModelSpec

_RENDERERS: dict[str, Callable[[FlagRequest], FrameworkFlags]] = {
    "megatron": megatron.render,
    "mindspeed": mindspeed.render,
    "deepspeed": deepspeed.render,
    "yunchang": yunchang.render,
    "torchtitan": lambda request: torchtitan.render(request, request.framework_version),
}
assert tuple(_RENDERERS) == FRAMEWORKS


def render_flags(framework: str, request: FlagRequest) -> FrameworkFlags:
    """One framework's flags for the plan, or supported=False with the reason it cannot express it."""
    renderer = _RENDERERS.get(framework)
    if renderer is None:
        raise UserInputError(f"unknown framework {framework!r}; choose one of: {', '.join(FRAMEWORKS)}")
    return renderer(request)


def render_all(request: FlagRequest) -> dict[str, FrameworkFlags]:
    """Every framework's flags, in FRAMEWORKS order."""
    return {name: render_flags(name, request) for name in FRAMEWORKS}


def release_runtime(framework: str, framework_version: str | None = None, *, model: ModelSpec) -> Runtime:
    """How `framework` runs a plan of `model` with the flags sp-plan emits for its release
    `framework_version` (torchtitan's, flags.torchtitan.VERSIONS; None: its newest; the others have
    one): cost.runtime's, torchtitan's by its config interface. What sp-plan times plans with and
    the plan file's readers time them again with (PlanFile.runtime)."""
    interface = torchtitan.resolve_version(framework_version) if framework == "torchtitan" else None
    runtime = framework_runtime(framework, interface)
    if framework in ("megatron", "all") and megatron_moe.router_pads(model):
        # Megatron's flags pad in the router under FP8/MXFP8 (--moe-router-padding-for-quantization),
        # so TEGroupedMLP copies nothing but the router adds rows (cost.expert_padding); bf16 pads
        # nothing either way.
        runtime = runtime.model_copy(update={"expert_row_padding": ROUTER_PADS})
    return runtime


__all__ = [
    "FRAMEWORKS",
    "LAUNCHERS",
    "FlagChoices",
    "FlagRequest",
    "Framework",
    "FrameworkFlags",
    "release_runtime",
    "render_all",
    "render_flags",
    "render_launch",
]
