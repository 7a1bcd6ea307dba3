from __future__ import annotations

import re

from sp_planner.catalog import load_model
from sp_planner.report import write_report
from sp_planner.report.html import CSP, Raw, esc, table, tag

SCRIPT = "<script>alert(1)</script>"


def test_esc_escapes_markup_and_quotes_but_keeps_built_fragments():
    assert esc(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert esc('a"b&c\'') == "a&quot;b&amp;c&#x27;"
    assert esc(Raw("<b>x</b>")) == "<b>x</b>"
    assert esc(3) == "3"


def test_tag_and_table_escape_bodies_and_attribute_values():
    assert tag("td", SCRIPT, class_='x" onload="y') == (
        '<td class="x&quot; onload=&quot;y">&lt;script&gt;alert(1)&lt;/script&gt;</td>'
    )
    html = table(["<h>"], [[SCRIPT]], numeric=(0,))
    assert "<script" not in html
    assert '<th>&lt;h&gt;</th>' in html and '<td class="num">&lt;script&gt;' in html


def test_report_renders_hostile_model_and_profile_names_as_text(asker, tmp_path):
    model = load_model("llama3-8b").model_copy(update={"name": SCRIPT})
    hostile = asker(model)
    hardware = hostile.hardware.model_copy(update={
        "name": '<img src=x onerror="alert(2)">', "description": "A & B <i>",
        "sources": {**hostile.hardware.sources, "hbm_bytes": "</td><script>alert(3)</script>"},
    })
    args = {**hostile.report_args(), "hardware": hardware}
    index = write_report(tmp_path / "r", **args)
    text = index.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in text
    assert "A &amp; B &lt;i&gt;" in text
    assert "&lt;/td&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text


def test_report_page_forbids_and_references_no_network_resource(report_dir):
    text = (report_dir / "index.html").read_text(encoding="utf-8")
    assert f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">' in text
    assert "default-src 'none'" in CSP
    # No attribute that makes the browser fetch: src or href other than in-document #ids and data:
    # URIs (matplotlib embeds the heatmap's pixels as one), url(), @import.
    assert not re.search(r'\b(src|href|action|poster|data)\s*=\s*"(?!#|data:)', text)
    assert not re.search(r"url\((?!#)", text)
    assert "@import" not in text
    assert "<link" not in text and "<script" not in text and "<iframe" not in text
