"""One attention layer under Ulysses x Ring (USP): core-attention time, its comm, its memory.

Per rank, per layer, per micro-batch (vectorized over candidates). The Ulysses all-to-all turns
b x S/(U*R) tokens x H/tp heads into b x S/R tokens x H/(tp*U) heads (Jacobs et al. 2023); the
ring then runs R steps over K/V blocks of S/R tokens (Liu et al. 2023, Ring Attention; zigzag
layout of zhuzilin/ring-flash-attention #2 and USP Algorithm 2).

Ring steps: each step sends the next K/V block while computing on the current one, so a step
takes max(compute + merge, transfer) (ring-flash-attention `RingComm`: isend/irecv issued
before the block's flash-attention, waited after it). The causal work per step:
- zigzag: step 0 is the causal local block; every later step is a half block (S/R x S/2R), the
  same on every rank (USP section 3, Fig. 3);
- contiguous (basic ring): ranks wait on each other every step, and the last rank computes a
  full S/R x S/R block in each of the R-1 later steps, so it sets the pace;
- no causal mask: every step is a full block.
After each step the partial output is merged into an fp32 accumulator: yunchang's
`_update_out_and_lse` runs block_out.float(), out - block_out, sigmoid(...) * (...), out - (...):
6 + 12 + 8 + 12 = 38 bytes per output element through HBM (lse terms are 1/head_dim of that);
Transformer Engine's fused bf16 correction 6 (`ring_impl`: RingImpl.merge_bytes_per_elem).
Backward accumulates dq, dk, dv in fp32 each step (read fp32 + bf16, write fp32: 10 bytes) and
sends dK/dV home after the last step: yunchang's ring; `ring_impl` gives Transformer Engine's
(bf16, no hop home; cost.ring_impl).
While a step's transfer runs, its kernels run on the SMs NCCL leaves free (cost.overlap).

All-gather CP (cp_comm allgather, `allgather_times`): the ring axis gathers K/V (exposed: TE
AttnFuncWithCPAndKVAllGather, "KV all-gather between CP ranks is exposed"; Llama 3 paper section
3.3.2), reorders them (one index_select copy), and runs per local query chunk its causal diagonal
block and, unmasked, every earlier key: the executor's calls, and the same area as Transformer
Engine's one bottom-right causal call over the chunk's prefix; the passes around the calls (the
executor's merges, TE's output copies) are `ring_impl`'s (cost.ring_impl.allgather_pass_bytes).
The backward gathers K/V again and reduce-scatters the full-sequence dK/dV (in `ring_impl`'s width:
TE's bf16, yunchang's fp32), also exposed: no transfer runs beside its kernels, so they are not
slowed by overlap.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.attention_comm import (
    allgather_buffer_bytes,
    RING_GRAD_ELEM_BYTES,
    kv_heads_for_ulysses,
    ulysses_all_to_all_bytes,
    ulysses_layout_copy_bytes,
)
from sp_planner.cost.dtypes import FP32_BYTES
from sp_planner.cost.kernels import flash_time_s, memory_pass_time_s
from sp_planner.cost.links import all_to_all_time_s, p2p_time_s, ring_collective_time_s
from sp_planner.cost.overlap import overlap_compute_slowdown, slowed_by_overlap
from sp_planner.cost.ring_steps import ring_step_compute
from sp_planner.cost.ring_impl import YUNCHANG_RING, RingImpl, allgather_pass_bytes
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile



class AttentionTimes(NamedTuple):
    """Seconds per rank for one layer and one micro-batch; arrays over candidates."""

    fwd_compute_s: np.ndarray  # flash kernels + ring merges
    bwd_compute_s: np.ndarray
    fwd_ring_exposed_s: np.ndarray  # ring transfer time not hidden behind compute
    bwd_ring_exposed_s: np.ndarray
    fwd_ulysses_s: np.ndarray  # all-to-alls (not overlapped)
    bwd_ulysses_s: np.ndarray

    @property
    def fwd_s(self) -> np.ndarray:
        return self.fwd_compute_s + self.fwd_ring_exposed_s + self.fwd_ulysses_s

    @property
    def bwd_s(self) -> np.ndarray:
        return self.bwd_compute_s + self.bwd_ring_exposed_s + self.bwd_ulysses_s


def attention_times(hardware: HardwareProfile, *, batch, seq_len, num_heads, num_kv_heads,
                    head_dim, tp, ulysses, ring, causal: bool, zigzag, gpus_per_node: int,
                    elem_bytes: int, allgather=False, ring_impl: RingImpl = YUNCHANG_RING,
                    kernel_head_dim=None, attention_dropout: bool = False) -> AttentionTimes:
    """Vectorized over numpy arrays of batch / tp / ulysses / ring / zigzag / allgather (bools);
    `ring_impl`: the framework's ring backward (cost.ring_impl: gradients' width, hop home, accumulation);
    `kernel_head_dim`: the head dim the kernel's tiles cost, `attention_dropout`: whether the model
    drops attention probabilities (cost.kernels.flash_time_s)."""
    b = np.asarray(batch, dtype=np.float64)
    tp = np.asarray(tp, dtype=np.int64)
    u = np.asarray(ulysses, dtype=np.int64)
    r = np.asarray(ring, dtype=np.int64)
    if hardware.efficiency.attention_unfused and np.any(r > 1):
        raise ValueError("unfused attention cannot run a ring: ring attention merges flash-attention "
                         "blocks by their log-sum-exp; use ring 1 or a flash kernel")
    zigzag = np.asarray(zigzag, dtype=bool)
    heads = num_heads / (tp * u)  # query heads per rank after the all-to-all
    kv_sent = kv_heads_for_ulysses(num_kv_heads, tp, u)  # KV heads per TP rank into the a2a
    kv_heads = kv_sent / u
    block = seq_len / r  # tokens per ring rank
    # The passes of one ring step (cost.ring_steps): step 0's and a later step's flash calls, the
    # later zigzag steps' half-tensor copies, the merges and the backward's accumulation.
    steps = ring_step_compute(hardware, batch=b, heads=heads, kv_heads=kv_heads, head_dim=head_dim, block=block,
                              causal=causal, zigzag=zigzag, elem_bytes=elem_bytes, ring_impl=ring_impl,
                              kernel_head_dim=kernel_head_dim, attention_dropout=attention_dropout)
    q_elems, kv_elems = steps.q_elems, steps.kv_elems
    c0_f, c1_f = steps.first_fwd_s, steps.later_fwd_s + steps.copy_fwd_s
    c0_b, c1_b = steps.first_bwd_s, steps.later_bwd_s + steps.copy_bwd_s

    mesh = {"tp": tp, "ulysses": u, "ring": r}  # the axes inside the ring's, for strides
    ring_stride = axis_stride(mesh, "ring")
    x_kv = p2p_time_s(hardware, 2 * kv_elems * elem_bytes, r, ring_stride, gpus_per_node)
    x_dkv = p2p_time_s(hardware, 2 * kv_elems * ring_impl.grad_elem_bytes, r, ring_stride, gpus_per_node)
    merge, ends, accum = steps.merge_s, steps.ends_s, steps.accum_s

    multi = r > 1
    mid = np.maximum(r - 2, 0)
    # A step computing while its transfer runs is slowed by the NCCL kernels (cost.overlap).
    s = overlap_compute_slowdown(hardware)
    f0, f1 = slowed_by_overlap(c0_f, x_kv, s), slowed_by_overlap(c1_f + merge, x_kv, s)
    b0 = slowed_by_overlap(c0_b + accum, x_kv, s)
    b1, b_last = slowed_by_overlap(c1_b + accum, x_kv + x_dkv, s), slowed_by_overlap(c1_b + accum, x_dkv, s)
    # Forward: step 0, R-2 middle steps that also forward K/V, and a last step with no transfer.
    fwd_busy = np.where(multi, f0 + mid * f1 + c1_f + merge + ends, c0_f)
    fwd_wall = np.where(
        multi,
        np.maximum(f0, x_kv) + mid * np.maximum(f1, x_kv) + c1_f + merge + ends,
        c0_f,
    )
    # Backward: K/V move for R-1 steps, dK/dV beside steps 1..R-1; yunchang's last dK/dV hop home
    # runs after the last step's kernels, exposed (Transformer Engine has none: cost.ring_impl).
    home = x_dkv if ring_impl.grad_home_hop else 0.0
    bwd_busy = np.where(multi, b0 + mid * b1 + b_last, c0_b)
    bwd_wall = np.where(
        multi,
        np.maximum(b0, x_kv) + mid * np.maximum(b1, x_kv + x_dkv) + np.maximum(b_last, x_dkv) + home,
        c0_b,
    )

    # Ulysses: Q, K, V in and O out forward; dO in and dQ, dK, dV out backward (same volumes).
    shape = dict(batch=b, seq_len=seq_len, head_dim=head_dim, ulysses=u, ring=r, elem_bytes=elem_bytes)
    q_bytes = ulysses_all_to_all_bytes(heads=num_heads / tp, **shape)
    kv_bytes = ulysses_all_to_all_bytes(heads=kv_sent, **shape)
    uly_stride = axis_stride(mesh, "ulysses")
    # Each all-to-all'd tensor also takes its layout copies (cost.attention_comm.ULYSSES_LAYOUT_COPIES).
    copies = memory_pass_time_s(hardware, 2 * ulysses_layout_copy_bytes(heads=num_heads / tp, **shape)
                                + 2 * ulysses_layout_copy_bytes(heads=kv_sent, **shape))
    uly = 2 * all_to_all_time_s(hardware, q_bytes, u, uly_stride, gpus_per_node) + 2 * all_to_all_time_s(
        hardware, kv_bytes, u, uly_stride, gpus_per_node
    ) + copies
    ag = allgather_times(hardware, batch=b, seq_len=seq_len, heads=heads, head_dim=head_dim,
                         kv_elems=kv_elems, q_elems=q_elems, ring=r, ring_stride=ring_stride, causal=causal,
                         zigzag=zigzag, gpus_per_node=gpus_per_node, elem_bytes=elem_bytes, ring_impl=ring_impl,
                         kernel_head_dim=kernel_head_dim, attention_dropout=attention_dropout)
    gather = np.asarray(allgather, dtype=bool) & multi
    return AttentionTimes(
        fwd_compute_s=np.where(gather, ag.fwd_compute_s, fwd_busy),
        bwd_compute_s=np.where(gather, ag.bwd_compute_s, bwd_busy),
        fwd_ring_exposed_s=np.where(gather, ag.fwd_ring_exposed_s, fwd_wall - fwd_busy),
        bwd_ring_exposed_s=np.where(gather, ag.bwd_ring_exposed_s, bwd_wall - bwd_busy),
        fwd_ulysses_s=uly,
        bwd_ulysses_s=uly,
    )


def allgather_times(hardware: HardwareProfile, *, batch, seq_len, heads, head_dim, kv_elems, q_elems, ring,
                    ring_stride, causal: bool, zigzag, gpus_per_node: int, elem_bytes: int,
                    ring_impl: RingImpl = YUNCHANG_RING, kernel_head_dim=None,
                    attention_dropout: bool = False) -> AttentionTimes:
    """All-gather CP on the ring axis (module docstring); ulysses fields are zero (added by the caller).

    The kernel calls are sp_planner.executor.allgather.pieces_for_rank's: zigzag causal rank 0
    runs two diagonal blocks of S/2R and one S/2R x (2R-1)S/2R block (every rank computes the
    same area); contiguous causal the last rank, which sets the pace, one S/R diagonal and one
    S/R x (R-1)S/R block; no mask: S/R x S.
    """
    r = np.asarray(ring, dtype=np.float64)
    block = seq_len / r
    half = causal & np.asarray(zigzag, dtype=bool)
    chunk = np.where(half, block / 2, block)  # tokens per local query chunk
    diagonals = np.where(half, 2, 1)
    prefix_kv = np.where(half, (2 * r - 1) * chunk, (r - 1) * block)

    def kernel(q_tokens, kv_tokens, diagonal, backward):
        return flash_time_s(hardware, batch=batch, heads=heads, head_dim=head_dim, q_tokens=q_tokens,
                            kv_tokens=kv_tokens, causal_diagonal=diagonal, backward=backward,
                            kernel_head_dim=kernel_head_dim, attention_dropout=attention_dropout)

    def calls(backward):
        if not causal:
            return kernel(block, seq_len, False, backward)
        prefix = np.where(prefix_kv > 0, kernel(chunk, prefix_kv, False, backward), 0.0)
        return diagonals * kernel(chunk, chunk, True, backward) + prefix

    grad = ring_impl.grad_elem_bytes  # the full dK/dV's width (cost.ring_impl)
    passes = dict(q_elems=q_elems, kv_elems=kv_elems, ring=r, causal=causal, elem_bytes=elem_bytes)
    fwd_passes = memory_pass_time_s(hardware, allgather_pass_bytes(ring_impl, backward=False, **passes))
    bwd_passes = memory_pass_time_s(hardware, allgather_pass_bytes(ring_impl, backward=True, **passes))
    gather = 2 * ring_collective_time_s(hardware, "all_gather", (r - 1) * kv_elems * elem_bytes, r,
                                        ring_stride, gpus_per_node)  # K and V
    scatter = 2 * ring_collective_time_s(hardware, "reduce_scatter", (r - 1) * kv_elems * grad,
                                         r, ring_stride, gpus_per_node)  # dK and dV
    zero = np.zeros(np.shape(r))
    return AttentionTimes(
        fwd_compute_s=calls(False) + fwd_passes,
        bwd_compute_s=calls(True) + bwd_passes,
        fwd_ring_exposed_s=gather,
        bwd_ring_exposed_s=gather + scatter,
        fwd_ulysses_s=zero,
        bwd_ulysses_s=zero,
    )


def attention_layer_time_s(hardware: HardwareProfile, *, batch: int, seq_len: int, num_heads: int,
                           num_kv_heads: int, head_dim: float, tp: int, ulysses: int, ring: int,
                           causal: bool, ring_layout: str, gpus_per_node: int, elem_bytes: int,
                           backward: bool = True, cp_comm: str = "p2p") -> float:
    """Wall time of one attention layer (core attention + its Ulysses/ring comm) on one rank.
    head_dim: MLA's mean of its q/k and v head dims (ModelSpec.head_dim), which may be a half."""
    if ring_layout not in ("zigzag", "contiguous"):
        raise ValueError(f"ring_layout must be 'zigzag' or 'contiguous', got {ring_layout!r}")
    times = attention_times(
        hardware, batch=batch, seq_len=seq_len, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_dim=head_dim, tp=tp, ulysses=ulysses, ring=ring, causal=causal,
        zigzag=ring_layout == "zigzag", gpus_per_node=gpus_per_node, elem_bytes=elem_bytes,
        allgather=cp_comm == "allgather",
    )
    total = times.fwd_s + (times.bwd_s if backward else 0.0)
    return float(total)


