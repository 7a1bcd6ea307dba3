"""DP gradient reduction hidden behind the last backward: the window's TP collectives and the
Megatron DDP bucket, by hand and against the simulator.

The profile makes compute free (peak 1e21 FLOP/s, HBM 1e18 B/s) and gives all-gather and
reduce-scatter different efficiencies, so the backward window is exactly its TP collectives and
counting them the wrong way round moves the answer.
"""

import pytest

from sp_planner.cost.overlap import DEEPSPEED_OVERLAP
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import HardwareProfile, ModelSpec, Workload

NVLINK_BW = 100e9
AG_EFF, RS_EFF, AR_EFF = 1.0, 0.1, 0.5


def fast_compute_hardware(gpus_per_node: int, peak_flops: float = 1e21) -> HardwareProfile:
    flat = [{"tokens": 512, "efficiency": 1.0}]
    collective = dict(all_reduce=AR_EFF, all_gather=AG_EFF, reduce_scatter=RS_EFF, all_to_all=1.0, p2p=1.0)
    return HardwareProfile(
        name="skewed", peak_bf16_flops=peak_flops, hbm_bytes=1e15, hbm_bandwidth_bytes_per_s=1e18,
        gpus_per_node=gpus_per_node,
        intra_node=dict(kind="nvlink", bandwidth_bytes_per_s=NVLINK_BW, latency_s=0.0),
        inter_node=dict(kind="infiniband", bandwidth_bytes_per_s=10e9, latency_s=0.0),
        efficiency=dict(gemm=1.0, attention_fwd=flat, attention_bwd=flat, intra_node=collective,
                        inter_node=collective),
        memory_reserve_bytes=0,
    )


# MHA, SwiGLU, untied: per layer 4h^2 attention + 3*h*ffn MLP + 2h norms.
H, FFN, LAYERS, VOCAB = 2048, 8192, 4, 32000
MODEL = ModelSpec(name="mid", hidden_size=H, intermediate_size=FFN, num_layers=LAYERS, num_heads=16,
                  num_kv_heads=16, head_dim=128, vocab_size=VOCAB, tie_word_embeddings=False)


def params_per_rank(tp: int) -> float:
    """Parameters on one rank of a single-stage model: layers, embedding and head shards, final norm."""
    layer = (4 * H * H + 3 * H * FFN) / tp + 2 * H
    return LAYERS * layer + 2 * VOCAB * H / tp + H


def test_backward_window_is_four_all_gathers_and_two_reduce_scatters():
    # tp 2 x dp 2 in one 4-GPU node, ZeRO-1, one micro-batch of 4096 tokens.
    tp, dp, seq = 2, 2, 4096
    hw = fast_compute_hardware(gpus_per_node=4)
    plan = ParallelPlan(tp=tp, dp=dp, zero=1, micro_batch=1)
    est = evaluate(MODEL, hw, Workload(seq_len=seq, global_batch=dp), plan, num_nodes=1, gpus_per_node=4)

    tp_sent = seq * H * 2 * (tp - 1) / tp  # bf16 activations, (n-1)/n of the gathered buffer
    ag, rs = tp_sent / (NVLINK_BW * AG_EFF), tp_sent / (NVLINK_BW * RS_EFF)
    window = LAYERS * (4 * ag + 2 * rs)
    params = params_per_rank(tp)
    share = (dp - 1) / dp
    grad_rs = 4 * params * share / (NVLINK_BW * RS_EFF)  # fp32 gradients
    param_ag = 2 * params * share / (NVLINK_BW * AG_EFF)  # bf16 parameters after the step
    # 40M buckets at tp 2 (cost.buckets, backprop order): the output layer (32.8M) and final norm
    # close with layer 3's fc2, layers 2 and 1 close one bucket each; layer 0 (33.6M) closes none
    # and goes with the embedding (32.8M): that 66.3M bucket is the one left after the backward.
    layer0 = (4 * H * H + 3 * H * FFN) / tp + 2 * H
    last_bucket = (layer0 + VOCAB * H / tp) / params
    assert grad_rs - window > grad_rs * last_bucket  # the window, not the last bucket, decides
    # --overlap-param-gather: the gather hides behind the next forward (2 AG + 2 RS a layer) but
    # its first bucket; the hidden traffic costs 16 of 132 SMs while it runs (cost.overlap).
    fwd_window = LAYERS * (2 * ag + 2 * rs)
    gather = max(param_ag * last_bucket, param_ag - fwd_window)
    exposed = grad_rs - window + gather
    hidden = grad_rs + param_ag - exposed
    assert est.time.dp_comm_exposed_s == pytest.approx(exposed + 16 / 132 * hidden, rel=1e-6)
    # The layers' 6 AG + 4 RS, and the embedding's RS + AG and the output layer's AG + AG + RS; at
    # step end the sequence-parallel norms' fp32 gradients (2 a layer and the final one, h each)
    # all-reduced over tp 2: each rank sends 2 x 1/2 of them (cost.replicated_grads).
    norms_ar = 2 * (tp - 1) / tp * (LAYERS * 2 * H + H) * 4 / (NVLINK_BW * AR_EFF)
    assert est.time.tp_comm_s == pytest.approx(LAYERS * (6 * ag + 4 * rs) + 3 * ag + 2 * rs + norms_ar, rel=1e-6)

    # The simulator runs the same layer program op by op; without contention it agrees. Its
    # first bucket leaves after part of the last layer's backward (4 AG + 1 RS), and it gathers
    # the parameters layer by layer in the first forward, so it differs by a few percent; 4 RS +
    # 2 AG in the analytic window would put the model ~14% below it.
    sim = simulate(MODEL, hw, Workload(seq_len=seq, global_batch=dp), plan, num_nodes=1, gpus_per_node=4)
    assert sim.analytic_step_time_s == pytest.approx(est.step_time_s, rel=1e-9)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.05)


