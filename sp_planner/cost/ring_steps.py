"""The compute of one ring step of an attention layer on one rank (vectorized): its flash calls,
the zigzag half-tensor copies, the online-softmax merge and the backward's accumulation.

Ring Attention (Liu et al. 2023) over R ranks of `block` = S/R tokens: step 0 runs the local block
(causal on its diagonal under a causal mask); each later step a half block under the zigzag layout
(zhuzilin/ring-flash-attention #2, USP Algorithm 2: the same on every rank), else a full block
(no mask, or the contiguous layout's last rank, which sets the pace). After each later forward
step the partial output merges into the accumulator, whose conversions at the ends run once;
every backward step accumulates dQ, dK, dV when R > 1; the bytes of each pass are the framework's
ring's (cost.ring_impl). Transformer Engine's unfused attention (no ring: step 0 only) first
expands a GQA model's K and V to the query heads, forward, and reduces their gradients back,
backward (cost.unfused_gqa): memory-bound passes in step 0's call.

cost.attention sums the steps with their transfers, the simulator plays them one by one
(sim.attention_steps), and benchmarks/ring_blocks_model.py sets them beside measured blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.kernels import flash_time_s, memory_pass_time_s
from sp_planner.cost.ring_impl import RingImpl, half_copy_bytes
from sp_planner.cost.unfused_gqa import gqa_copy_bytes
from sp_planner.specs.hardware import HardwareProfile


class RingStepCompute(NamedTuple):
    """Seconds of one occurrence of each pass, per candidate."""

    first_fwd_s: np.ndarray  # step 0's flash call, forward
    later_fwd_s: np.ndarray  # a later step's flash call, forward
    first_bwd_s: np.ndarray
    later_bwd_s: np.ndarray
    copy_fwd_s: np.ndarray  # a later zigzag step's half-tensor copies (0 without a half block)
    copy_bwd_s: np.ndarray
    merge_s: np.ndarray  # one merge of a later forward step's output
    ends_s: np.ndarray  # the accumulator's conversions, once a forward
    accum_s: np.ndarray  # one backward step's dQ/dK/dV accumulation
    q_elems: np.ndarray  # elements of the rank's Q (and O) block
    kv_elems: np.ndarray  # elements of the rank's K (or V) block


def ring_step_compute(hardware: HardwareProfile, *, batch, heads, kv_heads, head_dim, block, causal: bool,
                      zigzag, elem_bytes: int, ring_impl: RingImpl, kernel_head_dim=None,
                      attention_dropout: bool = False) -> RingStepCompute:
    """One ring step's passes (module docstring); `heads` and `kv_heads` per rank after the
    Ulysses all-to-all, `block` the tokens per ring rank, `kernel_head_dim` the head dim the
    kernel's tiles cost and `attention_dropout` whether the model drops attention probabilities
    (cost.kernels.flash_time_s)."""
    q_elems = batch * block * heads * head_dim
    kv_elems = batch * block * kv_heads * head_dim

    def kernel(kv_tokens, diagonal, backward):
        return flash_time_s(hardware, batch=batch, heads=heads, head_dim=head_dim, q_tokens=block,
                            kv_tokens=kv_tokens, causal_diagonal=diagonal, backward=backward,
                            kernel_head_dim=kernel_head_dim, attention_dropout=attention_dropout)

    diag = np.full(np.shape(block), causal)
    half = causal & np.asarray(zigzag, dtype=bool)
    later_kv = np.where(half, block / 2, block)

    def copy_s(backward):
        return np.where(half, memory_pass_time_s(hardware, half_copy_bytes(
            ring_impl, q_elems=q_elems, kv_elems=kv_elems, elem_bytes=elem_bytes, backward=backward)), 0.0)

    # Unfused GQA's K/V expansion and its gradient's reduction, the same bytes each way (cost.unfused_gqa).
    expand = memory_pass_time_s(hardware, gqa_copy_bytes(q_elems=q_elems, kv_elems=kv_elems, heads=heads,
                                                         kv_heads=kv_heads, elem_bytes=elem_bytes)
                                ) if hardware.efficiency.attention_unfused else 0.0
    return RingStepCompute(
        first_fwd_s=kernel(block, diag, False) + expand, later_fwd_s=kernel(later_kv, False, False),
        first_bwd_s=kernel(block, diag, True) + expand, later_bwd_s=kernel(later_kv, False, True),
        copy_fwd_s=copy_s(False), copy_bwd_s=copy_s(True),
        merge_s=memory_pass_time_s(hardware, ring_impl.merge_bytes_per_elem * q_elems),
        ends_s=memory_pass_time_s(hardware, ring_impl.merge_ends_bytes_per_elem * q_elems),
        accum_s=memory_pass_time_s(hardware, ring_impl.accum_bytes_per_elem * (q_elems + 2 * kv_elems)),
        q_elems=q_elems, kv_elems=kv_elems,
    )
