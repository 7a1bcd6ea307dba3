"""Figures over the whole search space: step-time heatmaps over ulysses x ring, and the Pareto front.

Both take the search frame (one row per candidate) and return an inline <svg> string.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sp_planner.figure_margins import (
    EDGE_IN,
    RIGHT_IN,
    bottom_in,
    left_in,
    legend_in,
    place,
    tick_labels,
)
from sp_planner.present.labels import reason_key
from sp_planner.report.svg import new_figure, render_svg
from sp_planner.units import GIB

# Above this many columns the per-cell numbers would crowd; the colour bar still reads.
_MAX_ANNOTATED_COLUMNS = 24
# The Pareto scatter draws one point per cell of this grid over the plotted range (finer than its
# markers), as one embedded image: tens of thousands of fitting plans would otherwise be as many
# SVG elements, megabytes that a browser takes seconds to render.
_SCATTER_BINS = (240, 120)


def heatmap_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (tp, ulysses, ring) the search evaluated: the best fitting step time, or why none fits.

    Columns: tp, ulysses, ring, best_step_time_s (NaN when nothing fits), label (the rule key of the
    infeasible cell, 'oom' winning over rule breaks since it is the nearer miss; '' when one fits).
    """
    keys = ["tp", "ulysses", "ring"]
    fits = frame["fits"].astype(bool)
    # Only the columns read (frame[fits] would copy every column of the fitting rows).
    best = frame.loc[fits, [*keys, "step_time_s"]].groupby(keys)["step_time_s"].min().rename("best_step_time_s")
    reasons = frame.loc[~fits, "reason"]
    # A few hundred distinct reasons among 100,000s of rows: each one's rule found once.
    rules = frame.loc[~fits, keys].assign(rule=reasons.map({r: reason_key(r) for r in reasons.unique()}))
    label = _cell_rules(rules, keys)
    cells = pd.concat([best, label], axis=1).reset_index()
    cells["label"] = cells["label"].where(cells["best_step_time_s"].isna(), "").fillna("")
    return cells.sort_values(keys, kind="stable").reset_index(drop=True)


