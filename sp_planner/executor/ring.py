"""Ring attention: K/V blocks travel round the ring while the current block is computed.

Forward sends K, V for R-1 steps; backward sends K, V for R-1 steps and the fp32 dK/dV
accumulators for R steps, the last one returning them to their owner (ring-flash-attention
`ring_flash_attn_backward`; the byte contract is sp_planner.cost.attention_comm). Each step posts
the next transfer into a second buffer before computing, so transfer and compute overlap.

Tensors are (b, s, h, d) with s = this ring rank's S/R tokens in the order of
sp_planner.executor.sharding (contiguous, or zigzag chunks r and 2R-1-r). MLA: q, k and their
gradients at d_qk, v, out and theirs at d_v; each of K and V travels in its own buffers, at its
own size. Score modifications (softcap, window: sp_planner.executor.score_mod) reach the kernel
per block, the window from the global positions of the block's queries and keys; a block the
window hides from every query is not computed (its K/V still pass on round the ring).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.distributed as dist

from sp_planner.executor.blocks import Block, block_for_step
from sp_planner.executor.comm import CommCounter, RingComm
from sp_planner.executor.fault import fault_point
from sp_planner.executor.kernels import AttentionKernel
from sp_planner.executor.merge import merge_partial
from sp_planner.executor.score_mod import BlockMod, ScoreMods, backward_call, forward_call, skipped
from sp_planner.executor.sharding import local_token_index
from sp_planner.plan import RingLayout

KV_TAG, GRAD_TAG = 0, 1


@dataclass(frozen=True)
class RingSetup:
    group: dist.ProcessGroup
    counter: CommCounter
    kernel: AttentionKernel
    causal: bool
    layout: RingLayout
    scale: float
    mods: ScoreMods | None = None  # None or inactive: every call is made without a BlockMod


def _ring_positions(seq_local: int, rank: int, size: int, layout: RingLayout) -> torch.Tensor:
    """Global positions of ring rank `rank`'s S/R tokens (after the Ulysses all-to-all), local order."""
    return local_token_index(seq_local * size, ring=size, ulysses=1, ring_rank=rank, ulysses_rank=0, layout=layout)


def _step_work(step: int, comm: RingComm, q: torch.Tensor, setup: RingSetup
               ) -> tuple[Block | None, BlockMod | None]:
    """The block of `step` and its BlockMod; (None, None) when there is nothing to compute."""
    seq_local = q.shape[1]
    block = block_for_step(step, comm.rank, comm.size, seq_local, causal=setup.causal, layout=setup.layout)
    if block is None or setup.mods is None or not setup.mods.active:
        return block, None
    source = (comm.rank - step) % comm.size
    q_pos = _ring_positions(seq_local, comm.rank, comm.size, setup.layout)[block.q_rows]
    k_pos = _ring_positions(seq_local, source, comm.size, setup.layout)[block.kv_rows]
    mod = setup.mods.block(q_pos.to(q.device), k_pos.to(q.device))
    return (None, None) if skipped(mod) else (block, mod)


def ring_forward(q, k, v, setup: RingSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns out (b, s, h, d_v) in q's dtype and lse (b, h, s) in fp32."""
    comm = RingComm(setup.group, setup.counter)
    buffers = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)]
    out = lse = None
    current = (k, v)
    for step in range(comm.size):
        incoming = buffers[step % 2]
        requests = comm.send_recv(list(current), list(incoming), KV_TAG) if step + 1 < comm.size else []
        block, mod = _step_work(step, comm, q, setup)
        if block is not None:
            kb, vb = (t[:, block.kv_rows] for t in current)
            out_b, lse_b = forward_call(setup.kernel, q[:, block.q_rows], kb, vb, causal=block.causal,
                                        scale=setup.scale, mod=mod)
            if out is None or lse is None:  # step 0 always covers every query row
                out, lse = out_b.float(), lse_b.float()
            else:
                rows = block.q_rows
                out[:, rows], lse[:, :, rows] = merge_partial(out[:, rows], lse[:, :, rows], out_b, lse_b)
        comm.wait(requests)
        current = incoming
    assert out is not None and lse is not None, "ring step 0 computes the local block"
    if not torch.isfinite(lse).all():
        raise RuntimeError("ring attention produced a non-finite log-sum-exp")
    return out.to(q.dtype), lse


def ring_backward(dout, q, k, v, out, lse, setup: RingSetup):
    """Returns dq, dk, dv in the input dtypes; accumulation is in fp32."""
    comm = RingComm(setup.group, setup.counter)
    kv_buffers = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)]
    grad_buffers = [(torch.zeros(k.shape, dtype=torch.float32, device=k.device),
                     torch.zeros(v.shape, dtype=torch.float32, device=v.device)) for _ in range(2)]
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    current = (k, v)
    grad_requests: list = []
    for step in range(comm.size):
        incoming = kv_buffers[step % 2]
        kv_requests = comm.send_recv(list(current), list(incoming), KV_TAG) if step + 1 < comm.size else []
        fault_point(f"ring-backward-{step}")  # test-only (SP_RUN_FAULT); transfers are in flight here
        block, mod = _step_work(step, comm, q, setup)
        comm.wait(grad_requests)  # the accumulators for the block we hold have arrived
        dk_acc, dv_acc = grad_buffers[step % 2]
        if block is not None:
            rows, kv_rows = block.q_rows, block.kv_rows
            dq_b, dk_b, dv_b = backward_call(
                setup.kernel, dout[:, rows], q[:, rows], current[0][:, kv_rows], current[1][:, kv_rows],
                out[:, rows], lse[:, :, rows], causal=block.causal, scale=setup.scale, mod=mod)
            dq[:, rows] += dq_b
            dk_acc[:, kv_rows] += dk_b
            dv_acc[:, kv_rows] += dv_b
        if comm.size > 1:
            grad_requests = comm.send_recv([dk_acc, dv_acc], list(grad_buffers[(step + 1) % 2]), GRAD_TAG)
        comm.wait(kv_requests)
        current = incoming
    comm.wait(grad_requests)
    # After R hops our own block's accumulators are back (with R == 1 they never left).
    dk, dv = grad_buffers[comm.size % 2] if comm.size > 1 else grad_buffers[0]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
