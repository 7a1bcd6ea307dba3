"""Translation symmetry of one collective phase: solve one period of its flows, replicate the rest.

Shifting every rank by T (mod the world size W) maps the cluster onto itself when T is a whole
number of pods (of nodes, when the cluster is one pod): GPUs, NICs and leaves move to their
counterparts, which have the same capacities and latencies, and routes move with them. When the
shift also maps every group of a phase onto a group of the phase (as a ring: up to rotation, for
rings and all-to-alls, whose flows do not depend on where the ring starts; exactly, for a chain),
it maps the phase's flows onto its flows. Max-min fair rates are unique, so they are the same on
every flow of an orbit: solving for one flow per orbit (the flows sent by ranks [0, T)) on the
quotient network gives every rate. In the quotient an edge stands for its orbit, and a flow that
crosses it loads it as (W/T) / (orbit size) flows do: 1 for GPU and NIC links and for leaves when
there are several pods, W/T for the leaves of a single pod, which no shift moves.

A 131,072-GPU all-to-all over groups of 64 has 8.3 million flows; one pod's worth is 16,128.
"""

from __future__ import annotations

import numpy as np

from sp_planner.sim.cluster import Cluster

_GPU_BLOCKS = ("gpu_up", "gpu_down", "gpu_nic", "nic_gpu")
_NIC_BLOCKS = ("nic_leaf", "leaf_nic")
_LEAF_BLOCKS = ("leaf_core", "core_leaf")


def cluster_period(cluster: Cluster) -> int:
    """Smallest rank shift that maps the cluster onto itself; the world size when only the identity does
    (a last pod with fewer nodes than the others)."""
    pod_ranks = cluster.nodes_per_pod * cluster.gpus_per_node
    if cluster.num_pods == 1:
        return cluster.gpus_per_node
    if cluster.num_nodes % cluster.nodes_per_pod == 0:
        return pod_ranks
    return cluster.world_size


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _min_first(rows: np.ndarray) -> np.ndarray:
    """Each row rotated to start at its smallest rank (a ring's canonical form)."""
    n = rows.shape[1]
    start = rows.argmin(axis=1)
    return np.take_along_axis(rows, (start[:, None] + np.arange(n)[None, :]) % n, axis=1)


def phase_period(cluster: Cluster, groups: np.ndarray, *, rotations: bool) -> tuple[int, np.ndarray]:
    """(T, selected): the smallest shift T that maps the cluster and the phase's groups onto
    themselves, and the indices of the groups holding a rank below T (every group is the image of
    one of them). `rotations` accepts a group mapped onto a rotation of another (rings, all-to-alls).
    T is the world size, with every group selected, when no smaller shift works."""
    world = cluster.world_size
    everything = np.arange(groups.shape[0])
    unit = cluster_period(cluster)
    if unit >= world or world % unit:
        return world, everything
    label = np.full(world, -1, dtype=np.int64)
    label[groups] = everything[:, None]
    canon = _min_first(groups) if rotations else groups
    for period in (unit * d for d in _divisors(world // unit)):
        if period == world:
            break
        shifted = (groups + period) % world
        if rotations:
            shifted = _min_first(shifted)
        target = label[shifted[:, 0]]
        if (target >= 0).all() and np.array_equal(canon[target], shifted):
            selected = np.unique(label[:period])
            return period, selected[selected >= 0]
    return world, everything


def fold_routes(cluster: Cluster, routes: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Each edge id of `routes` (-1 padded) replaced by its orbit's representative under shifts by
    `period`, and the load one flow puts on it: (W/period) / (orbit size). Same shapes as `routes`."""
    world, gpn, nics = cluster.world_size, cluster.gpus_per_node, cluster.nics_per_node
    copies = world // period  # flows in each flow orbit
    folded = routes.copy()
    weight = np.where(routes >= 0, 1.0, 0.0)
    for blocks, size in ((_GPU_BLOCKS, period), (_NIC_BLOCKS, period // gpn * nics)):
        for block in blocks:
            sl = cluster.block_slice(block)
            inside = (routes >= sl.start) & (routes < sl.stop)
            folded[inside] = sl.start + (routes[inside] - sl.start) % size
    if cluster.num_pods > 1:
        pods = period // (cluster.nodes_per_pod * gpn)
        for block in _LEAF_BLOCKS:
            sl = cluster.block_slice(block)
            inside = (routes >= sl.start) & (routes < sl.stop)
            folded[inside] = sl.start + (routes[inside] - sl.start) % (pods * cluster.leaves_per_pod)
    else:  # one pod: its leaves are fixed points, every flow of an orbit reaches the same leaf
        for block in _LEAF_BLOCKS:
            sl = cluster.block_slice(block)
            weight[(routes >= sl.start) & (routes < sl.stop)] = copies
    return folded, weight


def orbit_index(src: np.ndarray, dst: np.ndarray, representative: np.ndarray, period: int,
                world: int) -> np.ndarray:
    """For every flow (src, dst), the index among the representative flows (`representative`: a
    mask of the flows sent by ranks below `period`) of the flow it is a shift of."""
    base = src - src % period
    key = (src - base) * world + (dst - base) % world
    rep_key = key[representative]
    order = np.argsort(rep_key, kind="stable")
    pos = np.minimum(np.searchsorted(rep_key[order], key), order.size - 1)
    index = order[pos]
    if not np.array_equal(rep_key[index], key):
        raise AssertionError("a flow is not the shift of a representative flow: the phase is not symmetric")
    return index
