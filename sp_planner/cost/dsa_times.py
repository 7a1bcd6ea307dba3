"""DeepSeek Sparse Attention's seconds per layer and micro-batch on one rank, as Megatron-LM runs it
(vectorized over candidates): what replaces dense MLA's core attention for a DSA model
(cost.layer_times.layer_attention). Megatron-LM d98e8a6
megatron/core/transformer/experimental_attention_variant/ (dsa.py unless named), the tilelang
backend without the indexer loss (cost.dsa's docstring):

Forward, per rank with q = b x s / cp local queries (ulysses is refused: plan rule dsa_cp):
- the indexer's projections, whole on every TP rank (parallel_mode "duplicated"), on inputs
  gathered over TP under sequence parallelism (lines 1273-1275: x and qr, hidden + q_lora_rank a
  token), timed as GEMM work (cost.kernels.gemm_time_s): no published indexer kernel rate;
- its scores, 2 x heads x dim a causal pair against all s keys (gathered over CP, line 1984),
  q x s / 2 pairs with Megatron's load-balanced CP halves, timed as GEMM work, not split by TP;
- the top-k: TOPK_LOGIT_PASSES fp32 passes over each query's full [skv] logits row (cost.dsa);
- the indexer's element-wise work (RoPE, k_norm, Hadamard rotation, the weights' scaling, the key's
  reorder, the top-k's bookkeeping) as memory-bound passes (cost.dsa_elementwise), and with the
  indexer's loss their backward;
- over CP the gathered latent key's reorder into sequence order (line 1856, key.index_select with
  _build_kv_reorder_idx: a copy of the b x s x 576 bf16 keys and the int64 index; the absorbed
  layer passes no value, so line 1863's does not run), and backward index_select's gradient, an
  index_add into a zeroed gathered key gradient (PyTorch index_select_backward), each timed as
  cost.dsa_elementwise's indexer-key reorder (latent_reorder_bytes);
- the V up-projection weight's copy (line 1665, cost.dsa_host): heads / tp x v_head_dim x
  kv_lora_rank bf16 read and written once a forward where a rank holds more than one head (a view
  at one), a memory-bound pass (2 MiB each way a layer for DeepSeek-V3.2 at tp 8);
- sparse MLA forward over heads / tp at tilelang's published rate (cost.dsa.SPARSE_MLA_FLOPS_PER_S),
  less the chip's sustained share as every benchmark rate (cost.kernels.sustained_fraction).
Backward: Megatron's SparseMLA saves no output nor lse and runs the forward kernel again, then the
delta pass (rowsum of O x dO: O and dO read, bf16) and the backward kernel at its published rate
(ops/sparse_mla.py lines 66-69, 86-97); the indexer has none (no loss: no_grad, line 1976) unless
it trains with its sparse KL loss (DSASpec.indexer_loss), whose forward and backward cost.dsa_loss
prices and DSATimes.loss holds.
CP (all-gather only): forward all-gathers the 576-wide latent key (line 1835) and the 128-wide
indexer key (line 1984), backward reduce-scatters the latent key's gradient
(gather_from_sequence_parallel_region's backward); the indexer key has no gradient. These and the
indexer's TP all-gather are exposed (no kernel runs beside them), held in the ring-exposed fields.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention import AttentionTimes
from sp_planner.cost.dsa import (
    FP32_LOGIT_BYTES,
    SPARSE_MLA_FLOPS_PER_S,
    TOPK_LOGIT_PASSES,
    copies_up_v_weight,
    indexer_input_elems_per_token,
    indexer_projection_flops_per_token,
    indexer_score_flops_per_token,
    sparse_mla_bwd_flops_per_token,
    sparse_mla_flops_per_token,
)
from sp_planner.cost.dsa_elementwise import (
    PASS_BYTES_PER_ELEM,
    REORDER_BWD_BYTES_PER_ELEM,
    REORDER_INDEX_BYTES,
    indexer_elementwise_times,
)
from sp_planner.cost.dsa_loss import IndexerLossTimes, indexer_loss_times
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.families import profile_key
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s, sustained_fraction
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class DSATimes(NamedTuple):
    """One DSA layer's parts on one rank per micro-batch, seconds; arrays over candidates."""

    indexer_projection_s: np.ndarray
    indexer_score_s: np.ndarray
    topk_s: np.ndarray
    elementwise_fwd_s: np.ndarray  # the indexer's RoPE, k_norm, Hadamard, ... (cost.dsa_elementwise)
    elementwise_bwd_s: np.ndarray  # their backward, zeros without the indexer's loss
    latent_reorder_fwd_s: np.ndarray  # the gathered latent key's index_select over CP, zeros at cp 1
    latent_reorder_bwd_s: np.ndarray  # its backward (zeroed gradient, index_add), zeros at cp 1
    up_v_copy_s: np.ndarray  # the V up-projection weight's .contiguous() copy, zeros at one head a rank
    sparse_fwd_s: np.ndarray
    sparse_bwd_s: np.ndarray  # the forward kernel again, the delta pass and the backward kernel
    indexer_tp_gather_s: np.ndarray  # x and qr gathered over TP (sequence parallelism)
    cp_gather_s: np.ndarray  # latent key + indexer key over CP, forward
    cp_scatter_s: np.ndarray  # latent key's gradient over CP, backward
    loss: IndexerLossTimes  # the indexer's sparse KL loss (cost.dsa_loss), zeros without it

    def attention_times(self) -> AttentionTimes:
        zero = np.zeros(np.shape(self.sparse_fwd_s))
        return AttentionTimes(
            fwd_compute_s=(self.indexer_projection_s + self.indexer_score_s + self.topk_s + self.elementwise_fwd_s
                           + self.latent_reorder_fwd_s + self.up_v_copy_s + self.sparse_fwd_s + self.loss.fwd_s),
            bwd_compute_s=self.sparse_bwd_s + self.elementwise_bwd_s + self.latent_reorder_bwd_s + self.loss.bwd_s,
            fwd_ring_exposed_s=self.indexer_tp_gather_s + self.cp_gather_s,
            bwd_ring_exposed_s=self.cp_scatter_s + self.loss.cp_scatter_s,
            fwd_ulysses_s=zero,
            bwd_ulysses_s=zero,
        )


