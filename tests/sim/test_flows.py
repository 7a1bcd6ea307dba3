import numpy as np
import pytest

from sp_planner.sim.cluster import build_cluster
from sp_planner.cost.links import p2p_time_s, ring_collective_time_s
from sp_planner.sim.flows import run_phase
from sp_planner.sim.fluid import max_min_rates

from .conftest import GB, toy_hardware


def test_max_min_textbook_example():
    # Bertsekas & Gallager: link A (cap 1) carries flows 0,1,2; link B (cap 2) carries flows 2,3.
    # Flows 0,1,2 get 1/3 on A; flow 3 then takes what is left on B: 2 - 1/3.
    routes = np.array([[0, -1], [0, -1], [0, 1], [1, -1]])
    rates, frozen_by = max_min_rates(routes, np.array([1.0, 2.0]))
    assert rates == pytest.approx([1 / 3, 1 / 3, 1 / 3, 5 / 3])
    assert frozen_by.tolist() == [0, 0, 0, 1]


def test_two_ring_groups_crossing_one_nic_each_get_half_of_it():
    # 2 nodes x 2 GPUs sharing one 100 GB/s NIC per node; ring groups {0, 2} and {1, 3}:
    # flows 0->2 and 1->3 both leave node 0 through its single NIC.
    hw = toy_hardware(gpus_per_node=2, nic_bw=50 * GB)
    cluster = build_cluster(hw, 2, nics_per_node=1)
    nic_bw = 2 * 50 * GB  # the node's two per-GPU shares on one NIC
    nbytes = 1 * GB
    both = run_phase(cluster, "ring", np.array([[0, 2], [1, 3]]), nbytes, "p2p", "p2p")
    assert both.achieved_bytes_per_s == pytest.approx(nic_bw / 2)
    assert both.duration_s == pytest.approx(nbytes / (nic_bw / 2))
    assert both.bottleneck == "nic"
    alone = run_phase(cluster, "ring", np.array([[0, 2]]), nbytes, "p2p", "p2p")
    assert alone.achieved_bytes_per_s == pytest.approx(nic_bw)


def test_all_to_all_across_two_nodes_is_limited_by_the_nics():
    # 16 GPUs on 2 nodes: each rank sends 1/15 of its bytes to each peer; 8 of the 15 shares
    # leave the node through 50 GB/s of NIC per GPU, 7 stay on 400 GB/s NVLink.
    cluster = build_cluster(toy_hardware(), 2)
    nbytes = 1.5 * GB
    result = run_phase(cluster, "a2a", np.arange(16)[None, :], nbytes, "all_to_all", "all_to_all")
    assert result.duration_s == pytest.approx(nbytes * 8 / 15 / (50 * GB))
    assert result.bottleneck == "nic"
    inside = run_phase(build_cluster(toy_hardware(), 1), "a2a", np.arange(8)[None, :], nbytes,
                       "all_to_all", "all_to_all")
    assert inside.duration_s == pytest.approx(nbytes / (400 * GB))
    assert inside.bottleneck == "nvlink"


def test_ring_inside_a_node_rides_nvlink():
    cluster = build_cluster(toy_hardware(), 2)
    groups = np.arange(16).reshape(2, 8)  # one ring per node
    result = run_phase(cluster, "ring", groups, 1 * GB, "p2p", "p2p")
    assert not result.crosses_nodes and result.bottleneck == "nvlink"
    assert result.duration_s == pytest.approx(1 * GB / (400 * GB))


def test_oversubscribed_core_halves_cross_pod_rings():
    # Pods of 1 node, oversubscription 2: a ring between the two nodes crosses the core.
    cluster = build_cluster(toy_hardware(nodes_per_pod=1, oversubscription=2.0), 2)
    result = run_phase(cluster, "ring", np.arange(16).reshape(2, 8).T.copy(), 1 * GB, "p2p", "p2p")
    # Each rail leaf has one NIC below (50 GB/s) and 25 GB/s above; 1 flow per direction each.
    assert result.duration_s == pytest.approx(1 * GB / (25 * GB))
    assert result.bottleneck == "core"


