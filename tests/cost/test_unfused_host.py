"""Transformer Engine's unfused attention's host ops (cost.unfused_host), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.host import layer_host_ops
from sp_planner.cost.unfused_host import unfused_host_ops

LLAMA = load_model("llama3-8b")  # every layer global, no attention dropout
GEMMA2 = load_model("gemma-2-9b")  # 21 of its 42 layers local (sliding window)


def _ops(model, kv_tokens, unfused=True, attn_batches=8):
    # attn_batches: b x heads on the rank (8: Llama-3-8B's 32 heads at tp 4, b 1).
    fwd, bwd = unfused_host_ops(model, kv_tokens=kv_tokens, attn_batches=attn_batches, unfused=unfused)
    return float(fwd), float(bwd)


def test_fused_softmax_path_by_hand():
    # Forward: get_full_mask 10, baddbmm 1, scaled_masked_softmax 1, bmm 1, the output copy 1, less
    # the flash kernel 1: 13. Backward: bmm 2, softmax 1, baddbmm's two bmm and two scale
    # multiplies 4, less the flash backward's 3: 4.
    assert _ops(LLAMA, 8192) == (13, 4)
    # The fused kernel runs below 16384 keys (TE's is_kernel_available: 16 < sk < 16384), with keys
    # a multiple of 8 and b x heads a multiple of 4 (softmax.py lines 304-316 at d0067d0).
    assert _ops(LLAMA, 16376) == (13, 4)


def test_the_softmax_falls_back_by_keys_and_batches_too():
    # 16,383 keys (not a multiple of 8), or b x heads 2 or 6 (Gemma-2-9B's 16 heads at tp 8, b 1;
    # Llama's 32 at tp 16, b 3): the torch softmax's ops below 16K.
    assert _ops(LLAMA, 16383) == (17, 7)
    assert _ops(LLAMA, 8192, attn_batches=2) == _ops(LLAMA, 8192, attn_batches=6) == (17, 7)
    assert _ops(GEMMA2, 8192, attn_batches=2) == (16.5, 7)
    assert _ops(GEMMA2, 8192, attn_batches=4) == (13, 4)


def test_torch_softmax_path_by_hand():
    # From 16384 keys: .float(), logical_or with the causal mask, masked_fill_, softmax, .bfloat16()
    # (5 for the 1): 17; backward the two casts, softmax's and masked_fill's gradients (4 for 1): 7.
    assert _ops(LLAMA, 16384) == (17, 7)
    assert _ops(LLAMA, 32768) == (17, 7)
    # A local layer's "arbitrary" mask skips the logical_or: half of Gemma-2's layers, 17 - 0.5.
    assert _ops(GEMMA2, 16384) == (16.5, 7)
    assert _ops(GEMMA2, 8192) == (13, 4)


def test_attention_dropout_adds_a_kernel_each_way():
    dropped = LLAMA.model_copy(update={"attention_dropout": 0.1})
    assert _ops(dropped, 8192) == (14, 5)
    assert _ops(dropped, 32768) == (18, 8)


def test_flash_kernels_add_nothing_and_candidates_broadcast():
    assert _ops(LLAMA, 8192, unfused=False) == (0, 0)
    fwd, bwd = unfused_host_ops(LLAMA, kv_tokens=np.array([4096, 16384, 4096]), attn_batches=np.array([32, 32, 2]),
                                unfused=True)
    assert fwd.tolist() == [13, 17, 17] and bwd.tolist() == [4, 7, 7]


def test_the_ops_join_the_layer_and_full_recompute_repeats_the_forward():
    # Llama-3-8B's dense layer at tp 1: 10 + 2 RoPE forward, 18 + 2 backward (cost.host), + 13, + 4.
    args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": False, "full_recompute": False}
    unfused = unfused_host_ops(LLAMA, kv_tokens=8192, attn_batches=32, unfused=True)
    assert [float(x) for x in layer_host_ops(LLAMA, **args)] == [12, 20]
    assert [float(x) for x in layer_host_ops(LLAMA, unfused_ops=unfused, **args)] == [25, 24]
    full = layer_host_ops(LLAMA, unfused_ops=unfused, **(args | {"full_recompute": True}))
    assert [float(x) for x in full] == pytest.approx([25, 24 + 25])
