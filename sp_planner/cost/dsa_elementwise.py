"""DeepSeek Sparse Attention's lightning indexer: its element-wise work around the score kernel and the
top-k, memory-bound passes at the profile's HBM rate (cost.kernels.memory_pass_time_s), per DSA layer
and micro-batch on one rank (vectorized over candidates). Megatron-LM d98e8a6
megatron/core/transformer/experimental_attention_variant/ (dsa.py unless named), its defaults
(dsa_indexer_rotate_activation True, dsa_indexer_k_norm_fp32 False, dsa_indexer_rope_interleaved
False: transformer_config.py lines 345-357), with H_I heads x D_I dims, r = qk_pos_emb_head_dim
(MLA's qk_rope_head_dim) and q = b x s / cp local queries, each whole on every TP rank (x and qr are
gathered over TP, as cost.dsa_times' projections):

Forward (DSAIndexer.forward_before_topk, lines 1248-1322; no_grad without the indexer loss):
- _apply_rope on q and on k (lines 1210-1246): apply_rotary_pos_emb on the r-wide slice, unfused
  (TransformerConfig asserts apply_rope_fusion off for DSA, transformer_config.py line 3163), so
  rope_utils.py _apply_rotary_pos_emb_bshd (lines 92-156) runs t * cos, _rotate_half's negation and
  torch.cat, * sin, the sum and a final torch.cat (t_pass is empty), each a PyTorch kernel, after
  building bf16 cos and sin from the fp32 freqs (cos or sin, * mscale, .to: per token and call);
  then the indexer's torch.cat of the rotated and the untouched parts, a copy of all D_I;
- k_norm, TE's LayerNorm over D_I (experimental_attention_variant_module_specs.py line 114): read and
  write (cost.qk_norm's NORM_BYTES_PER_ELEM) and its fp32 mean and rsigma a key;
- rotate_activation on q and k (lines 253-269): fast_hadamard_transform (Dao-AILab
  fast-hadamard-transform csrc/fast_hadamard_transform.cpp: out = empty_like(x), one read and one
  write; D_I = 128 needs no pad);
- the weights' two scalar products (line 1320, weights * H_I^-0.5 * softmax_scale, left to right)
  and their fp32 cast (ops/tilelang_dsa.py fused_qk_topk_lighting `weights[:, bi].float()`);
- over CP the gathered indexer key's reorder (dsa.py line 1992, k.index_select: a copy and its
  int64 index); with b > 1 the per-sequence copies of q and k (`q[:, bi].contiguous()`; a view at
  b = 1);
- the top-k's bookkeeping per selected slot (its passes over the logits are cost.dsa's
  TOPK_LOGIT_PASSES): torch.topk's fp32 values and int64 indices written, the int32 cast
  (ops/indexer.py _select_topk_from_logits), the row-bound mask and masked_fill
  (tilelang_dsa.py _sanitize_fused_topk_indices) and the copy into topk_out.
  The ReLU, the weights and the head sum run inside the score kernel (ops/tilelang_indexer_fwd.py
  lines 150-160): nothing outside it.
Backward, only with the indexer's sparse KL loss (cost.dsa_loss; autograd through the same ops):
the Hadamard backward (one read and one write), RoPE's products, negation, chunk and slice
backward and the sum of its two gradient paths, split's backward (a torch.cat of
the RoPE and pass-through gradients), k_norm's backward (input and gradient read, gradient written),
the weights' products and cast backward, and autograd's zero-filled gradients of each slice and
select of q, k and the weights (cost.dsa_loss's SLICE_GRAD_BYTES_PER_ELEM convention: a zeroed
full-size gradient added in place, per 8,192-query block and per sequence of the micro-batch), and
over CP the reorder's backward (index_add into a zeroed gathered key gradient).
Their launches without the loss are cost.dsa_host's. With the loss, the sum of index_k's
gradients over a sequence's 8,192-query blocks (each block's indexer backward returns a full one) is
cost.dsa_loss's, beside the key gradient's zeroing and cast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dsa import INDEXER_BLOCK_QUERIES, trains_indexer
from sp_planner.cost.dsa_loss import SLICE_GRAD_BYTES_PER_ELEM
from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.qk_norm import COPY_BYTES_PER_ELEM, NORM_BYTES_PER_ELEM
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# One read and one write of a bf16 element: torch.cat, the Hadamard transform and each copy.
PASS_BYTES_PER_ELEM = COPY_BYTES_PER_ELEM
# Unfused RoPE's bytes per rotated bf16 element (module docstring): t * cos (2 + 2); _rotate_half's
# -x2 on half the elements (2 + 2 there, 1 + 1 averaged) and its cat (2 + 2); * sin (2 + 2); the
# sum (4 + 2); the final cat (2 + 2): 4 + 6 + 4 + 6 + 4. The cos and sin tensors (r a token)
# broadcast over the heads are not counted.
ROPE_FWD_BYTES_PER_ELEM = 24
# Backward: the gradient * cos and * sin (4 + 4), the negation's backward on half (2), chunk's
# backward cat (4), the two paths' sum (6), the r-wide slice's zeroed gradient and copy (2 + 4).
ROPE_BWD_BYTES_PER_ELEM = 26
# MLA's interleaved RoPE (mla_rotary_interleaved, the main attention's calls under DSA: cost.rope)
# first gathers the even and the odd elements into one tensor (rope_utils.py lines 136-138, a
# torch.cat of two strided slices): one read and one write more.
MLA_ROPE_FWD_BYTES_PER_ELEM = ROPE_FWD_BYTES_PER_ELEM + PASS_BYTES_PER_ELEM
# Its backward: the cat's is two views; each strided slice's zeroes an r-wide gradient and copies its
# half in (2 + 2 a rotated element), and the two are summed (4 read, 2 written): 8 + 6 more.
MLA_ROPE_BWD_BYTES_PER_ELEM = ROPE_BWD_BYTES_PER_ELEM + 2 * (BF16_BYTES + BF16_BYTES) + 3 * BF16_BYTES
# Per r-element of a token, each call (q, k): cos of the fp32 freqs (4 + 4), * mscale (4 + 4), .to
# bf16 (4 + 2); sin the same.
COS_SIN_BYTES_PER_ELEM = 2 * (8 + 8 + 6)
ROPE_CALLS = 2
# TE LayerNorm's fp32 mean and rsigma, one each a row (a key).
NORM_STATS_BYTES = 2 * FP32_BYTES
# LayerNorm backward reads the input and the gradient and writes the input's gradient.
NORM_BWD_BYTES_PER_ELEM = 3 * BF16_BYTES
# The weights (H_I a token): two bf16 products (2 + 2 each), then .float() (2 read, 4 written);
# backward the same ops' gradients (the cast's backward reads fp32 and writes bf16).
WEIGHTS_BYTES_PER_ELEM = 2 * PASS_BYTES_PER_ELEM + BF16_BYTES + FP32_BYTES
# index_select's int64 index, read once a gathered key.
REORDER_INDEX_BYTES = 8
# Per selected slot of a query without the loss (lighting_indexer_indices, mask_invalid False):
# topk's values and indices written (4 + 8); .to(int32) (8 read, 4 written); the mask's >= starts
# and < ends (4 read, 1 written each), & (2 + 1), ~ (1 + 1), masked_fill_ in place (4 + 1 read,
# 4 written); topk_out's copy (4 + 4). 12 + 12 + 24 + 8.
TOPK_BYTES_PER_SLOT = 56
# With the loss (lighting_indexer, mask_invalid True; _sanitize_fused_topk_outputs): the same
# writes and cast, topk_scores == -inf (4 + 1) and its masked_fill (4 + 1 read, 4 written), the
# bound mask (5 + 5 + 3 + 2), out-of-place masked_fills of indices and scores (9 each), the copy (8).
# 12 + 12 + 14 + 33 + 8.
TRAINED_TOPK_BYTES_PER_SLOT = 79
# index_select's backward: a zeroed bf16 gathered gradient (2), index_add reading the gradient (2)
# and updating it (2 + 2).
REORDER_BWD_BYTES_PER_ELEM = 4 * BF16_BYTES
# A bf16 slice or select gradient, zeroed and added in place (cost.dsa_loss's fp32 16 bytes).
BF16_SLICE_GRAD_BYTES_PER_ELEM = SLICE_GRAD_BYTES_PER_ELEM * BF16_BYTES // FP32_BYTES


class IndexerElementwiseBytes(NamedTuple):
    """HBM bytes of the indexer's element-wise work on one rank per DSA layer and micro-batch."""

    fwd: np.ndarray  # RoPE, cat, k_norm, Hadamard, weights, key reorder and copies, top-k bookkeeping
    bwd: np.ndarray  # their backward and autograd's slice gradients, only with the indexer's loss


