"""Which link a process group spans, and alpha-beta times of collectives on it (vectorized).

Groups follow the rank layout of `sp_planner.layout` (tp fastest, then ulysses, ring, dp, pp):
a group of `size` ranks along an axis with `stride` = product of the inner axes' degrees holds
ranks {base + k*stride}. It stays inside one node when its span size*stride fits in a node and
tiles it evenly; otherwise some group straddles nodes and uses the network.

Times use the nccl-tests convention (NVIDIA/nccl-tests doc/PERFORMANCE.md): a rank that sends
`c` bytes in a ring all-gather / reduce-scatter / all-to-all (c = (n-1)/n of the buffer) takes
c / busbw, and busbw = line rate x the profile's measured busbw fraction for that collective.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.collective_sizes import Sized, ring_rounds, ring_tensor_bytes, size_factor, sized
from sp_planner.cost.nccl_protocols import fastest_ring
from sp_planner.cost.node_loads import member_counts, node_occupancy
from sp_planner.specs.hardware import CollectiveEfficiency, HardwareProfile

# Codes stored in the frame's link_ columns (as strings "none", "intra", "inter").
NONE, INTRA, INTER = 0, 1, 2
LINK_NAMES = np.array(["none", "intra", "inter"], dtype=object)


def group_link(size, stride, gpus_per_node: int):
    """NONE for a group of one, INTRA when every group of this shape lies within a node, else INTER.
    Sizes and strides are whole numbers (ints, or floats holding them)."""
    size = np.asarray(size)
    span = np.asarray(size * stride)
    # Whether a span tiles a node, looked up by span (0..gpus_per_node, and one slot for "more"):
    # a lookup costs a fraction of a vectorized modulo, on floats most of all.
    spans = np.arange(gpus_per_node + 2)
    tiles = (spans <= gpus_per_node) & (gpus_per_node % np.maximum(spans, 1) == 0)
    inside = tiles[np.clip(span, 0, gpus_per_node + 1).astype(np.intp)]
    return np.where(size <= 1, NONE, INTER - inside)  # INTRA = INTER - 1


def ranks_per_node(size, stride, gpus_per_node: int):
    """How many members of one group share a node: the fewest that any group of this shape has on
    a node it touches (1 when the stride alone crosses nodes; node_occupancy). Strides are whole
    numbers."""
    return node_occupancy(size, stride, gpus_per_node)[0]


def nic_behind_gpu_link(hardware: HardwareProfile) -> bool:
    """Whether a GPU reaches its NIC through the same x16 link it reaches its node's peers by: on
    PCIe nodes (no NVLink) GPUDirect RDMA leaves the GPU by its one PCI link to its parent switch,
    the link NCCL's topology also routes GPU-to-GPU paths through (NVIDIA/nccl src/graph/topo.cc,
    each GPU joined to its parent by a single LINK_PCI); NVLink-class nodes reach the NIC over a
    PCIe lane apart from the scale-up links (sim.cluster builds its graph by the same rule)."""
    return hardware.intra_node.kind == "pcie"


def collective_efficiency(eff: CollectiveEfficiency, collective: str, group_size=2, *, nccl: bool = True):
    """Busbw fraction of `collective` on one link class; all-to-all may depend on group size.

    With `all_to_all_by_group_size` set, an all-to-all over g ranks takes the efficiency
    interpolated linearly in log2(g) between the listed sizes and clamped outside them (numpy
    interp); otherwise, and for every other collective, the scalar field. An all-to-all run by
    device-initiated expert-parallel kernels (`nccl` False: HybridEP's) takes the profile's
    `ep_kernel_all_to_all` where it sets one (NCCL's figure otherwise). On a full mesh
    (`mesh_links`), times the share of its links the group drives (_mesh_share). Vectorized over
    `group_size`; the simulator (sp_planner.sim.flows) calls this too.
    """
    return _by_group(eff, collective, group_size, nccl=nccl) * _mesh_share(eff, collective, group_size)


def _by_group(eff: CollectiveEfficiency, collective: str, group_size, *, nccl: bool):
    if collective == "all_to_all" and not nccl and eff.ep_kernel_all_to_all is not None:
        return np.broadcast_to(np.float64(eff.ep_kernel_all_to_all), np.shape(group_size)).copy()
    points = eff.all_to_all_by_group_size
    if collective != "all_to_all" or not points:
        return np.broadcast_to(np.float64(getattr(eff, collective)), np.shape(group_size)).copy()
    sizes = np.log2([p.group_size for p in points])
    values = [p.efficiency for p in points]
    g = np.log2(np.maximum(np.asarray(group_size, dtype=np.float64), 1.0))
    return np.interp(g, sizes, values)


def _mesh_share(eff: CollectiveEfficiency, collective: str, group_size):
    """On a full mesh of `eff.mesh_links` links a GPU (CollectiveEfficiency.mesh_links), the share
    of the whole-node figure a collective over `group_size` GPUs reaches: the g - 1 links it drives
    (a pair has one link: MI300X 64 of 448 GB/s, stas00/ml-engineering network chapter; Ascend
    910B two cards 19 GB/s busbw of eight cards' 130). 1 on a switch, and for p2p (one link's)."""
    if eff.mesh_links is None or collective == "p2p":
        return 1.0
    g = np.maximum(np.asarray(group_size, dtype=np.float64), 2.0)
    return np.minimum((g - 1.0) / eff.mesh_links, 1.0)


def _bw(hardware: HardwareProfile, collective: str, inter: bool, group_size=2, *, nccl: bool = True):
    link = hardware.inter_node if inter else hardware.intra_node
    eff = hardware.efficiency.inter_node if inter else hardware.efficiency.intra_node
    return link.bandwidth_bytes_per_s * collective_efficiency(eff, collective, group_size, nccl=nccl)


def ring_collective_time_s(hardware: HardwareProfile, collective: str, sent_bytes, size, stride,
                           gpus_per_node: int):
    """Time of one all-gather / reduce-scatter / all-reduce in which each rank sends `sent_bytes`:
    ring_alpha_beta_s (NCCL's Simple protocol), inside a node times the measured slowdown at its
    message size (cost.collective_sizes), or NCCL's tuner time of LL or LL128 where one is faster
    and no curve measured the call's size (cost.nccl_protocols)."""
    t = ring_alpha_beta_s(hardware, collective, sent_bytes, size, stride, gpus_per_node)
    link, intra_steps, inter_steps = ring_steps(collective, size, stride, gpus_per_node)
    call = intra_sized(hardware, collective, sent_bytes, size, stride, gpus_per_node, link=link)
    latency = _steps_latency_s(hardware, intra_steps, inter_steps)
    return fastest_ring(hardware, collective, t * call.factor, t - latency, sent_bytes, intra_steps, inter_steps,
                        where=~call.measured).time_s


def intra_sized(hardware: HardwareProfile, collective: str, sent_bytes, size, stride, gpus_per_node: int, *,
                link=None) -> Sized:
    """cost.collective_sizes.sized of a call in which each rank sends `sent_bytes`, for groups
    inside a node (factor 1, nothing measured, for groups that leave it); `link`: group_link's,
    where the caller has it."""
    if link is None:
        link = group_link(size, stride, gpus_per_node)
    return sized(hardware, collective, ring_tensor_bytes(collective, sent_bytes, size), size, where=link == INTRA)


def ring_alpha_beta_s(hardware: HardwareProfile, collective: str, sent_bytes, size, stride,
                      gpus_per_node: int):
    """Alpha-beta time of one all-gather / reduce-scatter / all-reduce in which each rank sends
    `sent_bytes`, at the profile's large-message busbw.

    Inside a node: sent / busbw_intra. Across nodes NCCL runs flat rings through every member:
    each of its channels leaves every node once, through one NIC, carrying the same (n-1)/n of
    its share of the buffer as every other hop, so the r members of a node drive r NICs and
    busbw = r x NIC whatever the number of nodes k. Measured: DGX A100, 8 x HDR 200G, 192 GB/s
    all_reduce busbw ("we measure 192GB/s AllReduce BusBW", NVIDIA/nccl#812) = 8 x 24;
    HGX A100, 2 nodes x 8 with 4 x 200G, 91 GB/s (NVIDIA/nccl-tests#100) against 4 x 24 = 96;
    3 nodes x 8 A100 with 4 x HDR, "96GB/s is the target... it's perfect" (sjeaugey,
    NVIDIA/nccl-tests#119) = 4 x 24 on 3 nodes as on many; AWS P6-B200, 4 nodes x 8 with
    8 x 400G EFA, 381.8 GB/s at 16 GiB = 8 x 47.7 (stas00/ml-engineering network chapter; NDR
    reaches 46-48 per NIC, nccl-tests#290). (A hierarchical split, the node's (k-1)/k of the
    buffer over its NICs, busbw = NIC x (n-1)/(k-1), was used here before: it would put 2 x 8
    GPUs on 4 NICs at 180 GB/s, twice the 91 measured.) An all-reduce may run NCCL's tree
    instead, which can approach that split on few nodes (NVIDIA/nccl#1250: a 1 GB all-reduce on 2
    H100 nodes, 0.27 / 0.13 / 0.067 s at 1 / 2 / 4 GPUs a node); the ring is kept for it too, as
    the nccl-tests all_reduce figures above follow it. The slower of the two tiers bounds it:
    each member makes one hop a channel, to its successor or, the node's last, to the NIC instead
    (NCCL's inter-node ring NET -> GPU a -> .. -> GPU x -> NET, one bandwidth reserved on every
    link of every hop: NVIDIA/nccl src/graph/search.cc, "Search Patterns", ncclTopoSearchRecGpu,
    ncclTopoCompute's bwIntra = bwInter), so a GPU's own link carries what the rank sends once,
    exits included, even on PCIe nodes whose NIC hangs off that link (sim.flows,
    ring_exit_rides_local_hop): busbw = min(intra busbw, r x NIC), the intra term wherever a group
    has two members on one node (stride < gpus_per_node, as in p2p_time_s).
    Latency: ring_latency_s, paid once per collective call.
    """
    size = np.asarray(size, dtype=np.float64)
    sent = np.asarray(sent_bytes, dtype=np.float64)
    link = group_link(size, stride, gpus_per_node)
    r, k = node_occupancy(size, stride, gpus_per_node)
    r = np.asarray(r, dtype=np.float64)
    # The group's size sets the share of a full mesh's links it drives (collective_efficiency), as
    # sim.flows takes it.
    intra_s = sent / _bw(hardware, collective, False, size)
    # Every ring hop, the node's r exits included, carries what a rank sends; r NICs share them.
    net_s = sent / (r * _bw(hardware, collective, True))
    inter_s = np.maximum(np.where(np.asarray(stride) < gpus_per_node, intra_s, 0.0), net_s)
    t = np.where(link == INTER, inter_s, intra_s) + _ring_latency_s(hardware, collective, size, link, k)
    return np.where((link == NONE) | (sent <= 0), 0.0, t)


def ring_latency_s(hardware: HardwareProfile, collective: str, size, stride, gpus_per_node: int):
    """Latency of one ring all-gather / reduce-scatter / all-reduce call over `size` ranks, as NCCL's
    tuner models it (src/graph/tuning.cc, ring: nsteps = n-1, 2(n-1) for all-reduce, of which
    nInterSteps = nNodes-1, 2(nNodes-1) for all-reduce, cross the network; reference
    hardware_and_models.md B.6): the hops inside a node at the intra-node latency, the k-1 hops
    between the group's k nodes at the network's, the profile's per-step figures (NCCL's Simple
    protocol; LL's and LL128's: cost.nccl_protocols). Every call pays it, so a framework that
    splits a reduction into buckets pays it per bucket (cost.buckets)."""
    size = np.asarray(size, dtype=np.float64)
    link = group_link(size, stride, gpus_per_node)
    return _ring_latency_s(hardware, collective, size, link, node_occupancy(size, stride, gpus_per_node)[1])


def ring_steps(collective: str, size, stride, gpus_per_node: int):
    """(link, steps inside a node, steps between nodes) of one ring call over `size` ranks `stride`
    apart, as NCCL's tuner counts them (ring_latency_s): nsteps = n-1 per round, of which the k-1
    hops between the group's k nodes cross the network."""
    size = np.asarray(size, dtype=np.float64)
    link = group_link(size, stride, gpus_per_node)
    return (link, *_ring_steps(collective, size, link, node_occupancy(size, stride, gpus_per_node)[1]))


def _ring_steps(collective: str, size, link, nodes):
    """ring_steps' (intra, inter) step counts for groups whose link and node count are known."""
    k = np.where(link == INTER, np.maximum(nodes, 1.0), 1.0)
    per_round = ring_rounds(collective)
    return per_round * np.maximum(size - k, 0.0), per_round * (k - 1)


def _ring_latency_s(hardware: HardwareProfile, collective: str, size, link, nodes):
    """ring_latency_s for groups whose link and node count (node_occupancy's k) are known."""
    return np.where(link == NONE, 0.0, _steps_latency_s(hardware, *_ring_steps(collective, size, link, nodes)))


def _steps_latency_s(hardware: HardwareProfile, intra_steps, inter_steps):
    """A ring call's latency from its steps inside and between nodes, at the profile's per-step
    figures (NCCL's Simple protocol)."""
    return intra_steps * hardware.intra_node.latency_s + inter_steps * hardware.inter_node.latency_s


def all_to_all_time_s(hardware: HardwareProfile, sent_bytes, size, stride, gpus_per_node: int, *,
                      nccl: bool = True):
    """Time of one all-to-all in which each rank sends `sent_bytes` to the other n-1 ranks.

    NCCL's all-to-all is n-1 concurrent send/recv pairs, one to each peer, and the call ends when
    the slowest rank's do. A member on a node with m members of its group sends (m-1)/(n-1) of
    its bytes over the intra-node link and (n-m)/(n-1) through its own NIC (NCCL all-to-all cannot
    aggregate NICs: sjeaugey, nccl-tests issues #130 and #267), at the same time. On PCIe nodes
    (nic_behind_gpu_link) both shares also leave by the GPU's one x16 link, which they share:
    local bytes / local busbw + network bytes / (x16 line rate x network efficiency), what the
    simulator's max-min sharing of that link gives (sim.fluid: a flow holds its max-min rate of
    the link and moves efficiency x that), bounds it beside the NIC's time. Each count m that a
    group of this shape has on a node is priced and the slowest taken (member_counts): the
    fewest members send the most over the network, the most members the most over the node's
    link, which on PCIe nodes is the slower (L40S, 8 + 4: the 8-GPU node's ranks send 7/11 at
    0.44 x 31.5 GB/s), and a group-size-dependent efficiency is taken at m. PXN (NVLink nodes:
    a send to another rail leaves by the NIC of the group's member on that rail, sim.cluster)
    moves sends between a node's NICs but loads none beyond these terms (counted over every
    uneven shape of up to 32 ranks, strides up to 24, nodes of 2 to 16 GPUs). Latency: one round
    of concurrent sends. Inside a node, NCCL's (`nccl`; not
    HybridEP's own kernels) times the measured slowdown at the call's message size
    (cost.collective_sizes). The network part takes a group-size-dependent efficiency at the
    whole group. Not NCCL's (`nccl` False: HybridEP's kernels), each part takes the profile's
    `ep_kernel_all_to_all` where it sets one.
    """
    size = np.asarray(size, dtype=np.float64)
    sent = np.asarray(sent_bytes, dtype=np.float64)
    link = group_link(size, stride, gpus_per_node)
    peers = np.maximum(size - 1, 1)
    net_eff = collective_efficiency(hardware.efficiency.inter_node, "all_to_all", size, nccl=nccl)
    net_bw = hardware.inter_node.bandwidth_bytes_per_s * net_eff
    intra, inter = hardware.intra_node, hardware.inter_node
    inter_s = np.zeros(np.broadcast(sent, size).shape)
    counts = member_counts(size, stride, gpus_per_node)
    for j in range(counts.shape[-1]):
        m = counts[..., j]
        net_bytes = sent * (size - m) / peers
        local_s = sent * (m - 1) / peers / _bw(hardware, "all_to_all", False, m, nccl=nccl)
        if nic_behind_gpu_link(hardware):
            local_s = local_s + net_bytes / (intra.bandwidth_bytes_per_s * net_eff)  # pcie_link_s
        # A group of the shape wholly inside one node (m = n: 0-2 of 3-rank groups) waits only there.
        alpha = np.where(m >= size, intra.latency_s, inter.latency_s)
        inter_s = np.maximum(inter_s, np.maximum(local_s, net_bytes / net_bw) + alpha)
    intra_s = sent / _bw(hardware, "all_to_all", False, size, nccl=nccl) + intra.latency_s
    # Inside a node, the measured slowdown at its message size (cost.collective_sizes).
    factor = size_factor(hardware, "all_to_all", ring_tensor_bytes("all_to_all", sent, size), size,
                         where=(link == INTRA) & nccl)
    return np.where((link == NONE) | (sent <= 0), 0.0, np.where(link == INTER, inter_s, intra_s * factor))


def p2p_time_s(hardware: HardwareProfile, sent_bytes, size, stride, gpus_per_node: int):
    """One send/recv step of a ring (every member sends to its neighbour at once).

    The slowest hop bounds the step: min(intra-node, NIC) p2p rate per hop. A group that crosses
    nodes has network hops at the NIC's p2p rate and, where members lie less than a node apart
    (stride < gpus_per_node: the group at rank 0 holds ranks 0 and `stride` on node 0), hops
    inside a node at the intra-node rate too; on PCIe nodes that rate (NCCL's Gen4 x16 24 GB/s,
    the profiles' p2p efficiency) is a hair below a 200G NIC's 24 GB/s. Each member sends once,
    to the next GPU or to the NIC, so no GPU link carries two hops, and no NIC: with PXN a hop
    to another rail leaves by the NIC of the group's member on the receiver's rail, and a group
    leaves each of its nodes once (sim.cluster.Cluster.routes).
    """
    sent = np.asarray(sent_bytes, dtype=np.float64)
    link = group_link(size, stride, gpus_per_node)
    inter = link == INTER
    intra_s = sent / _bw(hardware, "p2p", False)
    has_intra_hop = np.asarray(stride) < gpus_per_node
    net_s = np.maximum(np.where(has_intra_hop, intra_s, 0.0), sent / _bw(hardware, "p2p", True))
    alpha = np.where(inter, hardware.inter_node.latency_s, hardware.intra_node.latency_s)
    return np.where((link == NONE) | (sent <= 0), 0.0, np.where(inter, net_s, intra_s) + alpha)
