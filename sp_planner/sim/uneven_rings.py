"""Ring collectives over groups whose nodes hold different numbers of members (sim.flows).

A group of 12 ranks on 8-GPU nodes puts 8 members on one node and 4 on the next; NCCL's rings
cross between them through as many NICs as the sparser node has members (cost.node_loads.node_occupancy,
with its measurement). These flows mirror that: a ring among each node's members carrying a rank's
whole share, and that many hops from each node to the next, each carrying its part.
"""

from __future__ import annotations

import numpy as np


def uneven_ring_flows(groups: np.ndarray, nodes: np.ndarray, gpus_per_node: int, bytes_per_rank: float):
    """sim.flows.collective_flows of ring groups whose nodes hold different numbers of members (or whose
    groups differ in shape): each group's flows built as collective_flows describes, padded to
    the most any group needs. The r hops from one node to the next join members on the same
    local GPU index (the same NIC rail, as NCCL's rings cross) where both nodes have one."""
    flows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for members, where in zip(groups, nodes):
        blocks = np.split(members, np.flatnonzero(np.diff(where)) + 1)  # members of each node
        senders = [b for b in blocks if b.size > 1]
        receivers = [np.roll(b, -1) for b in blocks if b.size > 1]
        sizes = [np.full(sum(b.size for b in senders), float(bytes_per_rank))]
        if len(blocks) > 1:
            r = min(b.size for b in blocks)
            for here, there in zip(blocks, blocks[1:] + blocks[:1]):
                sender, receiver = _rail_pairs(here, there, r, gpus_per_node)
                senders.append(sender)
                receivers.append(receiver)
            sizes.append(np.full(r * len(blocks), bytes_per_rank / r))
        flows.append((np.concatenate(senders or [np.empty(0, np.int64)]),
                      np.concatenate(receivers or [np.empty(0, np.int64)]), np.concatenate(sizes)))
    width = max(f[0].size for f in flows)
    src = np.repeat(groups[:, :1], width, axis=1)  # padding: a group's first member to itself
    dst = src.copy()
    size = np.zeros(src.shape)
    active = np.zeros(src.shape, dtype=np.bool_)
    for i, (s, d, b) in enumerate(flows):
        src[i, :s.size], dst[i, :s.size], size[i, :s.size], active[i, :s.size] = s, d, b, True
    gid = np.repeat(np.arange(groups.shape[0]), width)
    return src.reshape(-1), dst.reshape(-1), gid, size.reshape(-1), active.reshape(-1)


def _rail_pairs(here: np.ndarray, there: np.ndarray, count: int, gpus_per_node: int):
    """`count` (sender, receiver) pairs from the members `here` to those `there`, on common local
    GPU indices first, then the rest in order."""
    local_here, local_there = here % gpus_per_node, there % gpus_per_node
    common = np.intersect1d(local_here, local_there)[:count]
    senders = [here[local_here == i][0] for i in common]
    receivers = [there[local_there == i][0] for i in common]
    senders += [m for m in here if m not in senders][:count - len(senders)]
    receivers += [m for m in there if m not in receivers][:count - len(receivers)]
    return np.array(senders, dtype=np.int64), np.array(receivers, dtype=np.int64)
