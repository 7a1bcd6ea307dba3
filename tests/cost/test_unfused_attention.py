"""Unfused core attention (Megatron-LM before FlashAttention): time and memory by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention import attention_times
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.cost.kernels import flash_time_s
from sp_planner.cost.activations import activation_bytes_per_layer
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE
from sp_planner.specs.workload import Workload

A100 = load_hardware("a100-80gb")
UNFUSED_A100 = with_attention_kernel(A100, UNFUSED)


def test_unfused_block_by_hand():
    # Korthikanti's 22B on TP 8 (Table 3): micro batch 4, 64 heads / 8 = 8 per rank, head_dim 96,
    # s = 2048: 4 x 8 x 2048^2 = 134M score elements per layer.
    elements = 4 * 8 * 2048 * 2048
    bw = A100.hbm_bandwidth_bytes_per_s * A100.efficiency.memory_bound
    gemm_flops_s = A100.peak_bf16_flops * A100.efficiency.gemm
    # Each batched GEMM: 2 x 96 FLOPs per element against 2 bytes: memory-bound on A100.
    one_gemm = max(2 * 96 * elements / gemm_flops_s, 2 * elements / bw)
    assert one_gemm == pytest.approx(2 * elements / bw)
    fwd = 2 * one_gemm + 9 * elements / bw  # QK^T, PV; softmax 2+2, dropout 2+2+1
    bwd = 4 * one_gemm + 11 * elements / bw  # dP, dV, dQ, dK; dropout 2+1+2, softmax 2+2+2
    kw = dict(batch=4, heads=8, head_dim=96, q_tokens=2048, kv_tokens=2048, causal_diagonal=True)
    assert flash_time_s(UNFUSED_A100, backward=False, attention_dropout=True, **kw) == pytest.approx(fwd, rel=1e-12)
    assert flash_time_s(UNFUSED_A100, backward=True, attention_dropout=True, **kw) == pytest.approx(bwd, rel=1e-12)
    # Without attention dropout torch's dropout returns its input (p = 0): the softmax's passes only.
    assert flash_time_s(UNFUSED_A100, backward=False, **kw) == pytest.approx(2 * one_gemm + 4 * elements / bw,
                                                                              rel=1e-12)
    assert flash_time_s(UNFUSED_A100, backward=True, **kw) == pytest.approx(4 * one_gemm + 6 * elements / bw,
                                                                             rel=1e-12)
    # 13 + 19 bytes per element at 1.55 TB/s (0.76 of 2.039): 2.8 ms per layer, forward and
    # backward, against FA2's 0.58 ms on the same block: half the square at the A100 FA2 curves' 2K
    # points times FA2's causal ratio at 2K (298 / 362 forward, FA3 paper; 145 / 175 backward, FA2
    # paper), 4.8x.
    assert fwd + bwd == pytest.approx(32 * elements / bw, rel=1e-12)
    eff_fwd = {p.tokens: p.efficiency for p in A100.efficiency.attention_fwd}[2048]
    eff_bwd = {p.tokens: p.efficiency for p in A100.efficiency.attention_bwd}[2048]
    half_flops = 0.5 * 4 * elements * 96
    flash_by_hand = (half_flops / (A100.peak_bf16_flops * eff_fwd * round(298 / 362, 3))
                     + 2.5 * half_flops / (A100.peak_bf16_flops * eff_bwd * round(145 / 175, 3)))
    flash = sum(flash_time_s(A100, backward=b, **kw) for b in (False, True))
    assert flash == pytest.approx(flash_by_hand, rel=1e-12)
    assert (fwd + bwd) / flash == pytest.approx(4.76, abs=0.05)
    # A causal mask saves the unfused kernel nothing.
    assert flash_time_s(UNFUSED_A100, backward=False, attention_dropout=True,
                        **{**kw, "causal_diagonal": False}) == pytest.approx(fwd)
    # Flash kernels are timed as measured, without dropout, either way (cost.dropout).
    assert flash_time_s(A100, backward=True, attention_dropout=True, **kw) == flash_time_s(A100, backward=True, **kw)


def test_unfused_attention_cannot_ring():
    kw = dict(batch=1, seq_len=8192, num_heads=32, num_kv_heads=32, head_dim=128, tp=np.array([1]),
              ulysses=np.array([1]), causal=True, zigzag=np.array([True]), gpus_per_node=8, elem_bytes=2)
    assert np.isfinite(attention_times(UNFUSED_A100, ring=np.array([1]), **kw).fwd_s).all()
    with pytest.raises(ValueError, match="unfused attention cannot run a ring"):
        attention_times(UNFUSED_A100, ring=np.array([2]), **kw)


def test_unfused_activations_are_korthikantis_5as2b():
    model = load_model("llama2-7b").model_copy(update={"attention_dropout": 0.1})
    workload = Workload(seq_len=4096, global_batch=8)
    kw = dict(tp=np.array([2]), ulysses=np.array([1]), ring=np.array([1]), micro_batch=np.array([1]))
    flash_none, _ = activation_bytes_per_layer(model, workload, recompute=np.array([RECOMPUTE_NONE]), **kw)
    unfused_none, _ = activation_bytes_per_layer(model, workload, recompute=np.array([RECOMPUTE_NONE]),
                                                 unfused=True, **kw)
    # 5 a s^2 b / t more (a = 32 heads, t = 2), less flash-attention's fp32 log-sum-exp (4 s b a / t).
    scores = 5 * 32 * 4096**2 * 1 / 2
    lse = 4 * 4096 * 32 / 2
    assert unfused_none[0] - flash_none[0] == pytest.approx(scores - lse, rel=1e-12)
    # Selective recompute frees exactly the s^2 terms (Korthikanti section 5: 34 s b h / t stays).
    flash_sel, _ = activation_bytes_per_layer(model, workload, recompute=np.array([RECOMPUTE_SELECTIVE]), **kw)
    unfused_sel, _ = activation_bytes_per_layer(model, workload, recompute=np.array([RECOMPUTE_SELECTIVE]),
                                                unfused=True, **kw)
    assert unfused_sel[0] == pytest.approx(flash_sel[0], rel=1e-12)
    # Without attention dropout the kernel keeps only the softmax output: 2 a s^2 b / t.
    no_drop = load_model("llama2-7b")
    plain, _ = activation_bytes_per_layer(no_drop, workload, recompute=np.array([RECOMPUTE_NONE]), unfused=True, **kw)
    assert plain[0] - flash_none[0] == pytest.approx(2 * 32 * 4096**2 / 2 - lse, rel=1e-12)


def test_with_attention_kernel_unfused_keeps_the_curves():
    assert UNFUSED_A100.efficiency.attention_unfused and not A100.efficiency.attention_unfused
    assert UNFUSED_A100.efficiency.attention_fwd == A100.efficiency.attention_fwd


def test_transformer_engines_unfused_scores_of_gemma2_9b_by_hand():
    # Gemma-2-9B (16 heads, head dim 256) at tp 8: 2 heads per rank. TE's FusedScaleMaskSoftmax runs
    # its fused kernel where 16 < sk < 16384, sk % 8 == 0 and b x heads % 4 == 0 (softmax.py
    # is_kernel_available at d0067d0), which saves its bf16 output: 2 bytes per score; else the torch
    # softmax, which keeps its fp32 output (4) and the bmm its bf16 input (2): 6; with attention
    # dropout the bmm takes the dropout's output (2) and its mask (1) is kept: 4 + 1 + 2 = 7 (fused:
    # 2 + 1 + 2 = 5); and there masked_fill_ saves its [1, 1, s, s] bool mask, once a layer
    # (cost.unfused_memory). Micro batch 1: b x heads 2, the torch softmax at 8K too; micro batch 2:
    # 4, the fused kernel at 8K.
    gemma = load_model("gemma-2-9b")

    def scores_bytes(model, seq_len, b=1):
        kw = dict(tp=np.array([8]), ulysses=np.array([1]), ring=np.array([1]), micro_batch=np.array([b]),
                  recompute=np.array([RECOMPUTE_NONE]))
        workload = Workload(seq_len=seq_len, global_batch=8)
        flash, _ = activation_bytes_per_layer(model, workload, **kw)
        unfused, _ = activation_bytes_per_layer(model, workload, unfused=True, **kw)
        # Flash's fp32 log-sum-exp (2 heads) back in; out, the unfused K and V expanded from the rank's
        # 1 KV head to its 2 query heads of 256 (cost.unfused_gqa), per sequence.
        return float(unfused[0] - flash[0]) + b * (4 * seq_len * 2 - 2 * 2 * seq_len * 256)

    assert scores_bytes(gemma, 8192) == 6 * 8192 * 8192 * 2 + 8192 * 8192 == 872_415_232
    assert scores_bytes(gemma, 8192, b=2) == 2 * 8192 * 8192 * 4 == 536_870_912
    assert scores_bytes(gemma, 16384) == 6 * 16384 * 16384 * 2 + 16384 * 16384 == 3_489_660_928
    dropout = gemma.model_copy(update={"attention_dropout": 0.1})
    assert scores_bytes(dropout, 8192, b=2) == 5 * 8192 * 8192 * 4
    assert scores_bytes(dropout, 8192) == 7 * 8192 * 8192 * 2 + 8192 * 8192
    assert scores_bytes(dropout, 16384) == 7 * 16384 * 16384 * 2 + 16384 * 16384
    # 128K: 6 x 2 heads x 2^34 = 192 GiB of one layer's scores on each rank and a 16 GiB mask, beyond
    # an L40S's 44.5 GiB.
    assert scores_bytes(gemma, 131072) == (192 + 16) * 2**30


def test_transformer_engines_torch_softmax_passes_from_16k_keys():
    # Forward: the fp32 cast 2+4, the in-place mask 4+1+4, softmax 4+4, the bf16 cast 4+2 = 29 bytes a
    # score (fused: 4); backward 6 + 12 + 9 + 6 = 33 (fused: 6). Gemma's 2 heads, d 256, at 16K keys.
    from sp_planner.cost.kernels import unfused_attention_time_s

    l40s = load_hardware("l40s")
    elements = 2 * 16384 * 16384
    bw = l40s.hbm_bandwidth_bytes_per_s * l40s.efficiency.memory_bound
    gemm_rate = l40s.peak_bf16_flops * l40s.efficiency.gemm * l40s.efficiency.sustained_fraction
    one_gemm = max(2 * 256 * elements / gemm_rate, 2 * elements / bw)
    kw = dict(batch=1, heads=2, head_dim=256, q_tokens=16384, kv_tokens=16384)
    assert unfused_attention_time_s(l40s, backward=False, **kw) == pytest.approx(2 * one_gemm + 29 * elements / bw,
                                                                                 rel=1e-12)
    assert unfused_attention_time_s(l40s, backward=True, **kw) == pytest.approx(4 * one_gemm + 33 * elements / bw,
                                                                                rel=1e-12)
    # At 8K, b 2 x 2 heads: the fused kernel's 4 bytes, on half the elements.
    short = dict(kw, batch=2, q_tokens=8192, kv_tokens=8192)
    assert unfused_attention_time_s(l40s, backward=False, **short) == pytest.approx(
        2 * one_gemm / 2 + 4 * elements / 2 / bw, rel=1e-12)
    # b 1 x 2 heads (b x heads not a multiple of 4), or 8,188 keys (not a multiple of 8): the torch
    # softmax's 29 and 33 below 16K too.
    assert unfused_attention_time_s(l40s, backward=False, **dict(short, batch=1)) == pytest.approx(
        2 * one_gemm / 4 + 29 * elements / 4 / bw, rel=1e-12)
    assert unfused_attention_time_s(l40s, backward=True, **dict(short, batch=1)) == pytest.approx(
        4 * one_gemm / 4 + 33 * elements / 4 / bw, rel=1e-12)
    odd = dict(short, q_tokens=8188, kv_tokens=8188)
    odd_elements = 2 * 2 * 8188 * 8188
    odd_gemm = max(2 * 256 * odd_elements / gemm_rate, 2 * odd_elements / bw)
    assert unfused_attention_time_s(l40s, backward=False, **odd) == pytest.approx(
        2 * odd_gemm + 29 * odd_elements / bw, rel=1e-12)


def test_selective_recompute_holds_one_layers_rebuilt_scores_in_its_backward():
    # Selective recompute saves no s^2 terms but re-runs the core attention of the layer in
    # backward, which then holds its scores (and the log-sum-exp a flash kernel rebuilds) beside the
    # saved ones: llama2-7b with attention dropout at tp 2, 4K: 5 a s^2 b / t of unfused scores; full
    # recompute rebuilds the whole layer (its bytes with nothing recomputed); none rebuilds nothing.
    # Each also holds the attention's buffers beyond its saved scores while it runs
    # (cost.unfused_memory; fused softmax with dropout): 2 a s^2 b / t + s^2 (test below).
    model = load_model("llama2-7b").model_copy(update={"attention_dropout": 0.1})
    workload = Workload(seq_len=4096, global_batch=8)
    kw = dict(tp=np.array([2]), ulysses=np.array([1]), ring=np.array([1]), micro_batch=np.array([1]))
    codes = np.array([RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL])
    stored, working = activation_bytes_per_layer(model, workload, recompute=codes, unfused=True, **kw)
    transient = 2 * 32 * 4096**2 / 2 + 4096**2
    assert working[0] == transient
    assert working[1] == 5 * 32 * 4096**2 / 2 + transient
    assert working[2] == stored[0] + transient
    _, flash = activation_bytes_per_layer(model, workload, recompute=codes, **kw)
    assert flash[1] == 4 * 4096 * 32 / 2  # the fp32 log-sum-exp of 16 heads a rank


def test_a_selective_plans_peak_holds_one_layers_unfused_scores():
    # The same plan's activations at its peak: with flash attention the loss moment (the logits
    # outweigh a layer's rebuilt log-sum-exp), unfused a layer's backward, with the scores its
    # re-run attention holds beside the saved activations, which are the same (selective recompute
    # saves no s^2 terms and no lse): 5 a s^2 b / t more, and the buffers its attention holds beyond
    # them (cost.unfused_memory): 2 a s^2 b / t + s^2.
    from sp_planner.candidates import Candidates
    from sp_planner.cost.memory import memory_columns
    from sp_planner.plan import ParallelPlan

    model = load_model("llama2-7b").model_copy(update={"attention_dropout": 0.1})
    workload = Workload(seq_len=4096, global_batch=8)
    c = Candidates.of_plan(ParallelPlan(tp=2, pp=1, dp=1, ulysses=1, ring=1, zero=1, recompute="selective",
                                        micro_batch=1))
    flash = memory_columns(model, A100, workload, c, domain_gpus=8)
    unfused = memory_columns(model, UNFUSED_A100, workload, c, domain_gpus=8)
    assert float(flash.logits_bytes[0]) > 0 and float(unfused.logits_bytes[0]) == 0
    assert float(unfused.activations_bytes[0] - flash.activations_bytes[0]) == 7 * 32 * 4096**2 / 2 + 4096**2
