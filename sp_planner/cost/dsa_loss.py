"""DeepSeek Sparse Attention's lightning indexer trained with its sparse KL loss (DSASpec.indexer_loss
"sparse"; DeepSeek-V3.2 report section 2.1, the sparse training stage): what it adds to a DSA layer
on one rank per micro-batch, as Megatron-LM d98e8a6 runs it with the tilelang backend
(--dsa-indexer-loss-coeff > 0 --dsa-indexer-use-sparse-loss --dsa-kernel-backend tilelang;
megatron/core/transformer/experimental_attention_variant/dsa.py lines 1888-1893 and 2121-2153, which
call ops/tilelang_dsa.py fused_qk_topk_lighting_with_streaming_sparse_kl in place of
fused_qk_topk_lighting). With q local queries (b x s / cp), k = the top-k row width and the
indexer's H_I heads x D_I:

Forward, per 512-query chunk of each 8,192-query indexer block:
- the target: the main attention's distribution over the selected keys, summed over the rank's
  heads (ops/tilelang_indexer_loss.py sparse_indexer_target: QK^T over the 576-wide latent twice),
  timed as GEMM work (cost.kernels.gemm_time_s; cost.dsa.indexer_target_flops_per_token);
- its all-reduce over TP (fp32 q x k; _stage_topk_target_chunk), double-buffered: chunk i's
  all-reduce runs while chunk i-1's KL and chunk i+1's target compute, so the forward takes the
  longer of the two;
- memory-bound passes (cost.kernels.memory_pass_time_s) over each [q, k] row, LOSS_FWD_BYTES_PER_SLOT,
  and with tp > 1 the sort of the selected keys by index before the reduction (SORT_BYTES_PER_SLOT);
- per sequence of the micro-batch (tilelang_dsa.py lines 624-631), the copy of the detached absorbed
  query into head-major order, `query[:, bi].permute(1, 0, 2).contiguous()` (heads/tp x 576 bf16 a
  query, read and written; made whether or not the fallback target that reads it runs), and with
  b > 1 the copies of the latent key (`key[:, bi, 0].contiguous()`, a view at b = 1) and of each
  512-query chunk of the query (line 700, `query[abs_start:abs_end, bi].contiguous()`).
Backward: the KL gradient's passes and autograd's slice gradients (LOSS_BWD_BYTES_PER_SLOT,
SLICE_GRAD_BYTES_PER_ELEM), the tilelang indexer backward and its projections' weight gradients as
GEMM work (cost.dsa.indexer_bwd_flops_per_token), the fp32 key gradient's zeroing and bf16 cast, once
per 8,192-query block (each block's lighting_indexer call has its own backward, whose
indexer_bwd_interface zeros a gradient of the whole gathered key, ops/tilelang_indexer_bwd.py line
220), and autograd's sum of those block gradients of the one index_k (KEY_GRAD_SUM_BYTES_PER_ELEM),
and over CP the reduce-scatter of the gathered indexer key's gradient (dsa.py line 1984's
gather_from_sequence_parallel_region, now with a gradient).
Its parameters were already counted whole on every TP rank with gradients and optimizer states
(cost.params: Megatron gives every requires_grad parameter a main_grad and states, trained or not).
The indexer's RoPE, k_norm and Hadamard rotation and their backward are cost.dsa_elementwise's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dsa import (
    FP32_LOGIT_BYTES,
    INDEXER_BLOCK_QUERIES,
    TOPK_INDEX_BYTES,
    indexer_bwd_flops_per_token,
    indexer_input_elems_per_token,
    indexer_target_flops_per_token,
    trains_indexer,
)
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.qk_norm import COPY_BYTES_PER_ELEM
from sp_planner.specs.model import ModelSpec

# fused_qk_topk_lighting_with_streaming_sparse_kl's seq_chunk_size: queries per target, KL and
# all-reduce call.
LOSS_CHUNK_QUERIES = 512
# Bytes a forward moves per top-k slot of a query, by op (tilelang_dsa.py lines 680-735): the valid
# mask (idx >= 0: 4 read, 1 written), its negation (1 + 1) and the masked indices (4 + 1 read, 4
# written); the target's copy into the all-reduce buffer (4 + 4); sparse_indexer_kl's two passes
# reading the target, the indexer logits (fp32) and the mask (2 x 9) and writing the logits'
# gradient (4). 5 + 2 + 9 + 8 + 22.
LOSS_FWD_BYTES_PER_SLOT = 46
# With tp > 1 (_canonicalize_topk_scores_for_tp_reduce -> dsa_masking.sort_topk_by_index): the sort
# key (full_like 4 written; where 1 + 4 + 4 read, 4 written), argsort (keys copied 4 + 4, int64
# order filled 8, PyTorch's in-place small sort for rows <= 4,096 keys, aten/src/ATen/native/cuda/
# Sort.cpp, reading and writing keys and order 2 x 12), the gathers of the mask (8 + 1 read, 1
# written), indices (8 + 4, 4) and scores (8 + 4, 4) and two masked_fills (2 + 9 each): 17 + 40 + 10 +
# 16 + 16 + 22.
SORT_BYTES_PER_SLOT = 121
# Backward: SparseIndexerKLLoss.backward's grad_logits x grad_output (4 + 4); with tp > 1 the
# scores gather's backward (zeros 4, scatter reading 4 + 8, writing 4) and masked_fill's (4 + 1, 4).
LOSS_BWD_BYTES_PER_SLOT = 8
SORT_BWD_BYTES_PER_SLOT = 29
# Each chunk's logits are a slice of its block's [block, k] fp32 scores, so autograd's slice
# backward gives each chunk a zeroed block-sized gradient (4 bytes an element written) that is added
# in place into the block's (8 read, 4 written): 16 bytes a block element per chunk.
SLICE_GRAD_BYTES_PER_ELEM = 16
# The indexer backward's fp32 key gradient (ops/tilelang_indexer_bwd.py indexer_bwd_interface
# zeros_like(index_k, float32)), then cast to the bf16 key by autograd (4 read, 2 written).
KEY_GRAD_BYTES_PER_ELEM = FP32_LOGIT_BYTES + FP32_LOGIT_BYTES + BF16_BYTES
# Autograd adds each further block's bf16 key gradient into the first (torch/csrc/autograd
# input_buffer.cpp accumulate: two read, one written).
KEY_GRAD_SUM_BYTES_PER_ELEM = 3 * BF16_BYTES


class IndexerLossTimes(NamedTuple):
    """What the indexer's loss adds to one DSA layer on one rank per micro-batch, seconds (arrays
    over candidates; zeros without the loss)."""

    fwd_s: np.ndarray  # target, KL and their passes, or the target's TP all-reduce where longer
    bwd_s: np.ndarray  # KL gradient, indexer backward kernel, projections' weight gradients
    cp_scatter_s: np.ndarray  # the indexer key gradient's reduce-scatter over CP, backward


class IndexerLossBytes(NamedTuple):
    """Bytes one rank sends for the loss per DSA layer and micro-batch (arrays over candidates)."""

    tp_all_reduce: np.ndarray  # forward: the target, each 512-query chunk (2 (tp-1)/tp of it)
    cp_scatter: np.ndarray  # backward: the gathered indexer key's gradient


def _slots(model: ModelSpec, seq_len: int) -> int:
    assert model.dsa is not None
    return min(model.dsa.index_topk, seq_len)


def indexer_loss_bytes(model: ModelSpec, *, seq_len: int, batch, tp, ring) -> IndexerLossBytes:
    """Each collective's sent bytes (an all-reduce over n ranks sends 2 (n - 1) / n of its tensor,
    a reduce-scatter n - 1 blocks); zeros without the loss."""
    tp = np.asarray(tp, dtype=np.float64)
    r = np.asarray(ring, dtype=np.float64)
    queries = np.asarray(batch, dtype=np.float64) * seq_len / r
    if not trains_indexer(model):
        return IndexerLossBytes(np.zeros(np.shape(queries * tp)), np.zeros(np.shape(queries * tp)))
    assert model.dsa is not None
    target = queries * _slots(model, seq_len) * FP32_LOGIT_BYTES
    return IndexerLossBytes(tp_all_reduce=2 * (tp - 1) / tp * target,
                            cp_scatter=(r - 1) * queries * model.dsa.index_head_dim * BF16_BYTES)


def indexer_loss_times(hardware, model: ModelSpec, *, seq_len: int, batch, tp, ring, cp_stride,
                       gpus_per_node: int) -> IndexerLossTimes:
    """The loss's parts (module docstring); `tp`, `ring`, `batch` arrays or ints, `cp_stride` the
    ring axis' rank stride (cost.dsa_times)."""
    b = np.asarray(batch, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.float64)
    r = np.asarray(ring, dtype=np.float64)
    queries = b * seq_len / r
    zero = np.zeros(np.shape(queries * tp))
    if not trains_indexer(model):
        return IndexerLossTimes(zero, zero, zero)
    assert model.dsa is not None and model.mla is not None
    k = _slots(model, seq_len)
    sorting = np.where(tp > 1, 1.0, 0.0)
    target = gemm_time_s(hardware, queries * indexer_target_flops_per_token(model, seq_len, model.num_heads / tp))
    # The absorbed query's head-major copy a sequence, and with b > 1 its chunks' and the latent key's.
    multi = np.where(b > 1, 1.0, 0.0)
    latent = model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    copies = COPY_BYTES_PER_ELEM * latent * (queries * (model.num_heads / tp) * (1 + multi) + multi * b * seq_len)
    passes = memory_pass_time_s(hardware, queries * k * (LOSS_FWD_BYTES_PER_SLOT + sorting * SORT_BYTES_PER_SLOT)
                                + copies)
    sent = indexer_loss_bytes(model, seq_len=seq_len, batch=batch, tp=tp, ring=ring)
    # One all-reduce per chunk; tp is the innermost axis (layout: stride 1).
    chunks = np.ceil(queries / LOSS_CHUNK_QUERIES)
    all_reduce = np.where(tp > 1, chunks * ring_collective_time_s(
        hardware, "all_reduce", sent.tp_all_reduce / chunks, tp.astype(np.int64), 1, gpus_per_node), 0.0)
    # Each block's chunks add block-sized slice gradients (SLICE_GRAD_BYTES_PER_ELEM).
    block = np.minimum(queries, INDEXER_BLOCK_QUERIES)
    slice_grads = queries * np.ceil(block / LOSS_CHUNK_QUERIES) * k * SLICE_GRAD_BYTES_PER_ELEM
    keys = b * seq_len  # the indexer key, gathered whole over CP
    blocks = np.ceil(seq_len / r / INDEXER_BLOCK_QUERIES)  # a sequence's, each a full key gradient
    key_grads = blocks * KEY_GRAD_BYTES_PER_ELEM + (blocks - 1) * KEY_GRAD_SUM_BYTES_PER_ELEM
    bwd_bytes = (queries * k * (LOSS_BWD_BYTES_PER_SLOT + sorting * SORT_BWD_BYTES_PER_SLOT) + slice_grads
                 + keys * model.dsa.index_head_dim * key_grads)
    bwd = gemm_time_s(hardware, queries * indexer_bwd_flops_per_token(model, seq_len)) + memory_pass_time_s(
        hardware, bwd_bytes)
    scatter = np.where(r > 1, ring_collective_time_s(hardware, "reduce_scatter", sent.cp_scatter, r.astype(np.int64),
                                                     cp_stride, gpus_per_node), 0.0)
    return IndexerLossTimes(fwd_s=np.maximum(target + passes, all_reduce), bwd_s=bwd, cp_scatter_s=scatter)