def test_deepspeed_exposes_the_zero1_parameter_gather():
    # DeepSpeed stage 1/2 gather the updated parameters synchronously after step(): the whole
    # all-gather is exposed, and only the reduce's hidden part slows compute.
    tp, dp, seq = 2, 2, 4096
    hw = fast_compute_hardware(gpus_per_node=4)
    plan = ParallelPlan(tp=tp, dp=dp, zero=1, micro_batch=1)
    workload = Workload(seq_len=seq, global_batch=dp)
    # DeepSpeed's overlap with Megatron's fp32 gradients (the 4 bytes a parameter below).
    runtime = MEGATRON_RUNTIME.model_copy(update={"overlap": DEEPSPEED_OVERLAP})
    est = evaluate(MODEL, hw, workload, plan, num_nodes=1, gpus_per_node=4, runtime=runtime)
    tp_sent = seq * H * 2 * (tp - 1) / tp
    ag, rs = tp_sent / (NVLINK_BW * AG_EFF), tp_sent / (NVLINK_BW * RS_EFF)
    window = LAYERS * (4 * ag + 2 * rs)
    share = (dp - 1) / dp
    grad_rs = 4 * params_per_rank(tp) * share / (NVLINK_BW * RS_EFF)
    param_ag = 2 * params_per_rank(tp) * share / (NVLINK_BW * AG_EFF)
    assert est.time.dp_comm_exposed_s == pytest.approx(grad_rs - window + param_ag + 16 / 132 * window, rel=1e-6)
    sim = simulate(MODEL, hw, workload, plan, num_nodes=1, gpus_per_node=4, runtime=runtime)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.05)


# The buckets that cannot hide at tp 1 (tests/cost/test_buckets.py, by hand): with 40M buckets
# one layer, layer 0's qkv and proj and the embedding; with 64M one layer and the embedding.
LAYER_TP1 = 4 * H * H + 3 * H * FFN + 2 * H


@pytest.mark.parametrize("dp,last", [(8, LAYER_TP1 + 4 * H * H + H + VOCAB * H), (64, LAYER_TP1 + VOCAB * H)])
def test_last_ddp_buckets_follow_megatron_default_for_the_dp_size(dp, last):
    # Slow compute hides everything but the last buckets of the ZeRO-0 all-reduce, of
    # max(40M, 1M * dp) parameters, exposed for their share of the all-reduce.
    hw = fast_compute_hardware(gpus_per_node=dp, peak_flops=1e13)
    plan = ParallelPlan(dp=dp, zero=0, micro_batch=1)
    est = evaluate(MODEL, hw, Workload(seq_len=4096, global_batch=dp), plan, num_nodes=1, gpus_per_node=dp)
    params = params_per_rank(1)
    all_reduce = 2 * 4 * params * (dp - 1) / dp / (NVLINK_BW * AR_EFF)
    exposed = all_reduce * last / params
    hidden = all_reduce - exposed  # slows the backward it hides behind by 16/132 (cost.overlap)
    assert est.time.dp_comm_exposed_s == pytest.approx(exposed + 16 / 132 * hidden, rel=1e-6)
