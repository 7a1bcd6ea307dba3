"""How a framework's ring attention runs its backward: the gradients' width, their hops, the
per-step accumulation and the buffers it holds (cost.attention, cost.comm, cost.memory, the
simulator). The forward is the same in both (K and V sent for R-1 steps beside the kernels).

yunchang / ring-flash-attention (`ring_flash_attn_backward`; sp_planner.executor.ring alike):
dQ, dK and dV accumulate in fp32 (read fp32 + bf16, write fp32: 10 bytes an element each step);
the dK/dV accumulators travel in fp32 for R hops, the last one home after the last step's kernels
(exposed); buffers: the next K and V (bf16) and the current and next dK, dV (fp32) per local K
element, 2 x 2 + 4 x 4 = 20 bytes, and the fp32 dQ accumulator.

Transformer Engine (`AttnFuncWithCPAndKVP2P.backward`, the CP of Megatron-LM, NeMo and
Megatron-Bridge with `--cp-comm-type p2p`; transformer_engine/pytorch/attention.py:779-1008 at
v1.6, attention/dot_product_attention/context_parallel.py at 5067397c-era HEAD, non-FP8 path):
`p2p_comm_buffers` are two tensors of (2, *kv.shape) in kv.dtype, [K and V, dK and dV]; step 0
sends K and V, steps 1..R-2 both, step R-1 only dK and dV, so the gradients make R-1 hops, each
beside a step's kernels, and the last step adds its own share after the receive (no hop home);
dQ (`torch.empty_like(q)`) and dK/dV accumulate in bf16 (`add_`: read 2 + 2, write 2 = 6 bytes);
buffers: the two (2, 2, ...) bf16 tensors, 4 x 2 x 2 = 16 bytes per local K element, and the bf16
dQ. The FP8 paths (delayed, current, MX) keep fp32 buffers and are not modelled here: sp-plan
runs attention in bf16 (FP8 attention is cost.fp8_attention's kernel choice only). Its zigzag
causal steps take the halves they compute with, below the diagonal the K and V halves, above it
the Q half forward and the Q, O and dO halves backward. Whether that copies depends on the
version. From v1.10 the ring keeps each rank's two chunks as the leading dimension of Megatron's
sbhd tensors (q [2, sq//2, b, h, d], K/V [2, sk//2, b, 2, h, d]; `kv_inputs[i % 2][0]`, `q[1]`:
attention.py:979-991 and 1126-1132 at bee4649, v2.2; `k_part[0]`, `q_part[1]` in
context_parallel.py cp_p2p_fwd_prepare_qkv at d0067d0, lines 756-766 and 795-802), so its
`.contiguous()` calls are views and copy nothing (TE_RING). Up to v1.9 they copy
(TE_1_9_RING): v1.3-v1.6 ran CP in bshd only (attention.py:611-655 and 860-924 at v1.6,
`kv_inputs[i%2][:, :, 0, ...].contiguous()`, `q[:, 1, ...].contiguous()`), v1.7-v1.9 kept K and
V apart in front of the halves (`[2, 2, sk//2, b, np, hn]`, `kv_inputs[i % 2][:, 0, ...]
.contiguous()`: attention.py at v1.8), and their flash-attn path turned sbhd into bshd before the
ring and copied the halves for the varlen kernel (v1.8 attention.py:2469 and 2579; 700-800). The
ranks run these copies in lockstep, so a step costs the larger of the two. yunchang passes the
halves to flash-attn as strided views (no copy).

The forward's merges of the per-step outputs differ too. yunchang's `_update_out_and_lse` keeps an
fp32 accumulator, unfused: 38 bytes per output element a later step, 12 for the first block's
conversion and the result's (cost.attention). Transformer Engine corrects in the output's bf16 with
fused kernels (jit_fuser: torch.compile): `flash_attn_fwd_out_correction` reads the output and the
step's output and writes the output, 6 bytes a later step; `flash_attn_fwd_out_correction_init`
reads the first step's and writes the output, 4 (context_parallel.py at HEAD; v1.6 zero-filled the
output and corrected every step alike). The log-sum-exp corrections are 1/head_dim of that.

All-gather CP (cp_comm allgather) takes the same gradient width: TE's
AttnFuncWithCPAndKVAllGather.backward holds the full-sequence dK/dV in the forward's dtype
(`torch.zeros(..., dtype=ctx.fwd_nominal_dtype)`) and reduce-scatters them so; yunchang's width is
the executor's fp32 (cost.attention_comm). Its passes around the kernels differ
(`allgather_pass_bytes`). The executor (sp_planner.executor.allgather, yunchang-like) runs each
local chunk's causal diagonal block and its unmasked earlier keys as separate calls and merges
them (the ring's merge bytes), and accumulates dQ/dK/dV as the ring does. Transformer Engine
(`allgather_prefix_calls`; context_parallel.py at d0067d0, lines 3014-4140) runs one call per local
chunk over its whole key prefix with a bottom-right causal mask, so nothing is merged: the calls'
outputs are copied into O (`out_f16[i].copy_`); in Megatron's sbhd layout its `.contiguous()`
calls on the Q chunk and on the K/V prefix are views along the first dim and copy nothing. Its
backward gathers and reorders K/V again, zero-fills the full dK/dV, copies each chunk's dQ into
dQ, adds each chunk's dK/dV into the prefix slice it covers (`dk[start:end].add_`: read 2, write
1), and reorders dK/dV back before the reduce-scatter. The two chunks' prefixes cover (2R+1)/(2R)
of the sequence causally, the whole sequence twice without a mask.

Each ring step after the first also costs host time (cost.host: one eager op each, beside the
unsplit attention's own): Transformer Engine (AttnFuncWithCPAndKVP2P at d0067d0, lines 1698-1990
and 2460-2700), forward the wait on the previous transfer, the next receive buffer
(`empty_like`), the batched send/receive, the fused attention call, the log-sum-exp
correction and, in the closing loop, the output correction (6); backward the wait, the batched
send/receive of K/V with dK/dV, the attention backward and the dQ and dK/dV accumulations (5).
Up to v1.9 the half copies add one op forward and up to 3 backward (7 and 8); from v1.10 the
`.contiguous()` calls return the views without a kernel. yunchang / ring-flash-attention
(ring_flash_attn.py), forward the batched send/receive, the flash-attention call,
update_out_and_lse (one TorchScript call, its elementwise ops fused into about two kernels) and
the wait (5); backward the two batched transfers (K/V, dK/dV), their waits, the
flash-attention backward and the dQ, dK, dV accumulations (8). MindSpeed's steps are timed as
yunchang's forward (its unfused merges) and TE's backward from v1.10 (5: its halves are views
too). Hand counts, as cost.host's per layer; all-gather CP issues its calls once per layer and
adds none.

MindSpeed's ring (Ascend/MindSpeed mindspeed/core/context_parallel/ring_context_parallel.py at
1ada966, AttentionWithCp.backward) holds dK/dV in the keys' dtype (`cur_dkv = torch.zeros((2, ...),
dtype=k_stack[-1].dtype)`), sends them after each step's accumulation for R-1 hops (none after the
last step) and dQ in q's dtype, as Transformer Engine's ring does. Unlike it, MindSpeed keeps each
rank's two zigzag chunks as the leading dimension ([2, s, b, h]: `causal_forward_fetch` takes
`x[0]` and `q[1]`, contiguous views), so it copies no halves, and it merges the step outputs with
unfused fp32 scales (`forward_update` in its utils.py: the scales broadcast to the output's shape,
then prev * scale + cur * scale), taken at yunchang's 38 and 12 bytes. PyTorch CP
(torchtitan) accumulates in fp32 as yunchang does (`_ContextParallelOptions.convert_to_f32` = True)
and takes yunchang's (cost.runtime).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sp_planner.cost.attention_comm import RING_GRAD_ELEM_BYTES, ring_grad_hops
from sp_planner.specs.base import FrozenModel


class RingImpl(FrozenModel):
    """The backward of one framework's ring (module docstring)."""

    name: str
    grad_elem_bytes: int = Field(gt=0)  # dK/dV as sent between ranks
    grad_home_hop: bool  # the gradients' last hop runs after the last step's kernels (R hops, else R-1)
    accum_bytes_per_elem: int = Field(gt=0)  # per step, per dQ/dK/dV element accumulated
    buffer_bytes_per_kv_elem: int = Field(gt=0)  # ring buffers per element of one local K block
    dq_accum_bytes: int = Field(gt=0)  # the dQ accumulator's width
    half_copies: bool = False  # zigzag causal steps copy their K/V or Q (O, dO) halves (module docstring)
    merge_bytes_per_elem: int = Field(gt=0)  # forward merge of a later step's output, per element
    merge_ends_bytes_per_elem: int = Field(gt=0)  # the first block's and the result's, per element
    allgather_prefix_calls: bool = False  # all-gather CP as TE runs it: a call per chunk's prefix, no merge
    host_ops_per_step_fwd: int = Field(ge=0)  # host ops a later ring step issues forward (module docstring)
    host_ops_per_step_bwd: int = Field(ge=0)  # ... and backward


