"""Mixtral-8x7B through the cost model: the MoE paths of the FLOP, parameter and time counts."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.flops import layer_gemm_flops_per_token, model_flops_per_step
from sp_planner.cost.buckets import stage_layouts
from sp_planner.cost.links import ring_collective_time_s, ring_latency_s
from sp_planner.cost.overlap import MEGATRON_OVERLAP, Overlap
from sp_planner.layout import DP_CP_AXES, axis_stride, group_stride
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.space import Candidates
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
    # etp 8 = tp: each expert sharded over the 8 TP ranks (Megatron's default ETP = TP), ep 1.
    est = evaluate(MIXTRAL, hw, workload, ParallelPlan(tp=8, dp=4, ulysses=2, zero=1, etp=8), num_nodes=8,
                   gpus_per_node=8)
    dense_like = evaluate(MIXTRAL.model_copy(update={"moe": None, "intermediate_size": TOP_K * FFN}), hw, workload,
                          ParallelPlan(tp=8, dp=4, ulysses=2, zero=1), num_nodes=8, gpus_per_node=8)
    # Same GEMMs and model FLOPs as a dense model of width 2 x 14336 ...
    assert est.time.gemm_s == pytest.approx(dense_like.time.gemm_s, rel=1e-12)
    assert est.model_tflops_per_gpu * est.step_time_s == pytest.approx(
        dense_like.model_tflops_per_gpu * dense_like.step_time_s, rel=1e-12)
    # ... but every expert's bf16 weights on each of the 8 TP ranks, and the whole router (its
    # weight is not TP-sharded in Megatron's TopKRouter).
    extra_params = LAYERS * ((EXPERTS * 3 * H * FFN - 3 * H * TOP_K * FFN) / 8 + H * EXPERTS)
    assert est.memory.params_bytes - dense_like.memory.params_bytes == pytest.approx(2 * extra_params, rel=1e-12)


QWEN3_30B = load_model("Qwen3-30B-A3B")


def test_expert_parallel_memory_and_dispatch_by_hand():
    # Qwen3-30B-A3B on 16 H100s: tp 2, dp 8 (world 16), ep 8, etp 1 -> edp = 16 / 8 = 2.
    m = QWEN3_30B
    h, layers, experts, top_k, ffn = 2048, 48, 128, 8, 768
    plan = ParallelPlan(tp=2, dp=8, ep=8, etp=1, zero=1)
    workload = Workload(seq_len=32768, global_batch=8)
    est = evaluate(m, load_hardware("h100-sxm"), workload, plan, num_nodes=2, gpus_per_node=8)
    routed = experts * 3 * h * ffn  # per layer, split over ep x etp = 8
    attention = m.attention_params_per_layer / 2  # q, k, v, o over tp 2 (4 KV heads: 2 per rank)
    router = h * experts  # replicated
    per_layer = attention + routed / 8 + router + m.norm_params_per_layer
    params = layers * per_layer + 2 * m.vocab_size * h / 2 + h  # embedding + output over tp, final norm
    assert est.memory.params_bytes == pytest.approx(2 * params, rel=1e-9)
    # ZeRO-1: the optimizer's 12 B/param shards the experts over edp 2, the rest over dp x cp = 8.
    experts_on_rank = layers * routed / 8
    assert est.memory.optimizer_bytes == pytest.approx(12 * ((params - experts_on_rank) / 8 + experts_on_rank / 2),
                                                       rel=1e-9)
    # Dispatch + combine, forward and backward, per layer and micro-batch: each rank's n/tp tokens x
    # top_k x h bf16, x 1.25 on the busiest rank, the (ep-1)/ep leaving it.
    tokens = 32768 // 2
    per_layer_bytes = 4 * tokens * top_k * h * 2 * 1.25 * 7 / 8
    assert est.comm_bytes.ep_all_to_all == pytest.approx(per_layer_bytes * layers * 1, rel=1e-6)  # m = 1
    # ep 8 at stride etp 1 inside an 8-GPU node: NVLink.
    assert est.comm_links.ep_all_to_all == "intra" and est.comm_links.edp_reduce_scatter == "inter"


def test_expert_gradient_reduce_scatter_goes_through_the_framework_overlap():
    # The plan above, ZeRO-1. With nothing overlapped the exposed DP time is the whole gradient
    # reduce-scatter plus the parameter all-gather, each the dense part over dp x cp = 8 plus the
    # routed experts over edp = 2 (fp32 gradients, bf16 parameters, (n-1)/n of the shard group).
    m, hw = QWEN3_30B, load_hardware("h100-sxm")
    h, layers, experts, ffn = 2048, 48, 128, 768
    plan = ParallelPlan(tp=2, dp=8, ep=8, etp=1, zero=1)
    workload = Workload(seq_len=32768, global_batch=8)
    c = Candidates.of_plan(plan)
    routed_on_rank = layers * experts * 3 * h * ffn / 8
    est = evaluate(m, hw, workload, plan, num_nodes=2, gpus_per_node=8)
    params = est.memory.params_bytes / 2
    dense = params - routed_on_rank

    # Each Megatron bucket is a call of its own and pays the ring latency (cost.buckets).
    dense_layout, expert_layout = stage_layouts(m, tp=2, ep=8, etp=1, layers=layers, single_stage=True, dp=8, zero=1)

    def both(kind, bytes_per_param):
        dense_s = ring_collective_time_s(hw, kind, bytes_per_param * dense * 7 / 8, 8, group_stride(c, DP_CP_AXES), 8)
        expert_s = ring_collective_time_s(hw, kind, bytes_per_param * routed_on_rank / 2, 2, axis_stride(c, "edp"), 8)
        more = ((dense_layout.num_calls - 1) * ring_latency_s(hw, kind, 8, group_stride(c, DP_CP_AXES), 8)
                + (expert_layout.num_calls - 1) * ring_latency_s(hw, kind, 2, axis_stride(c, "edp"), 8))
        return float((dense_s + expert_s + more)[0])

    nothing = Overlap(grad_reduce=False, param_gather=False, tp_comm=False, zero3_prefetch=False,
                      grad_all_reduce=False)
    exposed = evaluate(m, hw, workload, plan, num_nodes=2, gpus_per_node=8, overlap=nothing).time.dp_comm_exposed_s
    assert exposed == pytest.approx(both("reduce_scatter", 4) + both("all_gather", 2), rel=1e-9)
    # Megatron's overlap hides part of both (the expert reduce-scatter with the dense one).
    megatron = evaluate(m, hw, workload, plan, num_nodes=2, gpus_per_node=8, overlap=MEGATRON_OVERLAP)
    assert megatron.time.dp_comm_exposed_s < exposed


def test_expert_states_follow_an_uneven_pipeline_split():
    # Qwen3-30B-A3B, tp 2 x pp 2 x dp 4 (16 GPUs), ep 4, etp 1 -> edp = 16 / (2*4) = 2; the first
    # stage holds 28 of the 48 layers (the busier stage: more layers and 1F1B's in-flight activations).
    m = QWEN3_30B
    h, experts, ffn = 2048, 128, 768
    plan = ParallelPlan(tp=2, pp=2, dp=4, ep=4, etp=1, zero=1, first_stage_layers=28, last_stage_layers=20)
    est = evaluate(m, load_hardware("h100-sxm"), Workload(seq_len=32768, global_batch=8), plan, num_nodes=2,
                   gpus_per_node=8)
    routed = experts * 3 * h * ffn / 4  # per layer and rank, over ep x etp = 4
    per_layer = m.attention_params_per_layer / 2 + routed + h * experts + m.norm_params_per_layer
    params = 28 * per_layer + m.vocab_size * h / 2  # first stage: 28 layers + the embedding over tp
    assert est.memory.params_bytes == pytest.approx(2 * params, rel=1e-9)
    # ZeRO-1: the 28 layers' experts shard over edp 2, the rest over dp x cp = 4.
    experts_on_rank = 28 * routed
    assert est.memory.optimizer_bytes == pytest.approx(12 * ((params - experts_on_rank) / 4 + experts_on_rank / 2),
                                                       rel=1e-9)
