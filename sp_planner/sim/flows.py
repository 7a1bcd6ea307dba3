"""Collectives as flows on the cluster's links, and max-min fair sharing of those links.

A *phase* is one collective run by every group of an axis at the same time (all ranks of a plan
do the same thing in lock step), e.g. one ring step of every context-parallel group. Its flows
share the links max-min fairly (progressive filling: Bertsekas & Gallager, Data Networks, 2nd ed.,
section 6.5.2): raise every flow's rate together, freeze the flows of a link when it saturates,
repeat; when a flow finishes, the others take up what it held (sim.fluid). A group finishes when
its slowest flow does.

Algorithms, as NCCL runs them for large messages:
- all-to-all: every rank sends 1/(n-1) of its bytes straight to each peer;
- all-gather / reduce-scatter: a ring, each rank sending (n-1)/n of the full buffer to its
  successor over n-1 steps (bandwidth term of Thakur et al. 2005, "Optimization of collective
  communication operations in MPICH", the same (n-1)/n busbw factor as nccl-tests' PERFORMANCE.md);
- P2P (ring attention; "chain" for pipeline send/recv, no wrap-around): one flow to the successor.
A flow's achieved rate is its max-min rate times the profile's measured efficiency (nccl-tests
busbw over line rate) for that collective on its link class (intra- or inter-node; for an
all-to-all, at the group's size where the profile lists a size-dependent figure). With no
contention this reproduces sp_planner.cost.links, the analytic model's alpha-beta times.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import field_serializer

from sp_planner.cost.collective_sizes import ring_tensor_bytes, sized
from sp_planner.cost.links import collective_efficiency
from sp_planner.cost.nccl_protocols import PROTOCOL_NAMES, SIMPLE, fastest_ring, picked_latency_s
from sp_planner.sim.cluster import Cluster
from sp_planner.sim.fluid import completion_times
from sp_planner.sim.symmetry import fold_routes, orbit_index, phase_period
from sp_planner.sim.uneven_rings import uneven_ring_flows
from sp_planner.specs.base import FrozenModel, whole_bytes

Algorithm = Literal["all_to_all", "ring", "p2p", "chain"]
EfficiencyKey = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]


class PhaseResult(FrozenModel):
    """One collective phase run by all its groups at once."""

    name: str
    bytes_per_rank: float = 0.0  # bytes one rank sends in this phase
    duration_s: float = 0.0  # slowest group, including latency
    num_groups: int = 0
    num_flows: int = 0
    crosses_nodes: bool = False
    bottleneck: str = "none"  # link class that limits the slowest flow: nvlink, pcie, nic, core
    latency_s: float = 0.0  # the latency part of duration_s (one call's; the rest scales with the bytes)
    # Rate the slowest rank achieves for its sent bytes (bytes_per_rank / transfer time).
    achieved_bytes_per_s: float = 0.0
    # A ring inside a node, whose calls slow down by their message size (cost.collective_sizes);
    # size_factor is the phase's own, applied to duration_s (1 where not sized).
    sized: bool = False
    size_factor: float = 1.0
    collective: str = ""  # the efficiency key the phase was timed with
    group_size: int = 0
    # A ring phase's steps inside and between nodes (its slowest group's, as cost.links.ring_steps
    # counts them), for the protocol of the calls sim.dp_work cuts from it (cost.nccl_protocols),
    # and the protocol its slowest group's call runs in (LL, LL128 or Simple).
    intra_steps: float = 0.0
    inter_steps: float = 0.0
    protocol: str = "Simple"

    @field_serializer("bytes_per_rank", when_used="json")
    def _json_bytes(self, value: float) -> int | float:
        return whole_bytes(value)


def _ring_order_flows(groups: np.ndarray, chain: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each member to its successor; `chain` drops the wrap-around (pipeline stages)."""
    dst = np.roll(groups, -1, axis=1)
    if chain:
        return groups[:, :-1], dst[:, :-1]
    return groups, dst