def query_bytes_per_token(model: ModelSpec) -> int:
    """Forward bytes on one local query token, q side and k side (its own key, before the CP gather)
    and the weights (module docstring); DeepSeek-V3.2 (64 x 128, r 64): q 163,840, cos and sin 5,632,
    k 3,080, weights 896: 173,448."""
    assert model.dsa is not None and model.mla is not None
    heads, dim, r = model.dsa.index_n_heads, model.dsa.index_head_dim, model.mla.qk_rope_head_dim
    query = heads * (ROPE_FWD_BYTES_PER_ELEM * r + 2 * PASS_BYTES_PER_ELEM * dim)  # RoPE, cat, Hadamard
    cos_sin = ROPE_CALLS * COS_SIN_BYTES_PER_ELEM * r
    key = NORM_BYTES_PER_ELEM * dim + NORM_STATS_BYTES + ROPE_FWD_BYTES_PER_ELEM * r + 2 * PASS_BYTES_PER_ELEM * dim
    return query + cos_sin + key + WEIGHTS_BYTES_PER_ELEM * heads


def query_bwd_bytes_per_token(model: ModelSpec) -> int:
    """Backward bytes on one local query token with the loss, before the slice gradients: the
    Hadamard, RoPE and split backward of q and k, k_norm's backward, the weights' ops; DeepSeek-V3.2:
    q 172,032, k 3,464, weights 896: 176,392."""
    assert model.dsa is not None and model.mla is not None
    heads, dim, r = model.dsa.index_n_heads, model.dsa.index_head_dim, model.mla.qk_rope_head_dim
    query = heads * (ROPE_BWD_BYTES_PER_ELEM * r + 2 * PASS_BYTES_PER_ELEM * dim)
    key = NORM_BWD_BYTES_PER_ELEM * dim + NORM_STATS_BYTES + ROPE_BWD_BYTES_PER_ELEM * r + 2 * PASS_BYTES_PER_ELEM * dim
    return query + key + WEIGHTS_BYTES_PER_ELEM * heads


