"""Which protocol a ring collective runs in, NCCL's LL, LL128 or Simple, and its time (vectorized).

NCCL predicts the time of every (algorithm, protocol) pair of a call with its tuner model and
runs the fastest (NVIDIA/nccl v2.30.7, commit 5067397: src/enqueue.cc topoGetAlgoInfo, lines
2028-2050; the model, src/graph/tuning.cc ncclTopoTuneModel lines 243-438 and
ncclTopoGetAlgoTime lines 630-655). For a ring all-reduce, all-gather or reduce-scatter of n ranks
on k nodes, protocol p takes

    baseLat[p] + (nsteps - nInterSteps) x intraLat[p] + nInterSteps x interLat[p] + bytes / bw[p]

(lines 384-412, 653): nsteps = 2(n-1) for an all-reduce, n-1 otherwise (lines 289-291), of which
nInterSteps = 2(k-1) or k-1 cross the network (cost.links.ring_steps counts both); intraLat is
the NVLink row where the node's GPUs talk over NVLink, else the PCI row (line 285), and across
nodes at least the network post overhead, 1 us on non-AMD hosts (lines 228-233, 405-410: the
profiles name no CPU, so NCCL's default); interLat the ring's NET row, the tree's where each node
holds one rank (lines 386-388), plus the network plugin's latency, 0 for the IB and socket
transports (src/transport/net_ib/init.cc line 558). LL moves its bytes at half the bus bandwidth,
at most llMaxBw (line 327; by GPU generation on one node, lines 178-183 and 263-272, by host CPU and
node count across nodes); LL128 at 0.92 of it (line 329), and only where the intra-node path is
NVLink (lines 518-535, typeIntra <= PATH_NVB: off on PCIe nodes; across nodes it needs the NIC
behind the GPU's own PCIe switch, or PXN on Hopper and later, as in HGX/DGX nodes).

Here the three are: Simple, the time cost.links charges it (the profile's per-step latency, which
leaves out NCCL's 8.4 us Simple base, and inside a node the measured slowdown at the call's size:
large messages keep their time to the bit); LL and LL128, the tuner's time with the bus time
taken from the same busbw (the profile's measured large-message rate, the stand-in for the graph
bandwidth NCCL's search computes). A call takes the fastest. So a few kilobytes over 8 NVLink GPUs
take LL's 6.6 + 14 x 0.6 = 15.0 us, not 14 x 3.4 = 47.6 us; where a measured curve times the call's
size (cost.collective_sizes) the measurement stands, whatever protocol NCCL ran for it. Without
Simple's base the choice leans to Simple by 8.4 us against NCCL's own. Not modelled: LL128's
per-channel cap (nChannels x 36.7 GB/s on Hopper, line 329; the channel count is NCCL's search's,
and above the 0.92 share on a 16-channel H100 ring), the multi-node Simple all-reduce's 1.4x
plateau (lines 647-650; it only moves NCCL's own Simple prediction), the tree, NVLS and PAT
algorithms (cost.links keeps the ring), and profiles NCCL does not time (RCCL on MI300X, HCCL on
Ascend: their own tuners) or that sp-calibrate measured (their fit is the machine's own, small
messages included).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.collective_sizes import ring_rounds
from sp_planner.cost.families import PROFILE_FAMILY, profile_key
from sp_planner.specs.hardware import HardwareProfile

# Protocol indices, NCCL's order (src/include/plugin/nccl_tuner.h lines 38-40).
LL, LL128, SIMPLE = 0, 1, 2
PROTOCOL_NAMES = ("LL", "LL128", "Simple")

_US = 1e-6
# tuning.cc line 151: baseLatencies, Ring {LL, LL128, Simple}.
RING_BASE_LATENCY_S = np.array([6.6, 14.0, 8.4]) * _US
# tuning.cc lines 159, 165, 171: hwLatencies per hop, Ring {LL, LL128, Simple}.
RING_HOP_LATENCY_S = {
    "nvlink": np.array([0.6, 1.9, 3.4]) * _US,
    "pci": np.array([1.0, 2.5, 5.7]) * _US,
    "net": np.array([2.7, 4.0, 14.0]) * _US,
}
# tuning.cc line 171: the tree's NET hop, which a ring with one rank per node takes (line 387).
TREE_NET_HOP_LATENCY_S = np.array([5.0, 8.5, 14.0]) * _US
# tuning.cc lines 228-233, 408: the network post overhead on non-AMD hosts, x3 for Simple.
NET_OVERHEAD_S = np.array([1.0, 1.0, 3.0]) * _US
# tuning.cc lines 327-329: the protocol's share of the ring's bus bandwidth.
LL_BUSBW_SHARE = 0.5
LL128_BUSBW_SHARE = 0.92
# tuning.cc lines 178-183, llMaxBws (GB/s of bus bandwidth): on one node by GPU generation
# (column 0); across nodes row 0 (non-AMD hosts), 2 nodes and more (columns 1, 2).
LL_MAX_BUSBW_ONE_NODE = {"volta": 39.0e9, "ampere": 87.7e9, "hopper": 141.0e9, "blackwell": 282.0e9}
LL_MAX_BUSBW_TWO_NODES, LL_MAX_BUSBW_MORE_NODES = 39.0e9, 20.4e9

# NCCL's generation index by the profile's GPU (tuning.cc lines 263-266: sm_80 and up, Ada's
# sm_89 included, is Ampere's row; sm_90 Hopper's; sm_100 and up Blackwell's).
TUNER_GENERATION = {"ampere": "ampere", "hopper": "hopper", "blackwell": "blackwell",
                    "grace-blackwell": "blackwell", "blackwell-ultra": "blackwell",
                    "grace-blackwell-ultra": "blackwell"}
ADA_PROFILES = ("l20", "l40s")  # sm_89, no family of their own (cost.families)


class Pick(NamedTuple):
    """The protocol of each call (LL, LL128, SIMPLE) and the call's time in seconds."""

    protocol: np.ndarray
    time_s: np.ndarray


