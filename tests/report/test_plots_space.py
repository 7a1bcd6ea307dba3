from __future__ import annotations

import math
import re

import pandas as pd

from sp_planner.report.plots_space import heatmap_axes, heatmap_cells, heatmap_svg, pareto_front, pareto_svg

NAN = float("nan")


def _frame(rows):
    columns = ["tp", "ulysses", "ring", "fits", "reason", "step_time_s", "memory_peak_bytes"]
    return pd.DataFrame(rows, columns=columns)


CELLS = _frame([
    (1, 1, 1, False, "oom: needs 90 GB", 5.0, 90e9),
    (1, 1, 1, False, "heads: 32 heads", NAN, NAN),
    (1, 2, 1, True, "", 4.0, 50e9),
    (1, 2, 1, True, "", 3.0, 60e9),
    (1, 2, 1, False, "oom: needs 100 GB", 2.0, 100e9),
    (1, 1, 2, False, "seq_len: not divisible", NAN, NAN),
    (1, 1, 2, False, "heads: a", NAN, NAN),
    (1, 1, 2, False, "heads: b", NAN, NAN),
    (2, 1, 1, False, "seq_len: a", NAN, NAN),
    (2, 1, 1, False, "heads: b", NAN, NAN),
])


def test_heatmap_cell_is_the_fastest_fitting_plan_or_the_nearest_miss():
    cells = heatmap_cells(CELLS)
    got = [(r.tp, r.ulysses, r.ring, r.label) for r in cells.itertuples()]
    # oom beats a rule break; otherwise the most frequent rule; a tie goes to the first name.
    assert got == [(1, 1, 1, "oom"), (1, 1, 2, "heads"), (1, 2, 1, ""), (2, 1, 1, "heads")]
    best = dict(zip(zip(cells.tp, cells.ulysses, cells.ring), cells.best_step_time_s))
    assert best[(1, 2, 1)] == 3.0  # the faster oom plan at 2.0 s does not count
    assert math.isnan(best[(1, 1, 1)])


def test_heatmap_leaves_out_degrees_whose_every_candidate_breaks_a_rule():
    shown, omitted = heatmap_axes(heatmap_cells(CELLS))
    # tp 2 and ring 2 hold only rule breaks; ulysses 1 has an oom cell, which is drawn.
    assert shown == {"tp": [1], "ulysses": [1, 2], "ring": [1]}
    assert omitted == {"tp": [2], "ulysses": [], "ring": [2]}


def test_heatmap_draws_one_panel_per_tp_degree_and_a_colour_bar():
    frame = pd.concat([CELLS, _frame([(2, 2, 1, True, "", 7.0, 40e9)])], ignore_index=True)
    svg, omitted = heatmap_svg(frame, prefix="h")
    assert svg.startswith("<svg") and omitted["tp"] == []
    # Two TP panels plus the colour bar's axes.
    assert len(re.findall(r'id="h-axes_\d+"', svg)) == 3


def test_pareto_front_keeps_plans_no_other_beats_on_both_memory_and_time():
    points = pd.DataFrame(
        {"memory_peak_bytes": [10, 15, 20, 20, 30, 40], "step_time_s": [5.0, 6.0, 3.0, 4.0, 3.0, 1.0]},
        index=list("AFBCDE"),
    )
    # F is beaten by A; C and D by B (D only weakly: same time, more memory).
    assert list(pareto_front(points).index) == ["A", "B", "E"]


def test_pareto_figure_returns_the_front_of_the_fitting_plans(question):
    frame = question.result.frame
    svg, front = pareto_svg(frame, hbm_bytes=question.hardware.hbm_bytes, chosen_index=None)
    fitting = frame[frame["fits"].astype(bool)]
    assert svg.startswith("<svg") and 0 < len(front) <= len(fitting)
    # The fastest fitting plan is always on the front, and so is the one needing the least memory.
    assert front["step_time_s"].min() == fitting["step_time_s"].min()
    assert front["memory_peak_bytes"].min() == fitting["memory_peak_bytes"].min()


def test_pareto_scatter_draws_one_point_per_bin_of_many_plans():
    import numpy as np

    from sp_planner.report.plots_space import _SCATTER_BINS, _one_per_bin

    rng = np.random.default_rng(0)
    n = 50_000
    many = pd.DataFrame({"memory_peak_bytes": rng.uniform(1e9, 8e10, n), "step_time_s": rng.uniform(1, 100, n)})
    points = _one_per_bin(many, log_y=False)
    assert len(points) <= _SCATTER_BINS[0] * _SCATTER_BINS[1] and len(points) < n / 2
    assert set(points.index) <= set(many.index)
    # the plotted range is the same: the extremes' bins keep a point
    for column in many.columns:
        span = many[column].max() - many[column].min()
        assert points[column].min() - many[column].min() <= span / min(_SCATTER_BINS)
        assert many[column].max() - points[column].max() <= span / min(_SCATTER_BINS)
    few = many.head(10)
    assert _one_per_bin(few, log_y=True) is few


def test_pareto_figure_stays_small_with_many_plans():
    import numpy as np

    rng = np.random.default_rng(1)
    n = 30_000
    frame = pd.DataFrame({"memory_peak_bytes": rng.uniform(1e9, 8e10, n), "step_time_s": rng.uniform(1, 100, n),
                          "fits": True})
    svg, _ = pareto_svg(frame, hbm_bytes=8e10, chosen_index=None)
    assert len(svg) < 400_000
    assert svg.count("<image") == 1  # the scatter is one embedded image
