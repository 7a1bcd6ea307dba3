from __future__ import annotations

import re

from sp_planner.estimate import CommBytes, CommLinks
from sp_planner.report.plots import _link_bytes, comm_bars_svg, memory_bars_svg, runs_chart_svg

BYTES = CommBytes(ulysses_all_to_all=100, ring_p2p=20, tp_all_gather=3, tp_reduce_scatter=4, pp_p2p=0,
                  dp_reduce_scatter=500, dp_all_gather=600)
LINKS = CommLinks(ulysses_all_to_all="intra", ring_p2p="inter", tp_all_gather="intra", tp_reduce_scatter="intra",
                  pp_p2p="none", dp_reduce_scatter="inter", dp_all_gather="inter")


def test_link_bytes_split_the_collectives_by_the_link_their_group_spans(question):
    est = question.result.ranked[0].model_copy(update={"comm_bytes": BYTES, "comm_links": LINKS})
    assert _link_bytes(est, "intra") == 100 + 3 + 4
    assert _link_bytes(est, "inter") == 20 + 500 + 600


def test_per_plan_figures_draw_one_bar_per_plan(question):
    top = list(question.result.ranked[:3])
    memory = memory_bars_svg(top, hbm_bytes=question.hardware.hbm_bytes, prefix="m")
    comm = comm_bars_svg(top, intra_kind="nvlink", inter_kind="infiniband", prefix="c")
    # One y tick (plan label) per plan; the comm figure's two panels share them.
    assert len(re.findall(r'id="m-ytick_\d+"', memory)) == 3
    assert len(re.findall(r'id="c-ytick_\d+"', comm)) == 2 * 3


def test_runs_chart_draws_one_bar_per_comparison():
    svg = runs_chart_svg([("run 1", "time", 20.0), ("run 1", "bytes", 0.0), ("run 2", "memory", -12.5)],
                         prefix="r")
    assert len(re.findall(r'id="r-ytick_\d+"', svg)) == 3
