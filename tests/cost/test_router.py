"""The MoE router's gating GEMM (cost.router): hand-derived times on A100, whose profile has no K or
output-size table (factor 1), so each GEMM runs at the flat 312 TFLOPS x 0.813."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.gemm_shapes import layer_gemm_factors
from sp_planner.cost.router import (
    TF32_DENSE_FLOPS,
    fp32_router_cast_bytes,
    router_gemm_flops_per_token,
    router_times_s,
)

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


A100_TF32_GEMM_FLOPS_PER_S = 156e12 * 0.813  # TF32_DENSE_FLOPS["a100-80gb"] x a100-80gb.yaml efficiency.gemm
A100_MEMORY_BYTES_PER_S = 2.039e12 * 0.76  # a100-80gb.yaml hbm_bandwidth_bytes_per_s x efficiency.memory_bound


def test_fp32_router_backward_on_tf32_with_its_casts():
    # Megatron --moe-router-dtype fp32 on Qwen3-30B-A3B, 4096 tokens: the forward is the bf16 GEMM
    # unchanged; the backward's 4.295e9 FLOPs run at TF32's 156 TFLOPS x 0.813 (33.86 us), and the
    # casts move 6 bytes an element of the input and data gradient (4096 x 2048) and of the weight
    # and its gradient (2048 x 128): 12 x (8,388,608 + 262,144) = 103,809,024 bytes (66.99 us).
    model = load_model("Qwen3-30B-A3B")
    fwd, bwd = router_times_s(A100, model, 4096, "fp32")
    assert float(fwd) == pytest.approx(float(router_times_s(A100, model, 4096)[0]), rel=1e-12)
    gemm_s = 2 * 2 * 2048 * 128 * 4096 / A100_TF32_GEMM_FLOPS_PER_S
    casts_s = 103_809_024 / A100_MEMORY_BYTES_PER_S
    assert fp32_router_cast_bytes(model, 4096) == 103_809_024
    assert float(bwd) == pytest.approx(gemm_s + casts_s, rel=1e-12)
    assert float(bwd) == pytest.approx(33.86e-6 + 66.99e-6, rel=1e-3)


def test_fp32_router_casts_weigh_the_mean_layer():
    # DeepSeek-V3's casts (hidden 7168, 256 experts) on 58 of 61 layers, 1024 tokens:
    # 58/61 x 12 x (1024 x 7168 + 7168 x 256) bytes.
    model = load_model("DeepSeek-V3")
    _, bwd = router_times_s(A100, model, 1024, "fp32")
    gemm_s = 2 * router_gemm_flops_per_token(model) * 1024 / A100_TF32_GEMM_FLOPS_PER_S
    casts_s = 58 / 61 * 12 * (1024 * 7168 + 7168 * 256) / A100_MEMORY_BYTES_PER_S
    assert float(bwd) == pytest.approx(gemm_s + casts_s, rel=1e-12)


def test_fp32_router_needs_a_tf32_peak_and_a_known_dtype():
    with pytest.raises(ValueError, match="no TF32 peak"):
        router_times_s(load_hardware("h800"), load_model("Qwen3-30B-A3B"), 4096, "fp32")
    with pytest.raises(ValueError, match="fp64"):
        router_times_s(A100, load_model("Qwen3-30B-A3B"), 4096, "fp64")
    fwd, bwd = router_times_s(load_hardware("h800"), load_model("Llama-3-8B"), 4096, "fp32")
    assert float(fwd) == 0.0 and float(bwd) == 0.0


def test_tf32_peaks_are_half_the_bf16_peaks_of_built_in_profiles():
    # The datasheets' dense TF32 is half the dense BF16 tensor-core peak (B200 and B300: 1.1 PF
    # against 2.25, 0.49; L40S 183 against 362); every key names a built-in profile.
    for key, tf32_flops in TF32_DENSE_FLOPS.items():
        assert 0.48 <= tf32_flops / load_hardware(key).peak_bf16_flops <= 0.51, key
    assert TF32_DENSE_FLOPS["h100-sxm"] == 494.5e12 and TF32_DENSE_FLOPS["gb200-nvl72"] == 1250e12