def attention_layer_memory_bytes(*, batch: int, seq_len: int, num_heads: int, num_kv_heads: int,
                                 head_dim: float, ulysses: int, ring: int, elem_bytes: int,
                                 cp_comm: str = "p2p") -> int:
    """Per-rank peak bytes of one attention layer, forward + backward, all tensors alive at once.

    Counts Q, K, V and O on both sides of the all-to-all (sequence-sharded and head-sharded; one
    copy when ulysses == 1), the fp32 log-sum-exp, dO and dQ/dK/dV on both sides (fp32 on the
    head-sharded side when ring > 1, as ring-flash-attention accumulates), and the ring's
    receive buffers for the next K/V (elem_bytes) and dK/dV (fp32); under all-gather CP instead
    `allgather_buffer_bytes`.
    """
    cp = ulysses * ring
    tokens = batch * seq_len // cp
    kv = int(kv_heads_for_ulysses(num_kv_heads, 1, ulysses))  # KV heads sent, replicated if needed
    q_elems = tokens * num_heads * head_dim
    kv_elems = tokens * kv * head_dim
    sides = 2 if ulysses > 1 else 1
    grad_bytes = RING_GRAD_ELEM_BYTES if ring > 1 else elem_bytes
    forward = sides * (2 * q_elems + 2 * kv_elems) * elem_bytes  # Q, K, V, O
    lse = FP32_BYTES * tokens * num_heads
    backward = sides * q_elems * elem_bytes  # dO
    backward += (q_elems + 2 * kv_elems) * grad_bytes  # dQ, dK, dV where attention runs
    if ulysses > 1:
        backward += (q_elems + 2 * kv_elems) * elem_bytes  # sent back to sequence-sharded
    buffers = 2 * kv_elems * (elem_bytes + RING_GRAD_ELEM_BYTES) if ring > 1 else 0
    if cp_comm == "allgather" and ring > 1:
        buffers = int(allgather_buffer_bytes(kv_elems, ring, elem_bytes))
    return int(forward + lse + backward + buffers)

