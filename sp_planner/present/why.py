"""Plain-language notes computed from the estimates: why the winner wins, and what came closest.

No canned verdicts: every clause names a number taken from the estimates it describes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sp_planner.cost.families import profile_key
from sp_planner.estimate import PlanEstimate
from sp_planner.plan import ParallelPlan
from sp_planner.present.advice import SUGGESTION_CANDIDATES, FitSuggestion
from sp_planner.present.labels import (FULL_SQUARE_MFU, MEMORY_LABELS, TIME_LABELS, breaks_hard_rule, peak_name,
                                       plan_name, reason_key)
from sp_planner.present.uncertainty import band_clause, plan_band
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import format_bytes, format_bytes_as, format_seconds_as

# How plan_differences says a changed field, in the words the table and plan names use: a label
# before the value, or each value said whole (booleans); unlisted fields by their name.
FIELD_LABELS = {"micro_batch": "micro batch", "ring_layout": "ring layout", "dp_replicate": "HSDP replicas",
                "vpp": "virtual stages", "fp8_recipe": "FP8 recipe", "cpu_offload_layers": "offloaded layers"}
FIELD_VALUES = {
    "zero": lambda v: f"ZeRO-{v}",
    "cp_comm": lambda v: "all-gather CP" if v == "allgather" else "P2P ring CP",
    "reshard_after_forward": lambda v: "parameters resharded after forward" if v else "parameters kept from "
                                                                                      "forward to backward",
    "fp8_attention": lambda v: "FP8 attention" if v else "bf16 attention",
    "adam_moments_bf16": lambda v: "bf16 Adam moments" if v else "fp32 Adam moments",
}


def _field_change(name: str, new: object, old: object) -> str:
    """'micro batch 2 instead of 1' (the label once), or each value said whole."""
    said = FIELD_VALUES.get(name)
    if said is not None:
        return f"{said(new)} instead of {said(old)}"
    return f"{FIELD_LABELS.get(name, name)} {new} instead of {old}"


def plan_differences(a: ParallelPlan, b: ParallelPlan) -> str:
    """What b changes relative to a, e.g. 'tp 4 instead of 2, ulysses 2 instead of 4'."""
    def split(plan: ParallelPlan) -> str:
        if plan.first_stage_layers is None and plan.last_stage_layers is None:
            return "the even split"
        return f"{plan.first_stage_layers}/{plan.last_stage_layers} layers on the first/last stage"

    stage_fields = ("first_stage_layers", "last_stage_layers")
    changed = [
        _field_change(name, getattr(b, name), getattr(a, name))
        for name in ParallelPlan.model_fields
        if name not in stage_fields and getattr(a, name) != getattr(b, name)
    ]
    if any(getattr(a, name) != getattr(b, name) for name in stage_fields):
        changed.append(f"{split(b)} instead of {split(a)}")
    return ", ".join(changed) if changed else "the same settings"


def largest_time_parts(est: PlanEstimate, count: int = 2) -> list[tuple[str, float]]:
    parts = sorted(est.time.model_dump().items(), key=lambda item: item[1], reverse=True)
    return [(name, seconds) for name, seconds in parts[:count] if seconds > 0]


def why_this_plan(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, moe: bool = False,
                  runner_up: PlanEstimate | None = None) -> str:
    """One paragraph on the first plan: what limits it, its memory headroom, what the runner-up gives up.
    `runner_up`: the plan ranked second where `ranked` holds only the first (sp-plan --top 1). Its
    durations are in the unit of the first plan's step and its sizes in that of the GPU's HBM."""
    if not ranked:
        return "No candidate plan passed the hard rules, so there is nothing to rank."
    best = ranked[0]
    step = best.step_time_s
    limits = ", then ".join(
        f"{TIME_LABELS.get(name, name)} ({format_seconds_as(sec, step)}, {sec / step:.0%} of the step)"
        for name, sec in largest_time_parts(best)
    )
    text = (
        f"{plan_name(best.plan)} takes {format_seconds_as(step, step)} per step "
        f"({best.tokens_per_s:,.0f} tokens/s, {best.hardware_mfu:.1%} of {peak_name(best.plan)} in executed FLOPs; "
        + (f"{FULL_SQUARE_MFU} {best.mfu:.1%}). " if best.mfu <= 1 else
           f"the {FULL_SQUARE_MFU} passes 100%: it counts the full attention square, of which a causal "
           "mask runs half and a sliding window less). ")
        + f"Its step is dominated by {limits}. "
    )
    text += _memory_clause(best, hardware) + " "
    key = profile_key(hardware)
    band = band_clause(ranked, plan_band(key, moe=moe), hardware_name=hardware.name, gpu_key=key)
    if band:
        text += band + " "
    other = ranked[1] if len(ranked) > 1 else runner_up
    if other is None:
        return text + "No other candidate was ranked."
    return text + _runner_up_clause(best, other, hardware.hbm_bytes)


def _memory_clause(est: PlanEstimate, hardware: HardwareProfile) -> str:
    parts = est.memory.model_dump()
    biggest = max(parts, key=lambda name: parts[name])
    hbm = hardware.hbm_bytes
    head = f"It needs {format_bytes_as(est.memory_peak_bytes, hbm)} of {format_bytes_as(hbm, hbm)} per GPU"
    share = f"{MEMORY_LABELS.get(biggest, biggest)} the largest part at {format_bytes_as(parts[biggest], hbm)}"
    if not est.fits and reason_key(est.reason) not in ("oom", ""):  # a hard rule, not the memory
        return f"It cannot run: it breaks a hard rule ({est.reason})."
    if not est.fits:
        return f"{head} and does not fit ({est.reason}); {share}."
    headroom = hardware.hbm_bytes - est.memory_peak_bytes
    return f"{head}, leaving {format_bytes_as(headroom, hbm)} of headroom, {share}."


def _runner_up_clause(best: PlanEstimate, other: PlanEstimate, hbm_bytes: float) -> str:
    """What the runner-up gives up. Where the best published MFU (cost.mfu_ceiling) holds both plans
    to the same step, the clause says so and compares them before that bound, as the ranking does
    (search_rank: ties at the bound are ordered by the time before it). Durations in the unit of the
    best plan's step, sizes in that of `hbm_bytes`."""
    def seconds(value: float) -> str:
        return format_seconds_as(value, best.step_time_s)

    diff = plan_differences(best.plan, other.plan)
    if not other.fits:
        return f"The next candidate ({diff}) does not fit: {other.reason}."
    slower_s = other.step_time_s - best.step_time_s
    # Part by part, without the stretch to the bound (it only evens the two out).
    deltas = {
        name: other_sec - best_sec
        for (name, best_sec), other_sec in zip(best.time.model_dump().items(), other.time.model_dump().values())
        if name != "mfu_ceiling_s"
    }
    worst = max(deltas, key=lambda name: deltas[name])
    gain = min(deltas, key=lambda name: deltas[name])
    held = best.time.mfu_ceiling_s > 0 and other.time.mfu_ceiling_s > 0
    faster, mostly = False, True  # `mostly`: name the part that moves the step most, after the clause
    if held and abs(slower_s) <= 1e-9 * best.step_time_s:
        before_s = sum(deltas.values())
        faster = before_s < 0  # a plan shown first that was re-ranked (--simulate) or pinned (sp-report)
        relation = "faster" if faster else "slower"
        clause = (f"The runner-up ({diff}) is predicted at the same step: the best published MFU for this "
                  f"hardware holds both to it; before that bound it is {seconds(abs(before_s))} "
                  f"({abs(before_s) / (best.step_time_s - best.time.mfu_ceiling_s):.1%}) {relation}")
    elif abs(slower_s) < 5e-4 * best.step_time_s:  # under 0.05%: as good as equal, say what cancels
        clause = f"The runner-up ({diff}) takes the same time per step"
        if deltas[worst] > 0 and deltas[gain] < 0:
            clause += (f": its {TIME_LABELS.get(worst, worst)} (+{seconds(deltas[worst])}) is offset by "
                       f"{TIME_LABELS.get(gain, gain)} (-{seconds(-deltas[gain])})")
        mostly = False  # said already
    else:  # slower, or faster where the plan shown first was not ranked first (sp-report of a plan file)
        faster = slower_s < 0
        word = "faster" if faster else "slower"
        clause = (f"The runner-up ({diff}) is {seconds(abs(slower_s))} "
                  f"({abs(slower_s) / best.step_time_s:.1%}) {word} per step")
    if mostly and not faster and deltas[worst] > 0:
        clause += f", mostly from {TIME_LABELS.get(worst, worst)} (+{seconds(deltas[worst])})"
    elif mostly and faster and deltas[gain] < 0:
        clause += f", mostly from {TIME_LABELS.get(gain, gain)} (-{seconds(-deltas[gain])})"
    saved = best.memory_peak_bytes - other.memory_peak_bytes
    # "though" where the memory goes against the time, "and" where both go the same way: a faster
    # runner-up that also needs less memory is not said to need less "though" (sp-report).
    if saved > 0:
        clause += f", {'and' if faster else 'though it'} needs {format_bytes_as(saved, hbm_bytes)} less memory per GPU"
    elif saved < 0:
        clause += (f", {'though it' if faster else 'and'} needs {format_bytes_as(-saved, hbm_bytes)} more memory "
                   "per GPU")
    return clause + "."