def _cell_rules(rules: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per cell (`keys`), the rule named in it: 'oom' when any candidate ran out of memory (the nearer
    miss), else the most frequent rule, ties broken by name so the figure does not depend on row order."""
    counts = rules.groupby([*keys, "rule"]).size().rename("count").reset_index()
    counts["oom"] = counts["rule"] == "oom"
    chosen = counts.sort_values([*keys, "oom", "count", "rule"], ascending=[True] * len(keys) + [False, False, True],
                                kind="stable").drop_duplicates(keys)
    return chosen.set_index(keys)["rule"].astype(str).rename("label")


def heatmap_axes(cells: pd.DataFrame) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """The tp, ulysses and ring degrees worth drawing, and those left out.

    A degree is left out when every candidate with it breaks a hard rule other than memory (say
    ulysses 128 with 64 heads): its cells would all say 'heads'. Cells that do appear still show
    the rule that removed them.
    """
    costed = cells[(cells["label"] == "") | (cells["label"] == "oom")]
    shown, omitted = {}, {}
    for axis in ("tp", "ulysses", "ring"):
        every = sorted(int(v) for v in cells[axis].unique())
        keep = set(int(v) for v in costed[axis].unique())
        shown[axis] = [v for v in every if v in keep] or every
        omitted[axis] = [v for v in every if v not in shown[axis]]
    return shown, omitted


def heatmap_svg(frame: pd.DataFrame, *, prefix: str = "heat") -> tuple[str, dict[str, list[int]]]:
    """Best predicted step time per (ulysses, ring), one panel per TP degree, shared colour scale.

    Returns the <svg> and the degrees left out (see `heatmap_axes`), for the caption.
    """
    cells = heatmap_cells(frame)
    shown, omitted = heatmap_axes(cells)
    tps, ulysses, rings = shown["tp"], shown["ulysses"], shown["ring"]
    cells = cells[cells["tp"].isin(tps) & cells["ulysses"].isin(ulysses) & cells["ring"].isin(rings)]
    times = cells["best_step_time_s"].dropna()
    # Two panels per row while a panel is narrow; one per row for wide ring ranges.
    ncols = 2 if (len(tps) > 1 and len(rings) <= 8) else 1
    nrows = -(-len(tps) // ncols)
    # Fixed geometry in inches (no layout engine: it would measure every cell label again).
    cell_w, cell_h = max(0.6, 2.4 / len(rings)), 0.3
    panel_w, panel_h = cell_w * len(rings), cell_h * len(ulysses)
    # The top margin holds the colour bar, drawn only when some plan fits.
    left, right, top, bottom, gap_x, gap_y = 0.75, 0.3, (1.3 if len(times) else 0.45), 0.55, 0.95, 0.9
    width = left + ncols * panel_w + (ncols - 1) * gap_x + right
    height = top + nrows * panel_h + (nrows - 1) * gap_y + bottom

    def draw():
        fig = Figure(figsize=(width, height))
        norm = _norm(times)
        image = None
        for i, tp in enumerate(tps):
            row, col = divmod(i, ncols)
            x0 = left + col * (panel_w + gap_x)
            y0 = height - top - row * (panel_h + gap_y) - panel_h
            ax = fig.add_axes((x0 / width, y0 / height, panel_w / width, panel_h / height))
            image = _panel(ax, cells[cells["tp"] == tp], ulysses, rings, norm)
            ax.set_title(f"TP = {tp}", loc="left")
            ax.set_ylabel("Ulysses degree")
            ax.set_xlabel("Ring degree")
        if image is not None and len(times):
            # On top, so that it is seen before scrolling through the panels.
            bar_w = min(width - left - right, 4.5)
            cax = fig.add_axes((left / width, (height - 0.62) / height, bar_w / width, 0.13 / height))
            bar = fig.colorbar(image, cax=cax, orientation="horizontal")
            cax.xaxis.set_ticks_position("top")
            cax.xaxis.set_label_position("top")
            bar.set_label("best predicted step time (s)")
            if isinstance(norm, LogNorm):
                cax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                cax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                cax.xaxis.set_minor_formatter(NullFormatter())
        return fig

    svg = render_svg(draw, prefix=prefix,
                     title="Best predicted step time over Ulysses x Ring, one panel per TP degree")
    return svg, omitted


def _norm(times: pd.Series):
    if times.empty:
        return Normalize(0.0, 1.0)
    low, high = float(times.min()), float(times.max())
    if high > 10 * low > 0:
        return LogNorm(low, high)
    return Normalize(low, high if high > low else low * 1.01 + 1e-12)


def _panel(ax, cells: pd.DataFrame, ulysses: list, rings: list, norm):
    grid = np.full((len(ulysses), len(rings)), np.nan)
    row_of = {u: i for i, u in enumerate(ulysses)}
    col_of = {r: j for j, r in enumerate(rings)}
    for cell in cells.itertuples(index=False):
        grid[row_of[cell.ulysses], col_of[cell.ring]] = cell.best_step_time_s
    # Infeasible and never-evaluated cells are drawn on a grey background below the colour mesh.
    ax.set_facecolor("#f3f3f3")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", norm=norm, aspect="auto",
                      origin="lower", interpolation="nearest")
    annotate = len(rings) <= _MAX_ANNOTATED_COLUMNS
    size = 7 if len(rings) <= 14 else 5.5
    infeasible = []
    # The colour of each cell's number: one call of the norm for the panel (one per cell took 0.1 s).
    shades = np.ma.filled(norm(cells["best_step_time_s"].to_numpy(dtype=float)), np.nan)
    for cell, shade in zip(cells.itertuples(index=False), shades):
        y, x = row_of[cell.ulysses], col_of[cell.ring]
        if cell.label:
            infeasible.append((x, y))
            label = str(cell.label)
            text = label.upper() if label == "oom" else label
            if annotate:
                ax.text(x, y, text, ha="center", va="center", fontsize=size, color="#9b1c1c")
        elif annotate:
            value = float(cell.best_step_time_s)  # type: ignore[arg-type]  # itertuples rows are untyped
            ax.text(x, y, _short_seconds(value), ha="center", va="center", fontsize=size,
                    color="white" if shade > 0.55 else "black")
    if infeasible:
        ax.add_collection(_hatched(infeasible))
    ax.set_xticks(range(len(rings)), [str(r) for r in rings])
    ax.set_yticks(range(len(ulysses)), [str(u) for u in ulysses])
    ax.tick_params(length=0)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    return image


def _hatched(cells: list[tuple[int, int]]):
    """The infeasible cells (x, y) as one hatched collection: one SVG path instead of an element per
    cell (hundreds in a 4096-GPU heatmap), drawn the same."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    return PatchCollection([Rectangle((x - 0.5, y - 0.5), 1, 1) for x, y in cells], facecolor="#fbe9e9",
                           edgecolor="#e0b4b4", hatch="///", linewidth=0.0)


