"""DeepSeek Sparse Attention's trained indexer's host ops (cost.host, beside cost.dsa_host): what
the sparse KL loss (DSASpec.indexer_loss "sparse"; sp-plan --dsa-indexer-loss sparse, whose flags
add --dsa-indexer-loss-coeff and --dsa-indexer-use-sparse-loss) issues per DSA layer and
micro-batch beyond the untrained indexer's top-k (vectorized over candidates).

Counted, as cost.host counts, one op per op call the host or autograd issues (slice_backward and
select_backward one each; views, empty and the cached scratch buffers nothing), at Megatron-LM
d98e8a6 megatron/core/transformer/experimental_attention_variant/, with the tilelang backend, whose
fused target and KL kernels take the model's shapes (tilelang_dsa.py _can_use_fused_sparse_indexer_
target and _kl: a top-k multiple of 256), unpacked sequences, b sequences a micro-batch, each of B
blocks of 8,192 local queries (INDEXER_BLOCK_QUERIES) and N chunks of 512 (LOSS_CHUNK_QUERIES) in all.
Forward, ops/tilelang_dsa.py fused_qk_topk_lighting_with_streaming_sparse_kl (lines 552-760) in
place of fused_qk_topk_lighting (cost.dsa_host's top-k):
- kl_sum's zeros, and at the end reduce_indexer_kl_sum's division and the loss coefficient: 3;
- per sequence: the absorbed query's head-major copy and the weights' .float(); at b > 1 the latent
  key's, q's and k's copies: 2 (+3), against the untrained top-k's 1 (+2);
- per block: ops/indexer.py lighting_indexer, IndexerFunction: the indexer kernel and clean_logits,
  torch.topk, .to(int32), == -inf and masked_fill (6); _sanitize_fused_topk_outputs on indices and
  scores (>=, <, &, ~, masked_fill, ~, masked_fill: 7); topk_out's copy_: 14, against 10; at tp > 1
  _canonicalize_topk_scores_for_tp_reduce (>= 0, then dsa_masking.py sort_topk_by_index's
  full_like, where, argsort, three gathers, two ~ and two masked_fill: 11);
- per chunk: the row mask (>= 0, ~, masked_fill), the fused target kernel, its copy into the
  all-reduce slot, SparseIndexerKLLoss (tilelang_indexer_loss.py lines 316-341: the KL kernel and
  kl_rows.sum()) and the kl_sum add: 8; at tp > 1 the slot's all-reduce; at b > 1 the query
  chunk's copy;
- DSAttention.forward (dsa.py lines 2121-2163): save_loss_to_tracker's `values[l] += loss` (add_
  and the setitem's copy_): 2.
Backward (the indexer now trains; none without the loss):
- DSAIndexerLossAutoScaler (dsa.py lines 1024-1041): ones_like and the scale's multiply; the
  coefficient's and the division's gradients: 4;
- per chunk: SparseIndexerKLLoss's grad_logits x grad_output and the scores slice's
  slice_backward, and the add into the block's gradient (all but a block's first chunk): 3 N - B;
- per block: masked_fill's gradient of the sanitized scores; IndexerFunction.backward
  (tilelang_indexer_bwd.py indexer_bwd_interface, lines 185-233: the materialized zeros of the
  indices' gradient, the fp32 key gradient's zeros_like, the kernel, the key gradient's bf16 cast):
  4; the q and weights block slices' slice_backward (2); at tp > 1 the sort's masked_fill and
  gather gradients (3): 7 (+3), and the adds of each later block's q, k and weights gradients: 3;
- per sequence: the weights' .float() gradient and q's, k's and weights' select_backward: 4, and
  each later sequence's three adds;
- DSAIndexer.forward_before_topk's backward (lines 1248-1322; its inputs detached: no dgrad): the
  three projections' weight gradients, the weights' two scalar multiplies, the two Hadamard
  transforms, k_norm's, and each RoPE call's (rope_utils.py _apply_rotary_pos_emb_bshd: the cos and
  sin multiplies, the negation, the chunk's cat, the add of t's two gradients, the empty pass-
  through's slice_backward and its add, the split's cat: 8): 3 + 2 + 2 + 1 + 16 = 24;
- with context parallelism the gathered indexer key's reduce-scatter and index_select's gradient,
  as cost.dsa_host counts the latent key's (CP_BACKWARD_OPS).
Checked by running the mirror's own Python for this path (tilelang_dsa.py lines 60-760,
ops/indexer.py, sort_topk_by_index, reduce_indexer_kl_sum, _apply_rotary_pos_emb_bshd) on torch
2.13 (CPU, TorchDispatchMode) with each tilelang kernel, collective and TE module stubbed as one
op: tp 1 and 8, b 1 and 2, 1 and 2 blocks, 4 and 8 chunks a block, every count above. Not counted:
under full recompute the first forward runs without grad, so it takes the untrained top-k (the
loss path's forward is counted there too, as layer_host_ops repeats the forward).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dsa import INDEXER_BLOCK_QUERIES, trains_indexer
from sp_planner.cost.dsa_host import CP_BACKWARD_OPS, TOPK_BLOCK_OPS, TOPK_SEQUENCE_COPIES, TOPK_SEQUENCE_OPS
from sp_planner.cost.dsa_loss import LOSS_CHUNK_QUERIES
from sp_planner.specs.model import ModelSpec

# Forward (module docstring); the untrained top-k's it replaces are cost.dsa_host's TOPK_*.
LOSS_SETUP_OPS = 1 + 2  # kl_sum's zeros; the division and the coefficient
LOSS_SEQUENCE_OPS, LOSS_SEQUENCE_COPIES = 2, 3  # beyond the untrained top-k's 1 and 2 (cost.dsa_host)
LOSS_BLOCK_OPS, TP_SORT_OPS = 14, 11  # beyond the untrained top-k's 10
LOSS_CHUNK_OPS = 8  # + the all-reduce at tp > 1, + the query chunk's copy at b > 1
TRACKER_OPS = 2
# Backward (module docstring).
LOSS_SCALE_BACKWARD_OPS = 2 + 2
CHUNK_BACKWARD_OPS = 3  # less one a block: its first chunk's gradient needs no add
BLOCK_BACKWARD_OPS, TP_SORT_BACKWARD_OPS = 7, 3
BLOCK_GRAD_ADDS = 3  # q, k and weights, each later block
SEQUENCE_BACKWARD_OPS, SEQUENCE_GRAD_ADDS = 4, 3
INDEXER_BACKWARD_OPS = 3 + 2 + 2 + 1 + 2 * 8


def _chunks_and_blocks(queries):
    """(N, B): a sequence's 512-query chunks, over its blocks of 8,192 local queries, and blocks."""
    q = np.asarray(queries, dtype=np.float64)
    full, rest = np.floor(q / INDEXER_BLOCK_QUERIES), np.mod(q, INDEXER_BLOCK_QUERIES)
    chunks = full * np.ceil(INDEXER_BLOCK_QUERIES / LOSS_CHUNK_QUERIES) + np.ceil(rest / LOSS_CHUNK_QUERIES)
    return chunks, np.ceil(q / INDEXER_BLOCK_QUERIES)