def expert_parallel_note(best: PlanEstimate, other: PlanEstimate | None, rank: int | None, *,
                         scanned: int, framework: str = "all") -> str:
    """For an MoE model whose shown plans all keep ep 1: the best plan with expert parallelism, at
    `rank` among the ranked plans, and which parts of its step grow or shrink against the first."""
    if other is None:
        which = "" if framework == "all" else f" that {framework} can express"
        return (f"No plan with expert parallelism (ep > 1){which} fits among the best {scanned:,} ranked plans; "
                "--ep pins one to see its estimate.")
    slower_s = other.step_time_s - best.step_time_s

    def seconds(value: float) -> str:  # every duration in the unit of the note's step
        return format_seconds_as(value, other.step_time_s)

    deltas = {
        name: other_sec - best_sec
        for (name, best_sec), other_sec in zip(best.time.model_dump().items(), other.time.model_dump().values())
    }
    grown = sorted(((d, n) for n, d in deltas.items() if d > 0), reverse=True)[:3]
    shrunk = sorted((d, n) for n, d in deltas.items() if d < 0)[:2]
    text = (f"Best plan with expert parallelism (ranked {rank} of all plans): {plan_name(other.plan)}, "
            f"{seconds(other.step_time_s)} per step ({slower_s / best.step_time_s:+.1%} against plan 1)")
    if grown:
        text += ": " + ", ".join(f"{TIME_LABELS.get(n, n)} +{seconds(d)}" for d, n in grown)
    if shrunk:
        text += "; " + ", ".join(f"{TIME_LABELS.get(n, n)} -{seconds(-d)}" for d, n in shrunk)
    saved = best.memory_peak_bytes - other.memory_peak_bytes
    if saved:
        text += f"; {format_bytes(abs(saved))} {'less' if saved > 0 else 'more'} memory per GPU"
    return text + "."


