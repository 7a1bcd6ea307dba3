import numpy as np
import pytest

from sp_planner.sim.uneven_rings import uneven_ring_flows


def test_rings_per_node_and_rail_matched_hops_between_nodes():
    # 12 ranks on 8-GPU nodes: 0-11 (8 on node 0, 4 on node 1) and 12-23 (4 + 8).
    groups = np.arange(24).reshape(2, 12)
    src, dst, gid, size, active = uneven_ring_flows(groups, groups // 8, 8, 12.0)
    first = gid == 0
    flows = set(zip(src[first & active].tolist(), dst[first & active].tolist(), size[first & active].tolist()))
    rings = {(i, (i + 1) % 8, 12.0) for i in range(8)} | {(8 + i, 8 + (i + 1) % 4, 12.0) for i in range(4)}
    # 4 hops each way (the sparser node's members), rail to rail, each a quarter of a rank's bytes
    hops = {(i, 8 + i, 3.0) for i in range(4)} | {(8 + i, i, 3.0) for i in range(4)}
    assert flows == rings | hops
    # The second group's node-1 members sit on rails 4-7: its hops to node 2 keep those rails.
    second = (gid == 1) & active & (src // 8 != dst // 8)
    assert sorted(zip(src[second].tolist(), dst[second].tolist())) == (
        [(12 + i, 20 + i) for i in range(4)] + [(20 + i, 12 + i) for i in range(4)])
    # Every group gets the same number of flows; padding flows carry nothing.
    assert np.bincount(gid).tolist() == [20, 20] and not size[~active].any()


def test_a_member_alone_on_its_node_sends_only_its_hop():
    # 3 ranks: 6 and 7 on node 0, 8 on node 1: one hop each way carries a rank's whole share.
    groups = np.array([[6, 7, 8]])
    src, dst, _, size, active = uneven_ring_flows(groups, groups // 8, 8, 5.0)
    assert sorted(zip(src[active].tolist(), dst[active].tolist(), size[active].tolist())) == [
        (6, 7, 5.0), (6, 8, 5.0), (7, 6, 5.0), (8, 6, 5.0)]
    assert active.sum() == pytest.approx(4)
