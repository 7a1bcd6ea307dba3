"""Published attention-kernel microbenchmarks (TFLOPS), the curves built from them, and the
causal/non-causal throughput ratio of each kernel by block length.

Every table is BF16, head_dim 128, TFLOPS in the FlashAttention convention (forward 4 b h s^2 d,
half that for a causal mask, backward 2.5 x forward), transcribed in shared reference
attention_kernels_and_cp_costs.md section 1 and re-read from the sources named at each table.
Attention stays BF16 under --precision fp8 (Transformer Engine's default); FP8 attention, where a
corpus row states it, scales these curves by the FP8 columns' ratio (cost.fp8_attention).
"""

from __future__ import annotations

import numpy as np

from sp_planner.specs.hardware import CurvePoint

Curve = tuple[CurvePoint, ...]
Curves = tuple[Curve, Curve]  # (forward, backward)


def _points(tokens: tuple[int, ...], values) -> Curve:
    return tuple(CurvePoint(tokens=t, efficiency=round(float(v), 3)) for t, v in zip(tokens, values))


def log_interp(xs, ys, at) -> np.ndarray:
    """ys (given at xs, increasing) read at `at`: linear in log x, flat beyond the ends. The one
    reading of every measured curve here, of the efficiency curves (cost.kernels.curve_efficiency)
    and of the GEMM contraction curves (cost.gemm_shapes)."""
    return np.interp(np.log(at), np.log(xs), ys)


# --- Causal / non-causal throughput by block length ------------------------------------------
# A causal kernel on an L x L block computes the tiles on and below the diagonal (Dao 2023,
# Algorithm 1 with causal masking) and balances them less evenly over the SMs: its TFLOPS (on
# half the square's FLOPs) fall below the non-causal kernel's, most at short blocks. The ratio
# carries both effects, measured. Ratios above 1 (H200 cuDNN backward at 32K: 581 / 572) are
# within run-to-run noise and held at 1.
FA_TOKENS = (512, 1024, 2048, 4096, 8192, 16384)
# FlashAttention-3 paper (arXiv 2407.08608) Fig. 5, H100 SXM5, forward, head_dim 128 (flash-attention
# assets/flash3_fp16_fwd.png at 7ef24848): (non-causal, causal) TFLOPS.
FA3_PAPER_FWD_D128: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fa2": ((309, 350, 362, 368, 370, 370), (191, 260, 298, 319, 333, 335)),
    "cudnn": ((497, 574, 617, 609, 600, 595), (315, 410, 484, 518, 529, 539)),
    "fa3": ((467, 565, 625, 638, 646, 648), (292, 423, 521, 579, 602, 616)),
}
# No causal backward is published for FA3 or on H100 per pass: the FlashAttention-2 paper's
# (arXiv 2307.08691, Fig. 4/5) A100 80GB head_dim-128 backward panels, (non-causal, causal)
# TFLOPS, are the only per-pass causal backward of a FlashAttention kernel; used for fa2 and fa3.
FA2_PAPER_BWD_D128_A100 = ((136, 159, 175, 187, 193, 196), (90, 122, 145, 165, 176, 186))
# cuDNN 9.19.1 on H200, Llama-3.1-70B heads (Hq 64, Hkv 8, d 128), B 1, non-deterministic
# backward: NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn/
# llama3.1_20260227_034703.csv at df73764a (no_mask, top_left) TFLOPS, 2K-32K.
CUDNN_H200_TOKENS = (2048, 4096, 8192, 16384, 32768)
CUDNN_H200_FWD = ((633, 671, 691, 702, 693), (484, 591, 644, 673, 688))
CUDNN_H200_BWD = ((504, 560, 594, 612, 572), (370, 474, 541, 579, 581))
# The same file's conditions on GB200 (cuDNN 9.22, results/llama3.1/gb200/llama3.1_20260424_100750.csv
# at fb682ce7) give 0.766/0.881/0.889/1.006/0.993 forward and 0.787/0.850/0.949/0.967/0.971
# backward: within 0.05 of H200's at every length, so one cuDNN ratio serves Hopper and Blackwell.


def _ratio(non_causal, causal) -> np.ndarray:
    return np.minimum(np.asarray(causal, dtype=float) / np.asarray(non_causal, dtype=float), 1.0)


