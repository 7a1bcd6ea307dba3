"""USP: Ulysses x Ring on a 2D device mesh (Fang and Zhao 2024, arXiv 2405.07719, Alg. 1).

Ranks form a (ring, ulysses) grid with ulysses the inner axis, so a Ulysses group holds adjacent
ranks (inside a node) and ring groups are strided by U. This matches sp_planner.layout.rank_groups for
tp=1 (cp_r = ulysses_r + U*ring_r), and yunchang's `use_ulysses_low=True`.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sp_planner.executor.allgather import AllGatherSetup
from sp_planner.executor.comm import CommCounter
from sp_planner.executor.cp_attention import ALLGATHER, RING, ContextParallelAttention
from sp_planner.executor.kernels import AttentionKernel
from sp_planner.executor.ring import RingSetup
from sp_planner.executor.score_mod import ScoreMods
from sp_planner.executor.ulysses import HeadToSeq, SeqToHead, replicate_kv_heads
from sp_planner.layout import rank_groups
from sp_planner.plan import CpComm, ParallelPlan, RingLayout


@dataclass(frozen=True)
class SequenceGroups:
    ulysses_group: dist.ProcessGroup
    ring_group: dist.ProcessGroup
    ulysses: int
    ring: int
    ulysses_rank: int
    ring_rank: int


def build_sequence_groups(ulysses: int, ring: int, timeout_s: float) -> SequenceGroups:
    """Ulysses and Ring groups over the default group's ranks, laid out by sp_planner.layout.

    Made with new_group and an explicit timeout: init_device_mesh and new_group otherwise give
    subgroups the backend's default (10 min gloo, 30 min NCCL), not the run's --timeout.
    """
    groups = rank_groups(ParallelPlan(ulysses=ulysses, ring=ring))
    timeout = datetime.timedelta(seconds=timeout_s)
    # Every rank creates every group in the same order (new_group is collective over the world).
    ulysses_group, _ = dist.new_subgroups_by_enumeration(groups["ulysses"], timeout=timeout)
    ring_group, _ = dist.new_subgroups_by_enumeration(groups["ring"], timeout=timeout)
    return SequenceGroups(
        ulysses_group=ulysses_group, ring_group=ring_group, ulysses=ulysses, ring=ring,
        ulysses_rank=dist.get_rank(ulysses_group), ring_rank=dist.get_rank(ring_group),
    )


def usp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, groups: SequenceGroups,
                  causal: bool, ring_layout: RingLayout, kernel: AttentionKernel,
                  counter: CommCounter, cp_comm: CpComm = "p2p", mods: ScoreMods | None = None,
                  scale: float | None = None) -> torch.Tensor:
    """Attention over a sequence sharded by sp_planner.executor.layout.

    q: (b, S/(U*R), H, d_qk); k: (b, S/(U*R), KV, d_qk); v: (b, S/(U*R), KV, d_v) (MLA: d_qk !=
    d_v; each all-to-all moves its own tensor's width). Returns out (b, S/(U*R), H, d_v). The
    ring axis passes K/V round the ring (cp_comm p2p) or all-gathers them (allgather). mods:
    softcap and window (score_mod), applied by the kernel on the ring axis, where positions are known.
    scale: the softmax scale (RunConfig.scale), 1/sqrt(d_qk) when None.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])  # 1/sqrt(d_qk)
    if groups.ulysses > 1:
        k, v = replicate_kv_heads(k, groups.ulysses), replicate_kv_heads(v, groups.ulysses)
        # (b, S/(U*R), h, d) -> (b, S/R, h/U, d) for each of q, k, v
        q, k, v = SeqToHead.apply(groups.ulysses_group, counter, q, k, v)
    if cp_comm == "allgather":
        gather = AllGatherSetup(group=groups.ring_group, counter=counter, kernel=kernel, causal=causal,
                                layout=ring_layout, scale=scale, mods=mods)
        out = ContextParallelAttention.apply(q, k, v, ALLGATHER, gather)
    else:
        setup = RingSetup(group=groups.ring_group, counter=counter, kernel=kernel, causal=causal,
                          layout=ring_layout, scale=scale, mods=mods)
        out = ContextParallelAttention.apply(q, k, v, RING, setup)
    if groups.ulysses > 1:
        out = HeadToSeq.apply(groups.ulysses_group, counter, out)  # (b, S/R, H/U, d_v) -> (b, S/(U*R), H, d_v)
    return out
