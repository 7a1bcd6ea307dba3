from __future__ import annotations

import io
import math

import matplotlib as mpl
from matplotlib.backends.backend_svg import RendererSVG
from matplotlib.figure import Figure

from sp_planner.figure_margins import legend_in, line_in, place, text_width_in


def test_monospace_width_is_the_advance_of_each_character():
    # DejaVu Sans Mono advances every glyph by 1233 font units of 2048 per em (its hmtx table):
    # 4 characters at 10 pt are 4 x 10 x 1233 / 2048 pt, plus the 3% kept for hinted raster text.
    expected_in = 1.03 * 4 * 10 * 1233 / 2048 / 72
    assert math.isclose(text_width_in(["abcd", "ab"], 10, "monospace"), expected_in, rel_tol=1e-3)
    assert text_width_in([], 10) == 0.0


def test_place_puts_the_axes_the_given_inches_from_the_edges_and_apart():
    fig = Figure(figsize=(10, 5))
    left_ax, right_ax = fig.subplots(1, 2, gridspec_kw=place(fig, left=1, right=1, top=0.5, bottom=1.5,
                                                            ncols=2, gap=2))
    # 10 in wide: 1 in margins and a 2 in gap leave two 3 in axes, at 1-4 in and 6-9 in; 0.5-1.5 in high margins.
    for ax, (x0, x1) in ((left_ax, (1, 4)), (right_ax, (6, 9))):
        box = ax.get_position()
        assert math.isclose(box.x0 * 10, x0) and math.isclose(box.x1 * 10, x1)
        assert math.isclose(box.y0 * 5, 1.5) and math.isclose(box.y1 * 5, 4.5)


def test_legend_height_holds_a_drawn_legend_of_that_many_rows():
    with mpl.rc_context({"legend.fontsize": 8}):
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for i in range(7):
            ax.plot([0, 1], [i, i], label=f"series {i}")
        legend = fig.legend(loc="lower center", ncol=4, frameon=False)  # 2 rows
        renderer = RendererSVG(6, 4, io.StringIO(), image_dpi=72)
        fig.dpi = 72
        drawn_in = legend.get_window_extent(renderer).y1 / 72  # from the figure's bottom edge
        assert 0.7 * legend_in(2) < drawn_in <= legend_in(2)
        assert legend_in(1) < drawn_in
    assert math.isclose(line_in(8), 1.25 * 8 / 72)
