"""The ranked table on narrow consoles: every column whole, split into tables by rank when needed."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from sp_planner.catalog import load_hardware
from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, PlanEstimate, TimeBreakdown
from sp_planner.plan import ParallelPlan
from sp_planner.present.table import ZERO_RING_LEGEND, ranked_tables, zero_ring_legend
from sp_planner.units import GIB

# Round numbers: an A800 with 80 GiB of HBM (the built-in profile holds what the runtime reports).
A800 = load_hardware("a800").model_copy(update={"hbm_bytes": 80 * GIB})


def _estimate(plan: ParallelPlan, step_s: float, *, fits: bool = True) -> PlanEstimate:
    memory = MemoryBreakdown(params_bytes=2 * GIB, grads_bytes=2 * GIB, optimizer_bytes=4 * GIB,
                             activations_bytes=40 * GIB, logits_bytes=0.0, comm_buffers_bytes=0.0, reserve_bytes=0.0)
    time = TimeBreakdown(gemm_s=step_s, attention_s=0.0, recompute_s=0.0, tp_comm_s=0.0, ulysses_comm_s=0.0,
                         ring_comm_exposed_s=0.0, pp_comm_s=0.0, dp_comm_exposed_s=0.0, bubble_s=0.0,
                         optimizer_s=0.0)
    return PlanEstimate(
        plan=plan, fits=fits, reason=None if fits else "oom", memory=memory, memory_peak_bytes=memory.total_bytes,
        time=time, step_time_s=step_s, tokens_per_s=123456.0, model_tflops_per_gpu=100.0,
        hardware_tflops_per_gpu=60.0, mfu=0.5, hardware_mfu=0.25,
        comm_bytes=CommBytes(ulysses_all_to_all=1, ring_p2p=0, tp_all_gather=0, tp_reduce_scatter=0, pp_p2p=0,
                             dp_reduce_scatter=0, dp_all_gather=0),
        comm_links=CommLinks(ulysses_all_to_all="intra", ring_p2p="none", tp_all_gather="none",
                             tp_reduce_scatter="none", pp_p2p="none", dp_reduce_scatter="none", dp_all_gather="none"),
    )


# A MoE plan that does not fit, beside one with an all-gather ring: every optional column shows.
RANKED = [_estimate(ParallelPlan(tp=2, ulysses=4, ring=2, ep=4, zero=1), 12.5),
          _estimate(ParallelPlan(tp=1, ulysses=4, ring=4, cp_comm="allgather", ep=4, zero=3), 13.0, fits=False)]
HEADERS = ["#", "tp", "pp", "dp", "ulysses", "ring", "ep", "etp", "ZeRO", "recompute", "micro", "GiB/GPU", "step",
           "tokens/s", "TFLOPS", "model MFU (full square)", "% peak", "fits"]
ROW_1 = ["1", "2", "1", "1", "4", "2", "4", "1", "1", "none", "1", "48.0/80", "12.50 s", "123,456", "60", "50.0%",
         "25.0%", "yes"]


def _render(width: int, *, wide: bool) -> tuple[str, list[list[str]]]:
    """What a console `width` wide shows, and each table's header cells."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    tables = ranked_tables(RANKED, A800, wide=wide, title="Ranked plans (best first)", console=console)
    headers = [[column.header for column in table.columns] for table in tables]
    for table in tables:
        console.print(table)
    return console.file.getvalue(), headers


@pytest.mark.parametrize("width", [40, 50, 60])
def test_a_narrow_console_gets_every_column_whole_in_tables_by_rank(width):
    text, headers = _render(width, wide=True)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # no squeezed column
    assert len(headers) > 1 and all(h[0] == "#" for h in headers)
    # Every column once, in the wide table's order.
    assert [name for h in headers for name in h[1:]] == HEADERS[1:]
    # Rank 1's cells, read back table by table, are the plan's.
    lines = text.splitlines()
    cells = []
    for header in headers:
        rule = next(i for i, line in enumerate(lines) if set(line) == {"─"})
        row = lines[rule + 1]
        lines = lines[rule + 2:]
        assert row.split()[0] == "1"
        cells.append(row.split()[1:])
    flat = [cell for part in cells for cell in part]
    assert " ".join(flat) == " ".join(ROW_1[1:])
    assert ZERO_RING_LEGEND.split(";")[0] in " ".join(text.split())


