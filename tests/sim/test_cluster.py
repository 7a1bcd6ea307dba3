import networkx as nx
import numpy as np
import pytest

from sp_planner.sim.cluster import build_cluster

from .conftest import GB, toy_hardware


def _route_vertices(cluster, src, dst):
    """The vertex sequence of the arithmetic route, checked edge by edge against the graph."""
    by_id = {data["edge_id"]: (u, v) for u, v, data in cluster.graph.edges(data=True)}
    edges = [by_id[e] for e in cluster.routes(np.array([src]), np.array([dst]))[0] if e >= 0]
    for (_, v), (u, _) in zip(edges, edges[1:]):
        assert v == u, edges
    return [edges[0][0]] + [v for _, v in edges]


@pytest.mark.parametrize("kind,topology", [("nvlink", "rail_optimized"), ("nvlink", "fat_tree"),
                                           ("pcie", "rail_optimized"), ("pcie", "fat_tree")])
def test_every_route_is_a_path_of_the_graph(kind, topology):
    # 6 nodes of 4 GPUs, pods of 2 nodes: routes inside a node, a pod, and across pods.
    cluster = build_cluster(toy_hardware(gpus_per_node=4, intra_kind=kind, topology=topology, nodes_per_pod=2), 6)
    for src in range(24):
        for dst in range(24):
            if src != dst:
                path = _route_vertices(cluster, src, dst)
                assert path[0] == ("gpu", src) and path[-1] == ("gpu", dst)
                assert len(set(path)) == len(path)


def test_graph_vertices_and_bandwidths():
    cluster = build_cluster(toy_hardware(gpus_per_node=8, nodes_per_pod=2, oversubscription=2.0), 4)
    g = cluster.graph
    kinds = {}
    for v in g.nodes:
        kinds[v[0]] = kinds.get(v[0], 0) + 1
    # 32 GPUs, 4 NVSwitches, 32 NICs, rail-optimized: 8 leaves per pod x 2 pods, one core.
    assert kinds == {"gpu": 32, "nvswitch": 4, "nic": 32, "leaf": 16, "core": 1}
    assert g.edges[("gpu", 3), ("nvswitch", 0)]["bandwidth_bytes_per_s"] == 400 * GB
    assert g.edges[("nic", 1, 3), ("leaf", 3)]["bandwidth_bytes_per_s"] == 50 * GB
    # A rail leaf serves 2 NICs (one per node of its pod); its uplink is halved by oversubscription.
    assert g.edges[("leaf", 3), ("core",)]["bandwidth_bytes_per_s"] == 2 * 50 * GB / 2.0
    assert nx.is_strongly_connected(g)


def test_pcie_node_has_a_pcie_switch_and_shares_the_gpu_link_with_the_nic():
    cluster = build_cluster(toy_hardware(gpus_per_node=2, intra_kind="pcie", intra_bw=32 * GB), 2)
    assert ("pcie_switch", 0) in cluster.graph and ("nvswitch", 0) not in cluster.graph
    path = _route_vertices(cluster, 0, 2)
    assert path[:3] == [("gpu", 0), ("pcie_switch", 0), ("nic", 0, 0)]


def test_rail_optimized_crosses_rails_over_nvlink_first():
    # GPU 0 (rail 0) to GPU 9 (node 1, rail 1): NVLink to GPU 1, then NIC 1 on rail 1 (PXN).
    cluster = build_cluster(toy_hardware(gpus_per_node=8), 2)
    path = _route_vertices(cluster, 0, 9)
    assert path[:4] == [("gpu", 0), ("nvswitch", 0), ("gpu", 1), ("nic", 0, 1)]
    fat = build_cluster(toy_hardware(gpus_per_node=8, topology="fat_tree"), 2)
    assert _route_vertices(fat, 0, 9)[:2] == [("gpu", 0), ("nic", 0, 0)]


def test_bad_nic_count_is_rejected():
    with pytest.raises(ValueError, match="nics_per_node 3 must divide gpus_per_node 8"):
        build_cluster(toy_hardware(), 1, nics_per_node=3)


def test_pxn_relays_only_through_a_gpu_of_the_same_group():
    # 3 nodes of 8; 15 -> 16 is node 1, local 7, to node 2, local 0. Relayed (PXN), it crosses
    # NVLink to node 1's local-0 GPU (rank 8) and leaves by NIC (1, 0); when rank 8 is not in the
    # flow's communicator (group 12-23), NCCL has no proxy there (ncclTopoGetNetDev finds it with
    # ncclTopoDevToRank in the communicator's topology), so the flow leaves by rank 15's own NIC.
    cluster = build_cluster(toy_hardware(gpus_per_node=8), 3)
    relayed = cluster.routes(np.array([15]), np.array([16]))[0]
    own = cluster.routes(np.array([15]), np.array([16]), np.array([False]))[0]
    nic_leaf = cluster.block_slice("nic_leaf")
    assert [e - nic_leaf.start for e in relayed if nic_leaf.start <= e < nic_leaf.stop] == [1 * 8 + 0]
    assert [e - nic_leaf.start for e in own if nic_leaf.start <= e < nic_leaf.stop] == [1 * 8 + 7]
    assert cluster.block_slice("gpu_down").start + 8 in relayed and cluster.block_slice("gpu_down").start + 8 not in own