def _fa_ratio(kernel: str) -> Curves:
    return (_points(FA_TOKENS, _ratio(*FA3_PAPER_FWD_D128[kernel])),
            _points(FA_TOKENS, _ratio(*FA2_PAPER_BWD_D128_A100)))


# PyTorch SDPA's flash backend (the kernel torchtitan runs), measured by this project's
# `make gpu-check` (step 4, sp-calibrate --quick) on one H200 with torch 2.11.0+cu130, 2026-12-04:
# hardware_profiles/measured/h200-2026-12-04.yaml, calibration.attention. BF16, 16 heads x head_dim
# 128, batch x tokens = 16K up to 8K tokens (the FA3 paper's setup) and batch 1 at 64K, mean of
# timed calls; TFLOPS as above, (non-causal, causal). A first run the same day agreed within 3%.
# Its causal ratio sits on FA2's paper ratios to 8K (0.601 / 0.822 / 0.897 against 0.618 / 0.823 /
# 0.900 forward) and rises to 0.97 (forward) and 1 (backward) at 64K, past the papers' last point
# (16K). SDPA's flash backend is flash-attn 2's kernel code, vendored in PyTorch
# (aten/src/ATen/native/transformers/cuda/flash_attn), so FA2's ratio takes SDPA's 64K point.
SDPA_H200_TOKENS = (512, 2048, 8192, 65536)
SDPA_H200_FWD = ((302.9, 347.3, 355.3, 354.3), (182.1, 285.5, 318.7, 343.3))
SDPA_H200_BWD = ((180.0, 267.8, 301.9, 318.6), (116.8, 217.8, 281.1, 323.6))


_SDPA_RATIO: Curves = (_points(SDPA_H200_TOKENS, _ratio(*SDPA_H200_FWD)),
                       _points(SDPA_H200_TOKENS, _ratio(*SDPA_H200_BWD)))


def _with_sdpa_64k(curves: Curves) -> Curves:
    """FA2's paper ratios (to 16K) and SDPA's measured ratio at 64K, the same kernel code."""
    (fwd, bwd), (sdpa_fwd, sdpa_bwd) = curves, _SDPA_RATIO
    return fwd + (sdpa_fwd[-1],), bwd + (sdpa_bwd[-1],)


# cuDNN: H200 9.19.1 from 2K; below 2K the FA3 paper's cuDNN forward ratio at 512 and 1K (an older
# cuDNN on H100; 0.784 at 2K against 9.19.1's 0.765), for the backward too (no causal cuDNN
# backward below 2K is published; at 2K the backward ratio is 0.734, so this is a little optimistic).
_CUDNN_SHORT = _ratio(*FA3_PAPER_FWD_D128["cudnn"])[:2]
_CUDNN_TOKENS = (512, 1024, *CUDNN_H200_TOKENS)
CAUSAL_RATIO: dict[str, Curves] = {
    "fa2": _with_sdpa_64k(_fa_ratio("fa2")),
    "fa3": _fa_ratio("fa3"),
    "cudnn": (_points(_CUDNN_TOKENS, (*_CUDNN_SHORT, *_ratio(*CUDNN_H200_FWD))),
              _points(_CUDNN_TOKENS, (*_CUDNN_SHORT, *_ratio(*CUDNN_H200_BWD)))),
}
CAUSAL_RATIO["sdpa"] = _SDPA_RATIO
# The NPU fusion kernel and kernels of profiles without a named kernel have no published causal
# curve: FA2's ratio stands for them.
DEFAULT_CAUSAL_KERNEL = "fa2"


