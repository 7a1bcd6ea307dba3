"""Link choice and alpha-beta times of collectives (toy hardware: intra 100 GB/s, NIC 10 GB/s)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.links import (
    INTER,
    INTRA,
    NONE,
    all_to_all_time_s,
    collective_efficiency,
    group_link,
    node_occupancy,
    p2p_time_s,
    ring_collective_time_s,
)
from sp_planner.specs.hardware import CollectiveEfficiency, GroupEfficiency


def test_group_link():
    assert group_link(1, 1, 8) == NONE
    assert group_link(8, 1, 8) == INTRA
    assert group_link(2, 4, 8) == INTRA  # ranks 0 and 4
    assert group_link(2, 8, 8) == INTER
    assert group_link(3, 1, 8) == INTER  # groups of 3 straddle 8-GPU nodes (6, 7, 8)


def test_ring_p2p_inside_and_across_nodes(hardware):
    inside = p2p_time_s(hardware, 1e9, 2, 1, 4)
    across = p2p_time_s(hardware, 1e9, 2, 4, 4)
    assert inside == pytest.approx(1e9 / 100e9)
    assert across == pytest.approx(1e9 / 10e9)


def test_all_to_all_across_two_nodes_bounded_by_nic(hardware):
    # 8 ranks, 4 per node: 4 of the 7 peers are remote, so 4/7 of the bytes leave through the
    # GPU's own NIC (10 GB/s); the 3/7 that stay go over NVLink at the same time.
    sent = 7e9
    assert all_to_all_time_s(hardware, sent, 8, 1, 4) == pytest.approx(4e9 / 10e9)
    assert all_to_all_time_s(hardware, sent, 4, 1, 4) == pytest.approx(sent / 100e9)


def test_all_gather_across_nodes_uses_all_nics_of_the_node(hardware):
    # 8 ranks on 2 nodes (4 each): NCCL's flat rings leave each node through its 4 NICs, each exit
    # hop carrying what a rank sends over 4 (busbw = 4 x NIC): 7 GB / 40 GB/s = 0.175 s, not the
    # node's (k-1)/k of the 8 GB buffer (0.1 s).
    sent = 7e9
    t = ring_collective_time_s(hardware, "all_gather", sent, 8, 1, 4)
    assert t == pytest.approx(0.175)
    # 8 ranks on 4 nodes of 2: 2 NICs a node, so 7 GB / 20 GB/s, whatever the node count
    assert ring_collective_time_s(hardware, "all_gather", sent, 8, 1, 2) == pytest.approx(7e9 / 20e9)
    # one rank per node (stride 4): each rank has one NIC, k = 2 nodes
    t_spread = ring_collective_time_s(hardware, "all_gather", 1e9, 2, 4, 4)
    assert t_spread == pytest.approx(2e9 / 2 / 10e9)


@pytest.mark.parametrize("size,stride,expected", [
    (8, 1, (8, 1)), (16, 1, (8, 2)), (4, 2, (4, 1)), (2, 8, (1, 2)), (3, 8, (1, 3)),  # even shapes
    # 12 contiguous ranks on 8-GPU nodes: groups 0-11 (8 + 4) and 12-23 (4 + 8)
    (12, 1, (4, 2)),
    # 3 contiguous ranks: 0-2 and 3-5 inside node 0, 6-8 straddling (2 + 1)
    (3, 1, (1, 2)),
    # stride 2, 6 ranks (span 12): 0, 2, ..., 10 has 4 on node 0 and 2 on node 1
    (6, 2, (2, 2)),
])
def test_node_occupancy_counts_the_fewest_members_on_a_node(size, stride, expected):
    r, k = node_occupancy(size, stride, 8)
    assert (float(r), float(k)) == expected
    rs, ks = node_occupancy(np.array([size, 8]), np.array([stride, 1]), 8)  # vectorized alike
    assert [rs.tolist(), ks.tolist()] == [[expected[0], 8], [expected[1], 1]]


@pytest.mark.parametrize("size,stride,expected", [
    (16, 1, [8]), (12, 1, [4, 8]),
    # 10 ranks: 0-9 (8 + 2), 10-19 (6 + 4), 20-29 (4 + 6), 30-39 (2 + 8)
    (10, 1, [2, 4, 6, 8]),
    (3, 4, [1, 2]),  # 0, 4 | 8; 1, 5 | 9; ...
])
def test_member_counts_lists_every_node_population(size, stride, expected):
    from sp_planner.cost.node_loads import member_counts

    assert sorted(set(member_counts(size, stride, 8).tolist())) == expected
    both = member_counts(np.array([size, 16]), np.array([stride, 1]), 8)  # vectorized, padded
    assert sorted(set(both[0].tolist())) == expected and set(both[1].tolist()) == {8}


def test_uneven_group_rides_the_nics_of_its_sparsest_node(hardware):
    # 12 ranks on 4-GPU nodes put 4 + 4 + 4 members (even); on 8-GPU nodes 8 + 4: the node with 4
    # members drives 4 NICs, so busbw = 4 x NIC (NVIDIA/nccl#1168: 45 vs 90 GB/s at 4 vs 8 a node).
    sent = 11e9
    assert ring_collective_time_s(hardware, "all_gather", sent, 12, 1, 8) == pytest.approx(sent / 40e9)
    # the all-to-all: a member of the 4-member node sends 8 of its 11 shares off the node
    assert all_to_all_time_s(hardware, sent, 12, 1, 8) == pytest.approx(8e9 / 10e9)


def test_latency_counts_ring_steps(hardware):
    slow = hardware.model_copy(update={"intra_node": hardware.intra_node.model_copy(update={"latency_s": 1e-5})})
    # 4 ranks: 3 ring steps for an all-gather, 6 for an all-reduce, one round for an all-to-all.
    assert ring_collective_time_s(slow, "all_gather", 0.0 + 3e6, 4, 1, 4) == pytest.approx(3e6 / 100e9 + 3e-5)
    assert ring_collective_time_s(slow, "all_reduce", 6e6, 4, 1, 4) == pytest.approx(6e6 / 100e9 + 6e-5)
    assert all_to_all_time_s(slow, 3e6, 4, 1, 4) == pytest.approx(3e6 / 100e9 + 1e-5)
    assert np.all(ring_collective_time_s(slow, "all_gather", np.array([5e6]), 1, 1, 4) == 0.0)


def _by_group_size(hardware, points):
    intra = hardware.efficiency.intra_node.model_copy(update={"all_to_all_by_group_size": points})
    return hardware.model_copy(update={"efficiency": hardware.efficiency.model_copy(update={"intra_node": intra})})


POINTS = (GroupEfficiency(group_size=2, efficiency=0.8), GroupEfficiency(group_size=8, efficiency=0.2))


def test_all_to_all_efficiency_interpolates_in_log2_of_group_size_and_clamps():
    eff = CollectiveEfficiency(all_reduce=0.5, all_gather=0.5, reduce_scatter=0.5, all_to_all=0.5, p2p=0.5,
                               all_to_all_by_group_size=POINTS)
    # log2: 2 -> 1, 4 -> 2, 8 -> 3; 4 lies half way: (0.8 + 0.2) / 2.
    assert collective_efficiency(eff, "all_to_all", np.array([2, 4, 8])) == pytest.approx([0.8, 0.5, 0.2])
    assert collective_efficiency(eff, "all_to_all", np.array([1, 16])) == pytest.approx([0.8, 0.2])
    assert collective_efficiency(eff, "all_gather", np.array([2, 8])) == pytest.approx([0.5, 0.5])
    plain = eff.model_copy(update={"all_to_all_by_group_size": ()})
    assert collective_efficiency(plain, "all_to_all", np.array([2, 8])) == pytest.approx([0.5, 0.5])


def test_all_to_all_time_uses_the_group_size_efficiency(hardware):
    pcie = _by_group_size(hardware, POINTS)
    sent = np.array([1e9, 1e9, 1e9])
    t = all_to_all_time_s(pcie, sent, np.array([2, 4, 8]), 1, 8)
    assert t == pytest.approx([1e9 / (0.8 * 100e9), 1e9 / (0.5 * 100e9), 1e9 / (0.2 * 100e9)])
    # Across nodes (8 ranks, 4 per node): the intra-node part takes the efficiency of 4 ranks.
    t_inter = all_to_all_time_s(pcie, 7e9, 8, 1, 4)
    assert t_inter == pytest.approx(max(3e9 / (0.5 * 100e9), 4e9 / 10e9))


def test_group_sizes_must_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        CollectiveEfficiency(all_reduce=1, all_gather=1, reduce_scatter=1, all_to_all=1, p2p=1,
                             all_to_all_by_group_size=POINTS[::-1])
    with pytest.raises(ValueError):
        GroupEfficiency(group_size=1, efficiency=0.5)


@pytest.mark.parametrize("nodes", [2, 3, 8])
def test_multi_node_all_reduce_busbw_is_the_nodes_nics_as_nccl_measures(nodes):
    # DGX A100, 8 x HDR 200G a node: "we measure 192GB/s AllReduce BusBW" (NVIDIA/nccl#812), 8
    # NICs x 24 GB/s ("24GB/s is the peak performance per 200G NIC", nccl-tests#119), on 2 nodes
    # as on many (a hierarchical split would give 24 x 15 = 360 GB/s on 2 nodes).
    a100 = load_hardware("a100-80gb")
    n = 8 * nodes
    sent = 2 * (n - 1) / n * 16e9  # a rank's bytes in a 16 GB all-reduce
    t = float(ring_collective_time_s(a100, "all_reduce", sent, n, 1, 8))
    assert sent / t == pytest.approx(192e9, rel=0.01)



def _links(hardware, intra_kind, intra_bw, nic_bw=10e9):
    return hardware.model_copy(update={
        "intra_node": hardware.intra_node.model_copy(update={"kind": intra_kind, "bandwidth_bytes_per_s": intra_bw}),
        "inter_node": hardware.inter_node.model_copy(update={"bandwidth_bytes_per_s": nic_bw})})


def test_a_ring_step_across_nodes_is_bound_by_its_slowest_hop(hardware):
    # Intra-node p2p at 8 GB/s, below the NIC's 10 (a PCIe node's 23.9 against 24 GB/s, or HCCS):
    # 8 ranks on 2 nodes of 4 (stride 1) hop 0->1->2->3 inside node 0, so a step moves 1 GB at
    # 8 GB/s, not the NIC's 10; one rank a node (stride 4) has network hops only.
    slow = _links(hardware, "pcie", 8e9)
    assert p2p_time_s(slow, 1e9, 8, 1, 4) == pytest.approx(1e9 / 8e9)
    assert p2p_time_s(slow, 1e9, 2, 4, 4) == pytest.approx(1e9 / 10e9)
    # 3 ranks two apart on 4-GPU nodes: 4, 6 on node 1 and 8 on node 2, one member on the sparsest
    # node yet a hop inside node 1; the ring collective's intra-node term counts it too.
    assert p2p_time_s(slow, 1e9, 3, 2, 4) == pytest.approx(1e9 / 8e9)
    assert ring_collective_time_s(slow, "all_gather", 1e9, 3, 2, 4) == pytest.approx(1e9 / 8e9)


def test_a_pcie_all_to_all_across_nodes_sends_both_shares_through_the_gpu_link(hardware):
    # 8 ranks on 2 nodes of 4 each send 7 GB: 3 to node-local peers, 4 off the node. On PCIe
    # nodes the GPU's x16 link (30 GB/s) carries both shares (cost.links.nic_behind_gpu_link):
    # 3/30 + 4/30 = 0.233 s, which bounds it behind a 20 GB/s NIC (4/20 = 0.2 s); behind a 10 GB/s
    # NIC the NIC's 0.4 s does. An NVLink node with the same rates takes max(3/30, 4/20) = 0.2 s.
    assert all_to_all_time_s(_links(hardware, "pcie", 30e9, 20e9), 7e9, 8, 1, 4) == pytest.approx(7e9 / 30e9)
    assert all_to_all_time_s(_links(hardware, "pcie", 30e9, 10e9), 7e9, 8, 1, 4) == pytest.approx(4e9 / 10e9)
    assert all_to_all_time_s(_links(hardware, "nvlink", 30e9, 20e9), 7e9, 8, 1, 4) == pytest.approx(4e9 / 20e9)


def test_a_full_mesh_gives_a_group_the_links_it_drives():
    # MI300X: 7 xGMI links of 64 GB/s a GPU (448 GB/s, the profile's line rate), its collective
    # figures measured over the whole node (all_gather 0.70). Two GPUs share one link: 448 x 0.70 x
    # 1/7 = 44.8 GB/s (stas00: one peer gets 64; p2p measured 47.5); four drive 3 links.
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.links import collective_efficiency, ring_alpha_beta_s, ring_latency_s

    mi300x = load_hardware("mi300x")
    eff = mi300x.efficiency.intra_node
    assert eff.mesh_links == 7
    assert [float(collective_efficiency(eff, "all_gather", g)) for g in (2, 4, 8)] == pytest.approx(
        [0.70 / 7, 0.70 * 3 / 7, 0.70])
    assert float(collective_efficiency(eff, "p2p", 2)) == 0.106  # one link's already
    latency = float(ring_latency_s(mi300x, "all_gather", 2, 1, 8))
    assert float(ring_alpha_beta_s(mi300x, "all_gather", 1e9, 2, 1, 8)) == pytest.approx(1e9 / 44.8e9 + latency)
    # A switch (H100's NVSwitch): every group reaches the port's figure.
    h100 = load_hardware("h100-sxm").efficiency.intra_node
    assert h100.mesh_links is None
    assert float(collective_efficiency(h100, "all_gather", 2)) == float(collective_efficiency(h100, "all_gather", 8))
