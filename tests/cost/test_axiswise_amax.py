"""Rowwise float8's amax vector all-reduces over the TP group (cost.axiswise_amax), by hand: per
TP-sharded linear one float64 vector of the micro-batch's tokens and one of the hidden size, 7 + 7
a Llama layer (traced at TP 2), forward the row-parallel inputs' and weights' and the
column-parallel weights', backward the column-parallel output gradients'."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.axiswise_amax import (
    axiswise_amax_reduction_s,
    column_linears_per_layer,
    row_linears_per_layer,
)
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.plan import PRECISIONS

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
H100 = load_hardware("h100-sxm")


def _one_s(tp, elems):
    """One all-reduce of `elems` float64 amaxes over tp GPUs of an 8-GPU node: each sends 2(tp-1)/tp."""
    return float(ring_collective_time_s(H100, "all_reduce", 2 * (tp - 1) / tp * 8 * elems, tp, 1, 8))


@pytest.mark.parametrize("name, hidden", [("llama3-8b", 4096), ("llama3-70b", 8192), ("llama3.1-405b", 16384)])
@pytest.mark.parametrize("tp", [2, 8])
def test_llama_layers_reduce_seven_token_and_seven_hidden_vectors(name, hidden, tp):
    # 8192 tokens a micro-batch: 64 KiB token vectors, and 32, 64 or 128 KiB hidden ones.
    model = load_model(name)
    fwd, bwd = axiswise_amax_reduction_s(model, H100, tokens=8192, tp=np.array([tp]), precision=np.array([FP8]),
                                         gpus_per_node=8, gathers=BF16_TP_GATHERS)
    assert float(fwd[0]) == pytest.approx(2 * (_one_s(tp, 8192) + _one_s(tp, hidden)) + 5 * _one_s(tp, hidden))
    assert float(bwd[0]) == pytest.approx(5 * _one_s(tp, 8192))


def test_real_sizes_not_a_few_bytes():
    # The project's ring all-reduce (cost.links), in NCCL's LL protocol at these sizes
    # (cost.nccl_protocols): 6.6 us + 2(tp-1) x 0.6 us, the bytes sent at Hopper's LL cap of 141 GB/s
    # (below half the 369 GB/s busbw). 8 B at tp 2: 7.8 us; a 128 KiB vector 7.8 + 131,072 B / 141
    # GB/s = 8.73 us, at tp 8 15.0 + 229,376 B / 141 GB/s = 16.63 us, a 64 KiB one 15.81 us; a layer
    # at 8K tokens on Llama-3-405B, tp 8, 14 of them: 7 x (15.81 + 16.63) us.
    assert _one_s(2, 1) == pytest.approx(7.8e-6, rel=1e-4)
    assert _one_s(2, 16384) == pytest.approx(7.8e-6 + 131072 / 141e9, rel=1e-9)
    assert _one_s(8, 16384) == pytest.approx(15.0e-6 + 229376 / 141e9, rel=1e-9)
    fwd, bwd = axiswise_amax_reduction_s(load_model("llama3.1-405b"), H100, tokens=8192, tp=8, precision=FP8,
                                         gpus_per_node=8, gathers=BF16_TP_GATHERS)
    assert float(fwd + bwd) == pytest.approx(7 * _one_s(8, 8192) + 7 * _one_s(8, 16384))
    assert float(fwd + bwd) == pytest.approx(227.08e-6, rel=1e-3)


def test_moe_layers_reduce_for_the_attention_and_shared_experts_alone():
    # Qwen3-30B-A3B (every layer MoE, no shared expert): the attention's 3 column- and 1 row-parallel
    # linears; Llama-4-Scout (every layer MoE, one shared expert): the shared experts' 2 + 1 besides;
    # the router (NoParallel) and the bf16 routed experts none.
    qwen, scout = load_model("Qwen3-30B-A3B"), load_model("Llama-4-Scout-17B-16E")
    assert (column_linears_per_layer(qwen), row_linears_per_layer(qwen)) == (3, 1)
    assert (column_linears_per_layer(scout), row_linears_per_layer(scout)) == (5, 2)
    fwd, bwd = axiswise_amax_reduction_s(qwen, H100, tokens=8192, tp=2, precision=FP8, gpus_per_node=8,
                                         gathers=BF16_TP_GATHERS)
    assert float(fwd) == pytest.approx(_one_s(2, 8192) + 4 * _one_s(2, 2048))
    assert float(bwd) == pytest.approx(3 * _one_s(2, 8192))


def test_only_rowwise_fp8_at_tp_above_one_reduces_vectors():
    # tp 1, bf16, MXFP8 (local block scales) and block scaling: none; 0.2.x's tensorwise and
    # Transformer Engine reduce scalars (cost.amax_reduce), no vector.
    model = load_model("llama3-8b")
    one = dict(tokens=8192, gpus_per_node=8)
    fwd, bwd = axiswise_amax_reduction_s(model, H100, tp=np.array([1, 2, 2, 2, 2]),
                                         precision=np.array([FP8, BF16, MXFP8, FP8, FP8]),
                                         fp8_blockwise=np.array([False, False, False, True, False]),
                                         gathers=BF16_TP_GATHERS, **one)
    assert (fwd[:4] + bwd[:4]).tolist() == [0.0] * 4 and fwd[4] > 0
    for gathers in (TORCHAO_TENSORWISE_TP_GATHERS, TE_TP_GATHERS):
        fwd, bwd = axiswise_amax_reduction_s(model, H100, tp=np.array([2]), precision=np.array([FP8]),
                                             gathers=gathers, **one)
        assert (float(fwd[0]), float(bwd[0])) == (0.0, 0.0)