def test_hierarchical_ring_matches_the_analytic_split():
    # All-gather over 16 ranks on 2 nodes (8 per node), NICs of 25 GB/s: NVLink carries what a
    # rank sends (7.5 GB at 400 GB/s: 18.75 ms), and each of the node's 8 NICs is the exit of one
    # of NCCL's flat rings, carrying 7.5 GB / 8 (busbw = 8 x NIC, cost.links): 37.5 ms, which
    # bounds it (the node's (k-1)/k of the 8 GB buffer over 8 NICs would be 20 ms).
    hardware = toy_hardware(nic_bw=25 * GB)
    cluster = build_cluster(hardware, 2)
    sent = 15 * GB / 16 * 8  # (n-1)/n of an 8 GB buffer
    result = run_phase(cluster, "ag", np.arange(16)[None, :], sent, "ring", "all_gather")
    assert result.duration_s == pytest.approx(0.0375)
    assert result.duration_s == pytest.approx(
        float(ring_collective_time_s(hardware, "all_gather", sent, 16, 1, 8)))


def test_all_to_all_takes_the_group_size_efficiency_like_the_cost_model():
    # PCIe node of 8 with all-to-all efficiency 0.8 at 2 ranks and 0.2 at 8 (0.5 at 4, log2
    # interpolation): one group of g ranks takes nbytes / (line rate x efficiency(g)).
    from sp_planner.cost.links import all_to_all_time_s
    from sp_planner.specs.hardware import GroupEfficiency

    hw = toy_hardware(intra_kind="pcie", intra_bw=32 * GB)
    points = (GroupEfficiency(group_size=2, efficiency=0.8), GroupEfficiency(group_size=8, efficiency=0.2))
    intra = hw.efficiency.intra_node.model_copy(update={"all_to_all_by_group_size": points})
    hw = hw.model_copy(update={"efficiency": hw.efficiency.model_copy(update={"intra_node": intra})})
    cluster = build_cluster(hw, 1)
    nbytes = 1 * GB
    for g, eff in ((2, 0.8), (4, 0.5), (8, 0.2)):
        result = run_phase(cluster, "a2a", np.arange(g)[None, :], nbytes, "all_to_all", "all_to_all")
        assert result.duration_s == pytest.approx(nbytes / (32 * GB * eff))
        assert result.duration_s == pytest.approx(float(all_to_all_time_s(hw, nbytes, g, 1, 8)))


