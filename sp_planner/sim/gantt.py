"""Gantt chart of a simulated step: one representative rank per pipeline stage (matplotlib).

Top panel: the whole step, one row per stage and stream, blocks of forward/backward per
micro-batch. Bottom panels: the op-level detail of layer 0 of the first stage, forward and
backward of micro-batch 0, where ring steps overlapping their transfers and blocking
all-to-alls show.

`gantt_figure` is the one drawing code path: sp-simulate saves it to a file (`write_gantt`), the
HTML report renders it to inline SVG (sp_planner.report.plots_sim). The figure is not registered
with pyplot, so nothing global is left behind.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sp_planner import figure_margins as margins
from sp_planner.destination import write_text
from sp_planner.figure_mark import figure_metadata
from sp_planner.sim.result import SimResult, TimelineEvent

COLORS = {
    "forward": "#A6BDDB", "backward": "#55A868", "gemm": "#4C72B0", "attention": "#8172B2",
    "recompute_gemm": "#937860", "recompute_attention": "#937860", "recompute_attention_": "#937860",
    "recompute_elementwise": "#937860",
    "ring_comm": "#C44E52", "ulysses_comm": "#DD8452", "tp_comm": "#DA8BC3", "pp_comm": "#8C8C8C",
    "dp_comm": "#CCB974", "dp_grad_tail": "#CCB974", "dp_grad_sync": "#CCB974", "dp_param_gather": "#CCB974",
    "optimizer": "#64B5CD",
}
STREAM_ROWS = ("compute", "comm", "dp_comm")
# Height of one stage/stream row (inches): room for an 8-10 pt tick label, so labels never
# overlap however many stages there are (pp 16 x 3 streams = 48 rows is about 12 inches).
ROW_IN = 0.24
DETAIL_IN = 2.4
WIDTH_IN = 12.0


def _rows(events: tuple[TimelineEvent, ...]) -> list[tuple[int, int, str]]:
    """(stage, rank, stream) rows present in the events, stage by stage."""
    return sorted({(e.stage, e.rank, e.stream) for e in events},
                  key=lambda r: (r[0], STREAM_ROWS.index(r[2])))


def _row_labels(rows: list[tuple[int, int, str]]) -> list[str]:
    """The y tick label of each (stage, rank, stream) row."""
    return [f"stage {s} (rank {rank}) {stream}" for s, rank, stream in rows]


def _draw(ax, events: tuple[TimelineEvent, ...], scale: float, xlabel: str, title: str) -> set[str]:
    rows = _rows(events)
    index = {(stage, stream): i for i, (stage, _, stream) in enumerate(rows)}
    # One broken_barh per (row, kind): a 4096-GPU step has thousands of micro-batch blocks.
    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.end_s > e.start_s:
            spans[(index[(e.stage, e.stream)], e.kind)].append((e.start_s * scale, (e.end_s - e.start_s) * scale))
    for (row, kind), bars in spans.items():
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=COLORS.get(kind, "#999999"), edgecolors="white",
                       linewidth=0.3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(_row_labels(rows))
    # A thin line between stages, so rows of one stage read as a group.
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            ax.axhline(i - 0.5, color="#d0d7de", linewidth=0.6)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first stage on top
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return {kind for _, kind in spans}


def _detail(result: SimResult) -> list[tuple[str, tuple[TimelineEvent, ...]]]:
    """Op-level events of stage 0, layer 0, micro-batch 0: forward and backward (when detail was simulated),
    with time measured from the first shown op.

    Data-parallel ops of the layer (a ZeRO-3 parameter gather prefetched at the start of the
    backward, seconds before the layer runs) are kept only when they end near the layer's own
    compute and communication; otherwise they would stretch the axis until the layer is a sliver.
    """
    panels = []
    for prefix, which in (("F0 L0 ", "forward"), ("B0 L0 ", "backward")):
        events = [e for e in result.detail_events if e.stage == 0 and e.name.startswith(prefix)]
        core = [e for e in events if e.stream != "dp_comm"] or events
        if not core:
            continue
        core_start = min(e.start_s for e in core)
        near = core_start - 0.5 * (max(e.end_s for e in core) - core_start)
        shown = [e for e in events if e.stream != "dp_comm" or e.end_s >= near]
        start = min(e.start_s for e in shown)
        panels.append((which, tuple(e.model_copy(update={"start_s": e.start_s - start, "end_s": e.end_s - start})
                                    for e in shown)))
    return panels


def time_unit(seconds: float) -> tuple[float, str]:
    """Scale and unit name for an axis spanning `seconds`."""
    if seconds < 1e-2:
        return 1e6, "µs"
    if seconds < 1:
        return 1e3, "ms"
    return 1.0, "s"


def gantt_figure(result: SimResult) -> Figure:
    """The chart as a matplotlib Figure (not registered with pyplot)."""
    step = result.step_time_s
    scale, unit = time_unit(step)
    detail = _detail(result)
    step_rows = _rows(result.events)
    top_in = 1.0 + ROW_IN * len(step_rows)
    legend_in = 0.7
    fig = Figure(figsize=(WIDTH_IN, top_in + (DETAIL_IN if detail else 0) + legend_in))
    grid = fig.add_gridspec(2 if detail else 1, max(len(detail), 1),
                            height_ratios=(top_in, DETAIL_IN) if detail else None)
    p = result.plan
    title = (f"step {step * scale:.2f} {unit}: dp {p.dp} pp {p.pp} tp {p.tp} ulysses {p.ulysses} "
             f"ring {p.ring}, {result.num_micro_batches} micro-batches")
    kinds = _draw(fig.add_subplot(grid[0, :]), result.events, scale, f"time from the start of the step ({unit})",
                  title)
    for col, (which, events) in enumerate(detail):
        dscale, dunit = time_unit(max(e.end_s for e in events))
        kinds |= _draw(fig.add_subplot(grid[1, col]), events, dscale, f"time from the first op shown ({dunit})",
                       f"stage 0, layer 0, micro-batch 0: {which}")
    handles = [Patch(color=COLORS.get(k, "#999999"), label=k) for k in sorted(kinds)]
    ncol = min(len(handles), 7)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False)
    # Fixed margins (no layout engine, which measured every label on each pass): room for the
    # stage labels left of each panel, a title above it, an axis below it and the legend at the bottom.
    labels = _row_labels(step_rows) + [label for _, events in detail for label in _row_labels(_rows(events))]
    left = margins.left_in(labels)
    legend = margins.legend_in(margins.legend_rows(len(handles), ncol))
    fig.subplots_adjust(**margins.place(
        fig, left=left, right=margins.RIGHT_IN, top=margins.title_in() + margins.EDGE_IN,
        bottom=margins.bottom_in() + legend, ncols=max(len(detail), 1), gap=left + margins.RIGHT_IN,
        nrows=2 if detail else 1, vgap=margins.bottom_in() + margins.title_in()))
    return fig


def gantt_bytes(result: SimResult, fmt: str) -> bytes:
    """The chart as PNG or SVG bytes (written by the caller, by sp_planner.destination's rules), with the
    tools' mark in their head (sp_planner.figure_mark), so a later sp-simulate knows the file for its own."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"Gantt output must be png or svg, got {fmt}")
    fig = gantt_figure(result)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110, metadata=figure_metadata(fmt))
    return buffer.getvalue()


def write_gantt(result: SimResult, path: Path) -> Path:
    """Write the chart; the format follows the suffix (.png or .svg)."""
    path = Path(path)
    if path.suffix not in (".png", ".svg"):
        raise ValueError(f"Gantt output must end in .png or .svg, got {path.name}")
    write_text(path, gantt_bytes(result, path.suffix[1:]))
    return path
