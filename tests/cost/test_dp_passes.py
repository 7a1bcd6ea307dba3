"""cost.dp_passes: the data-parallel exposure is priced candidate by candidate, so the rows the
search prices again (host-bound ones, appended to every row in one call) or groups apart
(cost.pipeline_dp by ZeRO stage and schedule) get exactly what pricing them alone gives them."""

import numpy as np
import pytest

import sp_planner.cost.step as step_module
from sp_planner.catalog import load_hardware, load_model
from sp_planner.columns import take_rows
from sp_planner.cost.dp_passes import dp_over_passes, dp_with_host_beside_s
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.step import time_columns
from sp_planner.space import Axes, Pins, degree_tuples, expand_candidates, search_order
from sp_planner.specs.workload import Workload


@pytest.fixture(scope="module")
def priced():
    """The DP passes of every candidate of Llama-3-8B on 8 H100 nodes (ZeRO-0..3, pp 1..8, vpp
    1..8), as cost.step hands them to dp_with_host_beside_s (args, then the compute path); 8k
    tokens a sequence leave some host-bound."""
    model, h100 = load_model("llama3-8b"), load_hardware("h100-sxm")
    workload = Workload(seq_len=8192, global_batch=256)
    axes = Axes(num_layers=model.num_layers)
    c = expand_candidates(workload, search_order(degree_tuples(64, Pins())), Pins(), 8, axes=axes)
    seen = []

    def keep(*args, **kw):
        seen.append((*args, kw["compute_path_s"]))
        return dp_with_host_beside_s(*args, **kw)

    patch = pytest.MonkeyPatch()
    patch.setattr(step_module, "dp_with_host_beside_s", keep)
    try:
        time_columns(model, h100, workload, c, gpus_per_node=8)
    finally:
        patch.undo()
    return seen[0]


def test_the_candidates_cover_every_branch(priced):
    _, passes, _, _, host_exposed, path = priced
    c = passes.c
    assert set(np.unique(c.zero)) == {0, 1, 2, 3}
    assert set(np.unique(c.vpp)) >= {1, 2, 4} and set(np.unique(c.pp)) >= {1, 2, 4, 8}
    assert np.any(host_exposed > 0) and np.any(host_exposed == 0)
    assert path is not None and np.any(host_exposed[(c.pp > 1) & (c.zero >= 2)] > 0)


def test_host_bound_rows_priced_again_in_the_same_call_get_every_row_priced_apart(priced):
    # The exposure over the GPU's passes (with the step's compute path) and the host-bound rows'
    # over the passes as they last (their path priced in cost.pipeline_dp) are what two calls over
    # every row give, bit for bit.
    overlap, passes, fwd_stall, bwd_stall, host_exposed, path = priced
    dp_exposed, dp_hidden = dp_over_passes(overlap, passes, 0.0, 0.0, compute_path_s=path)
    every_row, _ = dp_over_passes(overlap, passes, fwd_stall, bwd_stall)
    expected = np.clip(dp_exposed - every_row, 0.0, passes.micro_batches * host_exposed)
    got = dp_with_host_beside_s(overlap, passes, fwd_stall, bwd_stall, host_exposed, compute_path_s=path)
    for value, want in zip(got, (dp_exposed, dp_hidden, expected)):
        np.testing.assert_array_equal(value, want)
    assert np.any(expected > 0)
    # No host-bound row: one call over the GPU's passes, nothing beside them.
    idle = dp_with_host_beside_s(overlap, passes, 0.0, 0.0, np.zeros(len(passes.c)), compute_path_s=path)
    np.testing.assert_array_equal(idle[0], dp_exposed)
    assert idle[2] == 0.0


def test_any_rows_priced_alone_get_what_all_rows_priced_together_get(priced):
    overlap, passes, fwd_stall, bwd_stall, _, _ = priced
    n = len(passes.c)
    whole = dp_over_passes(overlap, passes, fwd_stall, bwd_stall)
    rng = np.random.default_rng(0)
    for rows in (rng.choice(n, 500, replace=False), np.flatnonzero(passes.c.zero == 3)[:7],
                 *(np.array([i]) for i in rng.choice(n, 20, replace=False))):
        part = dp_over_passes(overlap, take_rows(passes, rows, n), take_rows(fwd_stall, rows, n),
                              take_rows(bwd_stall, rows, n))
        for got, want in zip(part, whole):
            np.testing.assert_array_equal(got, want[rows])


def test_take_rows_takes_the_candidate_columns_and_keeps_the_rest():
    a, b = np.arange(4.0), np.array([7.0])
    nested = {"x": (a, 2.0, b), "o": MEGATRON_OVERLAP}
    got = take_rows(nested, np.array([3, 1]), 4)
    np.testing.assert_array_equal(got["x"][0], [3.0, 1.0])
    assert got["x"][1] == 2.0 and got["x"][2] is b and got["o"] is MEGATRON_OVERLAP
    np.testing.assert_array_equal(take_rows(a, slice(1, 3), 4), [1.0, 2.0])