def indexer_loss_saved_bytes(model: ModelSpec, *, queries, keys, seq_len: int) -> np.ndarray | float:
    """What the trained indexer saves for backward on a rank (vectorized over `queries`, local, and
    `keys`, gathered; 0 without the loss): ops/indexer.py IndexerFunction's index_q (H_I x D_I bf16 a
    query), gathered index_k (D_I bf16 a key), fp32 weights (H_I a query) and its own int32 top-k
    indices; SparseIndexerKLLoss's fp32 logits gradient (k a query); the projections' inputs, x and
    qr gathered over TP (hidden + q_lora_rank bf16 a query), and k_norm's input (D_I bf16)."""
    if not trains_indexer(model):
        return 0.0
    assert model.dsa is not None and model.mla is not None
    dsa = model.dsa
    k = _slots(model, seq_len)
    per_query = (BF16_BYTES * dsa.index_n_heads * dsa.index_head_dim + FP32_LOGIT_BYTES * dsa.index_n_heads
                 + TOPK_INDEX_BYTES * k + FP32_LOGIT_BYTES * k
                 + BF16_BYTES * indexer_input_elems_per_token(model)
                 + BF16_BYTES * dsa.index_head_dim)
    return np.asarray(queries, dtype=np.float64) * per_query + np.asarray(keys, dtype=np.float64) * (
        BF16_BYTES * dsa.index_head_dim)
