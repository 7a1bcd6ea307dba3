"""Fixed figure margins for matplotlib, measured from the texts that sit in them.

A layout engine (layout="constrained") finds the margins by measuring every label of the figure on
each of its passes, a quarter of the report's figure time at 4096 GPUs. The report's figures have
known parts (tick labels, an axis label, a legend of known rows), so their margins are computed
once here: text widths from the glyph outlines the SVG writer draws (matplotlib's TextToPath), the
gaps from matplotlib's rc defaults (tick length and pad, label pad, legend spacing) read at draw time.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib as mpl
from matplotlib.axis import Axis
from matplotlib.cbook import is_math_text
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

PT_PER_IN = 72.0
# One text line's height in ems: DejaVu Sans' ascent + descent, 1901 + 483 of 2048 font units (its hhea
# table, read with matplotlib.ft2font), is 1.16 em; a little slack.
LINE_EM = 1.25
# Slack around each margin (inches), so a label never touches the figure's edge.
EDGE_IN = 0.1
# Right margin (inches) of an axes with x tick labels: half of the last one may stand past the axes.
RIGHT_IN = 0.3

_MEASURE = TextToPath()


def _points(size: str | float) -> float:
    return FontProperties(size=size).get_size_in_points()


def text_width_in(texts: Iterable[str], size: str | float, family: str | None = None) -> float:
    """The widest of `texts` at font `size` (points or a name such as 'small'), in inches."""
    prop = FontProperties(size=size, family=family or mpl.rcParams["font.family"])
    widths = [_MEASURE.get_text_width_height_descent(t, prop, ismath=is_math_text(t))[0] for t in texts]
    return 1.03 * max(widths, default=0.0) / PT_PER_IN  # 3% for hinted raster text (PNG), a little wider


def line_in(size: str | float) -> float:
    """Height of one line of text at font `size`, in inches."""
    return LINE_EM * _points(size) / PT_PER_IN


def _tick_in(axis: str) -> float:
    rc = mpl.rcParams
    if axis == "x":
        return (rc["xtick.major.size"] + rc["xtick.major.pad"]) / PT_PER_IN
    return (rc["ytick.major.size"] + rc["ytick.major.pad"]) / PT_PER_IN


def _label_in() -> float:
    return line_in(mpl.rcParams["axes.labelsize"]) + mpl.rcParams["axes.labelpad"] / PT_PER_IN


def tick_labels(axis: Axis) -> list[str]:
    """The major tick labels `axis` will draw at its current limits (without drawing it)."""
    locs = axis.get_majorticklocs()
    return [t for t in axis.get_major_formatter().format_ticks(list(locs)) if t]


def left_in(labels: Iterable[str], *, family: str | None = None, ylabel: bool = False) -> float:
    """Left margin for y tick `labels` (and a y axis label)."""
    width = text_width_in(labels, mpl.rcParams["ytick.labelsize"], family)
    return EDGE_IN + width + _tick_in("y") + (_label_in() if ylabel else 0.0)


def bottom_in(*, xlabel: bool = True) -> float:
    """Bottom margin of an axes with x tick labels (and an x axis label)."""
    return EDGE_IN + line_in(mpl.rcParams["xtick.labelsize"]) + _tick_in("x") + (_label_in() if xlabel else 0.0)


def title_in() -> float:
    """Room for an axes title above the axes."""
    return line_in(mpl.rcParams["axes.titlesize"]) + mpl.rcParams["axes.titlepad"] / PT_PER_IN


def legend_rows(entries: int, ncol: int) -> int:
    """Rows of a legend of `entries` entries in `ncol` columns."""
    return -(-entries // max(ncol, 1))


def legend_in(rows: int) -> float:
    """Height of a frameless legend of `rows` rows, with its padding to the figure's edge."""
    size = _points(mpl.rcParams["legend.fontsize"])
    rc = mpl.rcParams
    ems = rows * LINE_EM + (rows - 1) * rc["legend.labelspacing"] + 2 * rc["legend.borderpad"] \
        + rc["legend.borderaxespad"]
    return ems * size / PT_PER_IN


def place(fig: Figure, *, left: float, right: float, top: float, bottom: float, ncols: int = 1,
          gap: float = 0.0, nrows: int = 1, vgap: float = 0.0) -> dict[str, float]:
    """GridSpec keywords putting the axes `left`, `right`, `top` and `bottom` inches in from the
    figure's edges, `ncols` columns `gap` inches apart and `nrows` rows `vgap` inches apart."""
    width, height = fig.get_size_inches()
    # matplotlib's wspace and hspace: the gap over the mean cell width or height.
    cell_w = (width - left - right - (ncols - 1) * gap) / ncols
    cell_h = (height - top - bottom - (nrows - 1) * vgap) / nrows
    return {"left": left / width, "right": 1 - right / width, "top": 1 - top / height, "bottom": bottom / height,
            "wspace": gap / cell_w, "hspace": vgap / cell_h}
