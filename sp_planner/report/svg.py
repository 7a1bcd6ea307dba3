"""Render matplotlib figures (Agg backend) to inline SVG for one self-contained HTML page.

Text is drawn as glyph paths: the page then looks the same on a machine without DejaVu fonts,
so labels laid out by matplotlib cannot start to overlap in a browser with wider fonts. Element
ids are prefixed per figure, so several figures on one page never share an id.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

# Fixed style for every report figure; set on each figure via rc_context, never globally.
RC_PARAMS: dict[str, Any] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "sp-planner",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

_XML_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_ID = re.compile(r'\bid="([^"]+)"')
_OPEN = re.compile(r"<svg\b")


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure not registered with pyplot (no global state, nothing to close), without a layout
    engine: the caller places its axes (sp_planner.figure_margins)."""
    return Figure(figsize=(width_in, height_in))


def render_svg(draw: Callable[[], Figure], *, prefix: str, title: str) -> str:
    """Draw a figure under the report style and return it as an <svg> element.

    No XML prologue, ids prefixed with `prefix`, `title` as the accessible name.
    """
    buffer = io.StringIO()
    with plt.rc_context(RC_PARAMS):  # type: ignore[arg-type]  # stubs list each rc key as a Literal
        fig = draw()
        # Date and tool metadata removed so that the same inputs give the same bytes.
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None,
                                                    "Type": None})
    text = _COMMENT.sub("", _XML_PROLOGUE.sub("", buffer.getvalue(), count=1))
    ids = set(_ID.findall(text))
    text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
    # References are #id in xlink:href and url(#id); only ids defined in this figure are rewritten.
    text = re.sub(r'(xlink:href="#|url\(#)([^")]+)',
                  lambda m: f"{m.group(1)}{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(0),
                  text)
    # Natural size (width/height in pt) unless the page is narrower: CSS max-width, height auto.
    text = _OPEN.sub('<svg role="img" class="figure"', text, count=1)
    return text.replace(">", f"><title>{html.escape(title)}</title>", 1)
