"""Transformer Engine's unfused attention beyond the scores it saves: the masks it builds, the score
buffers one layer's attention holds while it runs, and the causal mask its torch softmax caches.

Read at TransformerEngine d0067d0 (transformer_engine/pytorch/attention/dot_product_attention/,
backends.py UnfusedDotProductAttention._forward, utils.py get_full_mask, softmax.py
FusedScaleMaskSoftmax; csrc/extensions/softmax.cpp), with Megatron's bf16 causal self-attention
and no padding mask (attention_mask None), one rank's E = b x heads/tp x s x s score elements (no
context parallelism runs it) and M = s x s mask elements ([1, 1, s, s], shared by the micro-batch
and the heads, so on every TP rank whole). Bytes per element; the saved ones are
cost.kernels.unfused_saved_bytes_per_score's:
- get_full_mask (@torch.no_grad, every call, before the scores): int32 aranges subtracted into an
  [1, 1, s, s] int32 `mask`, then swa_left and swa_right (int32 each: 12), then
  logical_not((swa_left <= 0) & ~(swa_right < 0)) with at most three bool temporaries live (3):
  15 per mask element; it returns the bool mask (1), held until _forward returns.
- Forward with the fused softmax (cost.kernels.te_torch_softmax false: 16 < keys < 16384, keys a
  multiple of 8, b x heads on the rank a multiple of 4): the baddbmm takes a torch.empty bf16
  buffer and returns a new tensor (2 + 2; the buffer freed on the rebinding), whose result stays
  referenced as matmul_result to the end; scaled_masked_softmax_fwd writes the probabilities (2,
  saved); with attention dropout the mask (1) and output (2). Live at most: 4 (7 with dropout),
  and the mask.
- Forward with the torch softmax (from 16384 keys, or where those multiples fail): the bf16 scores
  (2), their fp32 copy (4, masked in place by masked_fill_, which saves its mask), the fp32
  probabilities (4, saved by softmax) and their bf16 cast (2): 12, with two masks (get_full_mask's
  and its logical_or with the cached causal one, which masked_fill_ saves: 1 per mask element per
  layer).
- Backward with the fused softmax: the bmm's gradient of the probabilities (2) beside the saved
  ones, then scaled_masked_softmax_backward's fresh input gradient (2, "Allocate a fresh output
  buffer"): 2 + 2 + 2 = 6; with dropout the bmm's gradient beside the 5 saved: 7 (the dropout's
  backward, 2 + 1 + 2 + 2 with the dropout output freed, is no more).
- Backward with the torch softmax: softmax backward reads the saved fp32 output (4) and the
  gradient cast to fp32 (4) and writes a new gradient (4): 12, beside the saved mask (the dropout's
  mask and output already freed by their nodes).
What a layer's attention holds beyond its saved bytes is the larger of its forward's and its
backward's live bytes less the saved ones (cost.memory adds it at a layer's moment, beside the
layer's own saved bytes, which the stage's activations count already). The torch softmax also
caches the [s, s] bool causal mask (_default_causal_mask, keyed by mask type and lengths, never
freed): once per rank for the run, where a global (causal) layer runs it; a local layer's mask is
"arbitrary" and takes no cache.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.kernels import te_torch_softmax, unfused_saved_bytes_per_score

MASK_ELEMENT_BYTES = 1  # torch.bool
# get_full_mask's int32 mask, swa_left and swa_right (4 each) and three bool temporaries.
MASK_BUILD_BYTES = 3 * 4 + 3 * MASK_ELEMENT_BYTES
# Live bytes a score element at the forward's and backward's peak (module docstring).
FUSED_FWD_LIVE_BYTES, FUSED_DROPOUT_FWD_LIVE_BYTES = 2 + 2, 2 + 2 + 1 + 2
FUSED_BWD_LIVE_BYTES, FUSED_DROPOUT_BWD_LIVE_BYTES = 2 + 2 + 2, 5 + 2
TORCH_FWD_LIVE_BYTES, TORCH_BWD_LIVE_BYTES = 2 + 4 + 4 + 2, 4 + 4 + 4
# Masks live a mask element: the fused path's get_full_mask result; the torch path's and its
# logical_or (forward), the saved logical_or (backward).
FUSED_FWD_MASKS, TORCH_FWD_MASKS, TORCH_BWD_MASKS = 1, 2, 1


def unfused_saved_mask_bytes(seq_len, attn_batches):
    """Bytes of mask one layer's unfused attention saves per micro-batch: the torch softmax's
    masked_fill_ keeps its [1, 1, s, s] bool mask for backward; the fused kernel keeps none.
    `attn_batches`: b x heads on the rank (cost.kernels.te_torch_softmax)."""
    s = np.asarray(seq_len, dtype=np.float64)
    return np.where(te_torch_softmax(s, attn_batches), MASK_ELEMENT_BYTES * s * s, 0.0)


def unfused_transient_bytes(attention_dropout: bool, seq_len, score_elements, forward_held_bytes=0.0, *,
                            attn_batches):
    """Bytes one layer's unfused attention holds beyond its saved scores and mask while its forward
    or backward runs (module docstring), for `score_elements` = b x heads/tp x s x s on the rank, of
    `attn_batches` = b x heads/tp; `forward_held_bytes`: live beside the forward's scores, not saved
    (the kv-head K and V of a GQA model, cost.unfused_gqa.gqa_forward_input_bytes)."""
    s = np.asarray(seq_len, dtype=np.float64)
    mask = s * s
    scores = np.asarray(score_elements, dtype=np.float64)
    torch = te_torch_softmax(s, attn_batches)
    fused_fwd = FUSED_DROPOUT_FWD_LIVE_BYTES if attention_dropout else FUSED_FWD_LIVE_BYTES
    fused_bwd = FUSED_DROPOUT_BWD_LIVE_BYTES if attention_dropout else FUSED_BWD_LIVE_BYTES
    fwd = np.where(torch, TORCH_FWD_LIVE_BYTES * scores + TORCH_FWD_MASKS * mask,
                   fused_fwd * scores + FUSED_FWD_MASKS * mask) + forward_held_bytes
    bwd = np.where(torch, TORCH_BWD_LIVE_BYTES * scores + TORCH_BWD_MASKS * mask, fused_bwd * scores)
    live = np.maximum(np.maximum(fwd, bwd), MASK_BUILD_BYTES * mask)
    saved = (unfused_saved_bytes_per_score(attention_dropout, s, attn_batches) * scores
             + unfused_saved_mask_bytes(s, attn_batches))
    return live - saved


def te_causal_mask_cache_bytes(seq_len, *, attn_batches, has_global_layer: bool = True):
    """The bool [s, s] causal mask Transformer Engine's torch softmax caches once per rank for the
    run (softmax.py _get_default_causal_mask), where that softmax runs a global layer (at
    `attn_batches` = b x heads on the rank, cost.kernels.te_torch_softmax)."""
    s = np.asarray(seq_len, dtype=np.float64)
    return np.where(te_torch_softmax(s, attn_batches) & has_global_layer, MASK_ELEMENT_BYTES * s * s, 0.0)
