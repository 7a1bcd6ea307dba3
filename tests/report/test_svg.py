from __future__ import annotations

import re

from sp_planner.report.svg import new_figure, render_svg


def _draw():
    fig = new_figure(3, 2)
    ax = fig.subplots()
    ax.plot([1, 2], [3, 4])
    ax.set_xlabel("x (s)")
    return fig


def test_render_svg_gives_a_bare_svg_element_with_prefixed_ids_and_a_title():
    svg = render_svg(_draw, prefix="f1", title="a <b> title")
    assert svg.startswith('<svg role="img" class="figure"')
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<!--" not in svg
    assert "<title>a &lt;b&gt; title</title>" in svg
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert ids and all(i.startswith("f1-") for i in ids)
    # Every in-document reference points at an id of this figure.
    refs = re.findall(r'(?:xlink:href="#|url\(#)([^")]+)', svg)
    assert refs and set(refs) <= set(ids)


def test_render_svg_is_deterministic_and_draws_text_as_paths():
    first = render_svg(_draw, prefix="f", title="t")
    assert first == render_svg(_draw, prefix="f", title="t")
    assert "<text" not in first  # glyphs as paths: same look without the font installed