def closest_and_fixes(
    ranked: Sequence[PlanEstimate],
    hardware: HardwareProfile,
    suggestions: Sequence[FitSuggestion],
    *,
    pinned: bool = False,
) -> str:
    """When nothing fits: the closest plan and the checked changes that would make one fit.

    `pinned`: every degree was pinned, so the first plan is the user's own, not the closest. Sizes
    are in the unit of the GPU's HBM, and the fixes' steps in the unit of the slowest.
    """
    hbm = hardware.hbm_bytes
    if pinned and ranked:
        text = "The pinned plan does not fit."
    elif ranked and all(breaks_hard_rule(est.reason) for est in ranked):
        # A rule, not memory, refuses every plan: the first plan's rule and its message (which names
        # the fix), not a memory comparison that would make memory look like the reason.
        first = ranked[0]
        rule, _, message = str(first.reason).partition(":")
        text = (f"No plan can run: each breaks a rule, whatever its memory. The first, {plan_name(first.plan)}, "
                f"breaks the {rule.strip()} rule: {message.strip().rstrip('.')}.")
    elif ranked:
        # The smallest-memory plan that a rule lets run: memory is what refuses it.
        closest = next(est for est in ranked if not breaks_hard_rule(est.reason))
        over = closest.memory_peak_bytes - hbm
        text = (
            f"No plan fits. The closest is {plan_name(closest.plan)}: "
            f"{format_bytes_as(closest.memory_peak_bytes, hbm)} per GPU against {format_bytes_as(hbm, hbm)}"
            + (f", {format_bytes_as(over, hbm)} over." if over > 0 else f" ({closest.reason}).")
        )
    else:
        text = "No plan fits: every candidate broke a hard rule (see the prune counts with --explain)."
    if not suggestions:
        return text + (
            " None of the changes tried (relaxing the pinned options, up to 16x the nodes,"
            " sequences rounded for the splits or down to 1K tokens;"
            f" {SUGGESTION_CANDIDATES:,} candidates searched at most)"
            " makes a plan fit."
        )
    slowest_s = max(s.estimate.step_time_s for s in suggestions)
    fixes = [
        f"  {s.option}: {s.description}; best plan {plan_name(s.estimate.plan)}, "
        f"{format_bytes_as(s.estimate.memory_peak_bytes, hbm)} per GPU, "
        f"{format_seconds_as(s.estimate.step_time_s, slowest_s)} per step"
        for s in suggestions
    ]
    return "\n".join([text, "Each of these changes was checked by searching again and makes a plan fit:", *fixes])