def latent_key_elems_per_token(model: ModelSpec) -> int:
    """The absorbed MLA key sparse attention reads, one head: kv_lora_rank + qk_rope (576)."""
    assert model.mla is not None
    return model.mla.kv_lora_rank + model.mla.qk_rope_head_dim


def latent_gather_share(model: ModelSpec) -> float:
    """The latent key's share of DSA's CP all-gather bytes, the rest the indexer key's: the two
    gathers DSACommBytes.cp_gather adds, run as two calls (dsa_times, sim.attention_steps.dsa_phases)."""
    assert model.dsa is not None
    latent = latent_key_elems_per_token(model)
    return latent / (latent + model.dsa.index_head_dim)


def latent_reorder_bytes(model: ModelSpec, *, seq_len: int, batch, ring) -> tuple[np.ndarray, np.ndarray]:
    """(forward, backward) HBM bytes of the gathered latent key's reorder on one rank per layer and
    micro-batch (module docstring), at cp > 1 only, per gathered key as the indexer key's: forward
    576 x 4 + 8 = 2,312, backward 576 x 8 = 4,608 (DeepSeek-V3.2)."""
    r = np.asarray(ring, dtype=np.float64)
    keys = np.where(r > 1, np.asarray(batch, dtype=np.float64) * seq_len, 0.0)  # gathered whole over CP
    latent = latent_key_elems_per_token(model)
    return (keys * (PASS_BYTES_PER_ELEM * latent + REORDER_INDEX_BYTES), keys * REORDER_BWD_BYTES_PER_ELEM * latent)


def up_v_copy_bytes(model: ModelSpec, *, tp) -> np.ndarray:
    """HBM bytes of the V up-projection weight's copy on one rank per layer forward (module
    docstring): read and written, (heads / tp) x v_head_dim x kv_lora_rank bf16 each way where a rank
    holds more than one head; DeepSeek-V3.2 at tp 8: 2 x 16 x 128 x 512 x 2 = 4 MiB."""
    assert model.mla is not None
    heads = model.num_heads / np.asarray(tp, dtype=np.float64)
    weight = heads * model.mla.v_head_dim * model.mla.kv_lora_rank * BF16_BYTES
    return np.where(copies_up_v_weight(model, tp), 2 * weight, 0.0)


class DSACommBytes(NamedTuple):
    """Bytes one rank sends per DSA layer and micro-batch, forward's once (arrays over candidates)."""

    cp_gather: np.ndarray  # forward: the latent key's and the indexer key's all-gathers over CP
    cp_scatter: np.ndarray  # backward: the latent key gradient's reduce-scatter
    tp_gather: np.ndarray  # forward: the indexer's inputs x and qr gathered over TP


def dsa_comm_bytes(model: ModelSpec, *, seq_len: int, batch, tp, ulysses, ring) -> DSACommBytes:
    """Each collective's sent bytes (an all-gather or reduce-scatter over n ranks sends n - 1
    blocks), as dsa_times times them and cost.comm counts them."""
    assert model.dsa is not None and model.mla is not None
    tp = np.asarray(tp, dtype=np.float64)
    r = np.asarray(ring, dtype=np.float64)
    queries = np.asarray(batch, dtype=np.float64) * seq_len / (np.asarray(ulysses, dtype=np.float64) * r)
    latent = latent_key_elems_per_token(model)
    inputs = indexer_input_elems_per_token(model)
    return DSACommBytes(
        cp_gather=(r - 1) * queries * (latent + model.dsa.index_head_dim) * BF16_BYTES,
        cp_scatter=(r - 1) * queries * latent * BF16_BYTES,
        tp_gather=(tp - 1) * (queries / tp) * inputs * BF16_BYTES,
    )


