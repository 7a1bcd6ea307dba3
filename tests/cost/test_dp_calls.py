"""cost.dp_calls: a stage's data-parallel calls priced call by call, row by row."""

import numpy as np

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_calls import STAGES, priced_rows
from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.dp_times import dp_stage_times
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import MEGATRON_STATES
from tests.cost.test_dp_times import _candidates


def test_bf16_gradients_take_half_the_time_without_latency(toy_model, hardware):
    # The toy profile has no latency: every call's time is its bytes over the bandwidth, so
    # DeepSpeed's bf16 gradient reductions take half Megatron's fp32 ones and the bf16 gathers the same.
    from sp_planner.cost.states import DEEPSPEED_STATES
    from sp_planner.plan import ParallelPlan
    from sp_planner.candidates import Candidates

    c = Candidates.of_plan(ParallelPlan(dp=4, zero=3))
    stages = candidate_stage_layers(toy_model, c)
    mega, ds = (dp_stage_times(toy_model, hardware, c, stages=stages, gpus_per_node=4, seq_len=4096, states=s)[0]
                for s in (MEGATRON_STATES, DEEPSPEED_STATES))
    for field in ("grad_all_reduce_s", "grad_reduce_scatter_s", "layer_reduce_s", "root_reduce_s"):
        assert float(getattr(mega, field)[0]) > 0
        np.testing.assert_allclose(getattr(ds, field), getattr(mega, field) / 2, rtol=1e-12, err_msg=field)
    for field in ("param_all_gather_s", "layer_gather_s", "root_gather_s"):
        np.testing.assert_allclose(getattr(ds, field), getattr(mega, field), rtol=1e-12, err_msg=field)


def test_calls_priced_on_the_moving_rows_equal_each_row_priced_alone():
    # priced_rows prices a call on the rows that move bytes only (a virtual stage's chunk calls
    # on some rows, none on others): each row priced alone gives the same seconds.
    h100 = load_hardware("h100-sxm")
    model = load_model("Qwen3-30B-A3B")
    c = _candidates(model, 32)
    stages = candidate_stage_layers(model, c)
    rows = np.random.default_rng(3).choice(len(c), 120, replace=False)
    code = np.arange(len(rows)) % len(STAGES)
    sub, split = c.take(rows), type(stages)(*(np.broadcast_to(v, (len(c),))[rows] for v in stages))
    batched = priced_rows(model, h100, sub, stages=split, stage=code, gpus_per_node=8, seq_len=4096,
                          states=MEGATRON_STATES)
    assert 0 < np.count_nonzero(batched.chunk_all_reduce_s) < len(rows)  # some rows move, some do not
    for i in range(len(rows)):
        one = priced_rows(model, h100, sub.take(np.array([i])), stages=type(split)(*(v[i:i + 1] for v in split)),
                          stage=code[i:i + 1], gpus_per_node=8, seq_len=4096, states=MEGATRON_STATES)
        for field, a, b in zip(DPTimes._fields, one, batched):
            assert np.broadcast_to(a, (1,))[0] == np.broadcast_to(b, (len(rows),))[i], field
