"""USP: Ulysses x Ring on a 2D device mesh (Fang and Zhao 2024, arXiv 2405.07719, Alg. 1).

The mesh is sp_planner.layout.CP_AXES, (ring, ulysses) with ulysses the inner axis, so a Ulysses
group holds adjacent ranks (inside a node) and ring groups are strided by U: the planner's
rank_groups for tp=1 (cp_r = ulysses_r + U*ring_r), and yunchang's `use_ulysses_low=True`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sp_planner.executor.comm import CommCounter
from sp_planner.executor.kernels import AttentionKernel
from sp_planner.executor.ring import RingAttention, RingSetup
from sp_planner.executor.ulysses import HeadToSeq, SeqToHead, replicate_kv_heads
from sp_planner.layout import CP_AXES
from sp_planner.plan import RingLayout


@dataclass(frozen=True)
class SequenceGroups:
    ulysses_group: dist.ProcessGroup
    ring_group: dist.ProcessGroup
    ulysses: int
    ring: int
    ulysses_rank: int
    ring_rank: int


def build_sequence_groups(ulysses: int, ring: int, device_type: str) -> SequenceGroups:
    """Ulysses and Ring groups from init_device_mesh over the default group's ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    degrees = {"ring": ring, "ulysses": ulysses}
    mesh = init_device_mesh(device_type, tuple(degrees[a] for a in CP_AXES), mesh_dim_names=CP_AXES)
    ulysses_group, ring_group = mesh.get_group("ulysses"), mesh.get_group("ring")
    return SequenceGroups(
        ulysses_group=ulysses_group, ring_group=ring_group, ulysses=ulysses, ring=ring,
        ulysses_rank=dist.get_rank(ulysses_group), ring_rank=dist.get_rank(ring_group),
    )


def usp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, groups: SequenceGroups,
                  causal: bool, ring_layout: RingLayout, kernel: AttentionKernel,
                  counter: CommCounter) -> torch.Tensor:
    """Attention over a sequence sharded by sp_planner.executor.sharding.

    q: (b, S/(U*R), H, d); k, v: (b, S/(U*R), KV, d). Returns out shaped like q.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    if groups.ulysses > 1:
        k, v = replicate_kv_heads(k, groups.ulysses), replicate_kv_heads(v, groups.ulysses)
        # (b, S/(U*R), h, d) -> (b, S/R, h/U, d) for each of q, k, v
        q, k, v = SeqToHead.apply(groups.ulysses_group, counter, q, k, v)
    setup = RingSetup(group=groups.ring_group, counter=counter, kernel=kernel, causal=causal,
                      layout=ring_layout, scale=scale)
    out = RingAttention.apply(q, k, v, setup)
    if groups.ulysses > 1:
        out = HeadToSeq.apply(groups.ulysses_group, counter, out)  # (b, S/R, H/U, d) -> (b, S/(U*R), H, d)
    return out