def dsa_times(hardware: HardwareProfile, model: ModelSpec, *, seq_len: int, batch, tp, ulysses, ring,
              gpus_per_node: int) -> DSATimes:
    """The parts of one DSA layer (module docstring); `tp`, `ulysses`, `ring`, `batch` arrays or ints.
    The hardware must have sparse MLA's rates (cost.dsa.dsa_untimed refuses the others)."""
    assert model.dsa is not None and model.mla is not None
    fwd_rate, bwd_rate = SPARSE_MLA_FLOPS_PER_S[profile_key(hardware)]
    assert bwd_rate is not None, "refused by cost.dsa.dsa_untimed"
    b = np.asarray(batch, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.float64)
    r = np.asarray(ring, dtype=np.float64)
    queries = b * seq_len / (np.asarray(ulysses, dtype=np.float64) * r)  # local queries per rank
    projection = gemm_time_s(hardware, queries * indexer_projection_flops_per_token(model))
    score = gemm_time_s(hardware, queries * indexer_score_flops_per_token(model.dsa, seq_len))
    # Each local query's full logits row over the s gathered keys (cost.dsa.TOPK_LOGIT_PASSES).
    topk = memory_pass_time_s(hardware, TOPK_LOGIT_PASSES * FP32_LOGIT_BYTES * queries * seq_len)
    elementwise_fwd, elementwise_bwd = indexer_elementwise_times(hardware, model, seq_len=seq_len, batch=b, ring=r)
    reorder_fwd, reorder_bwd = latent_reorder_bytes(model, seq_len=seq_len, batch=b, ring=r)
    sustained = sustained_fraction(hardware)
    sparse_fwd = queries * sparse_mla_flops_per_token(model, seq_len) / tp / (fwd_rate * sustained)
    sparse_bwd = queries * sparse_mla_bwd_flops_per_token(model, seq_len) / tp / (bwd_rate * sustained)
    delta = memory_pass_time_s(hardware, 2 * BF16_BYTES * queries * (model.num_heads / tp) * model.mla.kv_lora_rank)
    sent = dsa_comm_bytes(model, seq_len=seq_len, batch=batch, tp=tp, ulysses=ulysses, ring=ring)
    # x (hidden) and qr (q_lora_rank) of the local queries, gathered over TP; tp is the innermost
    # axis (layout: stride 1).
    tp_gather = np.where(tp > 1, ring_collective_time_s(hardware, "all_gather", sent.tp_gather, tp.astype(np.int64),
                                                        1, gpus_per_node), 0.0)
    cp_stride = axis_stride({"tp": tp.astype(np.int64), "ulysses": np.asarray(ulysses), "ring": r.astype(np.int64)},
                            "ring")  # as cost.attention's

    def over_cp(collective: str, sent_bytes):
        return np.where(r > 1, ring_collective_time_s(hardware, collective, sent_bytes, r.astype(np.int64), cp_stride,
                                                      gpus_per_node), 0.0)

    # The latent key's and the indexer key's all-gathers, two calls.
    share = latent_gather_share(model)
    gather = over_cp("all_gather", sent.cp_gather * share) + over_cp("all_gather", sent.cp_gather * (1 - share))
    loss = indexer_loss_times(hardware, model, seq_len=seq_len, batch=batch, tp=tp, ring=r, cp_stride=cp_stride,
                              gpus_per_node=gpus_per_node)
    return DSATimes(
        indexer_projection_s=projection, indexer_score_s=score, topk_s=topk, elementwise_fwd_s=elementwise_fwd,
        elementwise_bwd_s=elementwise_bwd, latent_reorder_fwd_s=memory_pass_time_s(hardware, reorder_fwd),
        latent_reorder_bwd_s=memory_pass_time_s(hardware, reorder_bwd),
        up_v_copy_s=memory_pass_time_s(hardware, up_v_copy_bytes(model, tp=tp)), sparse_fwd_s=sparse_fwd,
        sparse_bwd_s=sparse_fwd + delta + sparse_bwd, indexer_tp_gather_s=tp_gather, cp_gather_s=gather,
        cp_scatter_s=over_cp("reduce_scatter", sent.cp_scatter), loss=loss,
    )


def sparse_attention_times(attn: AttentionTimes, hardware: HardwareProfile, model: ModelSpec, *, seq_len: int,
                           batch, tp, ulysses, ring, gpus_per_node: int) -> AttentionTimes:
    """`attn` (dense attention) for a model without DSA; a DSA model's layer times (dsa_times)."""
    if model.dsa is None:
        return attn
    return dsa_times(hardware, model, seq_len=seq_len, batch=batch, tp=tp, ulysses=ulysses, ring=ring,
                     gpus_per_node=gpus_per_node).attention_times()