# --- Blackwell ------------------------------------------------------------------------------
# NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts at 0b1577c8 (2025-10-10),
# B200, causal, B 1, Hq 128, Hkv 8, d 128, BF16, 512-128K tokens; README: cuDNN 9.13.1, PyTorch
# 2.9.0, flash-attn 2.7.4, "FlashAttention-3 is currently not supported on NVIDIA's Blackwell
# generation GPUs". Causal only: the non-causal curve is the causal one over the kernel's causal
# ratio above (flat past its last point), so a causal diagonal block gets the measured figure back.
# At 512-1K tokens one B 1 call lasts tens of microseconds, so those points carry launch overhead
# that calls with more batch x heads amortize (pessimistic at short blocks).
B200_TOKENS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
B200_CAUSAL_TFLOPS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # cuDNN called directly, as Transformer Engine does: sdpa_fp8_benchmark_results_NVIDIA_B200.csv,
    # precision bf16 rows (fwd_tflops_per_sec, bwd_tflops_per_sec).
    "cudnn": ((244.143, 561.287, 907.547, 1141.140, 1384.231, 1475.253, 1514.764, 1493.798, 1421.873),
              (200.594, 376.937, 545.088, 832.907, 994.850, 1151.690, 1180.250, 1235.860, 1127.667)),
    # sdpa_bf16_benchmark_results_NVIDIA_B200.csv, backend flash_attention (flash-attn 2.7.4).
    "fa2": ((63.936, 154.417, 254.381, 342.990, 399.925, 425.128, 435.762, 441.285, 443.738),
            (81.393, 104.860, 198.845, 273.484, 318.004, 336.635, 345.634, 348.981, 348.253)),
    # Same file, backend pyt_flash_attention: PyTorch SDPA's FLASH backend (torchtitan 0.3.0's stand-in).
    "sdpa": ((74.596, 165.535, 242.386, 324.899, 373.392, 394.495, 403.739, 408.739, 410.988),
             (83.040, 107.669, 186.284, 256.427, 298.867, 319.979, 330.801, 335.402, 336.043)),
}


def blackwell_curves(kernel: str, peak_tflops: float) -> Curves:
    """Non-causal (forward, backward) efficiency of `kernel` from its B200 causal TFLOPS, over
    `peak_tflops` (the profile's own dense BF16 peak: B200 2250, GB200 2500)."""
    fwd_causal, bwd_causal = B200_CAUSAL_TFLOPS[kernel]
    curves = []
    for tflops, ratio in zip((fwd_causal, bwd_causal), CAUSAL_RATIO[kernel]):
        r = log_interp(tuple(p.tokens for p in ratio), tuple(p.efficiency for p in ratio), B200_TOKENS)
        curves.append(_points(B200_TOKENS, np.asarray(tflops) / r / peak_tflops))
    return curves[0], curves[1]


# --- FlashAttention (v1) and the Triton port of it ---------------------------------------------
# flash-attn's experimental Triton FlashAttention (flash_attn/flash_attn_triton.py, which
# llm-foundry copied as flash_attn_triton.py) has no published benchmark of its own; its docstring
# (flash-attention 4f285b35) compares it with the CUDA FlashAttention of its time (v1): "Triton
# forward + backward is slightly slower than CUDA forward + backward". FlashAttention v1 is
# measured beside FA2 on the same machine in the FlashAttention-2 release figures (flash-attention
# 4f285b35, 2023-07-17, assets/flash2_h100_fwd_bwd_benchmark.png and flash2_a100_fwd_bwd_benchmark
# .png): forward + backward TFLOPS, head_dim 128, 16K tokens per batch, at FA_TOKENS, as
# (non-causal, causal). The A100 FA2 non-causal labels at 512 and 1K are under the legend: 173 is
# legible, 151 is read from the bar's height (1.838 px per TFLOPS, from the labelled bars).
# (The figures' 'FlashAttention Triton' series is OpenAI's triton.ops kernel, the one the
# repository's benchmark script imports (benchmarks/benchmark_flash_attention.py at 60499abc), not
# this port, so it is not used.)
FA_RELEASE_FWD_BWD_D128: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "hopper": {"fa1": ((127, 127, 128, 131, 137, 139), (98, 109, 108, 126, 135, 137)),
               "fa2": ((248, 294, 320, 326, 335, 338), (163, 221, 265, 294, 308, 328))},
    "ampere": {"fa1": ((76, 72, 76, 80, 82, 83), (55, 62, 69, 76, 80, 83)),
               "fa2": ((151, 173, 187, 196, 201, 203), (99, 133, 155, 173, 182, 189))},
}


def fa1_over_fa2(generation: str) -> Curves:
    """FlashAttention v1's fwd+bwd throughput over FA2's by block length, (non-causal, causal),
    measured side by side on one GPU generation ("hopper" or "ampere")."""
    fa1, fa2 = FA_RELEASE_FWD_BWD_D128[generation]["fa1"], FA_RELEASE_FWD_BWD_D128[generation]["fa2"]
    return (_points(FA_TOKENS, np.divide(fa1[0], fa2[0])), _points(FA_TOKENS, np.divide(fa1[1], fa2[1])))
