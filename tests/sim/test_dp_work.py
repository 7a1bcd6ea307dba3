"""sim.dp_work: each pipeline stage's data-parallel calls carry that stage's parameters.

pp 4 over the 4-layer model of tests/cost/test_dp_overlap.py (H 2048, vocabulary 32000, untied),
one layer a stage at tp 1: the first stage holds a layer and the embedding, the middle ones a
layer, the last a layer, the output layer and the final norm (H) -- what cost.params counts.
A phase that takes 1 s for the whole first stage's gradients with no latency makes each call's
seconds its share of the first stage's parameters, so a stage's calls sum to its parameters
over the first stage's.
"""

import numpy as np
import pytest

from sp_planner.cost.bucket_counts import bucket_counts
from sp_planner.cost.params import stage_params_per_rank
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.sim.dp_work import dp_calls
from sp_planner.sim.flows import PhaseResult
from tests.cost.test_buckets import LAYER, TABLE
from tests.cost.test_dp_overlap import H, MODEL


def _phase(name, groups, nbytes, algorithm, efficiency, rounds=1, one_call=True):
    return PhaseResult(name=name, duration_s=1.0 if nbytes > 0 else 0.0)


@pytest.mark.parametrize("zero", [1, 3])
def test_every_stage_reduces_its_own_parameters(zero):
    plan = ParallelPlan(dp=8, pp=4, zero=zero)
    stages = stage_layers(MODEL.num_layers, 4, 0, 0)
    zgroups, edp = np.zeros((4, 8), dtype=np.int64), np.zeros((4, 8), dtype=np.int64)
    reduce, _, _, _ = dp_calls(_phase, H, MODEL, plan, stages, [1, 1, 1, 1], zgroups,
                               np.zeros((32, 1), dtype=np.int64), edp, MEGATRON_RUNTIME, seq_len=4096)
    first, last = (float(p) for p in stage_params_per_rank(MODEL, 1, 4, stages))
    assert (first, last) == (LAYER + TABLE, LAYER + TABLE + H)
    assert [calls.total_s for calls in reduce] == pytest.approx([1.0, LAYER / first, LAYER / first, last / first])
    # The first stage's calls are the ones the analytic model counts.
    dense, _ = bucket_counts(MODEL, tp=np.array([1]), ep=1, etp=1, layers=np.array([1]), pp=np.array([4]),
                             dp=np.array([8]), zero=np.array([zero]))
    calls = reduce[0]
    assert len(calls.head) + sum(len(c) for c in calls.layers) + len(calls.tail) == dense.num_calls[0]


def test_fp8_weights_are_gathered_in_fp8():
    # The first stage of pp 4 holds one layer (GEMM weights 4H^2 + 3H*FFN = 67,108,864, norms 2H)
    # and the embedding (32000*H = 65,536,000): 132,648,960 parameters, 2 B each in bf16; with FP8
    # weights (Megatron --fp8-param-gather, cost.fp8_params) the GEMM weights move 1 B. 7/8 of that
    # leaves each of 8 ranks.
    sent = {}

    def phase(name, groups, nbytes, algorithm, efficiency, rounds=1, one_call=True):
        sent[name] = nbytes
        return PhaseResult(name=name, duration_s=1.0 if nbytes > 0 else 0.0)

    stages = stage_layers(MODEL.num_layers, 4, 0, 0)
    zgroups, edp = np.zeros((4, 8), dtype=np.int64), np.zeros((4, 8), dtype=np.int64)
    for precision, nbytes in (("bf16", 2 * 132_648_960), ("fp8", 2 * 132_648_960 - 67_108_864),
                              ("mxfp8", 2 * 132_648_960)):  # MXFP8 weights are gathered in bf16
        plan = ParallelPlan(dp=8, pp=4, zero=1, precision=precision)
        dp_calls(phase, H, MODEL, plan, stages, [1, 1, 1, 1], zgroups,
                 np.zeros((32, 1), dtype=np.int64), edp, MEGATRON_RUNTIME, seq_len=4096)
        assert sent["dp param all-gather"] == pytest.approx(nbytes * 7 / 8), precision
