"""Rich tables of the ranked plans (--explain's breakdowns and pruning: present.breakdown)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from sp_planner.estimate import PlanEstimate
from sp_planner.plan import ParallelPlan
from sp_planner.present.fit import CONTINUED, greedy_groups, longest_word
from sp_planner.present.labels import FULL_SQUARE_MEGATRON, FULL_SQUARE_MFU, pp_cell, pp_group_legend
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import GIB, format_seconds, format_tflops


# --wide/--explain: throughput, TFLOPS per GPU executed, and the full-square model MFU.
WIDE_COLUMNS: tuple[str, ...] = ("tokens/s", "TFLOPS", FULL_SQUARE_MFU)


def memory_gib(est: PlanEstimate, hardware: HardwareProfile) -> str:
    """'61.2/80': peak GiB per GPU against the HBM."""
    return f"{est.memory_peak_bytes / GIB:.1f}/{hardware.hbm_bytes / GIB:.3g}"


def plans_table(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool = False,
                title: str = "Ranked plans (best first)", outcome: bool = True) -> Table:
    """The ranked plans: every degree, memory, step time and the share of peak FLOP/s the GPU runs,
    within 80 columns; `wide` adds tokens/s, TFLOPS and the full-square model MFU (within 120 columns).
    Without `outcome` the columns after the step (simulated step, % peak, fits) are left to
    `outcome_table` (a MoE plan's expert degrees on 80 columns).

    "% peak" counts the FLOPs the hardware executes (causal attention as run, recompute included;
    sp_planner.cost.flops.hardware_flops_per_step). The "model MFU (full square)" counts the whole
    attention square and no recompute (present.labels.FULL_SQUARE_MFU), so it can exceed what the
    GPU does; it is shown by that name.
    """
    columns = plan_columns(ranked, hardware, wide=wide, outcome=outcome)
    return _columns_table(ranked, _titled(ranked, title), columns)


class PlanColumn(NamedTuple):
    """One column of the ranked table: its header, a cell per plan, and the legend it needs (or None)."""

    name: str
    cells: tuple[str, ...]
    legend: str | None = None


def plan_columns(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool,
                 outcome: bool) -> list[PlanColumn]:
    """Every column of `plans_table` after '#', in order, with its cells and legend."""
    simulated = outcome and _simulated(ranked)
    # "fits" only says something when a row does not fit (those rows are also red).
    show_fits = outcome and _show_fits(ranked, wide)
    # Expert degrees only where a plan has them (MoE models).
    experts = any(est.plan.ep > 1 or est.plan.etp > 1 for est in ranked)
    # Precision: a column only when the plans differ (--precision auto), else in the title.
    mixed = len({est.plan.precision for est in ranked}) > 1
    # Non-default choices ride in the ring and ZeRO cells; the legend says what they mean.
    odd = zero_ring_legend(ranked)
    legends = _outcome_legends(ranked, peak=outcome, wide=wide)
    peak_legend = next((text for text in legends if text == LOW_PRECISION_PEAK_LEGEND), None)
    mfu_legend = next((text for text in legends if text == MODEL_MFU_LEGEND), None)

    def column(name: str, cell: Callable[[PlanEstimate], str], legend: str | None = None) -> PlanColumn:
        return PlanColumn(name, tuple(cell(est) for est in ranked), legend)

    columns = [
        column("tp", lambda e: str(e.plan.tp)),
        column("pp", lambda e: pp_cell(e.plan), pp_group_legend([e.plan for e in ranked])),
        column("dp", lambda e: str(e.plan.dp)),
        column("ulysses", lambda e: str(e.plan.ulysses)),
        column("ring", lambda e: ring_cell(e.plan), odd),
        *((column("ep", lambda e: str(e.plan.ep)), column("etp", lambda e: str(e.plan.etp))) if experts else ()),
        column("ZeRO", lambda e: zero_cell(e.plan), odd),
        column("recompute", lambda e: e.plan.recompute),
        column("micro", lambda e: str(e.plan.micro_batch)),
        *((column("prec", lambda e: e.plan.precision),) if mixed else ()),
        column("GiB/GPU", lambda e: memory_gib(e, hardware)),
        column("step", lambda e: format_seconds(e.step_time_s)),
        *((column("sim step", _sim_cell),) if simulated else ()),
    ]
    if wide and outcome:
        rows = [_wide_cells(est) for est in ranked]
        columns += [PlanColumn(name, tuple(row[i] for row in rows), mfu_legend if name == WIDE_COLUMNS[-1] else None)
                    for i, name in enumerate(WIDE_COLUMNS)]
    if outcome:
        columns.append(column("% peak", lambda e: f"{e.hardware_mfu:.1%}", peak_legend))
    if show_fits:
        columns.append(column("fits", lambda e: "yes" if e.fits else "no"))
    return columns


def _titled(ranked: Sequence[PlanEstimate], title: str) -> str:
    """The title, with the GEMM precision when every plan shares one other than bf16."""
    precisions = {est.plan.precision for est in ranked}
    if len(precisions) == 1 and precisions != {"bf16"}:
        # One FP8 recipe per search (Pins): current scaling as NVIDIA names it, FP8-CS.
        current = ("-cs" if any(est.plan.fp8_current for est in ranked) else
                   "-block" if any(est.plan.fp8_blockwise for est in ranked) else "")
        return f"{title}, {next(iter(precisions))}{current} GEMMs"
    return title


def _columns_table(ranked: Sequence[PlanEstimate], title: str, columns: Sequence[PlanColumn]) -> Table:
    """'#' and `columns`, one space between columns (the box's blank divider, no padding), red rows
    for plans that do not fit, and the columns' legends under the table."""
    # At least as wide as the title's longest word, which would fold mid-word ("continu/ed") in a
    # column group narrower than it.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False,
                  min_width=longest_word(title))
    for name in ("#", *(c.name for c in columns)):
        table.add_column(name, justify="left" if name in ("recompute", "fits") else "right", no_wrap=True)
    for rank, est in enumerate(ranked):
        table.add_row(str(rank + 1), *(c.cells[rank] for c in columns), style=None if est.fits else "red")
    shown = list(dict.fromkeys(c.legend for c in columns if c.legend))
    outcome = (LOW_PRECISION_PEAK_LEGEND, MODEL_MFU_LEGEND)
    legends = [text for text in shown if text not in outcome] + [text for text in outcome if text in shown]
    if legends:
        table.caption, table.caption_justify = "\n".join(legends), "left"
    return table


def packed_tables(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool, title: str,
                  fits: Callable[[Table], bool]) -> tuple[Table, ...]:
    """The ranked table's columns in as few tables as `fits` allows, in order, each led by '#'
    (a terminal too narrow for even the degrees beside memory and step: 60 columns). A column
    wider than the console alone still gets a table of its own."""
    columns = plan_columns(ranked, hardware, wide=wide, outcome=True)

    def lay_out(group: list[PlanColumn]) -> Table | None:
        table = _columns_table(ranked, "", group)
        return table if fits(table) else None

    first = _titled(ranked, title)
    return tuple(_columns_table(ranked, first if i == 0 else CONTINUED, group)
                 for i, (group, _) in enumerate(greedy_groups(columns, lay_out)))


def _outcome_legends(ranked: Sequence[PlanEstimate], *, peak: bool, wide: bool) -> list[str]:
    """The legends of the columns after the step that a table shows: % peak's under low precision
    (`peak`), and the model MFU's (a `wide` column) where the full-square count passes 100%."""
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
    tflops = format_tflops(est.hardware_tflops_per_gpu, 0, thousands=False)
    return f"{est.tokens_per_s:,.0f}", tflops, model_mfu_cell(est)


def outcome_table(ranked: Sequence[PlanEstimate], *, wide: bool, outcome: bool) -> Table:
    """By rank, what `plans_table` leaves out on a narrow console: the wide columns when `wide`,
    and with `outcome` the simulated step, % peak and fits (80 columns hold this and the narrow
    table, one under the other)."""
    title = "Throughput of the ranked plans" if wide else "Outcome by rank"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False,
                  min_width=longest_word(title))
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


