"""The cluster as a directed graph of links, and the route a byte takes between two GPUs.

Vertices: every GPU, each node's NVSwitch (or PCIe switch when the node has no NVLink), each
NIC, the leaf switches and one aggregated core above the pods. Every physical link is two
directed edges with a bandwidth per direction and a latency.

- Rail-optimized (default): NIC c of every node in a pod plugs into leaf (pod, c). Traffic to
  another rail first crosses NVLink to the GPU of the destination's rail and leaves through its
  NIC: NCCL's PXN (NCCL 2.12 release notes, "PXN ... uses NVLink to move data to a GPU on the same
  rail as the destination"), a GPU of the same communicator (Cluster.routes). PCIe nodes have no
  NVLink, so they go up to the core instead, as do sends whose node holds no such GPU.
- Fat-tree: one leaf per pod holds every NIC of the pod.
- Above the pods, each leaf's uplink to the core carries its NICs' line rate divided by the
  fabric's oversubscription. The spine layer is aggregated into one vertex (ECMP spreads flows
  evenly over the spines), so a leaf's uplink edge stands for all its spine ports.
- PCIe nodes (L20, L40S): the GPU's x16 link to the PCIe switch carries both peer traffic and
  GPUDirect RDMA to the NIC, so network traffic shares it; NVLink nodes reach their NIC through a
  separate PCIe lane (DGX: one ConnectX per GPU behind the same PCIe switch).

Routes are computed arithmetically from rank numbers (vectorised over flows, for 4096-GPU
clusters); `graph` builds the networkx view of the same edges for inspection and for tests that
check every route is a path of the graph.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from sp_planner.specs.hardware import HardwareProfile

if TYPE_CHECKING:  # imported by `graph` alone: networkx takes ~0.1 s to import, and every sp-plan loads this module
    import networkx as nx

# Edge blocks, in the order of edge ids. Counts: W GPUs, N nodes, C NICs per node, L leaves.
_BLOCKS = ("gpu_up", "gpu_down", "gpu_nic", "nic_gpu", "nic_leaf", "leaf_nic", "leaf_core", "core_leaf")


class Cluster:
    """Edges as arrays (capacity, latency) plus arithmetic routing; immutable after construction."""

    def __init__(self, hardware: HardwareProfile, num_nodes: int, *, topology: str | None = None,
                 nics_per_node: int | None = None) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        gpn = hardware.gpus_per_node
        nics = gpn if nics_per_node is None else nics_per_node
        if nics < 1 or gpn % nics != 0:
            raise ValueError(f"nics_per_node {nics} must divide gpus_per_node {gpn}")
        self.hardware = hardware
        self.num_nodes = num_nodes
        self.gpus_per_node = gpn
        self.nics_per_node = nics
        self.topology = topology or hardware.fabric.topology
        if self.topology not in ("rail_optimized", "fat_tree"):
            raise ValueError(f"topology {self.topology!r} is not rail_optimized or fat_tree")
        self.nvlink = hardware.intra_node.kind != "pcie"
        self.nodes_per_pod = min(hardware.fabric.nodes_per_pod, num_nodes)
        self.num_pods = -(-num_nodes // self.nodes_per_pod)
        self.leaves_per_pod = nics if self.topology == "rail_optimized" else 1
        self.num_leaves = self.num_pods * self.leaves_per_pod
        world = num_nodes * gpn
        self.world_size = world
        counts = {
            "gpu_up": world, "gpu_down": world, "gpu_nic": world, "nic_gpu": world,
            "nic_leaf": num_nodes * nics, "leaf_nic": num_nodes * nics,
            "leaf_core": self.num_leaves, "core_leaf": self.num_leaves,
        }
        self.offset: dict[str, int] = {}
        start = 0
        for block in _BLOCKS:
            self.offset[block] = start
            start += counts[block]
        self.num_edges = start
        # A NIC serves gpn/nics GPUs, so it carries their per-GPU share of the node's network rate.
        nic_bw = hardware.inter_node.bandwidth_bytes_per_s * gpn / nics
        intra = hardware.intra_node
        capacity = np.empty(start)
        latency = np.zeros(start)
        for block in ("gpu_up", "gpu_down"):
            capacity[self.block_slice(block)] = intra.bandwidth_bytes_per_s
            latency[self.block_slice(block)] = intra.latency_s
        for block in ("gpu_nic", "nic_gpu"):
            capacity[self.block_slice(block)] = nic_bw  # a PCIe lane as fast as the NIC, never the bottleneck
        for block in ("nic_leaf", "leaf_nic"):
            capacity[self.block_slice(block)] = nic_bw
            latency[self.block_slice(block)] = hardware.inter_node.latency_s
        leaf_nics = np.zeros(self.num_leaves)
        for node in range(num_nodes):
            for c in range(nics):
                leaf_nics[self._leaf(node, c)] += 1
        for block in ("leaf_core", "core_leaf"):
            # Oversubscription only matters above a pod; with a single pod nothing crosses the core.
            capacity[self.block_slice(block)] = leaf_nics * nic_bw / hardware.fabric.oversubscription
        self.capacity_bytes_per_s = capacity
        self.latency_s = latency

    def block_slice(self, block: str) -> slice:
        """Edge ids of one block (see _BLOCKS), as a slice."""
        nxt = _BLOCKS.index(block) + 1
        end = self.offset[_BLOCKS[nxt]] if nxt < len(_BLOCKS) else self.num_edges
        return slice(self.offset[block], end)

    def _leaf(self, node, nic):
        pod = node // self.nodes_per_pod
        return pod * self.leaves_per_pod + (nic if self.topology == "rail_optimized" else 0)

    def node_of(self, rank):
        return rank // self.gpus_per_node

    def nic_of(self, rank):
        """Index (node-local) of the NIC a GPU sends through."""
        return (rank % self.gpus_per_node) * self.nics_per_node // self.gpus_per_node

    def routes(self, src: np.ndarray, dst: np.ndarray, relay_ok: np.ndarray | None = None) -> np.ndarray:
        """Edge ids of each flow's route, shape (num_flows, 8), padded with -1 (at most 8 hops).

        A flow to another rail relays (PXN) through the source node's GPU with the receiver's
        local index, NCCL's proxy for send/recv (src/graph/search.cc ncclTopoGetNetDev:
        ncclTopoDevToRank of the peer's nvmlDev). That GPU must belong to the flow's communicator
        (the topology NCCL searches holds only the communicator's GPUs, src/graph/topo.cc
        ncclTopoGetSystem; without one the sender takes its own NIC): `relay_ok`, per flow,
        says whether it does (None: every flow's does)."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        gpn, nics, off = self.gpus_per_node, self.nics_per_node, self.offset
        out = np.full((src.size, 8), -1, dtype=np.int64)
        s_node, d_node = src // gpn, dst // gpn
        s_nic, d_nic = self.nic_of(src), self.nic_of(dst)
        intra = s_node == d_node
        # Inside a node: GPU -> switch -> GPU.
        out[intra, 0] = off["gpu_up"] + src[intra]
        out[intra, 1] = off["gpu_down"] + dst[intra]
        inter = ~intra
        pxn = inter & (s_nic != d_nic) & self.nvlink & (self.topology == "rail_optimized")
        if relay_ok is not None:
            pxn &= np.asarray(relay_ok, dtype=np.bool_)
        # The GPU whose NIC sends: with PXN, the source node's GPU with the destination's local index.
        relay = np.where(pxn, s_node * gpn + dst % gpn, src)
        send_nic = np.where(pxn, d_nic, s_nic)
        s_leaf = self._leaf(s_node, send_nic)
        d_leaf = self._leaf(d_node, d_nic)
        col = np.zeros(src.size, dtype=np.int64)

        def put(mask, edge):
            rows = np.flatnonzero(mask)
            out[rows, col[rows]] = edge[rows] if np.ndim(edge) else edge
            col[rows] += 1

        put(inter & (~self.nvlink | pxn), off["gpu_up"] + src)  # PCIe x16 link, or NVLink to the relay
        put(pxn, off["gpu_down"] + relay)
        put(inter, off["gpu_nic"] + relay)
        put(inter, off["nic_leaf"] + s_node * nics + send_nic)
        cross = inter & (s_leaf != d_leaf)
        put(cross, off["leaf_core"] + s_leaf)
        put(cross, off["core_leaf"] + d_leaf)
        put(inter, off["leaf_nic"] + d_node * nics + d_nic)
        put(inter, off["nic_gpu"] + dst)
        put(inter & ~self.nvlink, off["gpu_down"] + dst)
        return out

    def edge_kind(self, edge_id: int) -> str:
        for block in reversed(_BLOCKS):
            if edge_id >= self.offset[block]:
                return block
        raise AssertionError(edge_id)

    def link_class(self, edge_id: int) -> str:
        """'nvlink' (or the intra-node kind), 'nic' or 'core' for an edge id."""
        block = self.edge_kind(edge_id)
        if block in ("gpu_up", "gpu_down"):
            return self.hardware.intra_node.kind
        return "core" if block in ("leaf_core", "core_leaf") else "nic"

    def _vertices(self, block: str, index: int) -> tuple[tuple, tuple]:
        gpn, nics = self.gpus_per_node, self.nics_per_node
        switch = "nvswitch" if self.nvlink else "pcie_switch"
        pair: tuple[tuple, tuple]
        if block in ("gpu_up", "gpu_down"):
            pair = (("gpu", index), (switch, index // gpn))
        elif block in ("gpu_nic", "nic_gpu"):
            pair = (("gpu", index), ("nic", index // gpn, self.nic_of(index)))
            if not self.nvlink:
                pair = ((switch, index // gpn), pair[1])
        elif block in ("nic_leaf", "leaf_nic"):
            node, c = divmod(index, nics)
            pair = (("nic", node, c), ("leaf", self._leaf(node, c)))
        else:
            pair = (("leaf", index), ("core",))
        return pair if block in ("gpu_up", "gpu_nic", "nic_leaf", "leaf_core") else (pair[1], pair[0])

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The networkx view: vertices are tuples ('gpu', rank), ('nvswitch', node), ('nic', node, c),
        ('leaf', id), ('core',); edges carry edge_id, kind, bandwidth_bytes_per_s, latency_s."""
        import networkx as nx

        g: nx.DiGraph = nx.DiGraph(topology=self.topology, num_nodes=self.num_nodes)
        for block in _BLOCKS:
            sl = self.block_slice(block)
            for edge_id in range(sl.start, sl.stop):
                u, v = self._vertices(block, edge_id - sl.start)
                if g.has_edge(u, v):
                    continue
                g.add_edge(u, v, edge_id=edge_id, kind=block,
                           bandwidth_bytes_per_s=float(self.capacity_bytes_per_s[edge_id]),
                           latency_s=float(self.latency_s[edge_id]))
        return g


def build_cluster(hardware: HardwareProfile, num_nodes: int, *, topology: str | None = None,
                  nics_per_node: int | None = None) -> Cluster:
    """The cluster of `num_nodes` nodes of `hardware`; `topology` overrides the profile's fabric."""
    return Cluster(hardware, num_nodes, topology=topology, nics_per_node=nics_per_node)
