"""cost.dp_calls: a stage's data-parallel calls priced call by call, row by row."""

import numpy as np
import pytest

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


def test_zero2s_later_chunks_gather_their_first_layers_own_buckets():
    # Llama-3-8B, pp 2 x vpp 4 x tp 2, ZeRO-2, dp 16 on 8 x 8 H100: each model chunk is bucketed
    # on its own (cost.bucket_counts._chunk_summary), so a later chunk's first forward waits for its first
    # layer's buckets, the very calls the last stage's chunk 0 opens with (no embedding there),
    # more than a layer's share of the stage's calls (the walk leaves the rest to the first layer).
    from sp_planner.candidates import Candidates
    from sp_planner.plan import ParallelPlan

    model, h100 = load_model("Llama-3-8B"), load_hardware("H100")
    for vpp in (4, 1):
        c = Candidates.of_plan(ParallelPlan(dp=16, pp=2, vpp=vpp, tp=2, zero=2))
        first, last = dp_stage_times(model, h100, c, stages=candidate_stage_layers(model, c), gpus_per_node=8,
                                     seq_len=4096, which=("first", "last"))
        if vpp == 1:  # one chunk: none (a layer's share stands in, cost.dp_once.later_first_s)
            assert first.later_first_gather_s[0] == last.later_first_gather_s[0] == 0.0
            continue
        np.testing.assert_allclose(last.later_first_gather_s, last.first_all_gather_s, rtol=1e-12)
        np.testing.assert_allclose(first.later_first_gather_s, last.later_first_gather_s, rtol=1e-12)
        # 1.545 ms against a layer's share of 1.253 ms (cost.dp_once.chunks_gather_s' old floor).
        share = (last.param_all_gather_s - last.root_gather_s) / 16
        assert share[0] == pytest.approx(0.0012533, rel=1e-4)
        assert last.later_first_gather_s[0] == pytest.approx(0.0015453, rel=1e-4)
