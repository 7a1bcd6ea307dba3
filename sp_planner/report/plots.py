"""Figures about a few plans: memory breakdown against HBM, communication by kind and link,
and predicted against measured for executed runs. Each returns an inline <svg> string.

Plans are drawn as horizontal bars named by `plan_name`, best plan on top, so names of any
length stay readable however many GPUs the plan spans.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sp_planner.estimate import PlanEstimate
from sp_planner.figure_margins import EDGE_IN, RIGHT_IN, bottom_in, left_in, legend_in, legend_rows, place
from sp_planner.present.labels import COMM_LABELS, MEMORY_LABELS, plan_name
from sp_planner.report.svg import new_figure, render_svg
from sp_planner.units import GIB

# Colour-blind-safe qualitative palette (Okabe & Ito 2008), then two neutral greys.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
           "#555555")


def _bar_height(num_plans: int) -> float:
    return 1.4 + 0.32 * num_plans


def memory_bars_svg(estimates: Sequence[PlanEstimate], *, hbm_bytes: float, prefix: str = "mem") -> str:
    """Stacked peak-memory breakdown per plan, with the HBM capacity as a vertical line."""
    labels = [f"#{i} {plan_name(e.plan, compact=True)}" for i, e in enumerate(estimates, start=1)]

    def draw():
        fig = new_figure(10.0, _bar_height(len(estimates)) + 0.5)
        bottom = bottom_in() + legend_in(legend_rows(len(MEMORY_LABELS) + 1, 4))  # the axis, then the legend
        ax = fig.subplots(gridspec_kw=place(fig, left=left_in(labels, family="monospace"), right=RIGHT_IN,
                                            top=EDGE_IN, bottom=bottom))
        y = np.arange(len(estimates))
        left = np.zeros(len(estimates))
        for colour, (field, name) in zip(PALETTE, MEMORY_LABELS.items()):
            values = np.array([getattr(e.memory, field) for e in estimates]) / GIB
            ax.barh(y, values, left=left, color=colour, label=name, height=0.7)
            left += values
        ax.axvline(hbm_bytes / GIB, color="#c92a2a", linestyle="--", linewidth=1.2,
                   label=f"HBM capacity {hbm_bytes / GIB:.0f} GiB")
        _plan_axis(ax, labels)
        ax.set_xlabel("memory per GPU at the peak (GiB)")
        ax.set_xlim(0, max(hbm_bytes / GIB, float(left.max()) if len(left) else 0.0) * 1.05)
        fig.legend(loc="lower center", ncol=4, frameon=False)
        return fig

    return render_svg(draw, prefix=prefix, title="Memory breakdown of the top plans against HBM capacity")


def comm_bars_svg(estimates: Sequence[PlanEstimate], *, intra_kind: str, inter_kind: str,
                  prefix: str = "comm") -> str:
    """Bytes one GPU sends per step: by collective (left) and by link (right), per plan."""
    labels = [f"#{i} {plan_name(e.plan, compact=True)}" for i, e in enumerate(estimates, start=1)]
    link_names = {"intra": f"inside a node ({intra_kind})", "inter": f"across nodes ({inter_kind})"}

    def draw():
        fig = new_figure(10.0, _bar_height(len(estimates)) + 0.7)
        # Below: the collectives' legend (and the hatching's entry); above the right panel: the links'.
        bottom = bottom_in() + legend_in(legend_rows(len(COMM_LABELS) + 1, 4))
        by_kind, by_link = fig.subplots(1, 2, sharey=True, width_ratios=(3, 1.3), gridspec_kw=place(
            fig, left=left_in(labels, family="monospace"), right=RIGHT_IN, top=EDGE_IN + legend_in(2), bottom=bottom,
            ncols=2, gap=RIGHT_IN))
        y = np.arange(len(estimates))
        left = np.zeros(len(estimates))
        for colour, (kind, name) in zip(PALETTE, COMM_LABELS.items()):
            values = np.array([getattr(e.comm_bytes, kind) for e in estimates], dtype=float) / GIB
            inter = [getattr(e.comm_links, kind) == "inter" for e in estimates]
            bars = by_kind.barh(y, values, left=left, color=colour, label=name, height=0.7)
            for bar, crosses in zip(bars, inter):
                if crosses:
                    bar.set_hatch("////")
                    bar.set_edgecolor("white")
            left += values
        # An empty patch so the legend explains the hatching.
        by_kind.barh([0], [0], color="white", edgecolor="#333333", hatch="////",
                     label=f"hatched: crosses nodes ({inter_kind})")
        _plan_axis(by_kind, labels)
        by_kind.set_xlabel("bytes sent per GPU per step, by collective (GiB)")
        fig.legend(*by_kind.get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False)
        left = np.zeros(len(estimates))
        # Greys, so that links are not mistaken for collectives of the same colour.
        for colour, link in (("#b8b8b8", "intra"), ("#3a3a3a", "inter")):
            values = np.array([_link_bytes(e, link) for e in estimates]) / GIB
            by_link.barh(y, values, left=left, color=colour, label=link_names[link], height=0.7)
            left += values
        by_link.set_xlabel("by link (GiB)")
        by_link.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        by_link.tick_params(axis="y", length=0)
        return fig

    return render_svg(draw, prefix=prefix,
                      title="Communication bytes per step of the top plans, by collective and by link")


def _link_bytes(estimate: PlanEstimate, link: str) -> float:
    return float(sum(getattr(estimate.comm_bytes, kind) for kind in COMM_LABELS
                     if getattr(estimate.comm_links, kind) == link))


def _plan_axis(ax, labels: list[str]) -> None:
    ax.set_yticks(range(len(labels)), labels, fontfamily="monospace")
    ax.invert_yaxis()  # best plan on top
    ax.grid(True, axis="x", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def runs_chart_svg(rows: Sequence[tuple[str, str, float]], *, prefix: str = "runs") -> str:
    """Signed error in percent, (measured - predicted) / predicted, one bar per (run, quantity).

    `rows` holds (run label, quantity name, error percent).
    """
    labels = [f"{run}: {quantity}" for run, quantity, _ in rows]
    errors = np.array([error for _, _, error in rows], dtype=float)

    def draw():
        fig = new_figure(10.0, _bar_height(len(rows)))
        ax = fig.subplots(gridspec_kw=place(fig, left=left_in(labels, family="monospace"), right=RIGHT_IN,
                                            top=EDGE_IN, bottom=bottom_in()))
        colours = ["#D55E00" if e > 0 else "#0072B2" for e in errors]
        ax.barh(np.arange(len(rows)), errors, color=colours, height=0.6)
        ax.axvline(0.0, color="#333333", linewidth=0.8)
        bound = max(5.0, float(np.abs(errors).max()) * 1.25 if len(errors) else 5.0)
        ax.set_xlim(-bound, bound)
        for i, error in enumerate(errors):
            ax.annotate(f"{error:+.1f}%", (error, i), textcoords="offset points",
                        xytext=(4 if error >= 0 else -4, 0), ha="left" if error >= 0 else "right",
                        va="center", fontsize=7)
        _plan_axis(ax, labels)
        ax.set_xlabel("error of the prediction: (measured - predicted) / predicted (%)")
        return fig

    return render_svg(draw, prefix=prefix, title="Prediction error against measured runs")