# The full-square model FLOPs count every layer's whole s x s attention square; a causal mask runs
# half of it and a sliding-window or chunked layer only its window, so at long context, where
# attention dominates the step, the count can pass the GPU's peak.
MODEL_MFU_LEGEND = (f"model MFU -: the full attention square counted ({FULL_SQUARE_MEGATRON}) passes the "
                    "GPU's peak; a causal mask runs half the square, a window less; % peak is what runs")


def model_mfu_cell(est: PlanEstimate) -> str:
    """The full-square model MFU, or '-' where its count passes 100% (MODEL_MFU_LEGEND); the JSON
    keeps the figure (model_tflops_per_gpu, mfu)."""
    return "-" if est.mfu > 1 else f"{est.mfu:.1%}"


def ranked_tables(ranked: Sequence[PlanEstimate], hardware: HardwareProfile, *, wide: bool, title: str,
                  console: Console) -> tuple[Table, ...]:
    """`plans_table`, wide when asked, if it fits the console's width; else the narrow table and,
    when wide was asked, `outcome_table` with the wide columns under it; and if even the narrow
    table is too wide (a MoE plan's expert degrees beside a fits or simulated column), the degrees
    alone with every column after the step under them; narrower still (60 columns), `packed_tables`.
    Never a squeezed column."""
    def fits(table: Table) -> bool:
        # Measured without the console's own limit (Measurement.get clamps to the width it is given).
        return Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width

    if wide:
        table = plans_table(ranked, hardware, wide=True, title=title)
        if fits(table):
            return (table,)
    narrow = plans_table(ranked, hardware, title=title)
    tables: tuple[Table, ...]
    if fits(narrow):
        tables = (narrow, outcome_table(ranked, wide=True, outcome=False)) if wide else (narrow,)
    else:
        tables = (plans_table(ranked, hardware, title=title, outcome=False),
                  outcome_table(ranked, wide=wide, outcome=True))
    tables = (*tables[:1], *(_unfolded_annotations(table, console.width) for table in tables[1:]))
    if all(fits(table) for table in tables):
        return tables
    return packed_tables(ranked, hardware, wide=wide, title=title, fits=fits)


