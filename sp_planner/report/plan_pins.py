"""The pins sp-report searches a plan file's question under, so that its table holds the plan file's
plan and ranks it among the plans of its kind: the choices sp-plan never searches on its own
(plan_choices), and whatever else of the plan the search would not reach for its degrees
(recorded_pins): a pipeline split sp-plan --first-stage-layers / --last-stage-layers pinned, a
micro-batch, vpp, expert or FSDP variant outside the search's own choices, a micro-batch group
sp-plan --vpp-group pinned, or a hand edit. An
interleaved layout that only the search's refinement (search_refine) reaches pins its vpp, whose
search prices it with the same split."""

from __future__ import annotations

import numpy as np

from sp_planner.pipeline_order import priced_group
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile
from sp_planner.search_columns import search_axes
from sp_planner.space import DEGREES, Pins, expand_candidates, with_expert_degrees
from sp_planner.candidates import Candidates

# What the search chooses for a degree tuple (space.expand_candidates): Candidates columns, each
# group with the Pins fields that keep the plan's values there (a split pins its pp too, as sp-plan
# asks: cli.pin_checks.check_split_pins). In this order, each tried among the candidates that keep
# the plan's values of the groups before it: vpp before the split, which the search derives from
# vpp (pipeline.default_split). The plan's degrees are the tuple itself, and its precision, FP8,
# offloading and Adam moments plan_choices pins already.
_CHOICES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("vpp",), ("vpp",)),
    (("first_stage_layers", "last_stage_layers"), ("pp", "first_stage_layers", "last_stage_layers")),
    (("micro_batch",), ("micro_batch",)),
    (("zero",), ("zero",)),
    (("recompute",), ("recompute",)),
    (("ep",), ("ep",)),
    (("etp",), ("etp",)),
    (("allgather",), ("cp_comm",)),
    (("dp_replicate",), ("dp_replicate",)),
    (("reshard",), ("reshard_after_forward",)),
    (("zigzag",), ("ring_layout",)),
)


def plan_choices(plan: ParallelPlan) -> Pins:
    """The search pins the plan file's plan was chosen under, as far as the plan shows them: the
    choices sp-plan never searches on its own (precision and FP8 recipe, FP8 attention, CPU
    offloading with the pipeline and recompute it needs, bf16 Adam moments with the ZeRO-1 they
    need, as sp-plan pins them), so that the report
    ranks the plan among its own kind (an FP8 plan among FP8 plans, not against a bf16 search)."""
    offload = plan.cpu_offload_layers > 0
    return Pins(precision=plan.precision, fp8_recipe=plan.fp8_recipe, fp8_attention=plan.fp8_attention,
                cpu_offload_layers=plan.cpu_offload_layers, adam_moments_bf16=plan.adam_moments_bf16,
                pp=1 if offload else None, recompute="none" if offload else None,
                zero=1 if plan.adam_moments_bf16 else None)


def recorded_pins(plan_file: PlanFile) -> tuple[Pins, dict[str, object]]:
    """plan_choices, with each group of _CHOICES pinned to the plan's values where the search would
    not reach them for the plan's degrees (given the groups before it); and the fields pinned so,
    with their values ({} for a plan the search finds as it is, whose report searches as before).
    A plan no pins reach (an even split where the search splits unevenly) keeps the pins found; the
    report then evaluates it alone (from_plan.chosen_estimate)."""
    plan = plan_file.plan
    pins = plan_choices(plan)
    pinned: dict[str, object] = {}
    # A micro-batch group other than the one priced (sp-plan --vpp-group; plan files record the one
    # priced too): searched pinned, with the vpp it needs, as sp-plan asked.
    if plan.vpp_group is not None and plan.vpp_group != priced_group(plan.pp, plan.vpp,
                                                                     plan.num_micro_batches(plan_file.workload)):
        pinned = {"vpp": plan.vpp, "vpp_group": plan.vpp_group}
        pins = pins.model_copy(update=pinned)
    axes = search_axes(plan_file.model, plan_file.hardware)
    wanted = Candidates.of_plan(plan)
    degrees = np.array([[getattr(plan, axis) for axis in DEGREES]], dtype=np.int64)  # (1, len(DEGREES))

    def candidates(pins: Pins) -> Candidates:
        """The search's candidates of the plan's degrees under `pins`."""
        return expand_candidates(plan_file.workload, with_expert_degrees(degrees, axes.num_experts, pins), pins,
                                 plan_file.gpus_per_node, axes=axes)

    def reached(c: Candidates, columns: list[str]) -> bool:
        """Whether a candidate holds the plan's values in `columns`."""
        same = np.ones(len(c), dtype=bool)
        for name in columns:
            same &= getattr(c, name) == getattr(wanted, name)[0]
        return bool(same.any())

    c = candidates(pins)
    kept: list[str] = []  # the columns whose plan values are reached, each under the pins so far
    for columns, fields in _CHOICES:
        if not reached(c, [*kept, *columns]):
            update = {name: getattr(plan, name) for name in fields}
            if any(value is None for value in update.values()):
                continue  # an even split, which no pin names (Pins: None is default_split's)
            pins = pins.model_copy(update=update)
            pinned |= update
            c = candidates(pins)
        kept += columns
    return pins, pinned
