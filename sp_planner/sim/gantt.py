"""Gantt chart of a simulated step: one representative rank per pipeline stage (matplotlib, Agg).

Top panel: the whole step, one row per stage and stream, blocks of forward/backward per
micro-batch. Bottom panels: the op-level detail of layer 0 of the first stage, forward and
backward of micro-batch 0, where ring steps overlapping their transfers and blocking
all-to-alls show.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from matplotlib.patches import Patch  # noqa: E402

from sp_planner.sim.result import SimResult, TimelineEvent  # noqa: E402

COLORS = {
    "forward": "#A6BDDB", "backward": "#55A868", "gemm": "#4C72B0", "attention": "#8172B2",
    "recompute_gemm": "#937860", "recompute_attention": "#937860", "recompute_attention_": "#937860",
    "ring_comm": "#C44E52", "ulysses_comm": "#DD8452", "tp_comm": "#DA8BC3", "pp_comm": "#8C8C8C",
    "dp_comm": "#CCB974", "dp_grad_tail": "#CCB974", "dp_param_gather": "#CCB974", "optimizer": "#64B5CD",
}
STREAM_ROWS = ("compute", "comm", "dp_comm")


def _rows(events: tuple[TimelineEvent, ...]) -> list[tuple[int, str]]:
    return sorted({(e.stage, e.stream) for e in events}, key=lambda r: (r[0], STREAM_ROWS.index(r[1])))


def _draw(ax, events: tuple[TimelineEvent, ...], scale: float, unit: str, title: str) -> set[str]:
    rows = _rows(events)
    index = {row: i for i, row in enumerate(rows)}
    kinds: set[str] = set()
    for e in events:
        if e.end_s <= e.start_s:
            continue
        color = COLORS.get(e.kind, "#999999")
        kinds.add(e.kind)
        ax.broken_barh([(e.start_s * scale, (e.end_s - e.start_s) * scale)], (index[(e.stage, e.stream)] - 0.4, 0.8),
                       facecolors=color, edgecolors="white", linewidth=0.3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"stage {s} {stream}" for s, stream in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"time ({unit})")
    ax.set_title(title, fontsize=10)
    return kinds


def write_gantt(result: SimResult, path: Path) -> Path:
    """Write the chart; the format follows the suffix (.png or .svg)."""
    path = Path(path)
    if path.suffix not in (".png", ".svg"):
        raise ValueError(f"Gantt output must end in .png or .svg, got {path.name}")
    step = result.step_time_s
    scale, unit = (1e3, "ms") if step < 10 else (1.0, "s")
    detail = [tuple(e for e in result.detail_events if e.stage == 0 and e.name.startswith(prefix))
              for prefix in ("F0 L0 ", "B0 L0 ")]
    detail = [d for d in detail if d]
    height = 1.2 + 0.35 * len(_rows(result.events)) + (2.5 if detail else 0)
    fig = plt.figure(figsize=(12, height))
    grid = fig.add_gridspec(2 if detail else 1, max(len(detail), 1), height_ratios=(2, 1) if detail else None)
    p = result.plan
    title = (f"step {step * scale:.2f} {unit}: dp {p.dp} pp {p.pp} tp {p.tp} ulysses {p.ulysses} "
             f"ring {p.ring}, {result.num_micro_batches} micro-batches")
    kinds = _draw(fig.add_subplot(grid[0, :]), result.events, scale, unit, title)
    for col, events in enumerate(detail):
        start = min(e.start_s for e in events)
        shifted = tuple(e.model_copy(update={"start_s": e.start_s - start, "end_s": e.end_s - start}) for e in events)
        span = max(e.end_s for e in shifted)
        dscale, dunit = (1e6, "µs") if span < 1e-2 else (1e3, "ms")
        which = "forward" if col == 0 else "backward"
        kinds |= _draw(fig.add_subplot(grid[1, col]), shifted, dscale, dunit, f"stage 0, layer 0, micro-batch 0: {which}")
    handles = [Patch(color=COLORS.get(k, "#999999"), label=k) for k in sorted(kinds)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