def tuner_generation(hardware: HardwareProfile) -> str | None:
    """NCCL's GPU generation for the profile's GPU; None where NCCL's tuner does not time its
    calls (module docstring: other libraries, calibrated profiles, unknown GPUs)."""
    if hardware.calibration is not None:
        return None
    key = profile_key(hardware)
    if key in ADA_PROFILES:
        return "ampere"
    return TUNER_GENERATION.get(PROFILE_FAMILY.get(key, ""))


def intra_hop_kind(hardware: HardwareProfile) -> str:
    """The hwLatencies row of a ring's intra-node hops: NVLink where the node's GPUs talk over
    NVLink, else PCI (tuning.cc line 285)."""
    return "nvlink" if hardware.intra_node.kind == "nvlink" else "pci"


def ring_protocol_latencies_s(intra_kind: str, intra_steps, inter_steps):
    """Tuner latency of one ring call under each protocol, shape (3, ...) in LL, LL128, Simple
    order (module docstring; steps as cost.links.ring_steps counts them: a ring with network steps
    and none inside a node has one rank per node, and takes the tree's NET hop). `intra_kind`
    "nvlink" or "pci" (intra_hop_kind)."""
    intra = np.asarray(intra_steps, dtype=np.float64)
    inter = np.asarray(inter_steps, dtype=np.float64)
    p = (slice(None),) + (None,) * np.broadcast(intra, inter).ndim
    multi = inter > 0
    one_per_node = multi & (intra == 0)
    intra_hop = np.where(multi, np.maximum(RING_HOP_LATENCY_S[intra_kind][p], NET_OVERHEAD_S[p]),
                         RING_HOP_LATENCY_S[intra_kind][p])
    inter_hop = np.where(one_per_node, TREE_NET_HOP_LATENCY_S[p], RING_HOP_LATENCY_S["net"][p])
    return RING_BASE_LATENCY_S[p] + intra * intra_hop + inter * inter_hop


def fastest_ring(hardware: HardwareProfile, collective: str, simple_s, transfer_s, sent_bytes, intra_steps,
                 inter_steps, where=None) -> Pick:
    """The fastest protocol for one ring call in which each rank sends `sent_bytes` (module
    docstring), and its time: `simple_s`, the call's time as cost.links charges Simple, whose bus
    time is `transfer_s` (sent / busbw, before any measured slowdown), against LL's and LL128's
    tuner times. Simple wherever NCCL's tuner does not apply (tuner_generation), the call moves
    nothing or has no steps, or outside `where` (rows a measured curve times:
    cost.collective_sizes.Sized.measured)."""
    simple, transfer, sent, intra, inter = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (
        simple_s, transfer_s, sent_bytes, intra_steps, inter_steps)))
    applies = (intra + inter > 0) & (sent > 0)
    if where is not None:
        applies = applies & np.asarray(where, dtype=bool)
    generation = tuner_generation(hardware) if applies.any() else None
    if generation is None:
        return Pick(np.full(simple.shape, SIMPLE), simple)
    latency = ring_protocol_latencies_s(intra_hop_kind(hardware), intra, inter)
    nodes = inter / ring_rounds(collective) + 1
    ll_cap = np.where(nodes <= 1, LL_MAX_BUSBW_ONE_NODE[generation],
                      np.where(nodes <= 2, LL_MAX_BUSBW_TWO_NODES, LL_MAX_BUSBW_MORE_NODES))
    times = np.stack([
        latency[LL] + np.maximum(transfer / LL_BUSBW_SHARE, sent / ll_cap),
        latency[LL128] + transfer / LL128_BUSBW_SHARE if intra_hop_kind(hardware) == "nvlink"
        else np.full(simple.shape, np.inf),
        simple,
    ])
    # NCCL keeps the first of equal times (a strict <, enqueue.cc line 2040); Simple is kept here.
    protocol = np.where(times[SIMPLE] <= times[:SIMPLE].min(axis=0), SIMPLE, np.argmin(times[:SIMPLE], axis=0))
    protocol = np.where(applies, protocol, SIMPLE)
    return Pick(protocol, np.where(protocol == SIMPLE, simple, np.take_along_axis(times, protocol[None], axis=0)[0]))


def picked_latency_s(hardware: HardwareProfile, pick: Pick, intra_steps, inter_steps, simple_latency_s):
    """The latency part of a call's time (fastest_ring): the tuner's for LL and LL128,
    `simple_latency_s` (the project's) for Simple."""
    tuned = ring_protocol_latencies_s(intra_hop_kind(hardware), intra_steps, inter_steps)
    tuned = np.broadcast_to(tuned, (3,) + np.shape(pick.protocol))
    return np.where(pick.protocol == SIMPLE, simple_latency_s,
                    np.take_along_axis(tuned, pick.protocol[None], axis=0)[0])
