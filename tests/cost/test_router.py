"""The MoE router's gating GEMM (cost.router): hand-derived times on A100, whose profile has no K or
output-size table (factor 1), so each GEMM runs at the flat 312 TFLOPS x 0.813."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.gemm_shapes import layer_gemm_factors
from sp_planner.cost.router import router_gemm_flops_per_token, router_times_s

A100 = load_hardware("a100-80gb")
A100_GEMM_FLOPS_PER_S = 312e12 * 0.813  # a100-80gb.yaml peak_bf16_flops x efficiency.gemm


def test_qwen3_30b_router_on_a100():
    # Qwen3-30B-A3B: hidden 2048, 128 experts, every one of its 48 layers MoE; 4096 tokens a rank:
    # 2 x 2048 x 128 x 4096 = 2.147e9 FLOPs forward, twice that backward (data and weight gradients).
    fwd, bwd = router_times_s(A100, load_model("Qwen3-30B-A3B"), 4096)
    assert float(fwd) == pytest.approx(2 * 2048 * 128 * 4096 / A100_GEMM_FLOPS_PER_S, rel=1e-12)
    assert float(fwd) == pytest.approx(8.4661e-6, rel=1e-4)
    assert float(bwd) == pytest.approx(2 * 8.4661e-6, rel=1e-4)


def test_dense_first_layers_weigh_the_mean_layer():
    # DeepSeek-V3: 3 dense layers of 61, hidden 7168, 256 routed experts: 58/61 of one MoE layer's
    # 2 x 7168 x 256 FLOPs a token.
    model = load_model("DeepSeek-V3")
    assert router_gemm_flops_per_token(model) == pytest.approx(58 / 61 * 2 * 7168 * 256)
    fwd, _ = router_times_s(A100, model, 4096)
    assert float(fwd) == pytest.approx(58 / 61 * 2 * 7168 * 256 * 4096 / A100_GEMM_FLOPS_PER_S, rel=1e-12)


def test_dense_model_has_no_router():
    fwd, bwd = router_times_s(A100, load_model("Llama-3-8B"), [4096, 8192])
    assert fwd.tolist() == [0.0, 0.0] and bwd.tolist() == [0.0, 0.0]
    assert router_gemm_flops_per_token(load_model("Llama-3-8B")) == 0.0


def test_skinny_router_gemm_runs_below_the_flat_rate_on_h100():
    # 4096 tokens x 128 experts is 0.5 M outputs: the output-size and K tables slow the forward
    # (over K = 2048) and the data gradient (K = 128) well below the large-shape rate.
    h100 = load_hardware("h100-sxm")
    fwd_factor, bwd_factor = layer_gemm_factors(h100, 2048, 128, 4096, False)
    assert fwd_factor > 2 and bwd_factor > 2
    fwd, bwd = router_times_s(h100, load_model("Qwen3-30B-A3B"), 4096)
    flat = 2 * 2048 * 128 * 4096 / (989.0e12 * h100.efficiency.gemm)
    assert float(fwd) == pytest.approx(flat * fwd_factor, rel=1e-9)
    assert float(bwd) == pytest.approx(2 * flat * bwd_factor, rel=1e-9)
