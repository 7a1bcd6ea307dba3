"""HTML building blocks with escaping by default, and the page skeleton with its inline CSS.

Every string that reaches the page goes through `esc` unless it is a `Raw` fragment built here
(tables, figures from sp_planner.report.svg). Model and profile names come from user files, so
a name such as `<script>alert(1)</script>` must arrive as text. The Content-Security-Policy
forbids every network load as a second line of defence.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 20px 0 6px; }
p.sub { color: #57606a; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.chosen td { background: #fff4e5; }
td.bad { color: #9b1c1c; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 10px; overflow-x: auto;
      font-size: 12.5px; white-space: pre-wrap; word-break: break-all; }
figure { margin: 16px 0 28px; }
figcaption { color: #57606a; font-size: 13px; margin-top: 4px; max-width: 980px; }
svg.figure { display: block; max-width: 100%; height: auto; }
.callout { background: #f0f7ff; border-left: 4px solid #0072b2; padding: 10px 14px; margin: 10px 0; }
.warn { background: #fff4e5; border-left: 4px solid #d55e00; padding: 10px 14px; margin: 10px 0; }
footer { margin-top: 40px; color: #57606a; font-size: 12px; }
"""


class Raw(str):
    """A fragment of HTML already built from escaped parts; `esc` leaves it as it is."""


def esc(value: object) -> str:
    if isinstance(value, Raw):
        return value
    return html.escape(str(value), quote=True)


def tag(name: str, body: object = "", **attrs: object) -> Raw:
    """<name attrs>body</name>; attribute values and a plain-string body are escaped.

    Attribute names use a trailing underscore for Python keywords (class_ -> class).
    """
    rendered = "".join(f' {key.rstrip("_")}="{esc(value)}"' for key, value in attrs.items()
                       if value is not None)
    return Raw(f"<{name}{rendered}>{esc(body)}</{name}>")


def join(parts: Iterable[object]) -> Raw:
    return Raw("".join(esc(part) for part in parts))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
          numeric: Iterable[int] = (), row_classes: Sequence[str | None] | None = None) -> Raw:
    """A table; columns whose index is in `numeric` are right-aligned."""
    numeric = set(numeric)
    head = tag("tr", join(tag("th", h) for h in headers))
    body = []
    for i, row in enumerate(rows):
        cells = join(tag("td", cell, class_="num" if j in numeric else None) for j, cell in enumerate(row))
        body.append(tag("tr", cells, class_=row_classes[i] if row_classes else None))
    return tag("table", join([tag("thead", head), tag("tbody", join(body))]))


def facts(pairs: Iterable[tuple[str, object]]) -> Raw:
    """A definition list of label: value pairs."""
    return tag("dl", join(join([tag("dt", k), tag("dd", v)]) for k, v in pairs), class_="facts")


def figure(svg: str, caption: object, *, figure_id: str) -> Raw:
    # The svg comes from matplotlib through sp_planner.report.svg: text drawn as paths, no user strings.
    return tag("figure", join([Raw(svg), tag("figcaption", caption)]), id=figure_id)


def section(section_id: str, heading: str, *parts: object) -> Raw:
    return tag("section", join([tag("h2", heading), *parts]), id=section_id)


def page(*, title: str, heading: str, subtitle: str, sections: Sequence[Raw], footer: object) -> str:
    """The whole document: no external resource of any kind."""
    head = join([
        Raw('<meta charset="utf-8">'),
        Raw(f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">'),
        Raw('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        tag("title", title),
        Raw(f"<style>{CSS}</style>"),
    ])
    body = tag("main", join([tag("h1", heading), tag("p", subtitle, class_="sub"), *sections,
                             tag("footer", footer)]))
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>{head}</head>\n<body>{body}</body>\n</html>\n'