@pytest.mark.parametrize("size,stride", [(12, 1), (3, 1), (6, 2)])
def test_uneven_ring_groups_ride_their_sparsest_node_like_the_analytic_model(size, stride):
    # 24 GPUs on 3 nodes of 8, NICs of 25 GB/s: groups whose nodes hold different numbers of
    # members (12 ranks: 8 + 4 and 4 + 8) cross between nodes on as many parallel hops as the
    # sparsest node has members, as cost.links.node_occupancy counts them.
    hardware = toy_hardware(nic_bw=25 * GB)
    cluster = build_cluster(hardware, 3)
    span = size * stride
    starts = [x + span * y for y in range(24 // span) for x in range(stride)]
    groups = np.array([[b + stride * i for i in range(size)] for b in starts])
    sent = 1 * GB
    result = run_phase(cluster, "ag", groups, sent, "ring", "all_gather")
    assert result.crosses_nodes and result.bottleneck == "nic"
    assert result.duration_s == pytest.approx(
        float(ring_collective_time_s(hardware, "all_gather", sent, size, stride, 8)))


def _pcie_groups(size, stride, world):
    span = size * stride
    starts = [x + span * y for y in range(world // span) for x in range(stride)]
    return np.array([[b + stride * i for i in range(size)] for b in starts])


@pytest.mark.parametrize("profile", ["l40s", "l20"])
@pytest.mark.parametrize("nodes,size,stride", [(2, 16, 1), (2, 8, 2), (4, 8, 4), (3, 12, 1), (3, 3, 4)])
def test_pcie_collectives_across_nodes_time_as_the_analytic_model(profile, nodes, size, stride):
    # PCIe nodes: the NIC hangs off each GPU's x16 link. NCCL's inter-node ring is
    # NET -> GPU a -> .. -> GPU x -> NET (src/graph/search.cc): the node's last GPU hops to the NIC
    # instead of to a GPU, so its link carries what the rank sends once; the simulator used to load
    # it with the node-local hop and the exit (+5.7% at 8 a node, +11% at 4, +73% at 2 + 1).
    # A ring step is bound by its slowest hop (the intra-node 23.9 GB/s, not the NIC's 24), and an
    # all-to-all's two shares share the x16 link (cost.links.all_to_all_time_s).
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.links import all_to_all_time_s

    hw = load_hardware(profile)
    cluster = build_cluster(hw, nodes)
    groups = _pcie_groups(size, stride, nodes * 8)
    sent = 1 * GB
    for collective, rounds in (("all_gather", 1), ("reduce_scatter", 1), ("all_reduce", 2)):
        result = run_phase(cluster, collective, groups, sent, "ring", collective, rounds=rounds)
        assert result.duration_s == pytest.approx(float(ring_collective_time_s(hw, collective, sent, size, stride, 8)))
    step = run_phase(cluster, "ring", groups, sent, "p2p", "p2p")
    assert step.duration_s == pytest.approx(float(p2p_time_s(hw, sent, size, stride, 8)))
    a2a = run_phase(cluster, "a2a", groups, sent, "all_to_all", "all_to_all")
    assert a2a.duration_s == pytest.approx(float(all_to_all_time_s(hw, sent, size, stride, 8)))


@pytest.mark.parametrize("profile,local_eff", [("l40s", 0.44), ("l20", 0.035)])
def test_uneven_pcie_all_to_all_is_bound_by_its_fullest_node_by_hand(profile, local_eff):
    # 12 ranks on 3 L40S / L20 nodes of 8 (groups 0-11: 8 + 4, 12-23: 4 + 8), 1 GB each. A rank on
    # an 8-member node sends 7/11 GB to its node's peers over its x16 link at the profile's PCIe
    # all-to-all busbw (31.5 GB/s x 0.44; L20's at 8 ranks, 0.035) and 4/11 GB to the NIC over the
    # same link (31.5 x 0.86): the slowest rank. A rank on a 4-member node sends 3/11 locally and
    # 8/11 off the node (25 x 0.86 GB/s through its NIC): faster, which the model used to take
    # (-22% on L40S, -80% on L20). Plus one network latency, 14 us.
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.links import all_to_all_time_s

    hw = load_hardware(profile)
    expected = 7 / 11 * 1e9 / (31.5e9 * local_eff) + 4 / 11 * 1e9 / (31.5e9 * 0.86) + 14e-6
    result = run_phase(build_cluster(hw, 3), "a2a", _pcie_groups(12, 1, 24), 1 * GB, "all_to_all", "all_to_all")
    assert result.duration_s == pytest.approx(expected)
    assert result.bottleneck == "pcie"
    assert float(all_to_all_time_s(hw, 1 * GB, 12, 1, 8)) == pytest.approx(expected)


@pytest.mark.parametrize("profile", ["h100-sxm", "a800"])
@pytest.mark.parametrize("size,stride", [(12, 1), (6, 2), (3, 4), (3, 12)])
def test_uneven_nvlink_ring_steps_send_one_hop_per_nic(profile, size, stride):
    # Ring attention's step over uneven groups (12 ranks on 8 + 4 GPUs: groups 0-11 and 12-23):
    # with PXN a hop to another rail leaves by the NIC of the sending node's GPU with the
    # receiver's local index, but only a GPU of the same communicator relays (NCCL's topology
    # holds the communicator's GPUs only). 11 -> 0 goes through rank 8's NIC; 15 -> 16 (group
    # 12-23, which has no GPU at local index 0 on node 1) by rank 15's own NIC, not rank 8's as
    # the simulator sent it (twice the step). Each NIC sends one hop: 1 GB at the NIC's p2p rate.
    from sp_planner.catalog import load_hardware

    hw = load_hardware(profile)
    world = 24 if stride < 8 else 72
    hop = 1e9 / (hw.inter_node.bandwidth_bytes_per_s * hw.efficiency.inter_node.p2p) + hw.inter_node.latency_s
    result = run_phase(build_cluster(hw, world // 8), "ring", _pcie_groups(size, stride, world), 1 * GB, "p2p", "p2p")
    assert result.duration_s == pytest.approx(hop)
    assert float(p2p_time_s(hw, 1 * GB, size, stride, 8)) == pytest.approx(hop)


def test_a_pcie_ring_across_two_nodes_by_hand():
    # L40S, 16 ranks on 2 nodes, each sending 1 GB in an all-gather: the x16 link moves it at
    # 31.5 GB/s x 0.44 (the profile's PCIe busbw) while each of the 8 NICs carries 1/8 GB at
    # 25 x 0.96; plus NCCL's ring latency, 14 hops of 5.7 us inside the nodes and 1 of 14 us.
    from sp_planner.catalog import load_hardware

    result = run_phase(build_cluster(load_hardware("l40s"), 2), "ag", np.arange(16)[None, :], 1 * GB, "ring",
                       "all_gather")
    assert result.duration_s == pytest.approx(1e9 / (31.5e9 * 0.44) + 14 * 5.7e-6 + 14e-6)
    assert result.bottleneck == "pcie"


def test_uneven_groups_time_as_the_analytic_model_on_nvlink_and_pcie_nodes():
    # Every uneven shape of 3 to 16 ranks, strides 1 to 6, on 8-GPU nodes (worlds of up to 16
    # nodes): the simulator's flows (PXN relays within a group on NVLink, the shared x16 link on
    # PCIe) and cost.links agree on all-to-alls and ring steps.
    from math import lcm

    from sp_planner.catalog import load_hardware
    from sp_planner.cost.links import all_to_all_time_s

    checked = 0
    for profile in ("h100-sxm", "l40s"):
        hw = load_hardware(profile)
        for size in range(3, 17):
            for stride in range(1, 7):
                span = size * stride
                world = lcm(span, 8)
                if span % 8 == 0 or 8 % span == 0 or world > 128:
                    continue
                cluster = build_cluster(hw, world // 8)
                groups = _pcie_groups(size, stride, world)
                a2a = run_phase(cluster, "a2a", groups, 1 * GB, "all_to_all", "all_to_all")
                step = run_phase(cluster, "ring", groups, 1 * GB, "p2p", "p2p")
                expected = (all_to_all_time_s(hw, 1 * GB, size, stride, 8), p2p_time_s(hw, 1 * GB, size, stride, 8))
                assert (a2a.duration_s, step.duration_s) == pytest.approx(tuple(map(float, expected))), (size, stride)
                checked += 1
    assert checked == 84  # 42 shapes on each profile


@pytest.mark.parametrize("sent, size, protocol", [(2 * 7 / 8 * 1024, 8, "LL"),  # 1 KiB over one node
                                                  (2 * 15 / 16 * 2**26, 16, "LL128"),  # 64 MiB over 2 nodes
                                                  (7 / 8 * 2**30, 8, "Simple")])
def test_a_ring_call_runs_in_the_analytic_models_protocol(sent, size, protocol):
    # The same pick as cost.links.ring_collective_time_s (cost.nccl_protocols): LL for a kilobyte
    # over 8 H100s (15.0 us, not the Simple ring's 47.6), LL128 for 64 MiB over 2 nodes, Simple for
    # a gigabyte; a phase that stands for many calls (sim.dp_work) stays Simple.
    from sp_planner.catalog import load_hardware

    hw = load_hardware("h100")
    cluster = build_cluster(hw, 2)
    collective = "all_gather" if protocol == "Simple" else "all_reduce"
    rounds = 2 if collective == "all_reduce" else 1
    groups = np.arange(size)[None, :]
    result = run_phase(cluster, collective, groups, sent, "ring", collective, rounds=rounds)
    assert result.protocol == protocol
    assert result.duration_s == pytest.approx(float(ring_collective_time_s(hw, collective, sent, size, 1, 8)),
                                              rel=1e-9)
    whole = run_phase(cluster, collective, groups, sent, "ring", collective, rounds=rounds, one_call=False)
    assert whole.protocol == "Simple"
    assert whole.latency_s == pytest.approx(rounds * ((size - 1 - (size > 8)) * 3.4e-6 + (size > 8) * 14e-6))
