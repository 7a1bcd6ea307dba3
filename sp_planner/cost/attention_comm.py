"""Bytes one rank sends for one attention layer, forward + backward, under Ulysses x Ring (USP).

This is the contract between the cost model and the executor: `sp_planner.executor` counts the
bytes it hands to all_to_all / isend at its call sites, and tests require equality with these
functions, byte for byte. All functions take Python ints or numpy integer arrays (the search
evaluates thousands of candidates at once), and use integer arithmetic only.

Shapes (per rank, before the Ulysses all-to-all): batch b, tokens S/(U*R), q heads Hq = H/tp,
kv heads Hkv = KV heads per TP rank after replication for Ulysses (`kv_heads_for_ulysses`).
Q and K (and dQ, dK) have `head_dim`; V and O (and dV, dO) `v_head_dim`, head_dim unless given
(MLA: 192 and 128). The planner passes MLA's mean of the two as head_dim (ModelSpec.head_dim):
every formula here moves a Q or K tensor with an O or V one of the same heads, so its totals
are the same either way; the executor passes both (sp_planner.executor.predict).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import FP32_BYTES

# Ring dK/dV accumulators travel in fp32 (yunchang and ring-flash-attention accumulate them in
# fp32; so does sp_planner.executor.ring).
RING_GRAD_ELEM_BYTES = FP32_BYTES


def kv_heads_per_tp_rank(num_kv_heads, tp):
    """KV heads on one TP rank. Megatron replicates KV heads when tp > num_query_groups, so each
    TP rank holds at least one (megatron/core/transformer/attention.py, G % TP or TP % G).
    Over a search chunk's tp column: looked up in a table over the degrees it holds, each entry
    the same integer division (numpy's int64 division by an array costs ~20 ns a row)."""
    degrees = np.asarray(tp)
    if degrees.ndim == 1 and degrees.dtype == np.int64 and np.ndim(num_kv_heads) == 0 and len(degrees) > 64:
        low, high = int(degrees.min()), int(degrees.max())
        # A table no longer than the column: it never costs more than the division it replaces.
        if low >= 1 and high <= len(degrees):
            every = np.arange(high + 1, dtype=np.int64)
            every[0] = 1  # no degree 0: an unread entry
            return np.take(np.maximum(num_kv_heads // every, 1), degrees)
    return np.maximum(num_kv_heads // tp, 1)


def kv_heads_for_ulysses(num_kv_heads, tp, ulysses):
    """KV heads a TP rank feeds into the Ulysses all-to-all.

    When ulysses exceeds the local KV heads, each head is repeated ulysses/kv times before the
    all-to-all so every Ulysses rank receives one (DeepSpeed ALST `ulysses_sp.py`, verl: U % G == 0).
    """
    kv_local = kv_heads_per_tp_rank(num_kv_heads, tp)
    return np.maximum(kv_local, ulysses)


def ulysses_all_to_all_bytes(*, batch, seq_len, heads, head_dim, ulysses, ring, elem_bytes):
    """Bytes one rank sends in one all-to-all of a tensor with `heads` heads per TP rank (floats,
    for timing): (U-1)/U of its b x S/(U*R) x heads x head_dim local elements."""
    tokens = batch * seq_len / (ulysses * ring)
    return tokens * heads * head_dim * elem_bytes * (ulysses - 1) / ulysses


# The layout copies around each Ulysses all-to-all, each a read and a write of the rank's tensor in
# HBM: one groups the heads by destination rank before all_to_all_single, one restores the
# [b, s, h, d] layout after it. yunchang's all_to_all_4D (yunchang/comm/all_to_all.py:
# reshape().transpose().contiguous() before, transpose().contiguous() after), Transformer Engine's
# flash_attn_a2a_communicate (movedim before, reorder_seq_chunks_for_a2a_before_attn after) and
# DeepSpeed's single_all_to_all on batch-first tensors (_generate_layout_params: permute before and
# after) and sp-run's executor (executor/comm.py seq_to_head / head_to_seq) make two; DeepSpeed's
# sequence-first layout makes one (taken as two).
ULYSSES_LAYOUT_COPIES = 2


def ulysses_layout_copy_bytes(*, batch, seq_len, heads, head_dim, ulysses, ring, elem_bytes):
    """HBM bytes the layout copies around one all-to-all of a tensor with `heads` heads per TP rank
    move (floats, for timing): ULYSSES_LAYOUT_COPIES x (read + write) of its b x S/(U*R) x heads x
    head_dim elements (the same count before and after the exchange); none without Ulysses."""
    tokens = batch * seq_len / (ulysses * ring)
    copies = np.where(np.asarray(ulysses) > 1, ULYSSES_LAYOUT_COPIES, 0)
    return copies * 2 * tokens * heads * head_dim * elem_bytes


def _v_dim(head_dim, v_head_dim):
    return head_dim if v_head_dim is None else v_head_dim


def ulysses_bytes_per_layer(*, batch, seq_len, num_heads, num_kv_heads, head_dim, tp, ulysses,
                            ring, elem_bytes, v_head_dim=None):
    """All-to-all bytes one rank sends per layer, forward + backward.

    Forward: Q, K, V go sequence-sharded -> head-sharded, O goes back (4 all-to-alls). Backward:
    dO goes forward, dQ, dK, dV come back (4 more), as in DeepSpeed-Ulysses (Jacobs et al. 2023,
    section 3.2) and yunchang's UlyssesAttention. An all-to-all over U ranks sends (U-1)/U of the
    local tensor; the chunk a rank keeps for itself is not sent.
    """
    local_tokens = seq_len // (ulysses * ring)
    heads = num_heads // tp + kv_heads_for_ulysses(num_kv_heads, tp, ulysses)
    # Q + K at head_dim, O + V at v_head_dim, on this rank
    local_elems = batch * local_tokens * heads * (head_dim + _v_dim(head_dim, v_head_dim))
    per_pass = local_elems // ulysses * (ulysses - 1)
    return 2 * per_pass * elem_bytes


def ring_grad_hops(ring, grad_home_hop=True):
    """Hops the dK/dV accumulators make over a ring of `ring` ranks: R when the last one runs home
    after the last step (yunchang), R-1 without it (Transformer Engine; cost.ring_impl)."""
    return ring if grad_home_hop else ring - 1


def ring_bytes_per_layer(*, batch, seq_len, num_kv_heads, head_dim, tp, ulysses, ring, elem_bytes,
                         grad_elem_bytes=RING_GRAD_ELEM_BYTES, grad_home_hop=True, v_head_dim=None):
    """P2P bytes one rank sends per layer, forward + backward, for Ring Attention.

    Each rank holds S/R tokens and Hkv/U KV heads after the Ulysses all-to-all. Forward sends
    K and V for R-1 steps; backward sends K and V again for R-1 steps and the dK/dV accumulators
    for R steps, the last step returning them to their owner (ring-flash-attention
    `ring_flash_attn_backward`; yunchang keeps the accumulators in fp32, as we do:
    `grad_elem_bytes`). Without `grad_home_hop` (Transformer Engine, cost.ring_impl) the
    accumulators make R-1 hops. Zigzag and contiguous layouts send the same blocks.
    """
    kv_heads = kv_heads_for_ulysses(num_kv_heads, tp, ulysses) // ulysses
    # K (head_dim) and V (v_head_dim) of one block together
    pair_elems = batch * (seq_len // ring) * kv_heads * (head_dim + _v_dim(head_dim, v_head_dim))
    forward = (ring - 1) * pair_elems * elem_bytes
    hops = ring_grad_hops(ring, grad_home_hop)
    backward = (ring - 1) * pair_elems * elem_bytes + hops * pair_elems * grad_elem_bytes
    return np.where(ring > 1, forward + backward, 0)


# All-gather CP reduce-scatters dK/dV in fp32, as the ring sends its accumulators (Transformer
# Engine's AttnFuncWithCPAndKVAllGather reduce-scatters them in the input dtype; we keep one
# gradient precision for both ring methods, so the executor's bf16 runs stay within tolerance).
ALLGATHER_GRAD_ELEM_BYTES = RING_GRAD_ELEM_BYTES


def allgather_kv_block_elems(*, batch, seq_len, num_kv_heads, head_dim, tp, ulysses, ring):
    """Elements of one rank's K (or V) block on the ring axis: b x S/R tokens x Hkv/U heads."""
    kv_heads = kv_heads_for_ulysses(num_kv_heads, tp, ulysses) // ulysses
    return batch * (seq_len // ring) * kv_heads * head_dim


def allgather_bytes_per_layer(*, batch, seq_len, num_kv_heads, head_dim, tp, ulysses, ring, elem_bytes,
                              v_head_dim=None):
    """All-gather bytes one rank sends per layer, forward + backward, for all-gather CP.

    Forward gathers K and V over the ring axis; backward gathers them again from the saved local
    blocks (Transformer Engine `_attn_cp_kv_allgather_bwd_gather`; Llama 3 paper section 3.3.2:
    "all-gather K and V ... then compute attention output for the local query chunks"). An
    all-gather over R ranks sends (R-1)/R of the gathered tensor per rank: R-1 local blocks.
    """
    pair = allgather_kv_block_elems(batch=batch, seq_len=seq_len, num_kv_heads=num_kv_heads,
                                    head_dim=head_dim + _v_dim(head_dim, v_head_dim), tp=tp, ulysses=ulysses,
                                    ring=ring)  # K and V blocks together
    return 2 * (ring - 1) * pair * elem_bytes


def allgather_reduce_scatter_bytes_per_layer(*, batch, seq_len, num_kv_heads, head_dim, tp, ulysses, ring,
                                             grad_elem_bytes=ALLGATHER_GRAD_ELEM_BYTES, v_head_dim=None):
    """Reduce-scatter bytes one rank sends per layer (backward only) for all-gather CP: the
    full-sequence dK and dV, each rank keeping its own block's sum (TE
    `reduce_scatter_along_first_dim(dk)`); (R-1)/R of the full tensor, R-1 blocks."""
    pair = allgather_kv_block_elems(batch=batch, seq_len=seq_len, num_kv_heads=num_kv_heads,
                                    head_dim=head_dim + _v_dim(head_dim, v_head_dim), tp=tp, ulysses=ulysses,
                                    ring=ring)  # dK and dV blocks together
    return (ring - 1) * pair * grad_elem_bytes


def allgather_buffer_bytes(kv_elems, ring, elem_bytes, grad_elem_bytes=ALLGATHER_GRAD_ELEM_BYTES):
    """Transient bytes of all-gather CP for one layer, `kv_elems` = one local K (or V) block: the
    gathered K and V with their reordered copy (TE index_select after gather_along_first_dim), and
    the full-sequence dK/dV (`grad_elem_bytes`: fp32 here, the forward's bf16 in TE,
    cost.ring_impl) before the reduce-scatter; zero when ring == 1."""
    full = ring * kv_elems
    return np.where(ring > 1, 2 * full * (2 * elem_bytes + grad_elem_bytes), 0)
