"""search_columns: the comm columns are priced by explained_rows on the rows it shows, after the
ranking, and give those rows what pricing every costed row gives them (cost.comm is per row)."""

import numpy as np

from sp_planner import columns
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.runtime import MEGATRON_RUNTIME as RUN
from sp_planner.search_columns import _as_run, evaluate_rows, explained_rows
from sp_planner.space import Axes, Pins, degree_tuples, expand_candidates, search_order, with_expert_degrees
from sp_planner.specs.workload import Workload


def test_shown_rows_get_the_comm_columns_every_row_priced_together_gets():
    # Qwen3-30B-A3B on 2 H100 nodes: every degree, ZeRO stage, expert grid and recompute choice.
    model, h100 = load_model("qwen3-30b-a3b"), load_hardware("h100-sxm")
    workload = Workload(seq_len=8192, global_batch=64)
    experts = model.moe.num_experts
    degrees = search_order(with_expert_degrees(degree_tuples(16, Pins()), experts, Pins()))
    c = expand_candidates(workload, degrees, Pins(), 8, axes=Axes(num_layers=model.num_layers, num_experts=experts))
    e = evaluate_rows(model, h100, workload, c, 8)
    assert e.comm is None  # left to explained_rows
    run, domain = _as_run(h100, c, 8, RUN)
    whole = comm_columns(model, workload, run, gpus_per_node=domain, states=RUN.states, ring_impl=RUN.ring,
                         sequence_parallel=RUN.sequence_parallel, tp_gathers=RUN.tp_gathers,
                         root_gathered_once=RUN.overlap.root_gathered_once,
                         pp_stage_grad_sync=RUN.overlap.pp_stage_grad_sync)
    rows = np.random.default_rng(0).choice(len(c), 300, replace=False)
    shown = explained_rows(model, h100, workload, columns.take(e, rows), 8)
    for got, want in zip(shown.comm.sent_bytes, whole.sent_bytes):
        np.testing.assert_array_equal(got, want[rows])
    for got, want in zip(shown.comm.links, whole.links):
        np.testing.assert_array_equal(got, np.asarray(want)[rows])
    assert np.any(shown.comm.sent_bytes.ep_all_to_all > 0) and np.any(shown.comm.sent_bytes.dp_all_gather > 0)
    estimate = shown.estimate(0)
    assert estimate.comm_bytes.ep_all_to_all == int(whole.sent_bytes.ep_all_to_all[rows[0]])
