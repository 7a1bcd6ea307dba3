"""The Gantt chart of a simulated step: one drawing (gantt_figure) for sp-simulate's file and the report."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.figure_mark import figure_signature
from sp_planner.fileio import SIGNATURE_HEAD_BYTES
from sp_planner.plan import ParallelPlan
from sp_planner.sim import simulate
from sp_planner.sim.gantt import gantt_bytes, gantt_figure, time_unit, write_gantt
from sp_planner.specs.workload import Workload


@pytest.fixture(scope="module")
def two_stages():
    """Llama-3-8B at 64K on 2 x 8 A800, pp 2 with ulysses 4 x ring 2, 4 micro-batches per step."""
    return simulate(load_model("llama3-8b"), load_hardware("a800"), Workload(seq_len=65536, global_batch=4),
                    ParallelPlan(dp=1, pp=2, ulysses=4, ring=2), num_nodes=2, gpus_per_node=8)


def _bars(ax) -> int:
    return sum(len(collection.get_paths()) for collection in ax.collections)


def test_top_panel_has_one_row_per_stage_and_stream_and_every_block(two_stages):
    fig = gantt_figure(two_stages)
    top, forward, backward = fig.axes[:3]
    rows = sorted({(e.stage, e.rank, e.stream) for e in two_stages.events},
                  key=lambda r: (r[0], ("compute", "comm", "dp_comm").index(r[2])))
    assert [t.get_text() for t in top.get_yticklabels()] == [f"stage {s} (rank {r}) {st}" for s, r, st in rows]
    # Representative ranks: the first rank of each stage, 8 GPUs per stage.
    assert {r for _, r, _ in rows} == {0, 8}
    assert _bars(top) == sum(1 for e in two_stages.events if e.end_s > e.start_s)
    scale, unit = time_unit(two_stages.step_time_s)
    assert top.get_xlabel() == f"time from the start of the step ({unit})"
    assert f"step {two_stages.step_time_s * scale:.2f} {unit}" in top.get_title()
    assert "forward" in forward.get_title() and "backward" in backward.get_title()
    # Layer 0 of stage 0: ring 2 -> attention in 2 steps forward, and 2 in the backward.
    names = [e.name for e in two_stages.detail_events if e.stage == 0 and e.name.startswith("F0 L0 attn fwd")]
    assert len(names) == 2


def test_detail_panel_leaves_out_a_parameter_gather_prefetched_long_before_the_layer():
    # ZeRO-3: layer 0's parameter all-gather starts at the beginning of the backward, long before
    # layer 0 (the last layer of the backward) runs; the panel shows the layer, not the wait.
    result = simulate(load_model("llama3-8b"), load_hardware("a800"), Workload(seq_len=131072, global_batch=16),
                      ParallelPlan(dp=1, ulysses=4, ring=4, zero=3), num_nodes=2, gpus_per_node=8)
    gathers = [e for e in result.detail_events if e.name.startswith("B0 L0 ") and e.stream == "dp_comm"]
    core = [e for e in result.detail_events if e.name.startswith("B0 L0 ") and e.stream != "dp_comm"]
    far = [e for e in gathers if e.end_s < min(c.start_s for c in core)
           - 0.5 * (max(c.end_s for c in core) - min(c.start_s for c in core))]
    assert far, "the case must have a prefetched gather far from the layer"
    backward = gantt_figure(result).axes[2]
    shown = [e for e in gathers if e not in far] + core
    assert _bars(backward) == len(shown)
    span = max(e.end_s for e in shown) - min(e.start_s for e in shown)
    scale, _ = time_unit(span)
    assert backward.get_xlim()[1] == pytest.approx(span * scale, rel=0.06)


def test_time_unit_picks_a_readable_unit():
    assert time_unit(5e-3) == (1e6, "µs")
    assert time_unit(0.25) == (1e3, "ms")
    assert time_unit(4.3) == (1.0, "s")


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_write_gantt_writes_the_format_of_the_suffix(two_stages, tmp_path, suffix, magic):
    path = write_gantt(two_stages, tmp_path / f"gantt{suffix}")
    assert path.read_bytes().startswith(magic)


def test_write_gantt_refuses_another_suffix(two_stages, tmp_path):
    with pytest.raises(ValueError, match="must end in .png or .svg"):
        write_gantt(two_stages, tmp_path / "gantt.pdf")


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_the_chart_carries_the_tools_mark_in_the_head_a_later_run_reads(two_stages, fmt):
    """sp-simulate replaces a gantt.png only when its head holds the mark: in a real chart of each
    format it lies within the bytes the check reads (PNG: a tEXt chunk before the image data; SVG:
    the RDF metadata before the first drawing)."""
    chart = gantt_bytes(two_stages, fmt)
    signature = figure_signature(fmt)
    assert signature in chart[:SIGNATURE_HEAD_BYTES]
    assert chart.count(signature) == 1
    if fmt == "png":
        assert chart[:8] == b"\x89PNG\r\n\x1a\n" and chart.index(signature) < chart.index(b"IDAT")
        assert signature == b"tEXtSoftware\0sp-planner"
    else:
        assert chart.index(signature) < chart.index(b"<g ") and signature == b"<dc:title>sp-planner</dc:title>"
