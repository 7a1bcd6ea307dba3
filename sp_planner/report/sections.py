"""The sections of index.html, each a pure function of the question and the search result; the
recommended plan's own section is report.recommendation's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.present.table import MODEL_MFU_LEGEND, model_mfu_cell, zero_cell, zero_legend
from sp_planner.report import plots, plots_space
from sp_planner.report.assumptions import CONVENTIONS, profile_rows
from sp_planner.report.html import Raw, facts, figure, join, section, table, tag
from sp_planner.present.labels import (COMM_LABELS, FULL_SQUARE_MEGATRON, FULL_SQUARE_MFU, pinned_vpp_group, plan_name,
                                       reason_key)
from sp_planner.report.runs import RunRecord, compare_runs
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import format_bytes, format_seconds, format_tflops, format_tokens


def question_section(*, model: ModelSpec, hardware: HardwareProfile, workload: Workload, num_nodes: int,
                     gpus_per_node: int, result: SearchResult) -> Raw:
    world = num_nodes * gpus_per_node
    pruned = ", ".join(f"{rule} {count:,}" for rule, count in sorted(result.prune_counts.items())) or "none"
    return section("question", "The question", facts([
        ("model", f"{model.name}: {model.num_params / 1e9:,.2f} B parameters, {model.num_layers} layers, "
                  f"hidden {model.hidden_size}, {model.num_heads} heads ({model.num_kv_heads} KV), "
                  f"head dim {model.head_dim}, vocabulary {model.vocab_size:,}"
                  + (f", MoE {model.moe.num_experts} experts top-{model.moe.top_k}" if model.moe else "")),
        ("hardware", f"{hardware.name}" + (f": {hardware.description}" if hardware.description else "")),
        ("cluster", f"{num_nodes} node{'s' if num_nodes != 1 else ''} x {gpus_per_node} GPUs = {world:,} GPUs; "
                    f"{hardware.intra_node.kind} inside a node, {hardware.inter_node.kind} between nodes"),
        ("workload", f"{format_tokens(workload.seq_len)} tokens per sequence ({workload.seq_len:,}), "
                     f"{workload.global_batch:,} sequences per step = {workload.tokens_per_step:,} tokens, "
                     f"{'causal' if workload.causal else 'bidirectional'} attention, "
                     f"{_numerics(workload, result)}"),
        ("search", f"{result.candidates_evaluated:,} candidate plans evaluated; "
                   f"{sum(1 for e in result.ranked if e.fits)} of the top {len(result.ranked)} fit; "
                   f"removed by rule: {pruned}"),
    ]))


def _numerics(workload: Workload, result: SearchResult) -> str:
    """The precision the ranked plans run: the workload's bf16 mixed precision, or, where plans run
    their GEMMs in FP8 or MXFP8 (--precision fp8/mxfp8/auto, or a plan file's), those precisions."""
    precisions = list(dict.fromkeys(est.plan.precision for est in result.ranked)) or [workload.precision]
    if precisions == [workload.precision]:
        return f"{workload.precision} mixed precision with {workload.optimizer}"
    return (f"{' or '.join(precisions)} GEMMs ({workload.precision} mixed precision otherwise) "
            f"with {workload.optimizer}")


# How the ring axis moves K/V (ParallelPlan.cp_comm), as the table's cell says it.
RING_KV_CELLS = {"p2p": "p2p", "allgather": "all-gather"}
# The top-plans columns that hold words, left-aligned (the others are figures, right-aligned).
TEXT_COLUMNS = frozenset({"recompute", "ring layout", "ring K/V", "precision", "fits"})


def top_plans_section(shown: Sequence[PlanEstimate], *, chosen: PlanEstimate, hardware: HardwareProfile,
                      chosen_outside: bool = False) -> Raw:
    """The shown plans, numbered by their rank in the search. `chosen_outside`: the first row is
    the recommended plan (a plan file's), which is not among the search's first plans: it has no
    number, and the note says so."""
    # The MoE and offload columns only where a shown plan uses them (a dense search's table stays as it was).
    moe = any(est.plan.ep > 1 or est.plan.etp > 1 for est in shown)
    offload = any(est.plan.cpu_offload_layers for est in shown)
    # sp-plan --vpp-group's micro-batch group where a shown plan pins one (the one priced is in plans.csv).
    grouped = any(pinned_vpp_group(est.plan) is not None for est in shown)
    headers = ["#", "tp", "ulysses", "ring", "dp", "pp", *(["ep", "etp"] if moe else []), "ZeRO", "recompute",
               "micro batch", "ring layout", "ring K/V", "virtual stages", *(["micro-batch group"] if grouped else []),
               "first/last stage layers",
               *(["offloaded layers"] if offload else []), "precision", "step time", "tokens/s",
               "full-square TFLOPS/GPU", FULL_SQUARE_MFU, "hardware MFU", "peak memory", "network bytes/step", "fits"]
    # sp-plan --simulate K re-ranks the first K plans by the event simulator's step time.
    simulated = any(est.simulated_step_time_s is not None for est in shown)
    if simulated:
        headers.insert(headers.index("step time") + 1, "simulated step")
    rows = []
    numbers: list[int | str] = ["-", *range(1, len(shown))] if chosen_outside else list(range(1, len(shown) + 1))
    for i, est in zip(numbers, shown):
        p = est.plan
        network = sum(getattr(est.comm_bytes, k) for k in COMM_LABELS if getattr(est.comm_links, k) == "inter")
        row = [i, p.tp, p.ulysses, p.ring, p.dp, p.pp, *([p.ep, p.etp] if moe else []), zero_cell(p), p.recompute,
               p.micro_batch, p.ring_layout if p.ring > 1 else "-", RING_KV_CELLS[p.cp_comm] if p.ring > 1 else "-",
               p.vpp if p.pp > 1 else "-",
               *([pinned_vpp_group(p) or "-"] if grouped else []),
               f"{p.first_stage_layers}/{p.last_stage_layers}" if p.first_stage_layers is not None else "-",
               *([p.cpu_offload_layers] if offload else []), p.precision, format_seconds(est.step_time_s),
               f"{est.tokens_per_s:,.0f}", format_tflops(est.model_tflops_per_gpu), model_mfu_cell(est),
               f"{est.hardware_mfu:.1%}", format_bytes(est.memory_peak_bytes), format_bytes(network),
               "yes" if est.fits else f"no: {reason_key(est.reason)}"]
        if simulated:
            row.insert(headers.index("simulated step"),
                       "-" if est.simulated_step_time_s is None else format_seconds(est.simulated_step_time_s))
        rows.append(row)
    classes = ["chosen" if est.plan == chosen.plan else None for est in shown]
    order = ("Ranked by simulated step time (the event simulator's, for the plans it ran; the rest follow by "
             "predicted step time)" if simulated else "Ranked by predicted step time")
    if chosen_outside:  # numbered by the search's rank, which the recommended plan has none among these
        where = (f"The highlighted first row is the recommended plan, which is not among the search's first "
                 f"{len(shown) - 1} (its # is blank); the others are those, {order[0].lower()}{order[1:]}.")
    else:
        where = f"{order}; the highlighted row is the recommended plan."
    note = tag("p", f"{where} "
                    f"HBM per GPU: {format_bytes(hardware.hbm_bytes)}. The full-square TFLOPS and "
                    f"{FULL_SQUARE_MFU} count attention over the whole s x s square and no recompute "
                    f"({FULL_SQUARE_MEGATRON}; later releases halve causal attention), hardware MFU the FLOPs "
                    "actually executed (see Assumptions). Every candidate is in plans.csv."
                    + (f" {MODEL_MFU_LEGEND}." if any(est.mfu > 1 for est in shown) else "")
                    + (f" ZeRO {zero}." if (zero := zero_legend(shown)) else ""))
    return section("top-plans", "Top plans", note,
                   table(headers, rows, numeric=[j for j, h in enumerate(headers) if j and h not in TEXT_COLUMNS],
                         row_classes=classes))


def figures_section(*, frame: pd.DataFrame, shown: Sequence[PlanEstimate], chosen: PlanEstimate,
                    hardware: HardwareProfile, prune_counts: dict[str, int]) -> Raw:
    rules = ", ".join(f"{rule} ({count:,})" for rule, count in sorted(prune_counts.items()))
    heat_svg, omitted = plots_space.heatmap_svg(frame)
    left_out = "; ".join(f"{axis} {', '.join(map(str, values))}" for axis, values in omitted.items() if values)
    heat = figure(heat_svg, (
        "Best predicted step time for each Ulysses x Ring degree, one panel per TP degree: each cell is the "
        "fastest fitting plan over dp, pp, ZeRO, recompute and micro batch. Hatched cells have no fitting plan "
        "and name the rule that removed them (OOM: too little memory; candidates per rule: "
        f"{rules or 'none'}). Grey cells were not candidates (tp x ulysses x ring does not divide the GPU count)."
        + (f" Left out, since every candidate with them breaks a hard rule: {left_out}." if left_out else "")),
        figure_id="fig-heatmap")
    memory = figure(plots.memory_bars_svg(shown, hbm_bytes=hardware.hbm_bytes), (
        "Peak memory per GPU of the top plans, by part, against the HBM capacity (dashed line). "
        "Plans are numbered as in the table above."), figure_id="fig-memory")
    comm = figure(plots.comm_bars_svg(shown, intra_kind=hardware.intra_node.kind,
                                      inter_kind=hardware.inter_node.kind), (
        f"Bytes one GPU sends per optimizer step. Left: by collective, hatched where the group spans nodes "
        f"({hardware.inter_node.kind}). Right: the same bytes by link, {hardware.intra_node.kind} inside a node "
        f"against {hardware.inter_node.kind} across nodes."), figure_id="fig-comm")
    fits = frame["fits"].to_numpy(dtype=bool)
    if not fits.any():
        return section("figures", "Figures", heat, memory, comm,
                       tag("p", "No plan fits, so there is no Pareto front of memory against step time."))
    chosen_index = _row_index(frame, fits, chosen)
    pareto, front = plots_space.pareto_svg(frame, hbm_bytes=hardware.hbm_bytes, chosen_index=chosen_index)
    pareto_fig = figure(pareto, (
        f"Predicted peak memory against step time for all {np.count_nonzero(fits):,} plans that fit. The Pareto front "
        "(blue) holds the plans no other plan beats on both; numbered as in the table below."),
        figure_id="fig-pareto")
    front_rows = [[i, plan_name(PlanEstimate.from_row(row).plan, compact=True), format_bytes(row["memory_peak_bytes"]),
                   format_seconds(row["step_time_s"])] for i, (_, row) in enumerate(front.iterrows(), start=1)]
    front_table = table(["#", "plan", "peak memory", "step time"], front_rows, numeric=(0, 2, 3))
    return section("figures", "Figures", heat, memory, comm, pareto_fig,
                   tag("h3", "Plans on the Pareto front"), front_table)


def _row_index(frame: pd.DataFrame, fits: np.ndarray, est: PlanEstimate) -> object | None:
    """The index of the first fitting row (`fits`) holding `est`'s plan, or None."""
    mask = fits.copy()
    for name, value in est.plan.model_dump().items():
        column = frame[name]
        # None (an even pipeline split) is missing in the frame, where == matches nothing.
        mask &= column.isna().to_numpy() if value is None else (column == value).to_numpy(dtype=bool, na_value=False)
    hits = frame.index[mask]
    return hits[0] if len(hits) else None


def runs_section(runs: Sequence[RunRecord]) -> Raw:
    comparisons = compare_runs(runs)
    run_rows = [[i, run.source, run.label, run.kernel, "passed" if run.passed else "FAILED",
                 f"{run.max_abs_err.out:.2e} / {run.tolerance.out:.2e}"] for i, run in enumerate(runs, start=1)]
    runs_table = table(["run", "file", "configuration", "kernel", "validation", "max abs error out / tolerance"],
                       run_rows, numeric=(0,))
    rows = []
    chart_rows = []
    for c in comparisons:
        error = c.error_percent
        rows.append([c.run, c.quantity, _quantity(c.predicted, c.unit), _quantity(c.measured, c.unit),
                     "n/a (none predicted)" if error is None else f"{error:+.1f}%"])
        if error is not None:
            chart_rows.append((f"run {c.run}", c.quantity, error))
    compare_table = table(["run", "quantity", "predicted", "measured", "error"], rows, numeric=(0, 2, 3, 4))
    parts: list[object] = [runs_table, tag("h3", "Predicted against measured"), compare_table]
    if chart_rows:
        parts.append(figure(plots.runs_chart_svg(chart_rows), (
            "Error of each prediction in percent: (measured - predicted) / predicted. Bytes are counted at the "
            "call sites of the collectives, so they should agree exactly."), figure_id="fig-runs"))
    notes = [f"run {i}: {run.prediction_note}" for i, run in enumerate(runs, start=1) if run.prediction_note]
    notes += [f"run {i}: {failure}" for i, run in enumerate(runs, start=1) for failure in run.failures]
    if notes:
        parts.append(tag("ul", join(tag("li", note) for note in notes)))
    return section("runs", "Measured runs", *parts)


def _quantity(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value:,.0f} B ({format_bytes(value)})"
    return format_seconds(value)


def _lines(texts: Sequence[str]) -> list[object]:
    """Texts separated by line breaks (each escaped)."""
    out: list[object] = []
    for i, text in enumerate(texts):
        out += [Raw("<br>"), text] if i else [text]
    return out


def assumptions_section(*, model: ModelSpec, hardware: HardwareProfile) -> Raw:
    profile = table(["quantity", "value", "source"],
                    [[row.name, row.value, join(_lines(row.sources))] for row in profile_rows(hardware)])
    conventions = tag("dl", join(join([tag("dt", tag("strong", name)), tag("dd", text)])
                                 for name, text in CONVENTIONS))
    model_sources = (tag("ul", join(tag("li", s) for s in model.sources)) if model.sources
                     else tag("p", "The model spec gives no source."))
    return section("assumptions", "Assumptions",
                   tag("h3", f"Hardware profile {hardware.name}"), profile,
                   tag("h3", "Conventions"), conventions,
                   tag("h3", f"Model {model.name}: sources of the architecture"), model_sources)
