"""Transformer Engine's unfused attention beyond its saved scores (cost.unfused_memory), by hand."""

from __future__ import annotations

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import activation_bytes_per_layer, saved_activation_bytes_per_layer
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.cost.memory import memory_columns
from sp_planner.cost.unfused_memory import (
    te_causal_mask_cache_bytes,
    unfused_saved_mask_bytes,
    unfused_transient_bytes,
)
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, ParallelPlan
from sp_planner.specs.workload import Workload

GEMMA = load_model("gemma-2-9b")  # 16 heads, no attention dropout
L40S_UNFUSED = with_attention_kernel(load_hardware("l40s"), UNFUSED)


def _scores(heads_per_rank: int, seq_len: int) -> int:
    return heads_per_rank * seq_len * seq_len  # micro batch 1


def test_gemma2_fused_softmax_at_8k_holds_the_backwards_gradients():
    # tp 4: 4 heads a rank at b 1 (b x heads a multiple of 4: TE's fused kernel), E = 4 x 8192^2 =
    # 2^28 scores, M = 8192^2 = 2^26 mask elements. Live at most: forward bf16 scores +
    # probabilities 4E + the mask M = 17M, backward the saved probabilities, their gradient and the
    # softmax's fresh input gradient 6E = 24M, get_full_mask's three int32 tensors and three bools
    # 15M: 24M, less the saved probabilities 2E = 8M: 16M = 1 GiB.
    assert unfused_transient_bytes(False, 8192, _scores(4, 8192), attn_batches=4) == 16 * 2**26 == 2**30
    # tp 1: 16 heads, E = 16M: the backward's 6E = 96M rules, less 2E: 64M = 4 GiB.
    assert unfused_transient_bytes(False, 8192, _scores(16, 8192), attn_batches=16) == 4 * 2**30
    # With attention dropout (tp 4): forward 2 + 2 + 1 + 2 = 7E + M = 29M above the backward's 7E,
    # less the saved 5E = 20M: 9M.
    assert unfused_transient_bytes(True, 8192, _scores(4, 8192), attn_batches=4) == 9 * 2**26


def test_gemma2_at_tp8_runs_the_torch_softmax_below_16k_too():
    # tp 8, b 1: 2 heads a rank, b x heads 2 is no multiple of 4, so is_kernel_available (softmax.py
    # line 315 at d0067d0) refuses the fused kernel at 8K as at 16K. E = 2 x 2^26, M = 2^26: forward
    # 12E + two masks = 26M (backward 12E + M = 25M, the mask build 15M), less the saved 6E + M =
    # 13M: 13 x 64 MiB; the saved and the cached causal masks M each.
    assert unfused_transient_bytes(False, 8192, _scores(2, 8192), attn_batches=2) == 13 * 2**26
    assert unfused_saved_mask_bytes(8192, 2) == te_causal_mask_cache_bytes(8192, attn_batches=2) == 2**26
    # Two sequences a micro-batch make b x heads 4: the fused kernel, no mask kept.
    assert unfused_saved_mask_bytes(8192, 4) == te_causal_mask_cache_bytes(8192, attn_batches=4) == 0
    # Keys not a multiple of 8 (line 306) fall back at any b x heads.
    assert unfused_saved_mask_bytes(8188, 4) == 8188**2


def test_gemma2_torch_softmax_from_16k_holds_its_fp32_copies():
    # 16K keys: the torch softmax. tp 8, E = 2 x 2^28, M = 2^28: forward bf16 scores 2 + fp32 copy 4
    # + fp32 probabilities 4 + bf16 probabilities 2 = 12E and two masks = 26M (backward 12E + M =
    # 25M), less the saved 6E + the saved mask M = 13M: 13 x 256 MiB.
    assert unfused_transient_bytes(False, 16384, _scores(2, 16384), attn_batches=2) == 13 * 2**28 == 3_489_660_928
    # tp 16, one head: E = M, forward 14M < get_full_mask's 15M, less 7M saved: 8M (2 GiB).
    assert unfused_transient_bytes(False, 16384, _scores(1, 16384), attn_batches=1) == 8 * 2**28
    # The saved mask and the cached causal mask: 1 byte an s x s element from 16K, none below (at a
    # b x heads of 4).
    assert unfused_saved_mask_bytes(16384, 4) == 2**28 and unfused_saved_mask_bytes(8192, 4) == 0
    assert te_causal_mask_cache_bytes(16384, attn_batches=4) == 2**28
    assert te_causal_mask_cache_bytes(8192, attn_batches=4) == 0
    # A model of local layers only builds "arbitrary" masks, which the cache does not take.
    assert te_causal_mask_cache_bytes(16384, attn_batches=4, has_global_layer=False) == 0


def test_a_layer_holds_the_transient_under_every_recompute():
    workload = Workload(seq_len=16384, global_batch=8)
    kw = dict(tp=np.array([8]), ulysses=np.array([1]), ring=np.array([1]), micro_batch=np.array([1]))
    codes = np.array([RECOMPUTE_NONE, RECOMPUTE_FULL])
    stored, working = activation_bytes_per_layer(GEMMA, workload, recompute=codes, unfused=True, **kw)
    # Gemma 2 is GQA (8 KV heads of 256): the kv-head K and V, 2 x 2 x 16384 x 1 x 256 = 2^24, stay
    # beside the forward's scores (cost.unfused_gqa), whose 26M then rule the backward's 25M.
    assert working[0] == 13 * 2**28 + 2**24
    assert working[1] == stored[0] + 13 * 2**28 + 2**24
    _, flash = activation_bytes_per_layer(GEMMA, workload, recompute=codes, **kw)
    assert flash[0] == 0.0


def test_gemma2_32k_on_l40s_peak_holds_the_buffers_and_one_cached_mask():
    # tp 8, full recompute, 32K: a layer's backward holds the rebuilt layer, the attention's
    # buffers beyond its saved scores (13M, M = 2^30: 13 GiB, and the forward's kv-head K and V,
    # 2 x 2 x 32768 x 256 = 32 MiB: cost.unfused_gqa) and, once for the rank, the cached 1 GiB
    # causal mask, beside the 42 layers' saved inputs.
    workload = Workload(seq_len=32768, global_batch=128)
    plan = ParallelPlan(tp=8, pp=1, dp=1, ulysses=1, ring=1, zero=0, recompute="full", micro_batch=1)
    c = Candidates.of_plan(plan)
    stored, working = saved_activation_bytes_per_layer(GEMMA, L40S_UNFUSED, workload, c)
    mem = memory_columns(GEMMA, L40S_UNFUSED, workload, c, domain_gpus=8)
    assert float(mem.logits_bytes[0]) == 0.0
    assert float(mem.activations_bytes[0]) == float(42 * stored[0] + working[0] + 2**30)
    rebuilt, _ = activation_bytes_per_layer(GEMMA, workload, tp=np.array([8]), ulysses=np.array([1]),
                                            ring=np.array([1]), micro_batch=np.array([1]),
                                            recompute=np.array([RECOMPUTE_NONE]), unfused=True)
    assert float(working[0] - rebuilt[0]) == 13 * 2**30 + 2**25
