"""Mixtral-8x7B through the cost model: the MoE paths of the FLOP, parameter and time counts."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.flops import layer_gemm_flops_per_token, model_flops_per_step
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

MIXTRAL = load_model("Mixtral-8x7B")
# Mixtral-8x7B (HF config.json): hidden 4096, 32 heads of 128, 8 KV heads, 8 experts of width
# 14336, top-2, SwiGLU, 32 layers, vocabulary 32000.
H, Q, KV, FFN, TOP_K, EXPERTS, LAYERS, VOCAB = 4096, 4096, 1024, 14336, 2, 8, 32, 32000


def test_spec_is_mixtral():
    moe = MIXTRAL.moe
    assert (MIXTRAL.hidden_size, MIXTRAL.q_size, MIXTRAL.kv_size, MIXTRAL.num_layers, MIXTRAL.vocab_size) == (
        H, Q, KV, LAYERS, VOCAB)
    assert (moe.num_experts, moe.top_k, moe.moe_intermediate_size, moe.num_shared_experts) == (EXPERTS, TOP_K, FFN, 0)


def test_gemm_flops_count_the_top_k_experts_a_token_passes_through():
    attention = 2 * H * (2 * Q + 2 * KV)  # QKV and output projection, 2 FLOPs per multiply-add
    mlp = 2 * 3 * H * TOP_K * FFN  # gate, up, down of two experts
    assert layer_gemm_flops_per_token(MIXTRAL) == attention + mlp


def test_model_flops_per_step_by_hand():
    s = 32768
    per_token = LAYERS * (2 * H * (2 * Q + 2 * KV) + 2 * 3 * H * TOP_K * FFN + 4 * Q * s) + 2 * H * VOCAB
    assert model_flops_per_step(MIXTRAL, seq_len=s, global_batch=4) == pytest.approx(3 * per_token * s * 4, rel=1e-12)


def test_every_expert_is_stored_but_only_two_are_computed():
    # Parameters: all 8 experts (46.7 B in total, 12.9 B active, Mistral's announcement).
    assert MIXTRAL.num_params == pytest.approx(46.7e9, rel=0.01)
    assert MIXTRAL.num_active_params == pytest.approx(12.9e9, rel=0.01)
    hw = load_hardware("h100-sxm")
    workload = Workload(seq_len=32768, global_batch=8)
    est = evaluate(MIXTRAL, hw, workload, ParallelPlan(tp=8, dp=4, ulysses=2, zero=1), num_nodes=8, gpus_per_node=8)
    dense_like = evaluate(MIXTRAL.model_copy(update={"moe": None, "intermediate_size": TOP_K * FFN}), hw, workload,
                          ParallelPlan(tp=8, dp=4, ulysses=2, zero=1), num_nodes=8, gpus_per_node=8)
    # Same GEMMs and model FLOPs as a dense model of width 2 x 14336 ...
    assert est.time.gemm_s == pytest.approx(dense_like.time.gemm_s, rel=1e-12)
    assert est.model_tflops_per_gpu * est.step_time_s == pytest.approx(
        dense_like.model_tflops_per_gpu * dense_like.step_time_s, rel=1e-12)
    # ... but every expert's bf16 weights (and the router) on each of the 8 TP ranks.
    extra_params = LAYERS * (EXPERTS * 3 * H * FFN + H * EXPERTS - 3 * H * TOP_K * FFN) / 8
    assert est.memory.params_bytes - dense_like.memory.params_bytes == pytest.approx(2 * extra_params, rel=1e-12)
