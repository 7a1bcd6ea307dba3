"""Rich tables of ranked plans and, for --explain, of the winner's breakdowns and the pruning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from sp_planner.estimate import PlanEstimate
from sp_planner.plan import ParallelPlan
from sp_planner.present.labels import MEMORY_LABELS, TIME_LABELS
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import GIB, format_bytes, format_seconds


# What each prune rule means (keys from sp_planner.plan.violations and the search).
PRUNE_REASONS: dict[str, str] = {
    "heads": "num_heads not divisible by tp*ulysses",
    "kv_heads": "num_kv_heads and tp*ulysses do not divide one another",
    "seq_len": "seq_len not divisible by the sequence split (2*ring for zigzag x ulysses x tp)",
    "layers": "num_layers not divisible by pp",
    "batch": "global_batch not divisible by dp*micro_batch",
    "experts": "num_experts not divisible by ep (or ep/etp on a dense model)",
    "expert_grid": "ep*etp does not divide the GPUs of a pipeline stage",
    "ffn": "MLP width not divisible by tp (an expert's by etp)",
    "window_ring": "ring over sliding-window or chunked local layers (not modelled)",
    "offload": "CPU-offloaded layers not below num_layers",
    "oom": "peak memory above the GPU's HBM",
}


# --wide/--explain: throughput, TFLOPS per GPU executed, and the Megatron/PaLM model MFU (full
# attention square, no recompute; its TFLOPS are in the JSON as model_tflops_per_gpu).
WIDE_COLUMNS: tuple[str, ...] = ("tokens/s", "TFLOPS", "model MFU (Megatron)")


def memory_gib(est: PlanEstimate, hardware: HardwareProfile) -> str:
    """'61.2/80': peak GiB per GPU against the HBM."""
    return f"{est.memory_peak_bytes / GIB:.1f}/{hardware.hbm_bytes / GIB:.3g}"


def plans_table(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool = False,
                title: str = "Ranked plans (best first)", outcome: bool = True) -> Table:
    """The ranked plans: every degree, memory, step time and the share of peak FLOP/s the GPU runs,
    within 80 columns; `wide` adds tokens/s, TFLOPS and Megatron's model MFU (within 120 columns).
    Without `outcome` the columns after the step (simulated step, % peak, fits) are left to
    `outcome_table` (a MoE plan's expert degrees on 80 columns).

    "% peak" counts the FLOPs the hardware executes (causal attention as run, recompute included;
    sp_planner.cost.flops.hardware_flops_per_step). The Megatron/PaLM "model MFU" counts the full
    attention square and no recompute, so it can exceed what the GPU does; it is shown by that name.
    """
    # One space between columns (the box's blank divider, no padding): 80 columns hold every degree.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD,
                  padding=(0, 0), show_edge=False)
    simulated = outcome and _simulated(ranked)
    # "fits" only says something when a row does not fit (those rows are also red).
    show_fits = outcome and _show_fits(ranked, wide)
    # Expert degrees only where a plan has them (MoE models).
    experts = any(est.plan.ep > 1 or est.plan.etp > 1 for est in ranked)
    # Precision: a column only when the plans differ (--precision auto), else in the title.
    precisions = {est.plan.precision for est in ranked}
    mixed = len(precisions) > 1
    if not mixed and precisions and precisions != {"bf16"}:
        # One FP8 recipe per search (Pins): current scaling as NVIDIA names it, FP8-CS.
        current = ("-cs" if any(est.plan.fp8_current for est in ranked) else
                   "-block" if any(est.plan.fp8_blockwise for est in ranked) else "")
        title = f"{title}, {next(iter(precisions))}{current} GEMMs"
        table.title = title
    columns = ["#", "tp", "pp", "dp", "ulysses", "ring", *(("ep", "etp") if experts else ()), "ZeRO", "recompute",
               "micro", *(("prec",) if mixed else ()), "GiB/GPU", "step",
               *(("sim step",) if simulated else ()), *(WIDE_COLUMNS if wide and outcome else ()),
               *(("% peak",) if outcome else ()), *(("fits",) if show_fits else ())]
    for name in columns:
        table.add_column(name, justify="left" if name in ("recompute", "fits") else "right", no_wrap=True)
    for rank, est in enumerate(ranked, start=1):
        plan = est.plan
        sim_cell = () if not simulated else (_sim_cell(est),)
        wide_cells = () if not (wide and outcome) else _wide_cells(est)
        table.add_row(
            # pp 16 with 4 virtual stages per rank (interleaved 1F1B) reads "16v4".
            str(rank), str(plan.tp), f"{plan.pp}v{plan.vpp}" if plan.vpp > 1 else str(plan.pp), str(plan.dp),
            str(plan.ulysses), ring_cell(plan), *((str(plan.ep), str(plan.etp)) if experts else ()),
            zero_cell(plan), plan.recompute, str(plan.micro_batch),
            *((plan.precision,) if mixed else ()), memory_gib(est, hardware),
            format_seconds(est.step_time_s), *sim_cell, *wide_cells,
            *((f"{est.hardware_mfu:.1%}",) if outcome else ()),
            *(("yes" if est.fits else "no",) if show_fits else ()),
            style=None if est.fits else "red",
        )
    legends = []
    if any(ring_cell(e.plan) != str(e.plan.ring) or zero_cell(e.plan) != str(e.plan.zero) for e in ranked):
        legends.append(ZERO_RING_LEGEND)
    if outcome:
        legends += _outcome_legends(ranked, peak=True, wide=wide)
    if legends:
        table.caption = "\n".join(legends)
        table.caption_justify = "left"
    return table


def _outcome_legends(ranked: Sequence[PlanEstimate], *, peak: bool, wide: bool) -> list[str]:
    """The legends of the columns after the step that a table shows: % peak's under low precision
    (`peak`), and the model MFU's (a `wide` column) where Megatron's count passes 100%."""
    legends = []
    if peak and any(e.plan.precision != "bf16" for e in ranked):
        legends.append(LOW_PRECISION_PEAK_LEGEND)
    if wide and any(e.mfu > 1 for e in ranked):
        legends.append(MODEL_MFU_LEGEND)
    return legends


def _simulated(ranked: Sequence[PlanEstimate]) -> bool:
    return any(est.simulated_step_time_s is not None for est in ranked)


def _show_fits(ranked: Sequence[PlanEstimate], wide: bool) -> bool:
    return wide or not all(est.fits for est in ranked)


def _sim_cell(est: PlanEstimate) -> str:
    return "-" if est.simulated_step_time_s is None else format_seconds(est.simulated_step_time_s)


def _wide_cells(est: PlanEstimate) -> tuple[str, str, str]:
    return f"{est.tokens_per_s:,.0f}", f"{est.hardware_tflops_per_gpu:.0f}", model_mfu_cell(est)


def outcome_table(ranked: Sequence[PlanEstimate], *, wide: bool, outcome: bool) -> Table:
    """By rank, what `plans_table` leaves out on a narrow console: the wide columns when `wide`,
    and with `outcome` the simulated step, % peak and fits (80 columns hold this and the narrow
    table, one under the other)."""
    title = "Throughput of the ranked plans" if wide else "Outcome by rank"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    simulated, show_fits = outcome and _simulated(ranked), outcome and _show_fits(ranked, wide)
    columns = ("#", *(("sim step",) if simulated else ()), *(WIDE_COLUMNS if wide else ()),
               *(("% peak",) if outcome else ()), *(("fits",) if show_fits else ()))
    for name in columns:
        table.add_column(name, justify="left" if name == "fits" else "right", no_wrap=True)
    for rank, est in enumerate(ranked, start=1):
        table.add_row(str(rank), *((_sim_cell(est),) if simulated else ()), *(_wide_cells(est) if wide else ()),
                      *((f"{est.hardware_mfu:.1%}",) if outcome else ()),
                      *(("yes" if est.fits else "no",) if show_fits else ()), style=None if est.fits else "red")
    legends = _outcome_legends(ranked, peak=outcome, wide=wide)
    if legends:
        table.caption, table.caption_justify = "\n".join(legends), "left"
    return table


# Megatron's model FLOPs count every layer's full s x s attention square; a sliding-window or
# chunked layer computes only its window, so at long context the count can pass the GPU's peak.
MODEL_MFU_LEGEND = ("model MFU -: Megatron's count (full attention square) passes the GPU's peak for this "
                    "model's windowed attention; % peak is what runs")


def model_mfu_cell(est: PlanEstimate) -> str:
    """Megatron's model MFU, or '-' where its count passes 100% (MODEL_MFU_LEGEND); the JSON keeps
    the figure (model_tflops_per_gpu, mfu)."""
    return "-" if est.mfu > 1 else f"{est.mfu:.1%}"


def ranked_tables(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool, title: str,
                  console: Console) -> tuple[Table, ...]:
    """`plans_table`, wide when asked, if it fits the console's width; else the narrow table and,
    when wide was asked, `outcome_table` with the wide columns under it; and if even the narrow
    table is too wide (a MoE plan's expert degrees beside a fits or simulated column), the degrees
    alone with every column after the step under them (never a squeezed column)."""
    def fits(table: Table) -> bool:
        # Measured without the console's own limit (Measurement.get clamps to the width it is given).
        return Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width

    if wide:
        table = plans_table(ranked, hardware, wide=True, title=title)
        if fits(table):
            return (table,)
    narrow = plans_table(ranked, hardware, title=title)
    if fits(narrow):
        return (narrow, outcome_table(ranked, wide=True, outcome=False)) if wide else (narrow,)
    return (plans_table(ranked, hardware, title=title, outcome=False),
            outcome_table(ranked, wide=wide, outcome=True))


# Non-default choices ride in the ring and ZeRO cells, so 80 columns still hold the table.
ZERO_RING_LEGEND = "ring 4ag: all-gather CP; ZeRO 3k: parameters kept from forward to backward, 3r2: 2 HSDP replicas"
# FP8 and MXFP8 plans' "% peak" keeps the BF16 peak (the JSON's hardware_mfu): their GEMMs run at
# up to twice it, so the share can pass 100%.
LOW_PRECISION_PEAK_LEGEND = "% peak: executed FLOPs over the BF16 peak (FP8 GEMMs: up to 2x)"


def ring_cell(plan: ParallelPlan) -> str:
    return f"{plan.ring}ag" if plan.ring > 1 and plan.allgather else str(plan.ring)


def zero_cell(plan: ParallelPlan) -> str:
    kept = "" if plan.reshard_after_forward else "k"
    replicas = f"r{plan.dp_replicate}" if plan.dp_replicate > 1 else ""
    return f"{plan.zero}{kept}{replicas}"


def memory_table(est: PlanEstimate, hardware: HardwareProfile) -> Table:
    table = Table(title="Memory per GPU of the first plan", title_justify="left")
    table.add_column("part")
    table.add_column("size", justify="right")
    table.add_column("of HBM", justify="right")
    for name, num_bytes in est.memory.model_dump().items():
        table.add_row(MEMORY_LABELS.get(name, name), format_bytes(num_bytes), f"{num_bytes / hardware.hbm_bytes:.1%}")
    table.add_row("peak", format_bytes(est.memory_peak_bytes), f"{est.memory_peak_bytes / hardware.hbm_bytes:.1%}",
                  style="bold")
    return table


def time_table(est: PlanEstimate) -> Table:
    table = Table(title="Step time of the first plan", title_justify="left")
    table.add_column("part")
    table.add_column("time", justify="right")
    table.add_column("of step", justify="right")
    for name, seconds in est.time.model_dump().items():
        shown = format_seconds(seconds) if seconds else "0"
        table.add_row(TIME_LABELS.get(name, name), shown, f"{seconds / est.step_time_s:.1%}")
    table.add_row("step", format_seconds(est.step_time_s), "100.0%", style="bold")
    return table


def comm_table(est: PlanEstimate) -> Table:
    table = Table(title="Bytes sent per GPU per step by the first plan", title_justify="left")
    table.add_column("collective")
    table.add_column("bytes", justify="right")
    table.add_column("link")
    links = est.comm_links.model_dump()
    for name, num_bytes in est.comm_bytes.model_dump().items():
        table.add_row(name, format_bytes(num_bytes), links[name])
    return table


def prune_table(prune_counts: Mapping[str, int], candidates_evaluated: int) -> Table:
    table = Table(title=f"Pruned candidates (of {candidates_evaluated:,} evaluated)", title_justify="left")
    table.add_column("rule")
    table.add_column("pruned", justify="right")
    table.add_column("reason")
    for rule, count in sorted(prune_counts.items(), key=lambda item: -item[1]):
        table.add_row(rule, f"{count:,}", PRUNE_REASONS.get(rule, rule))
    return table