def test_80_columns_keep_the_degrees_in_one_table():
    # The 80-column layout is unchanged: the narrow table whole, the wide columns by rank under it.
    text, headers = _render(80, wide=True)
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert headers == [[*HEADERS[:13], "% peak", "fits"], ["#", "tokens/s", "TFLOPS", "model MFU (full square)"]]


def test_the_legend_names_only_the_suffixes_shown():
    def est(**plan):
        return SimpleNamespace(plan=ParallelPlan(**{"dp": 1, "pp": 1, "tp": 1, "ulysses": 1, "ring": 1, **plan}))

    plain, kept = est(zero=2), est(dp=8, zero=3, reshard_after_forward=False)
    gathered, replicas = est(ring=4, cp_comm="allgather"), est(dp=8, zero=3, dp_replicate=2)
    assert zero_ring_legend([plain]) is None
    assert zero_ring_legend([plain, kept]) == "ZeRO 3k: parameters kept from forward to backward"
    assert zero_ring_legend([gathered, plain]) == "ring 4ag: all-gather CP"
    assert zero_ring_legend([replicas, gathered]) == "ring 4ag: all-gather CP; ZeRO 3r2: 2 HSDP replicas"
    assert zero_ring_legend([kept, gathered, replicas]) == ZERO_RING_LEGEND
    # The examples are the cells shown: a table of 8ag and 3r4 cells was told "4ag" and "3r2: 2 HSDP
    # replicas" (DeepSeek-V3 on 32 x 8 H200).
    eight, four = est(ring=8, cp_comm="allgather"), est(dp=8, zero=3, dp_replicate=4)
    assert zero_ring_legend([plain, four, eight, gathered, replicas]) == (
        "ring 8ag: all-gather CP; ZeRO 3r4: 4 HSDP replicas")


def test_a_pinned_micro_batch_group_rides_in_the_pp_cell_within_80_columns():
    # sp-plan --vpp-group 6 (pp 4 x vpp 2, m 12): JSON, CSV and the flags named the group, the table
    # did not; the cell reads 4v2g6 and the legend says what g6 is. Unpinned, the table is as it was.
    plans = [ParallelPlan(tp=1, pp=4, vpp=2, dp=2, ring=2, vpp_group=6), ParallelPlan(tp=1, pp=4, vpp=2, dp=1, ring=4)]

    def rendered(ranked):
        console = Console(file=io.StringIO(), width=80, color_system=None)
        for table in ranked_tables(ranked, A800, wide=False, title="Ranked plans (best first)", console=console):
            console.print(table)
        return console.file.getvalue().splitlines()

    pinned = rendered([_estimate(plans[0], 1.48), _estimate(plans[1].model_copy(update={"vpp_group": 6}), 1.49)])
    assert max(map(len, pinned)) <= 80
    assert [line.split()[:3] for line in pinned[3:5]] == [["1", "1", "4v2g6"], ["2", "1", "4v2g6"]]
    assert pinned[5:] == ["pp 4v2g6: micro-batch groups of 6 (--vpp-group)".ljust(len(pinned[1]))]
    unpinned = rendered([_estimate(plans[0].model_copy(update={"vpp_group": None}), 1.48), _estimate(plans[1], 1.49)])
    assert [line.split()[:3] for line in unpinned[3:5]] == [["1", "1", "4v2"], ["2", "1", "4v2"]]
    assert len(unpinned) == 5 and "--vpp-group" not in "\n".join(unpinned)


def test_the_outcome_table_keeps_its_title_and_legend_on_whole_lines():
    # A MoE search with mixed precision at 80 columns: the degrees take the first table and '#' and
    # '% peak' a 13-column outcome table, whose title and FP8 legend Rich folded to that width
    # ("Outcome by / rank", "% peak: / executed / FLOPs over ..."), a word or two a line.
    from sp_planner.present.table import LOW_PRECISION_PEAK_LEGEND

    fp8 = _estimate(ParallelPlan(tp=2, ulysses=2, ring=4, cp_comm="allgather", ep=8, zero=3, dp=2, dp_replicate=2,
                                 precision="fp8"), 12.0)
    console = Console(file=io.StringIO(), width=80, color_system=None)
    tables = ranked_tables([fp8, *RANKED], A800, wide=False, title="Ranked plans (best first)", console=console)
    for table in tables:
        console.print(table)
    text = console.file.getvalue()
    assert [[c.header for c in t.columns] for t in tables][1] == ["#", "% peak", "fits"]
    lines = [line.rstrip() for line in text.splitlines()]
    assert "Outcome by rank" in lines and LOW_PRECISION_PEAK_LEGEND in lines
    assert max(len(line) for line in lines) <= 80
