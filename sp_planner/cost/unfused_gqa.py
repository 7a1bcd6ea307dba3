"""Transformer Engine's unfused attention under grouped-query attention: the K and V it expands to
the query heads before its batched GEMMs, their copy's time and the memory they take.

Read at TransformerEngine d0067d0 (transformer_engine/pytorch/attention/dot_product_attention/
backends.py UnfusedDotProductAttention._forward, lines 540-549): where the key has fewer heads
than the query (`key_layer.shape[2] != query_layer.shape[2]`), key_layer and value_layer are
`repeat_interleave(heads // kv_heads, dim=2)`'d, [s, b, kv, d] -> [s, b, heads, d], before the
baddbmm (Q K^T) and the bmm (P V) take them by reshape (views). With an int repeat count PyTorch
runs repeat_interleave as unsqueeze -> expand -> clone(contiguous) -> flatten (torch 2.13's
autograd graph of it: ViewBackward0 <- CloneBackward0 <- ExpandBackward0 <- UnsqueezeBackward0),
so per tensor:
- forward: one copy kernel, reading the kv-head tensor and writing the heads-wide one;
- backward: clone's gradient passes through, expand's is sum_to_size (a reduction reading the
  heads-wide gradient, writing the kv-head one): the same bytes;
- saved: repeat_interleave saves nothing (expand's backward needs sizes only), but baddbmm saves
  the expanded K and bmm the expanded V for their backward (torch 2.13: BaddbmmBackward0 keeps
  _saved_batch1 and _saved_batch2, BmmBackward0 _saved_self and _saved_mat2), in place of the
  kv-head K and V flash attention saves (cost.activations). Nothing saves the kv-head originals
  (TE's fused RoPE keeps no input; V is a view of the QKV GEMM's output, which no op saves), but
  the callers (Megatron's attention, TE's DotProductAttention) hold them until the forward
  returns: live at the forward's score peak beside the expanded ones. Selective recompute
  (Megatron's core_attn checkpoint) saves the kv-head inputs and rebuilds the expanded ones in
  backward, beside them.
- backward peak: BmmBackward frees the saved expanded V as it writes V's expanded gradient, the
  same size, which waits for expand's reduction (lower sequence number) past the softmax's
  backward: no net bytes there.
Only GQA models (num_kv_heads < num_heads) on the unfused path run any of it; at equal heads K and
V pass through as views.
Host ops (cost.host, one a kernel launch): the forward's two copies (K, V) and the backward's two
reductions, per layer and micro-batch (gqa_host_ops).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES

# K and V, each expanded once a layer.
EXPANDED_TENSORS = 2


def expands_kv(heads, kv_heads):
    """Whether the unfused attention repeats K/V over the heads (GQA: fewer KV heads than query
    heads, per rank after any Ulysses all-to-all or per TP rank: the ratio is the same)."""
    return np.asarray(kv_heads, dtype=np.float64) < np.asarray(heads, dtype=np.float64)


def gqa_host_ops(heads, kv_heads, *, unfused: bool):
    """(forward, backward) host ops of a layer's K/V expansion (module docstring): one copy kernel
    per expanded tensor forward, one reduction backward, under GQA on the unfused path; `heads`,
    `kv_heads` per rank after any Ulysses all-to-all (KV heads replicated to one a rank run none)."""
    ops = np.where(expands_kv(heads, kv_heads) & unfused, EXPANDED_TENSORS, 0)
    return ops, ops


def gqa_copy_bytes(*, q_elems, kv_elems, heads, kv_heads, elem_bytes: int):
    """HBM bytes of one direction's K/V expansion on a rank (module docstring): forward the copy
    reads the kv-head K and V (`kv_elems` each) and writes them at the query's heads (`q_elems`
    each: the same head dim); backward the reduction reads that and writes this. 0 without GQA."""
    moved = EXPANDED_TENSORS * elem_bytes * (np.asarray(q_elems, dtype=np.float64) + kv_elems)
    return np.where(expands_kv(heads, kv_heads), moved, 0.0)


def gqa_saved_delta_bytes(*, tokens, heads, kv_heads, head_dim):
    """Bytes a layer's unfused attention saves beyond the kv-head K and V: baddbmm's and bmm's
    expanded K and V, (heads - kv_heads) more heads each, bf16, for `tokens` on the rank and
    `heads`, `kv_heads` per TP rank (module docstring). 0 without GQA."""
    extra = np.asarray(heads, dtype=np.float64) - kv_heads
    delta = EXPANDED_TENSORS * BF16_BYTES * np.asarray(tokens, dtype=np.float64) * extra * head_dim
    return np.where(expands_kv(heads, kv_heads), delta, 0.0)


def gqa_forward_input_bytes(*, tokens, heads, kv_heads, head_dim):
    """Bytes of the kv-head K and V the callers hold through the forward beside the expanded ones
    (module docstring), live at the forward's peak but not saved. 0 without GQA."""
    held = EXPANDED_TENSORS * BF16_BYTES * np.asarray(tokens, dtype=np.float64) * kv_heads * head_dim
    return np.where(expands_kv(heads, kv_heads), held, 0.0)
