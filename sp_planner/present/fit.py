"""Tables and headings that fit the console without cutting a word or a number.

Rich squeezes a table wider than the console by shrinking columns until their cells end in "…" or
fold mid-word. Here the column widths are worked out first: a figure keeps its whole width, a
header or a prose cell wraps at its spaces, and a table whose words cannot fit beside one another
in the boxed style drops to the compact one (one space between columns, as the ranked plans), then
splits into column groups, each led by the first column (the row's name).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, TypeVar

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Justify = Literal["left", "right"]
T = TypeVar("T")
L = TypeVar("L")
# The boxed style spends 3 columns a column on borders and padding; the compact one a space.
BOXED = {"box": box.HEAVY_HEAD, "padding": (0, 1), "show_edge": True}
COMPACT = {"box": box.SIMPLE_HEAD, "padding": (0, 0), "show_edge": False}
CONTINUED = "continued"  # the title of a column group after the first (as the ranked plans')


class FitColumn(NamedTuple):
    """A column: its header, how it aligns, and whether its cells are prose that may wrap at their
    spaces (else a cell keeps its whole width; a header always may wrap at its spaces)."""

    name: str
    justify: Justify = "left"
    prose: bool = False


class FitTable(NamedTuple):
    """What a table shows, before it is laid out for a console: every cell a string, one style per
    row (None: plain), and the layout tried first (boxed, else compact)."""

    title: str
    columns: tuple[FitColumn, ...]
    rows: tuple[tuple[str, ...], ...]
    row_styles: tuple[str | None, ...] = ()
    boxed: bool = True
    title_justify: Literal["left", "center"] = "left"


def longest_word(text: str) -> int:
    """The cells of `text`'s longest word: the least width it wraps into without cutting one."""
    return max((cell_len(word) for word in text.split()), default=0)


class Limits(NamedTuple):
    """A column's widths: `least` without cutting a word or a figure, `cells` with every cell on one
    line (the header may wrap), `widest` with the header on one line too."""

    least: int
    cells: int
    widest: int


def column_limits(spec: FitTable, index: int) -> Limits:
    """Column `index`'s limits: a figure keeps its whole cell, a prose cell or the header wraps at
    its spaces."""
    column = spec.columns[index]
    cells = [row[index] for row in spec.rows]
    least = max([longest_word(column.name), *(longest_word(c) if column.prose else cell_len(c) for c in cells)])
    one_line = max([least, *(cell_len(c) for c in cells)])
    return Limits(least, one_line, max(one_line, cell_len(column.name)))


def allot_widths(limits: Sequence[Limits], room: int) -> list[int] | None:
    """Each column at its widest if `room` allows; else headers wrap first (a line for the table,
    not one a row), then the widest columns give up a cell at a time down to their least; None
    when even the least widths pass `room`."""
    if sum(limit.least for limit in limits) > room:
        return None
    widths = [limit.widest for limit in limits]
    for floor in ([limit.cells for limit in limits], [limit.least for limit in limits]):
        while sum(widths) > room and any(width > low for width, low in zip(widths, floor)):
            slack = [width - low for width, low in zip(widths, floor)]
            widths[slack.index(max(slack))] -= 1
    return widths


def _widths(spec: FitTable, indices: Sequence[int], style: dict, console: Console) -> list[int] | None:
    """The widths of the columns `indices` of `spec` in `style` within the console, or None."""
    bare = _table(spec, indices, style, [1] * len(indices))
    # Borders and padding: what the table measures beyond its columns' own widths.
    overhead = Measurement.get(console, console.options.update_width(10_000), bare).maximum - len(indices)
    return allot_widths([column_limits(spec, i) for i in indices], console.width - overhead)


def _layout(spec: FitTable, indices: Sequence[int], title: str, style: dict,
            console: Console) -> RenderableType | None:
    """The columns `indices` of `spec` in `style` with fixed widths within the console, under
    `title`, or None."""
    widths = _widths(spec, indices, style, console)
    if widths is None or longest_word(title) > console.width:
        return None
    return _titled(_table(spec, indices, style, widths), title, console, justify=spec.title_justify)