def _unfolded_annotations(table: Table, width: int) -> Table:
    """`table` with its title and legends wrapped to the console's `width` rather than to its own:
    the outcome table is a few columns wide ('#', '% peak'), and Rich folds its title and legends
    to that width, a word or two a line."""
    for attr in ("title", "caption"):
        text = getattr(table, attr)
        if isinstance(text, str) and text:
            lines = [wrapped for line in text.splitlines() for wrapped in textwrap.wrap(line, width) or [""]]
            setattr(table, attr, Text("\n".join(lines), no_wrap=True, overflow="ignore"))
    return table


# Non-default choices ride in the ring and ZeRO cells, so 80 columns still hold the table; the
# legend names those the shown plans use (zero_ring_legend), all of them at most, each by the
# first shown cell that has it.
def _ring_allgather_legend(cell: str) -> str:
    return f"ring {cell}: all-gather CP"


def _zero_replicas_legend(zero: int, replicas: int) -> str:
    return f"{zero}r{replicas}: {replicas} HSDP replicas"


RING_ALLGATHER_LEGEND = _ring_allgather_legend("4ag")
ZERO_KEPT_LEGEND = "3k: parameters kept from forward to backward"
ZERO_REPLICAS_LEGEND = _zero_replicas_legend(3, 2)
ZERO_RING_LEGEND = f"{RING_ALLGATHER_LEGEND}; ZeRO {ZERO_KEPT_LEGEND}, {ZERO_REPLICAS_LEGEND}"


def zero_ring_legend(ranked: Sequence[PlanEstimate]) -> str | None:
    """What the ring and ZeRO cells' suffixes in `ranked` mean: only the suffixes they show, each
    with the first shown plan's cell as its example (a table of '8ag' and '3r4' cells is not told
    about '4ag' and '3r2: 2 HSDP replicas')."""
    gathered = next((cell for cell in (ring_cell(e.plan) for e in ranked) if cell.endswith("ag")), None)
    zero = zero_legend(ranked)
    parts = ([_ring_allgather_legend(gathered)] if gathered else []) + ([f"ZeRO {zero}"] if zero else [])
    return "; ".join(parts) or None


def zero_legend(ranked: Sequence[PlanEstimate]) -> str | None:
    """What the ZeRO cells' suffixes (zero_cell) in `ranked` mean: only the suffixes they show, the
    replicas' with the first shown plan's count."""
    kept = any(not e.plan.reshard_after_forward for e in ranked)
    replicated = next((e.plan for e in ranked if e.plan.dp_replicate > 1), None)
    zero = (([ZERO_KEPT_LEGEND] if kept else [])
            + ([_zero_replicas_legend(replicated.zero, replicated.dp_replicate)] if replicated else []))
    return ", ".join(zero) or None
# FP8 and MXFP8 plans' "% peak" keeps the BF16 peak (the JSON's hardware_mfu): their GEMMs run at
# up to twice it, so the share can pass 100%.
LOW_PRECISION_PEAK_LEGEND = "% peak: executed FLOPs over the BF16 peak (FP8 GEMMs: up to 2x)"


def ring_cell(plan: ParallelPlan) -> str:
    return f"{plan.ring}ag" if plan.ring > 1 and plan.allgather else str(plan.ring)


def zero_cell(plan: ParallelPlan) -> str:
    kept = "" if plan.reshard_after_forward else "k"
    replicas = f"r{plan.dp_replicate}" if plan.dp_replicate > 1 else ""
    return f"{plan.zero}{kept}{replicas}"
