"""Link choice and alpha-beta times of collectives (toy hardware: intra 100 GB/s, NIC 10 GB/s)."""

import numpy as np
import pytest

from sp_planner.cost.links import (
    INTER,
    INTRA,
    NONE,
    all_to_all_time_s,
    group_link,
    p2p_time_s,
    ring_collective_time_s,
)


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
    # 8 ranks on 2 nodes (4 each): buffer S = sent * 8/7; the node's 4 NICs carry (k-1)/k = 1/2 of S.
    sent = 7e9
    buffer = sent * 8 / 7
    t = ring_collective_time_s(hardware, "all_gather", sent, 8, 1, 4)
    assert t == pytest.approx(max(sent / 100e9, buffer / 2 / (4 * 10e9)))
    # one rank per node (stride 4): each rank has one NIC, k = 2 nodes
    t_spread = ring_collective_time_s(hardware, "all_gather", 1e9, 2, 4, 4)
    assert t_spread == pytest.approx(2e9 / 2 / 10e9)


def test_latency_counts_ring_steps(hardware):
    slow = hardware.model_copy(update={"intra_node": hardware.intra_node.model_copy(update={"latency_s": 1e-5})})
    # 4 ranks: 3 ring steps for an all-gather, 6 for an all-reduce, one round for an all-to-all.
    assert ring_collective_time_s(slow, "all_gather", 0.0 + 3e6, 4, 1, 4) == pytest.approx(3e6 / 100e9 + 3e-5)
    assert ring_collective_time_s(slow, "all_reduce", 6e6, 4, 1, 4) == pytest.approx(6e6 / 100e9 + 6e-5)
    assert all_to_all_time_s(slow, 3e6, 4, 1, 4) == pytest.approx(3e6 / 100e9 + 1e-5)
    assert np.all(ring_collective_time_s(slow, "all_gather", np.array([5e6]), 1, 1, 4) == 0.0)
