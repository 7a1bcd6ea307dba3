"""The recommended plan's section of index.html: its headline, why it does not fit where it does
not, why it wins (or how it stands against the next slower plan) and each framework's flags for it,
a pure function of the question and the search result (report.sections holds the others).
"""

from __future__ import annotations

from sp_planner.estimate import PlanEstimate, SearchResult, plan_of_row
from sp_planner.flags import FRAMEWORKS, FlagRequest
from sp_planner.present.expressible import framework_flags
from sp_planner.present.labels import FULL_SQUARE_MFU, peak_name, plan_name
from sp_planner.present.why import why_this_plan
from sp_planner.report.html import Raw, join, section, tag
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import format_bytes, format_seconds, format_tflops


def recommendation_section(*, chosen: PlanEstimate, result: SearchResult, hardware: HardwareProfile,
                           flag_request: FlagRequest, framework: str, from_plan_file: bool,
                           framework_choice: bool = False) -> Raw:
    parts: list[object] = []
    if not chosen.fits:
        parts.append(tag("p", why_it_does_not_fit(chosen, result, hardware, from_plan_file=from_plan_file),
                         class_="warn"))
    parts.append(tag("div", join([tag("strong", plan_name(chosen.plan)), Raw("<br>"),
                                  _headline(chosen, hardware)]), class_="callout"))
    best = result.ranked[0] if result.ranked else None
    is_best = best is None or best.plan == chosen.plan
    if (from_plan_file or framework_choice) and best is not None and not is_best:
        slower = chosen.step_time_s / best.step_time_s - 1.0
        this, whose = (("the plan of the plan file", "the plan file's plan") if from_plan_file else
                       (f"the best plan {framework} can express", "this plan"))
        parts.append(tag("p", f"This is {this}. The search ranks {plan_name(best.plan)} "
                              f"first, at {format_seconds(best.step_time_s)} per step "
                              f"({slower:+.1%} for {whose})"
                              + (f", which {framework} cannot express." if framework_choice else "."), class_="warn"))
    # why_this_plan compares its first plan with its second: give it the plan that ranks next, and
    # for the search's best the others it ranked too, whose ties it names (as sp-plan's text does).
    following = list(result.ranked[1:]) if is_best else _ranked_next(result, chosen)
    parts.append(tag("h3", _heading(chosen, following, is_best=is_best) if chosen.fits else "The closest plan"))
    parts.append(tag("p", why_this_plan([chosen, *following], hardware, moe=flag_request.model.moe is not None)))
    parts.append(_flags(flag_request, framework, result))
    return section("recommendation", "Recommended plan", *parts)


def why_it_does_not_fit(chosen: PlanEstimate, result: SearchResult, hardware: HardwareProfile, *,
                        from_plan_file: bool) -> str:
    """The warning over a recommended plan that cannot run, by the estimate's reason ('<rule>:
    <values>'): out of memory, or the hard rule it breaks (never said as out of memory)."""
    rule, _, values = (chosen.reason or "").partition(":")
    rule, values = rule.strip(), values.strip()
    alone = from_plan_file and any(est.fits for est in result.ranked)  # other plans fit
    hbm = format_bytes(hardware.hbm_bytes)
    if rule in ("oom", ""):
        if alone:
            return f"This plan does not fit in {hbm} of HBM: {chosen.reason or 'out of memory'}."
        return f"No plan fits in {hbm} of HBM. The closest is shown; it does not fit: {chosen.reason}."
    lead = "" if alone or from_plan_file else "No plan can run. The closest is shown. "
    return f"{lead}This plan cannot run: it breaks the hard rule {rule} ({values})."


def _ranked_next(result: SearchResult, chosen: PlanEstimate) -> list[PlanEstimate]:
    """The fitting plan ranked right after `chosen`, a plan the search does not rank first: in the
    frame's rank order, which after the MFU bound (cost.mfu_ceiling) orders equal steps by their
    time before it, so a plan of the same step can rank before `chosen`. Where the search does not
    rank `chosen`, the first fitting plan of a step no faster than its own."""
    frame = result.frame
    rows = [row for _, row in frame[frame["fits"].astype(bool)].iterrows()]
    at = next((i for i, row in enumerate(rows) if plan_of_row(row) == chosen.plan), None)
    if at is not None:
        return [PlanEstimate.from_row(rows[at + 1])] if at + 1 < len(rows) else []
    return next(([PlanEstimate.from_row(row)] for row in rows if row["step_time_s"] >= chosen.step_time_s), [])


def _heading(chosen: PlanEstimate, following: list[PlanEstimate], *, is_best: bool) -> str:
    """The heading over why_this_plan's comparison, true of the plan it compares with: slower only
    where its step is (a plan ranked next after the MFU bound can have the same step)."""
    if is_best:
        return "Why it wins"
    if not following:
        return "Why this plan"
    if following[0].step_time_s > chosen.step_time_s:
        return "Against the next slower plan"
    return "Against the next plan ranked"


def _headline(est: PlanEstimate, hardware: HardwareProfile) -> str:
    # The full-square count can pass the peak at long context: not shown as a share
    # (MODEL_MFU_LEGEND).
    model_mfu = (f"{FULL_SQUARE_MFU} {est.mfu:.1%}" if est.mfu <= 1 else
                 f"a {FULL_SQUARE_MFU} not shown: its count of the whole attention square passes the GPU's "
                 "peak, where a causal mask runs half the square and a window less")
    return (f"{format_seconds(est.step_time_s)} per step, {est.tokens_per_s:,.0f} tokens/s, "
            f"{est.hardware_mfu:.1%} of {peak_name(est.plan)} in executed FLOPs (hardware MFU; "
            f"{format_tflops(est.model_tflops_per_gpu, 0)} "
            f"full-square model TFLOPS per GPU, {model_mfu}), "
            f"peak memory {format_bytes(est.memory_peak_bytes)} of {format_bytes(hardware.hbm_bytes)}")


def _flags(request: FlagRequest, framework: str, result: SearchResult) -> Raw:
    """Each framework's flags for the plan, with its own FP8 recipe where none was given
    (flags.own_recipe); where one cannot express it, the best plan it can (as sp-plan)."""
    names = FRAMEWORKS if framework == "all" else (framework,)
    parts: list[object] = []
    for name in names:
        found = framework_flags(name, request, result)
        parts.append(tag("h3", f"{name} flags"))
        if found.refusal is not None:
            parts.append(tag("p", f"{name} cannot express this plan: {found.refusal}.", class_="warn"))
        if found.flags is None:
            parts.append(tag("p", f"No plan that fits can be expressed in {name}."))
            continue
        flags, est = found.flags, found.estimate
        if est is not None:
            parts.append(tag("p", f"The best plan {name} can express is plan {found.rank} of the search, "
                                  f"{plan_name(est.plan)}, at {format_seconds(est.step_time_s)} per step:"))
        parts.append(tag("pre", flags.text))
        if flags.notes:
            parts.append(tag("ul", join(tag("li", note) for note in flags.notes)))
    return join(parts)
