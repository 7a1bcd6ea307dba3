"""The JSON document of a planning answer: `sp-plan --format json` and the reports' summary.json.

Layout (schema "sp-planner.summary/3"):
    schema_version, candidates_evaluated, question{...; attention_kernel (the named kernel whose
    curves timed the plans, null where none is: an sp-calibrate'd profile); moe_routing{routing, load_imbalance,
    capacity_factor, pad_to_capacity, token_dispatcher} for MoE models, else null}, prune_counts{rule: count}
    (every rule and oom),
    plans[best first, whichever framework can express them]{the plan's fields
                      (sp_planner.plan.ParallelPlan: tp, pp, dp, ulysses, ring, zero, recompute,
                      micro_batch, ...; vpp_group: the micro-batch group priced, null at vpp 1),
                      fits, reason, memory_peak_bytes, memory{}, time{},
                      step_time_s, tokens_per_s, *_tflops_per_gpu, mfu, hardware_mfu,
                      comm_bytes{}, comm_links{}, rank_layout{order, degrees, groups},
                      rank_groups{axis: [[rank, ...], ...]} (only when asked: sp-plan --rank-groups),
                      flags{framework: {supported, text, reason, notes}}},
    framework, framework_plans[] (sp-plan only: --framework and the fitting plans it can express,
                    best first, as its table ranks them; every plan for "all"; empty when none fits),
    fit_suggestions[] (when nothing fits, each change checked by a new search; empty otherwise),
    prediction_band{generation, moe, ranking_band_percent, absolute_band_percent, rows, pairs,
                    step_range{low_ratio, high_ratio, rows}, ties_with_first}: the validation
                    error of the runs of the plans' class (validation.band; generation or moe
                    null when the class spans them)
rank_layout is the rank groups' generator (sp_planner.planfile_layout.RankLayout, as in plan.json): a few
lines at any scale, where the full lists of every plan made 185 MB at 131,072 GPUs. Non-finite
floats become null so the document is strict JSON. Version 2 moved the full lists behind the option;
version 3 gives the prediction band of the plans' class of run (it had the whole corpus's, with a
separate MoE step range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sp_planner.present.uncertainty import plan_band, ties_with_first
from sp_planner.cost.families import profile_key
from sp_planner.cost.moe import router_imbalance
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.flags import FRAMEWORKS, FlagChoices
from sp_planner.flags.own_recipe import own_recipe_flags
from sp_planner.layout import rank_groups
from sp_planner.plan import RULES, ParallelPlan
from sp_planner.planfile_layout import RankLayout
from sp_planner.present.advice import FitSuggestion
from sp_planner.present.labels import breaks_hard_rule
from sp_planner.specs.base import whole_bytes
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

SUMMARY_SCHEMA = "sp-planner.summary/3"
FLAG_FIELDS: tuple[str, ...] = ("supported", "text", "reason", "notes")


def build_summary(
    *,
    model: ModelSpec,
    hardware: HardwareProfile,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    result: SearchResult,
    top_k: int = 10,
    suggestions: Sequence[FitSuggestion] = (),
    full_rank_groups: bool = False,
    framework: str | None = None,
    framework_ranked: Sequence[PlanEstimate] = (),
    choices: FlagChoices = FlagChoices(),
    attention_kernel: str | None = None,
) -> dict[str, Any]:
    """The answer as plain JSON-ready data: the question, the top_k ranked plans, the prune counts.
    Each plan holds its rank groups' generator, and their full lists too when `full_rank_groups`.
    `framework` (sp-plan --framework; None for a report) and `framework_ranked`, the fitting plans
    it can express, best first: what sp-plan's table ranks; every plan's flags are rendered with
    `choices`. `attention_kernel`: the named kernel whose curves timed the plans
    (cost.attention_kernels.timed_kernel), None where none is named."""
    # The framework's plans are mostly `plans` again, and an entry renders every framework's flags
    # (a second per thousand plans): an equal estimate's entry is made once.
    made: dict[ParallelPlan, tuple[PlanEstimate, dict[str, Any]]] = {}

    def entry(est: PlanEstimate) -> dict[str, Any]:
        kept = made.get(est.plan)
        if kept is None or kept[0] != est:
            kept = made[est.plan] = (est, plan_entry(
                est, model=model, workload=workload, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                full_rank_groups=full_rank_groups, choices=choices))
        return kept[1]

    def entries(estimates: Sequence[PlanEstimate]) -> list[dict[str, Any]]:
        return [entry(est) for est in estimates]

    plans = entries(result.ranked[:top_k])
    band = plan_band(profile_key(hardware), moe=model.moe is not None)
    document: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA,
        "candidates_evaluated": int(result.candidates_evaluated),
        "question": {
            "model": model.name,
            "hardware": hardware.name,
            "num_nodes": num_nodes,
            "gpus_per_node": gpus_per_node,
            "world_size": num_nodes * gpus_per_node,
            "seq_len": workload.seq_len,
            "global_batch": workload.global_batch,
            "causal": workload.causal,
            "hbm_bytes": hardware.hbm_bytes,
            # The kernel whose curves timed the plans; null for a profile sp-calibrate measured.
            "attention_kernel": attention_kernel,
            # The routing MoE plans were costed with (cost.moe); null for a dense model.
            "moe_routing": moe_routing(model) if model.moe is not None else None,
        },
        "plans": plans,
        # Every rule, in the order they are checked, and "oom": the same keys for every answer.
        "prune_counts": {rule: int(result.prune_counts.get(rule, 0)) for rule in (*RULES, "oom")},
        # The validation error of the plans' class of run (present.uncertainty): plans
        # 2..1+ties_with_first are ties.
        "prediction_band": {**band.model_dump(), "ties_with_first": ties_with_first(result.ranked[:top_k], band)},
    }
    if framework is not None:
        # The table's ranking: the plans `framework` can express ("all": every plan, as `plans`).
        document["framework"] = framework
        document["framework_plans"] = plans if framework == "all" else entries(framework_ranked)
    # Every answer has the key: empty when a plan fits (suggestions are sought only when none does).
    document["fit_suggestions"] = [suggestion_entry(s) for s in suggestions]
    return _finite(document)


def moe_routing(model: ModelSpec) -> dict[str, Any]:
    """The routing the plans were costed with (cost.moe): router load (learned or force-balanced),
    the busiest expert-parallel rank's load over the mean it implies at ep > 1 before any capacity
    cap, the capacity factor (None = dropless) with its padding, and the token dispatcher
    (MoESpec.dispatcher: alltoall's and deepep's permutations are timed, hybridep's are inside its
    kernels)."""
    assert model.moe is not None
    return {"routing": model.moe.routing, "load_imbalance": router_imbalance(model),
            "capacity_factor": model.moe.capacity_factor, "pad_to_capacity": model.moe.pad_to_capacity,
            "token_dispatcher": model.moe.dispatcher}


def plan_entry(
    estimate: PlanEstimate,
    *,
    model: ModelSpec,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    full_rank_groups: bool = False,
    choices: FlagChoices = FlagChoices(),
) -> dict[str, Any]:
    """One ranked plan: its degrees, the estimate's numbers, its rank groups' generator (and full
    lists when `full_rank_groups`) and every framework's flags rendered with `choices` (torchtitan's
    release among them; each framework's own FP8 recipe where --fp8-recipe was not given), as sp-plan
    prints them."""
    request = choices.request(estimate.plan, model=model, workload=workload, num_nodes=num_nodes,
                              gpus_per_node=gpus_per_node)
    # Each asked with its own FP8 recipe where none was given, noted (flags.own_recipe), as sp-plan prints them.
    rendered = {framework: own_recipe_flags(framework, request) for framework in FRAMEWORKS}
    flags = {framework: {name: _jsonable(getattr(each, name)) for name in FLAG_FIELDS}
             for framework, each in rendered.items()}
    plan = estimate.plan
    entry: dict[str, Any] = {
        **plan.model_dump(),
        # The micro-batch group priced (a plan's own, --vpp-group, else the one sp-plan prices), null at vpp 1.
        "vpp_group": plan.priced_vpp_group(workload.global_batch),
        **estimate.model_dump(exclude={"plan"}),
        "memory": estimate.memory.whole_bytes(),  # parts that sum to memory_peak_bytes
        "rank_layout": RankLayout.of(estimate.plan).model_dump(mode="json"),
    }
    if full_rank_groups:
        entry["rank_groups"] = rank_groups(estimate.plan)
    entry["flags"] = flags
    return entry


def suggestion_entry(suggestion: FitSuggestion) -> dict[str, Any]:
    est = suggestion.estimate
    return {
        "change": suggestion.change,
        "option": suggestion.option,
        "description": suggestion.description,
        # The micro-batch group priced at the suggestion's own global batch, as plan_entry's.
        "plan": {**est.plan.model_dump(),
                 "vpp_group": est.plan.priced_vpp_group(suggestion.global_batch)},
        "memory_peak_bytes": est.memory_peak_bytes,
        "step_time_s": est.step_time_s,
    }


def estimate_row(estimate: PlanEstimate, *, global_batch: int) -> dict[str, Any]:
    """One plan flattened to the plans.csv column names (see sp_planner.report.csv); vpp_group is the
    micro-batch group priced at `global_batch` (null at vpp 1), as plans.csv writes it."""
    plan: ParallelPlan = estimate.plan
    row: dict[str, Any] = {**plan.model_dump(), "cp": plan.cp, "world_size": plan.world_size}
    row["vpp_group"] = plan.priced_vpp_group(global_batch)
    row.update(
        fits=estimate.fits,
        reason=estimate.reason,
        memory_peak_bytes=estimate.memory_peak_bytes,
        step_time_s=estimate.step_time_s,
        # empty (None) unless sp-plan --simulate K simulated the plan; the rank order then follows it
        simulated_step_time_s=estimate.simulated_step_time_s,
        tokens_per_s=estimate.tokens_per_s,
        model_tflops_per_gpu=estimate.model_tflops_per_gpu,
        hardware_tflops_per_gpu=estimate.hardware_tflops_per_gpu,
        mfu=estimate.mfu,
        hardware_mfu=estimate.hardware_mfu,
    )
    row.update({f"comm_{k}_bytes": v for k, v in estimate.comm_bytes.model_dump().items()})
    row.update({f"link_{k}": v for k, v in estimate.comm_links.model_dump().items()})
    row.update({f"mem_{k}": v for k, v in estimate.memory.whole_bytes().items()})
    row.update({f"time_{k}": v for k, v in estimate.time.model_dump().items()})
    if breaks_hard_rule(estimate.reason):  # it cannot run: its numbers are empty, as plans.csv leaves them
        keys = list(row)
        row.update(dict.fromkeys(keys[keys.index("memory_peak_bytes"):]))
    return {k: _finite(v, k) if k.endswith("_bytes") else v for k, v in row.items()}


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _finite(value: Any, key: str = "") -> Any:
    """Replace inf/nan (a plan that cannot run has no throughput) by None and write a float under a
    `*_bytes` key as whole bytes (the memory model computes in floats), recursively."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return whole_bytes(value) if key.endswith("_bytes") else value
    if isinstance(value, dict):
        return {k: _finite(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, key) for v in value]
    return value