def _titled(table: Table, title: str, console: Console, *,
           justify: Literal["left", "center"] = "left") -> RenderableType:
    """`table` under `title`: Rich's own title where the title fits the table's width on one line;
    else a line of its own above the table, at the left, wrapped at its spaces to the console (Rich
    wraps a title to its table's width, mid-phrase, and pads each line with spaces to centre it)."""
    if not title:
        return table
    if cell_len(title) <= Measurement.get(console, console.options, table).maximum:
        table.title, table.title_justify = escape(title), justify
        return table
    return Group(Text(title, style="table.title"), table)


def _table(spec: FitTable, indices: Sequence[int], style: dict, widths: Sequence[int]) -> Table:
    table = Table(**style)
    for i, width in zip(indices, widths):
        column = spec.columns[i]
        table.add_column(Text(column.name), justify=column.justify, width=width)
    for r, row in enumerate(spec.rows):
        row_style = spec.row_styles[r] if r < len(spec.row_styles) else None
        table.add_row(*(Text(row[i]) for i in indices), style=row_style)
    return table


def greedy_groups(items: Sequence[T], lay_out: Callable[[list[T]], L | None]) -> list[tuple[list[T], L | None]]:
    """`items` in order in as few groups as `lay_out` allows, each group with its layout: an item
    joins the current group where `lay_out` lays the group out with it (not None), else starts the
    next group untried, so that an item too wide even alone still gets a group of its own. A
    group's layout is the one that took its last item; None where that item started the group."""
    groups: list[tuple[list[T], L | None]] = []
    for item in items:
        laid = lay_out([*groups[-1][0], item]) if groups else None
        if laid is None:
            groups.append(([item], None))
        else:
            groups[-1] = ([*groups[-1][0], item], laid)
    return groups


def fitted_tables(spec: FitTable, console: Console) -> tuple[RenderableType, ...]:
    """`spec` laid out within the console: boxed (when `spec.boxed`) or compact in one table if its
    words fit beside one another, else compact column groups each led by the first column. A
    column too wide even beside the first alone gets a group of its own all the same."""
    styles = (BOXED, COMPACT) if spec.boxed else (COMPACT,)
    for style in styles:
        table = _layout(spec, range(len(spec.columns)), spec.title, style, console)
        if table is not None:
            return (table,)

    def lay_out(group: list[int]) -> list[int] | None:
        """The group's widths beside the first column (none while the title has a word wider than
        the console)."""
        return _widths(spec, [0, *group], COMPACT, console) if longest_word(spec.title) <= console.width else None

    # A one-column table's group: the first column alone.
    groups = greedy_groups(range(1, len(spec.columns)), lay_out) or [([], None)]
    tables = []
    for g, (group, widths) in enumerate(groups):
        indices, title = [0, *group], spec.title if g == 0 else CONTINUED
        if widths is None:  # its last column started it: laid out here, once
            widths = _widths(spec, indices, COMPACT, console)
        if widths is None or longest_word(title) > console.width:
            # A group that cannot fit (a figure wider than the console) is left to Rich's own squeeze.
            widths = [column_limits(spec, i).widest for i in indices]
        tables.append(_titled(_table(spec, indices, COMPACT, widths), title, console, justify=spec.title_justify))
    return tuple(tables)


def plain_lines(spec: FitTable, width: int) -> list[str]:
    """`spec`'s tables as plain text lines within `width` (for output written without Rich)."""
    text = io.StringIO()
    console = Console(file=text, width=width, color_system=None, highlight=False, emoji=False)
    for table in fitted_tables(spec, console):
        console.print(table)
    return [line.rstrip() for line in text.getvalue().splitlines()]


def fitted_lines(lines: list[str], spec: FitTable, width: int, *, indent: str = "") -> list[str]:
    """A plain-text table's fixed-column `lines` where they fit `width`, else `spec`'s plain lines
    within it, each after `indent`."""
    if max(map(cell_len, lines), default=0) <= width:
        return lines
    return [indent + line if line else line for line in plain_lines(spec, width - len(indent))]


def print_heading(console: Console, heading: str) -> None:
    """A rule headed by `heading`, which wraps at its spaces above the rule's line when the console
    is too narrow for it (Rich's rule would cut it with "…"): the last line leads the rule."""
    lines = Text(heading).wrap(console, max(console.width - 2, 1))
    for line in lines[:-1]:
        console.print(Text(line.plain.rstrip(), style="rule.text"))
    # As a string, as the rule took it before: the console highlights its figures.
    console.rule(escape(lines[-1].plain.rstrip() if lines else heading), align="left")
