"""--explain's tables on consoles 40 to 200 columns wide: every part named whole, every figure whole.

At 40 columns Rich had cut "MoE dispatch/combi…" and "ulysses_all_to_…" (the boxed tables' borders
and padding left the names too little room)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sp_planner.catalog import load_hardware
from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, PlanEstimate, TimeBreakdown
from sp_planner.plan import ParallelPlan
from sp_planner.plan_rules import RULES
from sp_planner.present.breakdown import PRUNE_REASONS, comm_table, memory_table, prune_table, time_table
from sp_planner.present.fit import fitted_tables
from sp_planner.units import GIB

from tests.present.fitting import WIDTHS, assert_whole

H100 = load_hardware("h100").model_copy(update={"hbm_bytes": 80 * GIB})
# Every part non-zero: the longest labels ("held to the best published MFU", "MoE dispatch/combine").
TIME = TimeBreakdown(gemm_s=37.36, attention_s=148.37, recompute_s=62.77, tp_comm_s=16.47, ulysses_comm_s=11.25,
                     ring_comm_exposed_s=0.5, pp_comm_s=0.25, dp_comm_exposed_s=0.4247, bubble_s=1.5,
                     optimizer_s=0.0355, moe_comm_s=2.0, host_overhead_s=0.125, offload_s=0.0625, mfu_ceiling_s=3.0)
MEMORY = MemoryBreakdown(params_bytes=16 * GIB, grads_bytes=4 * GIB, optimizer_bytes=12 * GIB,
                         activations_bytes=20 * GIB, logits_bytes=11 * GIB, comm_buffers_bytes=2 * GIB,
                         reserve_bytes=5 * GIB)
STEP_S = sum(TIME.model_dump().values())
EST = PlanEstimate(
    plan=ParallelPlan(tp=8, ulysses=4, ring=2), fits=True, reason=None, memory=MEMORY,
    memory_peak_bytes=MEMORY.total_bytes, time=TIME, step_time_s=STEP_S, tokens_per_s=1.0,
    model_tflops_per_gpu=1.0, hardware_tflops_per_gpu=1.0, mfu=0.5, hardware_mfu=0.25,
    comm_bytes=CommBytes(ulysses_all_to_all=540 * GIB, ring_p2p=320 * GIB, tp_all_gather=4500 * GIB,
                         tp_reduce_scatter=3400 * GIB, pp_p2p=0, dp_reduce_scatter=115 * GIB, dp_all_gather=14 * GIB),
    comm_links=CommLinks(ulysses_all_to_all="inter", ring_p2p="inter", tp_all_gather="intra",
                         tp_reduce_scatter="intra", pp_p2p="none", dp_reduce_scatter="inter", dp_all_gather="inter"),
)
SPECS = {"memory": memory_table(EST, H100), "time": time_table(EST), "comm": comm_table(EST),
         "prune": prune_table({"oom": 3142, "window_ring": 12, "kv_heads": 7}, 3495)}


def _render(name: str, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for table in fitted_tables(SPECS[name], console):
        console.print(table)
    return console.file.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", SPECS)
def test_explain_tables_keep_every_part_and_figure_whole(name, width):
    assert_whole(_render(name, width), SPECS[name], width)


def test_the_cells_are_the_estimates():
    time = dict((row[0], row[1:]) for row in SPECS["time"].rows)
    assert time["MoE dispatch/combine"] == ("2.00 s", f"{2.0 / STEP_S:.1%}")
    assert time["step"] == (f"{STEP_S:.2f} s", "100.0%") and SPECS["time"].row_styles[-1] == "bold"
    # 70 GiB of 80: the peak row, bold under the parts.
    assert SPECS["memory"].rows[-1] == ("peak", "70.0 GiB", "87.5%")
    assert SPECS["comm"].rows[0] == ("ulysses_all_to_all", "540.0 GiB", "inter")
    assert [row[:2] for row in SPECS["prune"].rows] == [("oom", "3,142"), ("window_ring", "12"), ("kv_heads", "7")]
    assert SPECS["prune"].rows[1][2] == PRUNE_REASONS["window_ring"]


def test_every_prune_rule_has_a_reason():
    # A rule without one would show its bare key as its reason (the vpp rule did).
    assert set(PRUNE_REASONS) == {*RULES, "oom"}


def test_boxed_where_the_words_fit_compact_below():
    # The time table's longest word is "dispatch/combine" (16): boxed, 16 + "148.37 s" 8 + "100.0%" 6
    # ("of step" over two lines) and 10 columns of borders and padding make 40.
    assert "┏" in _render("time", 80) and "┏" in _render("time", 40) and "┏" not in _render("time", 39)
    assert "┏" not in _render("comm", 40) and "ulysses_all_to_all" in _render("comm", 40)