def indexer_loss_host_ops(model: ModelSpec, *, seq_len: int, micro_batch, tp, ring):
    """(forward, backward) host ops the trained indexer adds to a DSA layer per micro-batch beyond
    cost.dsa_host's untrained count (module docstring); (0, 0) without the loss. DeepSeek-V3.2 at
    32K, b 1, tp 8, no CP (4 blocks, 64 chunks): 3 + 1 + 4 x (4 + 11) + 64 x 9 + 2 = 642 forward,
    4 + 3 x 64 - 4 + 4 x 10 + 3 x 3 + 4 + 24 = 269 backward."""
    b = np.asarray(micro_batch, dtype=np.float64)
    tp_split, r = np.asarray(tp) > 1, np.asarray(ring, dtype=np.float64)
    zero = np.zeros(np.broadcast(b, tp_split, r).shape)
    if not trains_indexer(model):
        return zero, zero
    multi = b > 1
    chunks, blocks = _chunks_and_blocks(seq_len / r)
    sequence = LOSS_SEQUENCE_OPS - TOPK_SEQUENCE_OPS + np.where(multi, LOSS_SEQUENCE_COPIES - TOPK_SEQUENCE_COPIES, 0)
    block = LOSS_BLOCK_OPS - TOPK_BLOCK_OPS + np.where(tp_split, TP_SORT_OPS, 0)
    chunk = LOSS_CHUNK_OPS + tp_split + multi
    fwd = LOSS_SETUP_OPS + b * (sequence + blocks * block + chunks * chunk) + TRACKER_OPS
    per_sequence = (CHUNK_BACKWARD_OPS * chunks - blocks
                    + blocks * (BLOCK_BACKWARD_OPS + np.where(tp_split, TP_SORT_BACKWARD_OPS, 0))
                    + BLOCK_GRAD_ADDS * (blocks - 1) + SEQUENCE_BACKWARD_OPS)
    bwd = (LOSS_SCALE_BACKWARD_OPS + INDEXER_BACKWARD_OPS + SEQUENCE_GRAD_ADDS * (b - 1) + b * per_sequence
           + np.where(r > 1, CP_BACKWARD_OPS, 0))
    return fwd + zero, bwd + zero
