"""A rank's communication buffers of one layer (vectorized): the context-parallel attention's
transients and the TP all-gather buffer, the parts cost.memory places at the peak's two moments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention_comm import allgather_buffer_bytes, kv_heads_for_ulysses
from sp_planner.cost.dsa import dsa_transient_bytes
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.ring_impl import TE_RING, RingImpl
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


class CommBuffers(NamedTuple):
    """A rank's communication buffers (vectorized): the attention's, live only while a layer's
    attention runs, and the TP all-gather buffer, held throughout."""

    attention_bytes: np.ndarray
    tp_bytes: np.ndarray


def comm_buffer_bytes(model: ModelSpec, workload: Workload, *, tp, ulysses, ring, micro_batch, allgather=False,
                      ring_impl: RingImpl = TE_RING) -> CommBuffers:
    """Buffers of one layer: the attention's transients, Ulysses send/receive and ring K/V and
    dK/dV (as `ring_impl` holds them, cost.ring_impl; or all-gather CP's gathered K/V and full
    dK/dV, cost.attention.allgather_buffer_bytes), and the TP all-gather buffer (Megatron's
    global memory buffer, which keeps the largest gathered input)."""
    d = model.head_dim
    n = micro_batch * workload.seq_len / (ulysses * ring)
    heads = model.num_heads / tp
    kv = kv_heads_for_ulysses(model.num_kv_heads, tp, ulysses)
    ulysses_buf = np.where(ulysses > 1, 2 * BF16_BYTES * n * heads * d, 0.0)
    # Backward holds the ring's K/V and dK/dV buffers and the dQ accumulator (cost.ring_impl).
    ring_buf = np.where(ring > 1, n * d * (kv * ring_impl.buffer_bytes_per_kv_elem + ring_impl.dq_accum_bytes * heads),
                        0.0)
    # n*kv*d = one local K (or V) block on the ring axis: b x S/R tokens x kv/U heads.
    ring_buf = np.where(allgather, allgather_buffer_bytes(n * kv * d, ring, BF16_BYTES, ring_impl.grad_elem_bytes),
                        ring_buf)
    tp_buf = np.where(tp > 1, BF16_BYTES * n * model.hidden_size, 0.0)
    if model.dsa is not None:  # the indexer's logits block or the full latent key's gradient (cost.dsa)
        ring_buf = dsa_transient_bytes(model, queries=n, keys=micro_batch * workload.seq_len)
        ulysses_buf = np.zeros(np.shape(ring_buf))  # ulysses is refused (plan rule dsa_cp)
    return CommBuffers(attention_bytes=np.asarray(ulysses_buf + ring_buf, dtype=np.float64),
                       tp_bytes=np.asarray(tp_buf, dtype=np.float64))
