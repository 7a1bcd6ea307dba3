"""Current scaling's amax all-reduces over the TP group (cost.amax_reduce) by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
import sp_planner.cost.gemm_work as gemm_work_module
from sp_planner.cost.amax_reduce import (amax_reduction_s, amax_reductions_per_layer, layer_reductions,
                                         tiny_all_reduce_s, torchao_reductions_per_layer)
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.sim.simulate import analytic_step_time_s, simulate
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))


def test_tiny_all_reduce_follows_nccls_ring_ll_model():
    # NCCL tuning.cc ring LL: 6.6 us base + 2(n-1) hops of 0.6 us on NVLink, 2.7 us between nodes.
    assert tiny_all_reduce_s(np.array([1]), 1, 8)[0] == 0.0
    assert tiny_all_reduce_s(np.array([2]), 1, 8)[0] == pytest.approx(7.8e-6)
    assert tiny_all_reduce_s(np.array([4]), 1, 8)[0] == pytest.approx(10.2e-6)
    assert tiny_all_reduce_s(np.array([8]), 1, 8)[0] == pytest.approx(15.0e-6)
    # 16 ranks on two 8-GPU nodes: 28 NVLink hops, each at least NCCL's 1 us network post overhead
    # once the ring leaves the node (tuning.cc lines 405-410), and 2 network hops.
    assert tiny_all_reduce_s(np.array([16]), 1, 8)[0] == pytest.approx(6.6e-6 + 28 * 1.0e-6 + 2 * 2.7e-6)


def test_eight_gpus_sit_near_the_measured_tiny_all_reduce():
    # 8 x H20 (one Hopper NVSwitch node) measured 12.5 us for 4-16 B (deepseek-ai/DeepEP#303).
    assert tiny_all_reduce_s(np.array([8]), 1, 8)[0] == pytest.approx(12.5e-6, rel=0.25)


def test_reductions_per_layer_by_model():
    # Dense: QKV and FC1 inputs forward, projection and FC2 output gradients backward.
    assert amax_reductions_per_layer(load_model("llama3-70b")) == (2.0, 2.0)
    # Every Qwen3-30B-A3B layer is MoE without shared experts: QKV and the projection only.
    assert amax_reductions_per_layer(load_model("qwen3-30b-a3b")) == (1.0, 1.0)


def test_only_current_scaling_at_tp_above_one_pays():
    model = load_model("llama3-70b")
    tp = np.array([4, 4, 4, 4, 1])
    precision = np.array([FP8, FP8, BF16, MXFP8, FP8])
    current = np.array([True, False, True, True, True])
    fwd, bwd = amax_reduction_s(model, tp=tp, precision=precision, fp8_current=current, gpus_per_node=8)
    assert fwd.tolist() == pytest.approx([2 * 10.2e-6, 0, 0, 0, 0])
    assert bwd.tolist() == pytest.approx([2 * 10.2e-6, 0, 0, 0, 0])


def test_torchtitan_reduces_every_sharded_cast_where_it_gathers_fp8():
    # torchtitan 0.2.x's tensorwise float8 casts DTensors: a Llama layer's 7 weight shards, its 2
    # gathered and 2 row-parallel inputs forward, its 7 output gradients backward, each one
    # all-reduce over the TP group (traced: 11 + 7); 0.3.x gathers bf16 and casts the whole tensor,
    # and its rowwise axiswise reductions are not priced: none.
    one = dict(tp=np.array([4]), precision=np.array([FP8]), fp8_current=np.array([True]), gpus_per_node=8)
    model = load_model("llama3-70b")
    fwd, bwd = amax_reduction_s(model, **one, gathers=TORCHAO_TENSORWISE_TP_GATHERS)
    assert (fwd.tolist(), bwd.tolist()) == (pytest.approx([11 * 10.2e-6]), pytest.approx([7 * 10.2e-6]))
    assert [v.tolist() for v in amax_reduction_s(model, **one, gathers=BF16_TP_GATHERS)] == [[0.0], [0.0]]


def test_torchao_reductions_per_layer_by_model():
    # Per TP-sharded block of n linears n + 2 forward, n backward: attention (wq, wk, wv, wo) 6 and
    # 4, a SwiGLU MLP (w1, w2, w3) 5 and 3, GELU's (up, down) 4 and 2.
    assert torchao_reductions_per_layer(load_model("llama3-70b")) == (11.0, 7.0)
    assert torchao_reductions_per_layer(load_model("GPT-3-175B")) == (10.0, 6.0)
    # MoE layers: the attention alone (Qwen3-30B-A3B, no shared experts: routed experts bf16, the
    # router replicated), or with the shared experts' block (Llama 4 Maverick, every other layer
    # MoE: 11 and 7 on both kinds).
    assert torchao_reductions_per_layer(load_model("qwen3-30b-a3b")) == (6.0, 4.0)
    assert torchao_reductions_per_layer(load_model("Llama-4-Maverick-17B-128E")) == (11.0, 7.0)
    # Multi-latent attention: Transformer Engine's counts (not traced; deepseek_v3 runs plain styles).
    model = load_model("DeepSeek-V3")
    assert torchao_reductions_per_layer(model) == amax_reductions_per_layer(model)
    # The counts follow the framework's linears (TpGathers.reduces_sharded_amaxes).
    assert layer_reductions(model := load_model("llama3-8b"), TE_TP_GATHERS) == (2.0, 2.0)
    assert layer_reductions(model, TORCHAO_TENSORWISE_TP_GATHERS) == (11.0, 7.0)


def test_step_pays_each_layers_reductions_in_both_models(monkeypatch):
    # Llama-3-8B, 32 layers, tp 4 x dp 2, 2 micro-batches a rank, no pipeline: the reductions add
    # 32 layers x 2 micro-batches x (2 + 2) x 10.2 us to the analytic step, and the simulator agrees.
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=4)
    plan = ParallelPlan(tp=4, dp=2, zero=1, precision="fp8", fp8_recipe="tensorwise")
    with_sim = simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
    with_ana = analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8)
    zero = lambda model, *, tp, **_: (np.zeros(np.shape(tp)), np.zeros(np.shape(tp)))  # noqa: E731
    # Both models take the reductions from cost.gemm_work, the one place that adds them.
    monkeypatch.setattr(gemm_work_module, "amax_reduction_s", zero)
    without_sim = simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
    without_ana = analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8)
    expected = 32 * 2 * 4 * 10.2e-6
    assert with_ana - without_ana == pytest.approx(expected, rel=1e-6)
    assert with_sim - without_sim == pytest.approx(expected, rel=0.05)
