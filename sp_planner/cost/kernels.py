"""Kernel-level times: GEMMs, flash-attention blocks, memory-bound elementwise passes (vectorized).

Flash-attention FLOPs follow the FlashAttention-2 paper's convention (Dao 2023, section 4.1):
forward = 4 * q_len * kv_len * head_dim * heads per batch element, backward = 2.5 x forward.
The profile's efficiency curves are measured in that convention on non-causal kernels whose
key length is `tokens`; we read them at a kernel call's key length.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.attention_kernels import causal_ratio, padded_head_dim
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernel_benchmarks import log_interp
from sp_planner.specs.hardware import CurvePoint, HardwareProfile

FLASH_BWD_FLOPS_FACTOR = 2.5
# A causal mask on a square block: half its FLOPs (the FA convention every cited benchmark uses),
# run at the kernel's measured causal/non-causal throughput ratio at that block length
# (cost.attention_kernels.causal_ratio; the data and sources are in cost.kernel_benchmarks).
CAUSAL_WORK_FRACTION = 0.5


def curve_efficiency(points: tuple[CurvePoint, ...], tokens):
    """Efficiency at `tokens`, linear in log(tokens) between points, flat beyond the ends."""
    return log_interp([p.tokens for p in points], [p.efficiency for p in points],
                      np.maximum(np.asarray(tokens, dtype=np.float64), 1.0))


def flash_flops(batch, heads, head_dim, q_tokens, kv_tokens):
    """Forward FLOPs of a non-causal block (QK^T and PV, 2 FLOPs per multiply-add)."""
    return 4.0 * batch * heads * head_dim * q_tokens * kv_tokens


# Unfused core attention as Megatron-LM ran it before FlashAttention (megatron/model/transformer.py
# CoreAttention up to d693034, 2022-12-08, which added --use-flash-attn): torch.baddbmm writes the
# b x a x s x s scores, FusedScaleMaskSoftmax reads them and writes the probabilities, torch
# Dropout (where the model's attention_dropout is above 0, cost.dropout) reads those and writes its
# output and a bool mask, torch.bmm reads the result with V. The masked square is computed whole:
# a causal mask skips no work. Bytes per score element (fp16/bf16 2, mask 1): softmax forward
# 2 + 2, backward (grad, saved output, result) 2 + 2 + 2; dropout forward 2 + 2 + 1, backward
# 2 + 1 + 2. At p = 0 torch's dropout returns its input (cost.dropout): the bmm takes the softmax's
# output. Korthikanti et al. 2022 (arXiv 2205.05198) section 4.1 stores exactly these: softmax
# output 2as^2b, dropout mask as^2b, dropout output 2as^2b.
UNFUSED_SOFTMAX_FWD_BYTES, UNFUSED_SOFTMAX_BWD_BYTES = 4, 6
UNFUSED_DROPOUT_FWD_BYTES, UNFUSED_DROPOUT_BWD_BYTES = 5, 5
# Each of the attention's batched GEMMs writes or reads the score-sized operand once (2 bytes per
# element) and does 2 x head_dim FLOPs per element: QK^T and PV forward, and dP = dO V^T,
# dV = P^T dO, dQ = dS K, dK = dS^T Q backward.
UNFUSED_GEMM_BYTES = BF16_BYTES
UNFUSED_GEMMS_FWD, UNFUSED_GEMMS_BWD = 2, 4
# Activations the unfused kernel stores per score element (section 4.1 above): the softmax output
# (2), and with attention dropout its mask and output (1 + 2).
UNFUSED_SOFTMAX_SAVED_BYTES, UNFUSED_DROPOUT_SAVED_BYTES = 2, 3


# Transformer Engine's UnfusedDotProductAttention (the one sp-plan times, where TE runs it for
# Megatron: flags.flash_head_dim.te_runs_unfused; dot_product_attention/backends.py at d0067d0) is
# the same baddbmm -> FusedScaleMaskSoftmax -> torch Dropout -> bmm, but its softmax
# (dot_product_attention/softmax.py at d0067d0, is_kernel_available) runs the fused kernel only at
# 16 < keys < 16384 ("sk must be 16 ~ 16384"); from 16384 keys on it runs forward_torch_softmax:
# the bf16 scores cast to fp32 (inp.float(): 2 + 4 bytes), masked in place (utils.py
# attention_mask_func, masked_fill_: 4 + 4 and the bool mask 1), torch softmax in fp32 (4 + 4), the
# probabilities cast back to bf16 (4 + 2): 29 bytes forward; backward the grad cast to fp32
# (2 + 4), softmax backward (grad, saved output, result: 4 + 4 + 4), the mask's backward
# (masked_fill of the grad: 4 + 1 + 4), the cast to bf16 (4 + 2): 33. Autograd then keeps the fp32
# softmax output (4 bytes) and, for the bmm with V, the bf16 probabilities (2; the dropout's output
# with attention dropout, whose mask adds 1). Megatron-Core's own FusedScaleMaskSoftmax falls back
# above 4096 keys (megatron/core/fusions/fused_softmax.py at d98e8a64dd); the corpus's unfused rows
# run 2048 keys, fused under either bound. is_kernel_available (softmax.py lines 296-329) also
# falls back where sk % 8 != 0 (line 306) or b x heads on the rank % 4 != 0 (lines 298, 315), and
# where sq % 4 or sq % get_batch_per_block(sk) (4 or 8, lines 386-393) is not 0, or sk <= 16: with
# self-attention's sq = sk (causal needs it, line 310) those follow from sk % 8 and sk > 16.
TE_FUSED_SOFTMAX_MAX_KEYS = 16384  # exclusive
TE_FUSED_SOFTMAX_MIN_KEYS = 16  # exclusive
TE_FUSED_SOFTMAX_KEY_MULTIPLE, TE_FUSED_SOFTMAX_BATCH_MULTIPLE = 8, 4  # sk, b x heads per rank
TORCH_SOFTMAX_FWD_BYTES, TORCH_SOFTMAX_BWD_BYTES = 29, 33
TORCH_SOFTMAX_SAVED_BYTES = 4 + UNFUSED_GEMM_BYTES  # the fp32 output, and the bmm's bf16 input


def te_torch_softmax(kv_tokens, attn_batches):
    """Whether Transformer Engine's softmax runs its torch fallback (comment above) at `kv_tokens`
    keys of self-attention and `attn_batches` = micro-batch x heads on the rank (its [b, np, sq, sk]
    input's b x np): Gemma-2-9B's 16 heads at tp 8, b 1, are 2, so torch's at any length."""
    sk = np.asarray(kv_tokens)
    batches = np.asarray(attn_batches)
    return ((sk >= TE_FUSED_SOFTMAX_MAX_KEYS) | (sk <= TE_FUSED_SOFTMAX_MIN_KEYS)
            | (sk % TE_FUSED_SOFTMAX_KEY_MULTIPLE != 0) | (batches % TE_FUSED_SOFTMAX_BATCH_MULTIPLE != 0))


def unfused_saved_bytes_per_score(attention_dropout: bool, kv_tokens, attn_batches):
    """Bytes the unfused kernel stores per score element, with or without attention dropout, at
    `kv_tokens` keys and `attn_batches` = b x heads on the rank (the torch softmax's where
    te_torch_softmax: comment above)."""
    fused = UNFUSED_SOFTMAX_SAVED_BYTES + (UNFUSED_DROPOUT_SAVED_BYTES if attention_dropout else 0)
    # With dropout, the bmm saves the dropout's output (counted in UNFUSED_DROPOUT_SAVED_BYTES).
    torch = TORCH_SOFTMAX_SAVED_BYTES + (UNFUSED_DROPOUT_SAVED_BYTES - UNFUSED_GEMM_BYTES if attention_dropout else 0)
    return np.where(te_torch_softmax(kv_tokens, attn_batches), torch, fused)


def unfused_attention_time_s(hardware: HardwareProfile, *, batch, heads, head_dim, q_tokens, kv_tokens,
                             backward: bool, attention_dropout: bool = False):
    """Unfused attention on a q_tokens x kv_tokens block (comments above): each batched GEMM takes
    the longer of its FLOPs at the GEMM efficiency and its score-sized operand through HBM (with
    head_dim 64-128 these GEMMs are memory-bound on A100/H100), then the softmax passes (the torch
    fallback's where te_torch_softmax) and, with `attention_dropout`, the dropout's."""
    elements = np.asarray(batch, dtype=np.float64) * heads * q_tokens * kv_tokens
    gemm_flops, gemm_bytes = 2.0 * head_dim * elements, UNFUSED_GEMM_BYTES * elements
    one_gemm = np.maximum(gemm_time_s(hardware, gemm_flops), memory_pass_time_s(hardware, gemm_bytes))
    torch = te_torch_softmax(kv_tokens, np.asarray(batch) * heads)
    if backward:
        softmax = np.where(torch, TORCH_SOFTMAX_BWD_BYTES, UNFUSED_SOFTMAX_BWD_BYTES)
        passes = softmax + (UNFUSED_DROPOUT_BWD_BYTES if attention_dropout else 0)
        return UNFUSED_GEMMS_BWD * one_gemm + memory_pass_time_s(hardware, passes * elements)
    softmax = np.where(torch, TORCH_SOFTMAX_FWD_BYTES, UNFUSED_SOFTMAX_FWD_BYTES)
    passes = softmax + (UNFUSED_DROPOUT_FWD_BYTES if attention_dropout else 0)
    return UNFUSED_GEMMS_FWD * one_gemm + memory_pass_time_s(hardware, passes * elements)


def flash_time_s(hardware: HardwareProfile, *, batch, heads, head_dim, q_tokens, kv_tokens,
                 causal_diagonal, backward: bool, kernel_head_dim=None, attention_dropout: bool = False):
    """Wall time of one flash-attention call on a q_tokens x kv_tokens block.

    `causal_diagonal` (bool array) marks a square block with a causal mask: half the block's
    FLOPs at the non-causal efficiency times the kernel's causal ratio at that length. A profile
    with `attention_unfused` runs `unfused_attention_time_s` instead. `kernel_head_dim`: the head
    dim the kernel's tiles cost (cost.attention_kernels.kernel_head_dim); None: `head_dim` rounded up
    to the kernel's tile (padded_head_dim). `attention_dropout`: the model drops attention
    probabilities (cost.dropout.has_attention_dropout); only the unfused kernel's time depends on it.
    """
    if hardware.efficiency.attention_unfused:
        return unfused_attention_time_s(hardware, batch=batch, heads=heads, head_dim=head_dim,
                                        q_tokens=q_tokens, kv_tokens=kv_tokens, backward=backward,
                                        attention_dropout=attention_dropout)
    # The kernel computes at its tile's head dim (cost.attention_kernels.padded_head_dim).
    tile_dim = padded_head_dim(hardware, head_dim) if kernel_head_dim is None else kernel_head_dim
    flops = flash_flops(batch, heads, tile_dim, q_tokens, kv_tokens)
    curve = hardware.efficiency.attention_bwd if backward else hardware.efficiency.attention_fwd
    factor = FLASH_BWD_FLOPS_FACTOR if backward else 1.0
    eff = curve_efficiency(curve, kv_tokens)
    causal_eff = curve_efficiency(causal_ratio(hardware, backward=backward), kv_tokens)
    work = np.where(causal_diagonal, CAUSAL_WORK_FRACTION, 1.0)
    eff = eff * np.where(causal_diagonal, causal_eff, 1.0) * sustained_fraction(hardware)
    return factor * flops * work / (hardware.peak_bf16_flops * eff)


def sustained_fraction(hardware: HardwareProfile) -> float:
    """The share of its short-run benchmark rate a compute kernel sustains on this chip in training
    (efficiency.sustained_fraction): applied to the BF16 GEMM figure and the attention curves,
    which come from short runs; the FP8 GEMM figures are sustained measurements already. The B200
    die (B200, GB200; their profiles cite it) holds 0.804 of its short-run rate: Azure's cuBLASLt
    FP8 after 10,000 warm-ups, 2906.9 TFLOPS at 16384^3 on GB200, against the short-run MAMF 3615.6,
    where Hopper keeps 0.94-0.98 and Ampere 0.935 (its best shape far from square); the attention
    benchmark behind the Blackwell curves sleeps between calls "to avoid GPU throttling"
    (NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/README.md)."""
    return hardware.efficiency.sustained_fraction


def gemm_time_s(hardware: HardwareProfile, flops):
    return np.asarray(flops, dtype=np.float64) / (hardware.peak_bf16_flops * hardware.efficiency.gemm
                                                   * sustained_fraction(hardware))


def memory_pass_time_s(hardware: HardwareProfile, num_bytes):
    """A memory-bound kernel that moves `num_bytes` through HBM, at the profile's measured share of
    its bandwidth (efficiency.memory_bound: cuDNN's normalization kernels at LLM shapes, H200 0.76,
    GB200 0.73, GB300 0.75; the profiles cite them). Used for ring merges, the optimizer step,
    elementwise ops, FP8 casts, the loss and, largest, unfused attention (memory-bound: the Selene
    rows' 22B attention moves 32 bytes per score)."""
    bandwidth = hardware.hbm_bandwidth_bytes_per_s * hardware.efficiency.memory_bound
    return np.asarray(num_bytes, dtype=np.float64) / bandwidth