def collective_flows(cluster: Cluster, groups: np.ndarray, algorithm: Algorithm,
                     bytes_per_rank: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flows (src, dst, group index, bytes, active) of one collective run by every group at once.

    groups: (num_groups, n) global ranks in ring order (ascending, as sp_planner.layout gives).
    A ring collective whose group spans k > 1 nodes runs as NCCL's channels do: a ring among the
    members on each node carrying the whole `bytes_per_rank`, and r parallel hops from each of the
    group's nodes to the next, member j of one node to member j of the next, each the exit of one
    of NCCL's flat rings and so carrying what a rank sends over r, where r is the fewest members
    the group has on any of its nodes (all of them when every node holds the same number): the
    rate sp_planner.cost.links.ring_collective_time_s gives, busbw = r x NIC, with its
    measurements. `bytes_per_rank` counts both rounds of an all-reduce. Every group gets the same
    number of flows, consecutive; a group of uneven nodes needs fewer than the most, and its
    padding flows are inactive (`active` False: no route, no time).
    """
    num_groups, n = groups.shape
    gpn = cluster.gpus_per_node
    if algorithm == "all_to_all":
        offsets = np.arange(1, n)
        src = np.repeat(groups, n - 1, axis=1)  # (g, n*(n-1))
        dst_pos = (np.arange(n)[:, None] + offsets[None, :]) % n  # (n, n-1)
        dst = groups[:, dst_pos.reshape(-1)]  # (g, n*(n-1))
        size = np.full(src.shape, bytes_per_rank / (n - 1))
    elif algorithm == "chain":
        src, dst = _ring_order_flows(groups, chain=True)
        size = np.full(src.shape, float(bytes_per_rank))
    else:
        nodes = groups // gpn
        r = int((nodes[0] == nodes[0, 0]).sum())
        k = n // r
        tiled = n % r == 0 and bool((nodes.reshape(num_groups, k, r) == nodes[:, ::r, None]).all())
        if algorithm == "p2p" or (tiled and (r == 1 or k == 1)):
            src, dst = _ring_order_flows(groups, chain=False)
            size = np.full(src.shape, float(bytes_per_rank))
        elif tiled:
            by_node = groups.reshape(num_groups, k, r)  # (g, n) -> (g, nodes, members per node)
            intra_src = by_node
            intra_dst = np.roll(by_node, -1, axis=2)
            inter_src = by_node
            inter_dst = np.roll(by_node, -1, axis=1)
            leave = bytes_per_rank / r
            src = np.concatenate([intra_src.reshape(num_groups, -1), inter_src.reshape(num_groups, -1)], axis=1)
            dst = np.concatenate([intra_dst.reshape(num_groups, -1), inter_dst.reshape(num_groups, -1)], axis=1)
            size = np.concatenate([np.full((num_groups, n), float(bytes_per_rank)),
                                   np.full((num_groups, n), leave)], axis=1)
        else:
            return uneven_ring_flows(groups, nodes, gpn, bytes_per_rank)
    gid = np.repeat(np.arange(num_groups), src.shape[1])
    return src.reshape(-1), dst.reshape(-1), gid, size.reshape(-1), np.ones(src.size, dtype=bool)


def ring_exit_rides_local_hop(cluster: Cluster, src: np.ndarray, dst: np.ndarray, inter: np.ndarray,
                              ring: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sender side, receiver side): which network flows of a `ring` collective leave (enter) a GPU
    that also sends (receives) a node-local flow of the same ring, on nodes whose NIC traffic
    crosses the GPU's own PCIe link (cost.links.nic_behind_gpu_link); all False elsewhere.

    NCCL's inter-node ring is NET -> GPU a -> .. -> GPU x -> NET on every channel (NVIDIA/nccl
    src/graph/search.cc, "Search Patterns"): each GPU makes one hop a channel, to the next GPU or,
    the last one, to the NIC instead (ncclTopoSearchRecGpu, step == backToNet), and the search
    reserves the same bandwidth on every link of every hop (bwIntra = bwInter for rings,
    ncclTopoCompute; followPath). Over the node's r channels a GPU's x16 link carries what the
    rank sends once: (r-1)/r to its successor, 1/r to the NIC. collective_flows' node-local flow
    carries the whole of it (cost.links.ring_alpha_beta_s' intra-node term), so the r network
    flows, their 1/r, load the NIC and the fabric but not that link again.
    """
    if ring and not cluster.nvlink and inter.any():
        return inter & np.isin(src, src[~inter]), inter & np.isin(dst, dst[~inter])
    return np.zeros(src.shape, np.bool_), np.zeros(src.shape, np.bool_)


def _without_gpu_link(cluster: Cluster, routes: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """`routes` with the sender's GPU link dropped from the flows of `up`, the receiver's from those
    of `down` (-1, as the padding: no load, no latency)."""
    if not (up.any() or down.any()):
        return routes
    out = routes.copy()
    for mask, block in ((up, "gpu_up"), (down, "gpu_down")):
        sl = cluster.block_slice(block)
        hit = mask[:, None] & (out >= sl.start) & (out < sl.stop)
        out[hit] = -1
    return out


def _relay_in_group(cluster: Cluster, groups: np.ndarray, src: np.ndarray, dst: np.ndarray,
                    gid: np.ndarray) -> np.ndarray:
    """Per flow, whether the sending node's GPU with the receiver's local index -- the PXN relay
    (Cluster.routes) -- is a member of the flow's group: NCCL relays only through its own
    communicator's GPUs."""
    member_of = np.full(cluster.world_size, -1, dtype=np.int64)
    member_of[groups] = np.arange(groups.shape[0])[:, None]
    return member_of[cluster.node_of(src) * cluster.gpus_per_node + dst % cluster.gpus_per_node] == gid


def run_phase(cluster: Cluster, name: str, groups: np.ndarray, bytes_per_rank: float,
              algorithm: Algorithm, efficiency: EfficiencyKey, *, rounds: int = 1, nccl: bool = True,
              one_call: bool = True) -> PhaseResult:
    """Time of one phase: every group of `groups` sends `bytes_per_rank` per rank at once.

    Returns the slowest group's time. Latency: a ring collective serialises NCCL's ring steps
    (cost.links.ring_latency_s: per round, n-k hops inside the group's k nodes at the slowest
    intra-node route's latency and k-1 at the slowest network route's); a P2P step, a chain hop
    or an all-to-all one route's. Inside a node, a ring collective or an all-to-all run by NCCL
    (`nccl`: not HybridEP's kernels) takes the measured slowdown at its message size
    (cost.collective_sizes), as cost.links does. A ring collective that is `one_call` takes NCCL's
    LL or LL128 time where one is faster (cost.nccl_protocols, as cost.links.ring_collective_time_s),
    on each group's contended bus time; a phase that stands for several calls (sim.dp_work's) stays
    Simple, and each of its calls picks apart.
    """
    groups = np.asarray(groups, dtype=np.int64)
    num_groups, n = groups.shape
    if n == 1 or bytes_per_rank <= 0:
        return PhaseResult(name=name, num_groups=num_groups)
    # Flows of the groups of one period only; the others' are shifts of these (sim.symmetry).
    period, selected = phase_period(cluster, groups, rotations=algorithm != "chain")
    groups = groups[selected]
    src_all, dst_all, gid_all, size_all, active = collective_flows(cluster, groups, algorithm, bytes_per_rank)
    src, dst, gid, size = src_all[active], dst_all[active], gid_all[active], size_all[active]
    world = cluster.world_size
    inter = cluster.node_of(src) != cluster.node_of(dst)
    crosses = bool(inter.any())
    # Same efficiencies as the analytic model (cost.links.collective_efficiency): an all-to-all's
    # group-size-dependent figure is taken at the group's members on the flow's node for
    # intra-node flows and at the whole group for network flows.
    local = n
    if efficiency == "all_to_all":
        nodes = cluster.node_of(groups)  # (num_groups, n)
        # members on each member's node, (num_groups, n); computed per member, not per flow (a
        # flow-by-member matrix is gigabytes at 100k GPUs)
        beside = (nodes[:, :, None] == nodes[:, None, :]).sum(axis=2)
        if algorithm == "all_to_all":  # flows go member by member, n - 1 each (collective_flows)
            local = np.repeat(beside, n - 1, axis=1).reshape(-1)
        else:
            local = (nodes[gid] == cluster.node_of(src)[:, None]).sum(axis=1)  # (num_flows,)
    eff_intra = collective_efficiency(cluster.hardware.efficiency.intra_node, efficiency, local, nccl=nccl)
    eff_inter = collective_efficiency(cluster.hardware.efficiency.inter_node, efficiency, n, nccl=nccl)
    speed = np.broadcast_to(np.where(inter, eff_inter, eff_intra), src.shape)
    # A hierarchical ring's network hops on PCIe nodes: their GPU link is loaded by the node-local
    # hop they replace (ring_exit_rides_local_hop).
    exit_up, exit_down = ring_exit_rides_local_hop(cluster, src, dst, inter, algorithm == "ring")
    # Max-min shares, given back as flows finish (sim.fluid), on one period's flows where the
    # phase repeats (sim.symmetry).
    relay_ok = _relay_in_group(cluster, groups, src, dst, gid)
    if period < world:
        representative = src < period
        routes = _without_gpu_link(cluster, cluster.routes(src[representative], dst[representative],
                                                           relay_ok[representative]),
                                   exit_up[representative], exit_down[representative])
        folded, weights = fold_routes(cluster, routes, period)
        rep_finish, rep_frozen_by = completion_times(folded, cluster.capacity_bytes_per_s, size[representative],
                                                     speed[representative], weights)
        of = orbit_index(src, dst, representative, period, world)
        finish, frozen_by = rep_finish[of], rep_frozen_by[of]
    else:
        routes = _without_gpu_link(cluster, cluster.routes(src, dst, relay_ok), exit_up, exit_down)
        finish, frozen_by = completion_times(routes, cluster.capacity_bytes_per_s, size, speed)
        of = np.arange(src.size)
    valid = routes >= 0
    # Profile latencies are end to end (small-message time), so a route costs its slowest link's.
    path_latency = np.where(valid, cluster.latency_s[np.maximum(routes, 0)], 0.0).max(axis=1)[of]
    # Every group has the same number of flows, consecutive (collective_flows; padding flows take
    # no time): the per-group maximum is a row maximum.
    flow_time, flow_latency, crossing = np.zeros(active.size), np.zeros(active.size), np.zeros(active.size, np.bool_)
    flow_time[active] = finish
    flow_latency[active], crossing[active] = path_latency, inter
    group_time = flow_time.reshape(groups.shape[0], -1).max(axis=1)
    by_group = flow_latency.reshape(groups.shape[0], -1)
    k = np.ones(groups.shape[0])
    if algorithm == "ring":
        flow_inter = crossing.reshape(groups.shape[0], -1)
        nodes = np.sort(cluster.node_of(groups), axis=1)
        k = 1 + (np.diff(nodes, axis=1) != 0).sum(axis=1)  # nodes the group spans
        inter_hop = np.where(flow_inter, by_group, 0.0).max(axis=1)
        intra_hop = np.where(flow_inter, 0.0, by_group).max(axis=1)
        group_latency = rounds * ((n - k) * intra_hop + (k - 1) * inter_hop)
    else:
        group_latency = by_group.max(axis=1)
    total = group_time + group_latency
    is_sized = nccl and not crosses and (algorithm == "ring" or algorithm == efficiency == "all_to_all")
    factor, measured = 1.0, False
    if is_sized:
        # The measured slowdown at this message size inside a node (cost.collective_sizes, as
        # cost.links.ring_collective_time_s applies it).
        call = sized(cluster.hardware, efficiency, ring_tensor_bytes(efficiency, bytes_per_rank, n), n)
        factor, measured = float(call.factor), bool(call.measured)
    total = total * factor
    # Steps as cost.links.ring_steps counts them: per round n-k inside the group's k nodes, k-1 between.
    ring = algorithm == "ring"
    intra_steps, inter_steps = (rounds * (n - k), rounds * (k - 1)) if ring else (np.zeros(k.shape),) * 2
    protocol = np.full(total.shape, SIMPLE)
    if ring and nccl and one_call:
        pick = fastest_ring(cluster.hardware, efficiency, total, group_time, bytes_per_rank, intra_steps, inter_steps,
                            where=not measured)
        protocol, total = pick.protocol, pick.time_s
        group_latency = picked_latency_s(cluster.hardware, pick, intra_steps, inter_steps, group_latency)
    slowest = int(np.argmax(total))
    simple = protocol[slowest] == SIMPLE
    members = np.flatnonzero(gid == slowest)  # the slowest group's active flows
    slow_flow = int(members[np.argmax(flow_time[active][members])])
    edge = int(frozen_by[slow_flow])
    transfer = float(total[slowest] - group_latency[slowest])  # the bandwidth part, with the size slowdown
    return PhaseResult(
        name=name,
        bytes_per_rank=float(bytes_per_rank),
        duration_s=float(total[slowest]),
        latency_s=float(group_latency[slowest]),
        num_groups=num_groups,
        num_flows=int(active.sum()) * num_groups // groups.shape[0],
        crosses_nodes=crosses,
        bottleneck=cluster.link_class(edge) if edge >= 0 else "none",
        achieved_bytes_per_s=float(bytes_per_rank / transfer) if transfer > 0 else 0.0,
        sized=is_sized,
        size_factor=factor if simple else 1.0,
        collective=efficiency,
        group_size=n,
        intra_steps=float(intra_steps[slowest]),
        inter_steps=float(inter_steps[slowest]),
        protocol=PROTOCOL_NAMES[protocol[slowest]],
    )