# yunchang's merge (cost.attention): block_out.float(), out - block_out, sigmoid(...) * (...),
# out - (...): 6 + 12 + 8 + 12 = 38 bytes an element; the ends: the first block to fp32 (read 2,
# write 4) and the result back to bf16 (read 4, write 2), 12.
YUNCHANG_RING = RingImpl(name="yunchang", grad_elem_bytes=RING_GRAD_ELEM_BYTES, grad_home_hop=True,
                         accum_bytes_per_elem=10, buffer_bytes_per_kv_elem=2 * 2 + 4 * RING_GRAD_ELEM_BYTES,
                         dq_accum_bytes=RING_GRAD_ELEM_BYTES, merge_bytes_per_elem=6 + 12 + 8 + 12,
                         merge_ends_bytes_per_elem=2 + 4 + 4 + 2, host_ops_per_step_fwd=5, host_ops_per_step_bwd=8)
TE_RING = RingImpl(name="transformer_engine", grad_elem_bytes=2, grad_home_hop=False, accum_bytes_per_elem=6,
                   buffer_bytes_per_kv_elem=4 * 2 * 2, dq_accum_bytes=2, half_copies=False,
                   merge_bytes_per_elem=6, merge_ends_bytes_per_elem=4, allgather_prefix_calls=True,
                   host_ops_per_step_fwd=6, host_ops_per_step_bwd=5)
