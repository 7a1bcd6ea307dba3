"""Quantization bytes per FP8 recipe (cost/precision.py) against TE's source-derived counts and,
as a check (not a fit), TE's own GEMM benchmark: TransformerEngine docs/examples/gemm_profiling/
gemm_profiling.rst (benchmarks/gemm/benchmark_gemm.py, 5B config: hidden 4096, intermediate 16384,
M = 31 x 512 = 15872 tokens; per-layer totals of its 12 GEMMs, autocast vs --pre-quantize)."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.precision import (
    BF16,
    FP8,
    MXFP8,
    gemm_inputs_per_token,
    gemm_output_grads_per_token,
    mlp_input_copies,
    precision_problem,
    quantize_bytes_per_elem,
)
from sp_planner.cost.step import time_columns
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload


def test_bytes_per_recipe():
    precision = np.array([BF16, FP8, FP8, MXFP8])
    current = np.array([True, False, True, True])  # only per-tensor FP8 reads it
    # Hopper (TN-only FP8 GEMMs): cast-transpose read 2 + write 1 + 1; current scaling's amax pass
    # reads the bf16 tensor once more; MXFP8 writes row- and column-wise data, each with 1/32 scales.
    assert quantize_bytes_per_elem(precision, current, False).tolist() == [0, 4, 6, 4.0625]
    # Blackwell keeps no FP8 transpose (quantizer.cpp with_transpose); MXFP8 needs both directions.
    assert quantize_bytes_per_elem(precision, current, True).tolist() == [0, 3, 5, 4.0625]


def _benchmark_elements() -> int:
    """Elements the benchmark quantizes per layer: each of its 12 GEMMs is one te.Linear(K, N)
    forward on an (M, K) input under te.autocast, which quantizes the input (M x K) and, with no
    is_first_microbatch caching, the weight (K x N) on every call (benchmark_gemm.py
    benchmark_fp8_current / benchmark_fp8_delayed / benchmark_fp8; shapes from
    compute_gemm_shapes: Fprop (M, K, N), Dgrad (M, N, K), Wgrad (K, M, N))."""
    h, i, m = 4096, 16384, 15872
    fprop = [(m, h, 3 * h), (m, h, h), (m, h, i), (m, i, h)]
    dgrad = [(mm, n, k) for mm, k, n in fprop]
    wgrad = [(k, mm, n) for mm, k, n in fprop]
    return sum(mm * k + k * n for mm, k, n in fprop + dgrad + wgrad)


def test_benchmark_elements_by_hand():
    # Fprop: 4 inputs of M x 4096 (3 of them) + M x 16384, weights 4096 x (12288 + 4096 + 16384) +
    # 16384 x 4096; Dgrad and Wgrad likewise: about 2.48 G elements a layer.
    assert _benchmark_elements() == 2_483_027_968


# Autocast minus pre-quantized per-layer times (ms). Delayed scaling always runs in autocast
# (the doc's note), so its quantization is its autocast time minus current scaling's pre-quantized
# one, whose GEMM kernels are the same per-tensor FP8 kernels.
TE_OVERHEAD_MS = {
    ("b300", FP8, True): 9.147 - 6.812,
    ("b300", FP8, False): 7.802 - 6.812,
    ("b300", MXFP8, False): 8.984 - 7.161,
    ("h200", FP8, True): 20.285 - 16.785,  # H200 NVL, same 4.8 TB/s HBM3e as the profile's SXM
    ("h200", FP8, False): 18.978 - 16.785,
}


@pytest.mark.parametrize("chip, precision, current", list(TE_OVERHEAD_MS))
def test_quantization_within_a_third_of_te_benchmark(chip, precision, current):
    # Our model: the bytes per element through HBM at the profile's bandwidth x efficiency.memory_bound
    # (cuDNN's normalization kernels' share: 0.75 on B300, 0.76 on H200). Left out: kernel launches
    # (current scaling adds an amax and a scale kernel per tensor) and delayed scaling's amax-history
    # update. The benchmark implies 0.69-0.72 of HBM peak for the casts that take an amax (current
    # scaling, MXFP8's blocks), as the norms' reductions, but 0.94-0.98 for delayed scaling's plain
    # cast, which the model times 30% slow on B300: a third either way.
    hw = load_hardware(chip)
    per_elem = quantize_bytes_per_elem(precision, current, hw.fp8_gemm_any_layout)
    modelled_ms = 1e3 * float(memory_pass_time_s(hw, per_elem * _benchmark_elements()))
    assert modelled_ms == pytest.approx(TE_OVERHEAD_MS[(chip, precision, current)], rel=1 / 3)


def test_recipe_order_matches_te_on_b300():
    # Measured 0.99 < 1.82 < 2.34 ms: delayed < MXFP8 < current scaling; the model keeps the order.
    hw = load_hardware("b300")
    got = [float(quantize_bytes_per_elem(p, c, hw.fp8_gemm_any_layout)) for p, c in
           ((FP8, False), (MXFP8, False), (FP8, True))]
    assert got == sorted(got) and got == [3, 4.0625, 5]


def test_current_scaling_adds_its_amax_pass_to_the_step():
    # Llama 3 8B on 8 H100s (dp 8, ZeRO-1 with FP8 primary weights, whose once-a-step cast does not
    # depend on the recipe): current scaling adds 2 B per quantized element, read at
    # 3.35 TB/s x the profile's memory-bound share (0.76), for the forward's GEMM inputs (2h + q +
    # ffn per token, once: the backward reuses the saved quantized inputs) and the backward's output
    # gradients (q + 2 kv + 2h + 2 ffn per token), per layer and micro-batch.
    model, hw = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=64)
    times = [time_columns(model, hw, workload, Candidates.of_plan(ParallelPlan(dp=8, zero=1, precision="fp8",
                                                                               fp8_recipe=recipe)), gpus_per_node=8)
             for recipe in ("delayed", "tensorwise")]
    h, q, kv, ffn = model.hidden_size, model.q_size, model.kv_size, model.intermediate_size
    tokens, micro_batches = 8192, 8
    fwd, bwd = 2 * h + q + ffn, q + 2 * kv + 2 * h + 2 * ffn
    per_layer_s = 2 * tokens * (fwd + bwd) / (hw.hbm_bandwidth_bytes_per_s * 0.76)
    expected = micro_batches * model.num_layers * per_layer_s
    assert times[1].time.gemm_s[0] - times[0].time.gemm_s[0] == pytest.approx(expected, rel=1e-9)


def test_moe_experts_quantize_every_routed_copy():
    # TE's GroupedLinear quantizes the permuted rows: a token routed to top_k experts is cast top_k
    # times at FC1's input and FC2's output gradient. Qwen3-30B-A3B: 48 MoE layers, top 8, no
    # shared expert: 8 copies; DeepSeek-V3: 3 dense layers and 58 MoE layers of 8 routed + 1 shared
    # expert: (3 + 58 x 9) / 61 = 525 / 61. A dense model: 1.
    assert mlp_input_copies(load_model("qwen3-30b-a3b")) == 8
    assert mlp_input_copies(load_model("deepseek-v3")) == pytest.approx(525 / 61)
    assert mlp_input_copies(load_model("llama3-8b")) == 1
    # Qwen3-30B-A3B (h 2048, q 4096, kv 512, active FFN 8 x 768 = 6144): inputs h + 8h + q + ffn =
    # 2048 + 16384 + 4096 + 6144; output gradients q + 2kv + h + 8h + 2 ffn (SwiGLU: gate and up).
    qwen = load_model("qwen3-30b-a3b")
    assert gemm_inputs_per_token(qwen, 6144) == 28672
    assert gemm_output_grads_per_token(qwen, 6144) == 4096 + 1024 + 2048 + 16384 + 2 * 6144


def test_routed_experts_part_of_the_cast_elements():
    # What bf16 routed experts leave uncast (torchtitan, cost.tp_gathers). Qwen3-30B-A3B: the 8
    # copies of h (FC1) and 8 x 768 (FC2) inputs, leaving LN1 out and the attention output (h + q);
    # gradients 8 x (2 x 768 + h), leaving QKV's and the out-projection's (q + 2kv + h).
    from sp_planner.cost.precision import routed_gemm_inputs_per_token, routed_gemm_output_grads_per_token

    qwen = load_model("qwen3-30b-a3b")
    assert routed_gemm_inputs_per_token(qwen) == 8 * 2048 + 6144
    assert gemm_inputs_per_token(qwen, 6144) - routed_gemm_inputs_per_token(qwen) == 2048 + 4096
    assert routed_gemm_output_grads_per_token(qwen) == 8 * (2 * 768 + 2048)
    assert gemm_output_grads_per_token(qwen, 6144) - routed_gemm_output_grads_per_token(qwen) == 4096 + 1024 + 2048
    # DeepSeek-V3: 58 of 61 layers MoE, top 8 of width 2048 on h 7168; its shared expert stays cast.
    deepseek = load_model("deepseek-v3")
    assert routed_gemm_inputs_per_token(deepseek) == pytest.approx(58 / 61 * 8 * (7168 + 2048))
    assert routed_gemm_inputs_per_token(load_model("llama3-8b")) == 0.0


def test_blockwise_gemm_factor_follows_te_h200_benchmark():
    # TE's H200 table (gemm_profiling.rst): FP8Block autocast 22.882 ms a layer, per-tensor FP8 GEMM
    # kernels 16.785 ms (FP8Current pre-quantized). The block casts: 2 + 2 x (1 + 4/128) bytes per
    # element, as quantize_bytes_per_elem counts them, at the H200 profile's memory-bound rate.
    from sp_planner.cost.precision import BLOCKWISE_GEMM_FACTOR

    hw = load_hardware("h200")
    per_elem = float(quantize_bytes_per_elem(FP8, False, hw.fp8_gemm_any_layout, True))
    assert per_elem == 2 + 2 * (1 + 4 / 128)
    cast_ms = 1e3 * float(memory_pass_time_s(hw, per_elem * _benchmark_elements()))
    assert BLOCKWISE_GEMM_FACTOR == pytest.approx(16.785 / (22.882 - cast_ms), rel=1e-6)
    assert 0.8 < BLOCKWISE_GEMM_FACTOR < 0.85


def test_blockwise_fp8_is_hopper_only_and_slower_than_per_tensor():
    from sp_planner.cost.precision import gemm_peak_flops

    h100 = load_hardware("h100")
    per_tensor, block = (float(gemm_peak_flops(h100, np.array([FP8]), blockwise)[0]) for blockwise in (False, True))
    assert block == pytest.approx(per_tensor * 0.834, rel=1e-3)
    # bf16 candidates are untouched by the recipe flag (one recipe per search).
    assert float(gemm_peak_flops(h100, np.array([BF16]), True)[0]) == h100.peak_bf16_flops * h100.efficiency.gemm
    with pytest.raises(ValueError, match="Hopper only"):
        gemm_peak_flops(load_hardware("b200"), np.array([FP8]), True)


def test_refusal_names_what_the_profile_lacks():
    # A800 (Ampere) has no FP8 tensor cores; L40S and MI300X have a datasheet FP8 peak but no FP8
    # GEMM microbenchmark in their profiles, so FP8 is refused for the efficiency alone.
    assert "gives no FP8 peak and FP8 GEMM efficiency" in precision_problem("fp8", load_hardware("a800"))
    for name in ("l40s", "mi300x"):
        why = precision_problem("fp8", load_hardware(name))
        assert "gives an FP8 peak but no measured FP8 GEMM efficiency (efficiency.gemm_fp8)" in why
        assert why.endswith("use bf16")
    assert precision_problem("fp8", load_hardware("h100-sxm")) is None
