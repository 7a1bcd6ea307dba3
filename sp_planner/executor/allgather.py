"""All-gather context parallelism on the ring axis: every rank gathers the whole sequence's K/V,
attends with its own queries only, and reduce-scatters dK/dV in the backward.

As the Llama 3 paper (arXiv 2407.21783, section 3.3.2) and Transformer Engine's
`AttnFuncWithCPAndKVAllGather` (cp_comm_type "all_gather"): the sequence is cut into 2R chunks
and rank r holds chunks r and 2R-1-r (sp_planner.executor.sharding's zigzag layout), which
balances the causal work; the K/V all-gather is not overlapped. The backward gathers K/V again
from the saved local blocks (TE `_attn_cp_kv_allgather_bwd_gather`) rather than keeping the
full-sequence copy alive between forward and backward. The byte contract is
sp_planner.cost.attention_comm.allgather_bytes_per_layer / allgather_reduce_scatter_bytes_per_layer.

Each local query chunk (global tokens [g0, g1)) is computed as two kernel calls merged by the
online-softmax rule: the keys before it, unmasked, and its own diagonal block, causal. Without a
causal mask all local queries attend to all keys in one call.

Tensors are (b, s, h, d) with s = this ring rank's S/R tokens in sharding order (MLA: q, k at
d_qk, v and out at d_v). Score modifications (sp_planner.executor.score_mod) reach each kernel
call with the window of its queries' and keys' global positions; a piece the window hides
entirely is not computed.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.distributed as dist

from sp_planner.executor.blocks import Piece, pieces_for_rank
from sp_planner.executor.comm import CommCounter, all_gather_dim0, reduce_scatter_dim0
from sp_planner.executor.kernels import AttentionKernel
from sp_planner.executor.merge import merge_partial
from sp_planner.executor.score_mod import BlockMod, ScoreMods, backward_call, forward_call, skipped
from sp_planner.executor.sharding import local_token_index
from sp_planner.plan import RingLayout


def _gathered_order(seq_len: int, size: int, layout: RingLayout, device) -> torch.Tensor:
    """Global token of each row of the rank-ordered all-gather (ranks' local orders concatenated)."""
    return torch.cat([local_token_index(seq_len, ring=size, ulysses=1, ring_rank=r, ulysses_rank=0,
                                        layout=layout) for r in range(size)]).to(device)


@dataclass(frozen=True)
class AllGatherSetup:
    group: dist.ProcessGroup
    counter: CommCounter
    kernel: AttentionKernel
    causal: bool
    layout: RingLayout
    scale: float
    mods: ScoreMods | None = None  # None or inactive: every call is made without a BlockMod


def _piece_mods(pieces: list[Piece], rank: int, size: int, seq_len: int, setup: AllGatherSetup, device
                ) -> list[BlockMod | None]:
    """Each piece's BlockMod (None for all without score modifications)."""
    if setup.mods is None or not setup.mods.active:
        return [None] * len(pieces)
    q_pos = local_token_index(seq_len, ring=size, ulysses=1, ring_rank=rank, ulysses_rank=0,
                              layout=setup.layout).to(device)
    return [setup.mods.block(q_pos[p.q_rows], torch.arange(p.kv_start, p.kv_end, device=device)) for p in pieces]


def _gather_kv(k, v, setup: AllGatherSetup, order: torch.Tensor):
    """Local (b, s, h, d) K and V -> the full sequence (b, S, h, d) in global token order."""
    inverse = torch.argsort(order)
    full = []
    for x in (k, v):
        # (b, s, h, d) -> (s, b, h, d) -> gathered (R*s, b, h, d) -> (b, S, h, d), global order
        gathered = all_gather_dim0(x.transpose(0, 1), setup.group, setup.counter)
        full.append(gathered.index_select(0, inverse).transpose(0, 1))
    return full


def allgather_forward(q, k, v, setup: AllGatherSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns out (b, s, h, d_v) in q's dtype and lse (b, h, s) in fp32."""
    size, rank = dist.get_world_size(setup.group), dist.get_rank(setup.group)
    seq_len = q.shape[1] * size
    k_full, v_full = _gather_kv(k, v, setup, _gathered_order(seq_len, size, setup.layout, q.device))
    out = torch.empty((*q.shape[:3], v.shape[-1]), dtype=torch.float32, device=q.device)  # (b, s, h, d_v)
    lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
    first_rows: set[tuple] = set()
    pieces = pieces_for_rank(rank, size, seq_len, causal=setup.causal, layout=setup.layout)
    for piece, mod in zip(pieces, _piece_mods(pieces, rank, size, seq_len, setup, q.device)):
        if skipped(mod):  # never the first piece of its rows: that is their diagonal block
            continue
        rows, keys = piece.q_rows, slice(piece.kv_start, piece.kv_end)
        out_b, lse_b = forward_call(setup.kernel, q[:, rows], k_full[:, keys], v_full[:, keys],
                                    causal=piece.causal, scale=setup.scale, mod=mod)
        key = (rows.start, rows.stop)
        if key not in first_rows:
            first_rows.add(key)
            out[:, rows], lse[:, :, rows] = out_b.float(), lse_b.float()
        else:
            out[:, rows], lse[:, :, rows] = merge_partial(out[:, rows], lse[:, :, rows], out_b, lse_b)
    if not torch.isfinite(lse).all():
        raise RuntimeError("all-gather attention produced a non-finite log-sum-exp")
    return out.to(q.dtype), lse


def allgather_backward(dout, q, k, v, out, lse, setup: AllGatherSetup):
    """Returns dq, dk, dv in the input dtypes; dK/dV are summed in fp32 over the ring."""
    size, rank = dist.get_world_size(setup.group), dist.get_rank(setup.group)
    seq_len = q.shape[1] * size
    order = _gathered_order(seq_len, size, setup.layout, q.device)
    k_full, v_full = _gather_kv(k, v, setup, order)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dk_full = torch.zeros(k_full.shape, dtype=torch.float32, device=q.device)
    dv_full = torch.zeros(v_full.shape, dtype=torch.float32, device=q.device)
    pieces = pieces_for_rank(rank, size, seq_len, causal=setup.causal, layout=setup.layout)
    for piece, mod in zip(pieces, _piece_mods(pieces, rank, size, seq_len, setup, q.device)):
        if skipped(mod):
            continue
        rows, keys = piece.q_rows, slice(piece.kv_start, piece.kv_end)
        dq_b, dk_b, dv_b = backward_call(
            setup.kernel, dout[:, rows], q[:, rows], k_full[:, keys], v_full[:, keys], out[:, rows],
            lse[:, :, rows], causal=piece.causal, scale=setup.scale, mod=mod)
        dq[:, rows] += dq_b
        dk_full[:, keys] += dk_b
        dv_full[:, keys] += dv_b
    grads = []
    for g in (dk_full, dv_full):
        # (b, S, h, d) global order -> (S, b, h, d) rank order -> this rank's (s, b, h, d) sum -> (b, s, h, d)
        ranked = g.transpose(0, 1).index_select(0, order)
        grads.append(reduce_scatter_dim0(ranked, setup.group, setup.counter).transpose(0, 1))
    dk, dv = grads
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
