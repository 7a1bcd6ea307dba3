"""Flows that finish early give their share back (sim.fluid), against hand derivations."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.flows import run_phase
from sp_planner.sim.fluid import completion_times


def test_the_longer_flow_takes_the_whole_link_once_the_shorter_is_done():
    # One link of 1 byte/s, flows of 1 and 3 bytes: half each until the first is done at 2 s, then
    # the second's last 2 bytes at the full rate: 4 s (not 6 at its first half share).
    finish, frozen = completion_times(np.array([[0], [0]]), np.array([1.0]), np.array([1.0, 3.0]), np.ones(2))
    assert finish == pytest.approx([2.0, 4.0])
    assert frozen.tolist() == [0, 0]
    # A flow reaching only half its rate (its measured efficiency) moves half as fast: the 1-byte one
    # at 0.25 B/s until 4 s, the other at 0.5 B/s to 2 bytes by then, then 1 B/s: 5 s.
    finish, _ = completion_times(np.array([[0], [0]]), np.array([1.0]), np.array([1.0, 3.0]), np.array([0.5, 1.0]))
    assert finish == pytest.approx([4.0, 5.0])


def test_a_pcie_ring_across_nodes_gets_no_faster_on_a_slower_network():
    # L40S nodes have no NVLink: a ring over 16 GPUs on 2 nodes shares each GPU's PCIe link between
    # its node-local hop and the network hop the node's ring exits by. A slower network cannot
    # shorten the phase (before stop 42 the local hop kept half the link after the network one
    # finished, and a slower network, holding its half longer, made the phase 1.6x faster).
    hw = load_hardware("l40s")
    times = []
    for factor in (1.0, 0.5, 0.25):
        slow = hw.model_copy(update={"inter_node": hw.inter_node.model_copy(
            update={"bandwidth_bytes_per_s": hw.inter_node.bandwidth_bytes_per_s * factor})})
        times.append(run_phase(build_cluster(slow, 2), "rs", np.arange(16)[None, :], 1e9, "ring",
                               "reduce_scatter").duration_s)
    assert times[0] <= times[1] <= times[2]