# Transformer Engine up to v1.9 (NeMo's 24.03 and 24.07 containers: TE 1.3 and 1.8): the same ring,
# its zigzag halves copied (module docstring). Its v1.3-v1.6 merge (a zero-filled output corrected
# every step alike) is not told apart here.
TE_1_9_RING = TE_RING.model_copy(update={"name": "transformer_engine_1.9", "half_copies": True,
                                         "host_ops_per_step_fwd": 7, "host_ops_per_step_bwd": 8})
MINDSPEED_RING = TE_RING.model_copy(update={
    "name": "mindspeed", "half_copies": False, "allgather_prefix_calls": False,
    "host_ops_per_step_fwd": YUNCHANG_RING.host_ops_per_step_fwd,
    "merge_bytes_per_elem": YUNCHANG_RING.merge_bytes_per_elem,
    "merge_ends_bytes_per_elem": YUNCHANG_RING.merge_ends_bytes_per_elem,
})
RING_IMPLS: dict[str, RingImpl] = {impl.name: impl
                                   for impl in (YUNCHANG_RING, TE_RING, TE_1_9_RING, MINDSPEED_RING)}


def half_copy_bytes(ring_impl: RingImpl, *, q_elems, kv_elems, elem_bytes: int, backward: bool):
    """HBM bytes (read + write) of one later zigzag causal step's half-tensor copies at the pacing
    rank (module docstring): the K and V halves (kv_elems: one of the rank's K or V blocks) or the Q
    half, with O's and dO's halves in backward, whichever is larger; 0 for a ring that copies none."""
    if not ring_impl.half_copies:
        return np.zeros_like(np.asarray(q_elems, dtype=np.float64))
    above = (3 if backward else 1) * np.asarray(q_elems, dtype=np.float64) / 2
    return 2 * elem_bytes * np.maximum(kv_elems, above)


def grad_hops(ring_impl: RingImpl, ring):
    """Hops the dK/dV accumulators make over a ring of `ring` ranks (cost.attention_comm)."""
    return ring_grad_hops(ring, ring_impl.grad_home_hop)


def allgather_pass_bytes(ring_impl: RingImpl, *, q_elems, kv_elems, ring, causal, elem_bytes: int,
                         backward: bool):
    """HBM bytes (read + write) of all-gather CP's memory-bound passes in one layer on one rank
    (module docstring): q_elems the rank's Q (= O) elements, kv_elems one of its K or V blocks."""
    q = np.asarray(q_elems, dtype=np.float64)
    full = np.asarray(ring, dtype=np.float64) * kv_elems  # one of K or V over the whole sequence
    grad = ring_impl.grad_elem_bytes
    reorder = 2 * 2 * elem_bytes * full  # index_select of the gathered K and V
    dkv_reorder = 2 * 2 * grad * full  # and of dK/dV back to rank order
    if ring_impl.allgather_prefix_calls:
        if not backward:
            return reorder + 2 * elem_bytes * q  # each chunk's output copied into O
        r = np.asarray(ring, dtype=np.float64)
        prefix = np.where(causal, (2 * r + 1) / (2 * r), 2.0) * full
        return (reorder + dkv_reorder
                + 2 * grad * full  # dK and dV zero-filled
                + 2 * grad * q  # each chunk's dQ copied into dQ
                + 2 * 3 * grad * prefix)  # dK and dV prefix slices += the chunk's
    if not backward:
        merged = np.asarray(causal, dtype=bool) & (np.asarray(ring) > 1)
        return reorder + np.where(
            merged, (ring_impl.merge_bytes_per_elem + ring_impl.merge_ends_bytes_per_elem) * q, 0.0)
    return reorder + ring_impl.accum_bytes_per_elem * (q + 2 * full) + dkv_reorder
