"""cost.runtime_memory: the runtime's own memory, part by part, against its sources."""

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.runtime_memory import runtime_bytes
from sp_planner.plan import ParallelPlan
from sp_planner.space import Candidates


def _bytes(hardware, **plan) -> float:
    return float(runtime_bytes(hardware, Candidates.of_plan(ParallelPlan(**plan)))[0])


def test_h100_usp_plan_by_hand():
    h100 = load_hardware("h100-sxm")
    # tp 2 (a pair: 544 MB), ulysses 4 and ring 2 (688 MB, 544 MB), dp 2 x cp 8 = 16 (688 MB);
    # the all-to-all with 3 peers, 384 MiB each (nccl#1685); context 287,047,680 B (PyTorch PR
    # #86509); PyTorch + TE cuBLAS workspaces on sm90, 64 MiB + 1 KiB; 3% of 80 GiB fragmentation.
    expected = (287_047_680 + 64 * 2**20 + 1024 + 544e6 + 688e6 + 544e6 + 688e6 + 3 * 384 * 2**20
                + h100.memory_reserve_bytes)
    assert _bytes(h100, tp=2, ulysses=4, ring=2, dp=2) == pytest.approx(expected)


def test_ampere_workspaces_are_smaller_and_one_gpu_has_no_communicator():
    a100 = load_hardware("a100-80gb")
    assert _bytes(a100, dp=1) == pytest.approx(287_047_680 + 8_519_680 + 4 * 2**20 + a100.memory_reserve_bytes)


def test_each_axis_adds_its_communicator():
    h100 = load_hardware("h100-sxm")
    base = _bytes(h100, tp=8, dp=1)
    assert _bytes(h100, tp=8, pp=2, dp=1) - base == pytest.approx(544e6)
    assert _bytes(h100, tp=8, pp=4, dp=1) - base == pytest.approx(688e6)


def test_hsdp_shard_and_replicate_groups_replace_the_dp_cp_group():
    h100 = load_hardware("h100-sxm")
    # dp 8, ZeRO-3: one dp group of 8 (688 MB); HSDP with 2 replicas: a shard group of 4 (688 MB)
    # and a replicate pair (544 MB) instead.
    plain = _bytes(h100, tp=2, dp=8, zero=3)
    assert _bytes(h100, tp=2, dp=8, zero=3, dp_replicate=2) - plain == pytest.approx(544e6)
    # 4 replicas of 2: a pair shard group (544 MB) and a replicate group of 4 (688 MB).
    assert _bytes(h100, tp=2, dp=8, zero=3, dp_replicate=4) - plain == pytest.approx(544e6)


def test_allgather_cp_uses_the_ring_communicator():
    h100 = load_hardware("h100-sxm")
    assert _bytes(h100, ring=4, dp=2, cp_comm="allgather") == pytest.approx(_bytes(h100, ring=4, dp=2))