def _short_seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Rows of `points` (columns memory_peak_bytes, step_time_s) that no other row beats on both.

    Sorted by memory; a row is on the front when its step time is strictly below every row that
    needs no more memory than it does.
    """
    ordered = points.sort_values(["memory_peak_bytes", "step_time_s"], kind="stable")
    best_so_far = ordered["step_time_s"].cummin().shift(fill_value=np.inf)
    return ordered[ordered["step_time_s"] < best_so_far]


def pareto_svg(frame: pd.DataFrame, *, hbm_bytes: float, chosen_index: object | None,
               prefix: str = "pareto") -> tuple[str, pd.DataFrame]:
    """Scatter of peak memory against step time for every fitting plan, with the front marked.

    Returns the <svg> and the front's rows (numbered 1, 2, ... in the figure, in memory order).
    `chosen_index` is the frame index of the recommended plan, starred when it fits.
    """
    # The two plotted columns of the fitting rows, and whole rows for the front only: copying and
    # sorting every column of the ~100,000 fitting plans of a 4096-GPU search took a tenth of a second.
    fitting = frame.loc[frame["fits"].to_numpy(dtype=bool), ["memory_peak_bytes", "step_time_s"]]
    front = frame.loc[pareto_front(fitting).index]
    times = fitting["step_time_s"]
    log_y = bool(len(times)) and float(times.max()) > 10 * float(times.min())
    points = _one_per_bin(fitting, log_y=log_y)

    def draw():
        fig = new_figure(9.0, 4.8)
        ax = fig.subplots()
        ax.scatter(points["memory_peak_bytes"] / GIB, points["step_time_s"], s=9, color="#9aa5b1",
                   alpha=0.6, linewidths=0, label=f"plans that fit ({len(fitting)})", rasterized=True)
        ax.step(front["memory_peak_bytes"] / GIB, front["step_time_s"], where="post", color="#1f6feb",
                linewidth=1.2)
        ax.scatter(front["memory_peak_bytes"] / GIB, front["step_time_s"], s=26, color="#1f6feb",
                   zorder=3, label=f"Pareto front ({len(front)})")
        # Numbers instead of plan names (the table under the figure names each front plan),
        # skipped where they would crowd a number already placed.
        for number, (x, y) in _spaced_labels(front, fitting, log_y=log_y):
            ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color="#1f6feb")
        if chosen_index is not None and chosen_index in fitting.index:
            chosen = fitting.loc[chosen_index]
            ax.scatter([chosen["memory_peak_bytes"] / GIB], [chosen["step_time_s"]], marker="*", s=160,
                       color="#d9480f", zorder=4, label="recommended plan")
        ax.axvline(hbm_bytes / GIB, color="#c92a2a", linestyle="--", linewidth=1,
                   label=f"HBM capacity ({hbm_bytes / GIB:.0f} GiB)")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("predicted peak memory per GPU (GiB)")
        ax.set_ylabel("predicted step time (s)")
        ax.grid(True, linewidth=0.4, alpha=0.5)
        # Placed once its y tick labels are known: room for them, the axis labels and the legend on top.
        fig.subplots_adjust(**place(fig, left=left_in(tick_labels(ax.yaxis), ylabel=True), right=RIGHT_IN,
                                    top=EDGE_IN + legend_in(1), bottom=bottom_in()))
        fig.legend(loc="upper center", ncol=4, frameon=False)
        return fig

    svg = render_svg(draw, prefix=prefix, title="Peak memory against step time over every fitting plan")
    return svg, front


def _one_per_bin(fitting: pd.DataFrame, *, log_y: bool) -> pd.DataFrame:
    """The first row of `fitting` in each cell of a _SCATTER_BINS grid over memory x step time
    (log step time when the axis is logarithmic): the same picture, a bounded number of points."""
    if len(fitting) <= _SCATTER_BINS[0]:
        return fitting
    x = fitting["memory_peak_bytes"].to_numpy(dtype=float)
    y = fitting["step_time_s"].to_numpy(dtype=float)
    y = np.log10(y) if log_y else y
    cells = []
    for values, bins in ((x, _SCATTER_BINS[0]), (y, _SCATTER_BINS[1])):
        span = max(float(values.max() - values.min()), 1e-12)
        cells.append(np.minimum(((values - values.min()) / span * bins).astype(np.int64), bins - 1))
    _, first = np.unique(cells[0] * _SCATTER_BINS[1] + cells[1], return_index=True)
    return fitting.iloc[np.sort(first)]


def _spaced_labels(front: pd.DataFrame, fitting: pd.DataFrame, *, log_y: bool, min_gap: float = 0.035):
    """(number, (x GiB, y s)) of the front points whose label keeps `min_gap` (a fraction of the
    plotted range of all fitting plans, about the axes) from every label placed before it."""
    def scaled(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        y = points["step_time_s"].to_numpy(dtype=float)
        return points["memory_peak_bytes"].to_numpy(dtype=float) / GIB, np.log10(y) if log_y else y

    if len(front) == 0:
        return []
    all_x, all_y = scaled(fitting)
    x, y = scaled(front)
    span_x = max(float(all_x.max() - all_x.min()), 1e-12)
    span_y = max(float(all_y.max() - all_y.min()), 1e-12)
    placed: list[tuple[float, float]] = []
    kept = []
    for i, (px, py) in enumerate(zip((x - all_x.min()) / span_x, (y - all_y.min()) / span_y)):
        if all(abs(px - qx) > min_gap or abs(py - qy) > min_gap for qx, qy in placed):
            placed.append((px, py))
            kept.append((i + 1, (float(front["memory_peak_bytes"].iloc[i] / GIB),
                                 float(front["step_time_s"].iloc[i]))))
    return kept