def indexer_elementwise_bytes(model: ModelSpec, *, seq_len: int, batch, ring) -> IndexerElementwiseBytes:
    """The bytes each way (module docstring); `batch` (b) and `ring` (cp) arrays or ints."""
    assert model.dsa is not None and model.mla is not None
    dsa = model.dsa
    b = np.asarray(batch, dtype=np.float64)
    r = np.asarray(ring, dtype=np.float64)
    queries = b * seq_len / r
    keys = b * seq_len  # the indexer key, gathered whole over CP
    slots = min(dsa.index_topk, seq_len)
    q_elems, k_elems = dsa.index_n_heads * dsa.index_head_dim, dsa.index_head_dim
    multi = np.where(b > 1, 1.0, 0.0)  # q[:, bi] and k[:, bi] are views at b = 1
    reorder = np.where(r > 1, 1.0, 0.0)
    trained = trains_indexer(model)
    fwd = (queries * (query_bytes_per_token(model) + multi * PASS_BYTES_PER_ELEM * q_elems
                      + slots * (TRAINED_TOPK_BYTES_PER_SLOT if trained else TOPK_BYTES_PER_SLOT))
           + keys * (reorder * (PASS_BYTES_PER_ELEM * k_elems + REORDER_INDEX_BYTES)
                     + multi * PASS_BYTES_PER_ELEM * k_elems))
    if not trained:
        return IndexerElementwiseBytes(fwd=fwd, bwd=np.zeros(np.shape(fwd)))
    # Each block's slice of q (bf16) and the weights (fp32), and each sequence's select of q, k and
    # the weights (bf16, before .float()), has autograd zero a full-size gradient and add it in place.
    blocks = np.ceil(seq_len / r / INDEXER_BLOCK_QUERIES)
    heads = dsa.index_n_heads
    slices = queries * (blocks * (BF16_SLICE_GRAD_BYTES_PER_ELEM * q_elems + SLICE_GRAD_BYTES_PER_ELEM * heads)
                        + b * BF16_SLICE_GRAD_BYTES_PER_ELEM * (q_elems + heads))
    bwd = (queries * query_bwd_bytes_per_token(model) + slices
           + keys * (b * BF16_SLICE_GRAD_BYTES_PER_ELEM + reorder * REORDER_BWD_BYTES_PER_ELEM) * k_elems)
    return IndexerElementwiseBytes(fwd=fwd, bwd=bwd)


def indexer_elementwise_times(hardware: HardwareProfile, model: ModelSpec, *, seq_len: int, batch,
                               ring) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) seconds of the bytes above as memory-bound passes (cost.dsa_times adds them
    to the indexer's forward and, trained, to the loss's backward)."""
    moved = indexer_elementwise_bytes(model, seq_len=seq_len, batch=batch, ring=ring)
    return memory_pass_time_s(hardware, moved.fwd), memory_pass_time_s(hardware, moved.bwd)
