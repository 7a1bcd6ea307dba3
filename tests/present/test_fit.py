"""Tables and headings laid out for a console 40 to 200 columns wide: every line fits, every figure
and every word whole (no "…", no word folded), the compact style and column groups where needed."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sp_planner.present.fit import (
    CONTINUED,
    FitColumn,
    FitTable,
    Limits,
    allot_widths,
    column_limits,
    fitted_lines,
    fitted_tables,
    greedy_groups,
    plain_lines,
    print_heading,
)

from tests.present.fitting import WIDTHS, assert_whole, words

# sp-simulate's phases of a USP plan: names with spaces and hyphens, six figures a row, 71 columns
# wide on one line each.
PHASES = FitTable(
    title="communication phases (all groups at once)", boxed=False,
    columns=(FitColumn("collective", prose=True), FitColumn("bytes/rank", "right"), FitColumn("time", "right"),
             FitColumn("rate/rank", "right"), FitColumn("groups", "right"), FitColumn("limited by")),
    rows=(("ulysses all-to-all (Q or O)", "56.0 MiB", "422.8 µs", "140.0 GB/s", "2", "nvlink"),
          ("tp reduce-scatter", "1.8 GiB", "5.1 ms", "369.0 GB/s", "8", "nvlink"),
          ("dp grad reduce-scatter", "28.8 GiB", "656.9 ms", "47.0 GB/s", "8", "nic")))
# --explain's bytes sent: names of one word, up to 18 characters, beside figures.
COMM = FitTable(
    title="Bytes sent per GPU per step by the first plan",
    columns=(FitColumn("collective"), FitColumn("bytes", "right"), FitColumn("link")),
    rows=(("ulysses_all_to_all", "540.0 GiB", "inter"), ("edp_reduce_scatter", "0 B", "inter"),
          ("tp_reduce_scatter", "3.3 TiB", "intra")),
    row_styles=(None, None, "bold"))


def render(spec: FitTable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for table in fitted_tables(spec, console):
        console.print(table)
    return console.file.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec", [PHASES, COMM], ids=["phases", "comm"])
def test_every_figure_and_word_is_whole_at_every_width(spec, width):
    assert_whole(render(spec, width), spec, width)


def test_layouts_from_wide_to_narrow():
    # 200 columns: the phases on one line each, compact as asked (one space between columns).
    wide = render(PHASES, 200).splitlines()
    assert wide[1].split() == ["collective", "bytes/rank", "time", "rate/rank", "groups", "limited", "by"]
    assert wide[3].split()[:4] == ["ulysses", "all-to-all", "(Q", "or"]
    # 60 columns: one table still, the last header over two lines and long names at their spaces
    # (the widths' sum is 60: "reduce-scatter" 14, 10, 8, 10, "groups" 6, "limited" 7, 5 spaces).
    narrow = render(PHASES, 60).splitlines()
    assert narrow[1].split() == ["limited"] and narrow[2].split()[0] == "collective"
    assert max(len(line) for line in narrow) == 60 and CONTINUED not in words("\n".join(narrow))
    # 50 columns: two column groups, each led by the collective.
    groups = render(PHASES, 50).splitlines()
    assert CONTINUED in [line.strip() for line in groups]
    assert [line.split()[0] for line in groups if line.startswith("collective")] == ["collective", "collective"]
    # The comm table keeps its box where it fits (42 columns) and goes compact under it.
    boxed, compact = render(COMM, 42).splitlines(), render(COMM, 41).splitlines()
    assert boxed[2] == "┏" + "━" * 20 + "┳" + "━" * 11 + "┳" + "━" * 7 + "┓"
    assert compact[2].split() == ["collective", "bytes", "link"] and "┏" not in "".join(compact)


def test_limits_and_widths_by_hand():
    # "collective": prose, longest word "reduce-scatter" (14); one line 22 ("dp grad reduce-scatter").
    assert column_limits(PHASES, 0) == Limits(14, 27, 27)
    # "limited by": cells "nvlink" (6), the header's longest word 7, on one line 10.
    assert column_limits(PHASES, 5) == Limits(7, 7, 10)
    limits = [Limits(14, 27, 27), Limits(10, 10, 10), Limits(7, 7, 10)]
    assert allot_widths(limits, 47) == [27, 10, 10]
    # 3 short: the header wraps first (one line for the table, not one a row).
    assert allot_widths(limits, 44) == [27, 10, 7]
    # Then the widest column gives up cells, down to its longest word.
    assert allot_widths(limits, 35) == [18, 10, 7]
    assert allot_widths(limits, 31) == [14, 10, 7]
    assert allot_widths(limits, 30) is None


def test_groups_take_items_in_order_and_lay_each_out_once():
    # Items of these widths, groups of at most 10: a item joins while the group's sum fits; the one
    # that does not starts the next group untried; d (12) fits no group, even its own.
    widths = {"a": 4, "b": 5, "c": 6, "e": 3, "d": 12}
    tried = []

    def lay_out(group):
        tried.append(group)
        total = sum(widths[item] for item in group)
        return total if total <= 10 else None

    assert greedy_groups("abced", lay_out) == [(["a", "b"], 9), (["c", "e"], 9), (["d"], None)]
    assert tried == [["a", "b"], ["a", "b", "c"], ["c", "e"], ["c", "e", "d"]]


@pytest.mark.parametrize("width", [40, 50, 60])
def test_a_group_title_is_never_folded(width):
    # "continued" over a group of two narrow columns (7 wide): the table widens to hold the word.
    spec = FitTable(title="a title", columns=(FitColumn("#"), *(FitColumn(f"c{i}", "right") for i in range(9))),
                    rows=(("1", *("123456" for _ in range(9))),))
    text = render(spec, width)
    assert_whole(text, spec, width)
    assert text.count(CONTINUED) >= 1 and all(len(line.split()) for line in text.splitlines())


def test_plain_lines_keep_fixed_lines_that_fit_and_split_the_rest():
    fixed = ["  one two  three", "  four five  six"]
    spec = FitTable("", (FitColumn("a"), FitColumn("b"), FitColumn("c")), (("one", "two", "three"),), boxed=False)
    assert fitted_lines(fixed, spec, 16, indent="  ") == fixed
    lines = fitted_lines(["x" * 41], PHASES, 40, indent="  ")
    assert all(line.startswith("  ") or not line for line in lines)
    assert_whole("\n".join(lines), PHASES, 40)
    assert plain_lines(PHASES, 40) == [line.rstrip() for line in render(PHASES, 40).splitlines()]


HEADING = ("mindspeed flags for plan 16 (tp 8 x ulysses 1 x ring 4 x dp 1 x pp 2, ZeRO-1, full recompute, "
           "micro batch 1, 8 virtual stages per rank; 1.6% slower than plan 1)")


@pytest.mark.parametrize("width", [40, 60, 76, 79, 80, 100, 200])
def test_a_long_heading_wraps_above_its_rule(width):
    # Rich's rule cut this heading with "…" at every width up to its 140 characters.
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_heading(console, HEADING)
    lines = console.file.getvalue().splitlines()
    assert all(len(line) <= width for line in lines) and "…" not in "".join(lines)
    assert " ".join(lines).replace("─", "").split() == HEADING.split()
    assert lines[-1].endswith("──") and all("─" not in line for line in lines[:-1])
    assert len(lines) == (1 if width >= len(HEADING) + 2 else len(lines))


def test_a_short_heading_is_one_rule_line():
    console = Console(file=io.StringIO(), width=40, color_system=None)
    print_heading(console, "slurm launch [megatron]")
    assert console.file.getvalue() == "slurm launch [megatron] " + "─" * 16 + "\n"


def test_a_title_wider_than_its_table_is_a_line_of_its_own():
    # sp-run's errors: a 63-character title over a 54-column table folded to it, centred
    # ("...the rank nearest" / "           its bound)"); a title that fits stays Rich's own.
    spec = FitTable(title="error vs fp32 reference (per tensor, the rank nearest its bound)",
                    columns=(FitColumn("tensor", "right"), *(FitColumn(n, "right") for n in ("max abs", "bound"))),
                    rows=(("out", "1.79e-07", "1.1e-05"),))
    lines = render(spec, 80).splitlines()
    assert lines[0] == spec.title and lines[1].startswith("┏")
    # At 40 columns it wraps at its spaces to the console, not to the table's 30.
    narrow = render(spec, 40).splitlines()
    assert narrow[:2] == ["error vs fp32 reference (per tensor, the", "rank nearest its bound)"]
    assert render(COMM, 80).splitlines()[0].rstrip() == COMM.title and "┏" in render(COMM, 80).splitlines()[1]
