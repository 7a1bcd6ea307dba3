"""DeepSeek Sparse Attention's host ops (cost.host): the PyTorch ops and kernel calls Megatron-LM
issues from Python for a DSA layer's indexer, top-k and sparse MLA, per micro-batch, beyond the
dense layer's count, whose core-attention kernel they replace (vectorized over candidates).

Counted, as cost.host counts, one op per op or kernel call the host issues, at Megatron-LM d98e8a6
megatron/core/transformer/experimental_attention_variant/ (dsa.py unless named) with its defaults
(--dsa-kernel-backend tilelang, no indexer loss, dsa_indexer_rotate_activation True,
dsa_indexer_rope_interleaved False, dsa_indexer_k_norm_fp32 False), unpacked (bshd) sequences:
Forward, DSAIndexer.forward_before_topk (lines 1248-1322), under no_grad:
- its three projections, linear_wq_b, linear_wk and linear_weights_proj: 3 GEMMs;
- _apply_rope on q and on k (lines 1210-1246): rope_utils.py _apply_rotary_pos_emb_bshd runs
  cos, * mscale, .to and sin, * mscale, .to on the freqs, then t * cos, _rotate_half's -x2 and
  torch.cat, * sin, the sum and the final torch.cat (t_pass empty): 12; then the indexer's
  torch.cat of the rotated and pass-through parts: 13 a call, 26;
- k_norm (one TE LayerNorm kernel), rotate_activation on q and k (fast_hadamard_transform, one
  kernel each), the weights' two scalar products (line 1320): 5;
- tp > 1 with sequence parallelism: the all-gathers of x and qr (lines 1273-1275): 2;
- context parallelism (all-gather only): the indexer key's all-gather and index_select (lines
  1984-1993) and the latent key's (lines 1835-1856): 4; backward the latent key gradient's
  reduce-scatter and index_select's backward (a zeroed gradient and index_add_): 3. The reorder
  index's build (_build_kv_reorder_idx, a few small ops once a forward) is not counted.
Row bounds, DSAttention.forward (lines 1901-1917 and 2088-2096), causal, unpacked:
dsa_masking.py build_dsattention_forward_mask (lines 430-522) builds the rows' key bounds,
torch.zeros(sq), torch.arange(1, sq + 1) and its clamp (3); build_fused_indexer_varlen_bounds
(lines 525-560) through normalize_varlen_bounds (lines 148-176: the int64 .to's are no-ops) the key
positions' arange, then the two bounds' .to(int32) (3): 6. Under context parallelism the query
positions come first: no position_ids reach the attention (transformer_layer.py lines 669-680), so
dsa_layout.py get_cp_positions_from_layout (lines 180-221) builds the zigzag positions (two aranges
and their cat) and the keys' arange: 4 more (zeros_like, + 1 and clamp in place of the 3).
Top-k, ops/tilelang_dsa.py fused_qk_topk_lighting (lines 215-289), per sequence of the micro-batch:
weights[:, bi].float() (1; q[:, bi] and k[:, bi].contiguous() copy only at b > 1: 2 more); per block
of INDEXER_BLOCK_QUERIES local queries: ops/indexer.py lighting_indexer_indices runs the tilelang
indexer kernel and clean_logits (ops/tilelang_indexer_fwd.py indexer_fwd_interface), torch.topk and
.to(torch.int32); _sanitize_fused_topk_indices's >= and < of the row bounds, &, ~ and masked_fill_;
topk_out's copy_: 10. torch.topk is one op here, though its multi-block radix select launches some
twenty kernels from C++ (PyTorch aten/src/ATen/native/cuda/TensorTopK.cu mbtopk::launch: a fill,
two memsets, three kernels per 8-bit digit, the k-th counts, two CUB scans, the gather), which
cost a launch each but no Python or dispatcher (not counted, as cost.host takes one op a call).
Sparse MLA, ops/tilelang_dsa.py fused_sparse_mla_absorbed and ops/sparse_mla.py SparseMLA:
- forward: _valid_head_mask's ge, any and repeat_interleave (3), the tilelang kernel (1),
  _zero_invalid_heads on the output and the lse where (a zeros and a where each: 4): 8; at b > 1
  the query's and key's permute(...).contiguous() and the output's copy (at b = 1 views): 3; where
  the rank has fewer than 16 heads, the pad to the kernel's 16-head tile: 1;
- backward (the output and lse are not saved, lines 66-69): the lse's gradient autograd
  materializes (zeros, 1), _zero_invalid_heads on the output gradient (2), the forward kernel again
  with its two masks (5), the delta kernel (ops/tilelang_sparse_mla_bwd.py sparse_mla_delta, 1),
  sparse_mla_bwd's zeroed fp32 dKV, kernel and postprocess (3), _zero_invalid_heads on dQ (2): 14;
  at b > 1 grad_output.contiguous(): 1. The sequence and top-k are multiples of the kernels'
  buckets (256, 64), so none of the padding copies run.
The V up-projection weight, DSAttention.forward (line 1665): up_v_weight.to(query's device and
dtype).contiguous() runs once a forward. The weight is absorbed_mla.py _get_kv_up_weights' slice
(lines 694-705) kv_up_weight[:, qk_head_dim:, :] of the (heads/tp, qk_head_dim + v_head_dim,
kv_lora_rank) view of linear_kv_up_proj.weight: not contiguous with more than one head on the rank,
so .contiguous() copies it (aten::clone, one copy_ kernel; the .to is a no-op on the bf16 weight),
and at one head a view (no op). Its backward (CloneBackward0) passes the gradient on, no kernel.
The K half (line 573) goes to its einsum strided, a bmm with no copy.
These replace the dense core attention's kernel (cost.host: 1 forward; 3 backward, the dot(dO, O)
pre-pass, the kernel and the dQ conversion); its layout copy stays (the absorbed output's einsum
and .contiguous(), line 173). Without the indexer loss the indexer has no backward. Not counted
here: the trained indexer's loss path (DSASpec.indexer_loss sparse: cost.dsa_loss_host counts it on
top). Not counted: the main attention's unfused RoPE under DSA (cost.rope: its launches stay the
fused count).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dsa import INDEXER_BLOCK_QUERIES, copies_up_v_weight
from sp_planner.specs.model import ModelSpec

INDEXER_GEMMS = 3
# One _apply_rotary_pos_emb_bshd call (module docstring), and the indexer's cat after it.
ROPE_CALL_OPS, INDEXER_ROPE_CAT_OPS = 12, 1
INDEXER_ROPE_CALLS = 2  # q and k
# k_norm, the two Hadamard transforms, the weights' two scalar products.
INDEXER_ELEMENTWISE_OPS = 1 + 2 + 2
INDEXER_FORWARD_OPS = (INDEXER_GEMMS + INDEXER_ROPE_CALLS * (ROPE_CALL_OPS + INDEXER_ROPE_CAT_OPS)
                       + INDEXER_ELEMENTWISE_OPS)
INDEXER_TP_GATHERS = 2  # x and qr, under sequence parallelism
CP_FORWARD_OPS, CP_BACKWARD_OPS = 4, 3
# The rows' key bounds, each forward (module docstring); under CP the zigzag query positions first.
ROW_BOUNDS_OPS, CP_POSITION_OPS = 3 + 3, 4
TOPK_SEQUENCE_OPS, TOPK_SEQUENCE_COPIES = 1, 2  # weights' .float(); q's and k's copies at b > 1
TOPK_BLOCK_OPS = 10
SPARSE_MLA_FORWARD_OPS, SPARSE_MLA_BACKWARD_OPS = 8, 14
SPARSE_MLA_FORWARD_COPIES, SPARSE_MLA_BACKWARD_COPIES = 3, 1  # at b > 1
UP_V_WEIGHT_COPY_OPS = 1  # the V up-projection weight's .contiguous() at > 1 head a rank (line 1665)
SPARSE_MLA_MIN_HEADS = 16  # the kernel's head tile; fewer heads on a rank are padded (1 op)
# The dense core attention's kernel calls DSA replaces (cost.host).
CORE_ATTENTION_FORWARD_KERNELS, CORE_ATTENTION_BACKWARD_OPS = 1, 3


def dsa_host_ops(model: ModelSpec, *, seq_len: int, micro_batch, tp, ring, sequence_parallel: bool = True):
    """(forward, backward) host ops a DSA layer adds to the dense layer's count per micro-batch
    (module docstring), per candidate; (0, 0) without DSA. DeepSeek-V3.2 at 32K, b 1, tp 8, no
    CP: 34 + 2 + 6 + (1 + 4 x 10) + 8 + 1 (the V up-projection weight's copy) - 1 = 91 forward,
    14 - 3 = 11 backward."""
    b = np.asarray(micro_batch, dtype=np.float64)
    zero = np.zeros(np.broadcast(b, np.asarray(tp), np.asarray(ring)).shape)
    if model.dsa is None:
        return zero, zero
    r = np.asarray(ring, dtype=np.float64)
    multi = b > 1
    blocks = np.ceil(seq_len / r / INDEXER_BLOCK_QUERIES)
    gathers = np.where((np.asarray(tp) > 1) & sequence_parallel, INDEXER_TP_GATHERS, 0)
    topk = b * (TOPK_SEQUENCE_OPS + np.where(multi, TOPK_SEQUENCE_COPIES, 0) + blocks * TOPK_BLOCK_OPS)
    heads = model.num_heads / np.asarray(tp)
    pad = np.where(heads < SPARSE_MLA_MIN_HEADS, 1, 0)
    up_v = np.where(copies_up_v_weight(model, tp), UP_V_WEIGHT_COPY_OPS, 0)
    sparse_fwd = SPARSE_MLA_FORWARD_OPS + np.where(multi, SPARSE_MLA_FORWARD_COPIES, 0) + pad + up_v
    sparse_bwd = SPARSE_MLA_BACKWARD_OPS + np.where(multi, SPARSE_MLA_BACKWARD_COPIES, 0)
    cp = r > 1
    fwd = (INDEXER_FORWARD_OPS + gathers + ROW_BOUNDS_OPS + topk + sparse_fwd - CORE_ATTENTION_FORWARD_KERNELS
           + np.where(cp, CP_FORWARD_OPS + CP_POSITION_OPS, 0))
    bwd = sparse_bwd - CORE_ATTENTION_BACKWARD_OPS + np.where(cp, CP_BACKWARD_OPS, 0)
    return fwd + zero, bwd + zero
