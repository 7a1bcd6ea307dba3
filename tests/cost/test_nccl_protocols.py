"""cost.nccl_protocols: NCCL's LL / LL128 / Simple ring protocols, by hand from NCCL 2.30.7's
tuner constants (src/graph/tuning.cc) and against published small-message all-reduce times."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.collective_sizes import size_factor
from sp_planner.cost.links import ring_alpha_beta_s, ring_collective_time_s
from sp_planner.cost.nccl_protocols import LL, LL128, SIMPLE, fastest_ring, ring_protocol_latencies_s

H100, L40S, GB200 = load_hardware("h100"), load_hardware("l40s"), load_hardware("gb200-nvl72")
KIB = 1024


def _all_reduce_sent(tensor_bytes, n):
    return 2 * (n - 1) / n * tensor_bytes


def test_tuner_latencies_of_an_eight_gpu_nvlink_all_reduce():
    # 14 NVLink steps: LL 6.6 + 14 x 0.6, LL128 14.0 + 14 x 1.9, Simple 8.4 + 14 x 3.4 (us).
    assert ring_protocol_latencies_s("nvlink", 14, 0) == pytest.approx([15.0e-6, 40.6e-6, 56.0e-6])
    # PCIe: LL 6.6 + 14 x 1.0, LL128 14.0 + 14 x 2.5, Simple 8.4 + 14 x 5.7.
    assert ring_protocol_latencies_s("pci", 14, 0) == pytest.approx([20.6e-6, 49.0e-6, 88.2e-6])
    # 16 ranks on 2 nodes: 28 NVLink steps, each at least the 1 us network post overhead (LL's
    # 0.6 us raised to it), and 2 network steps at the ring's NET row.
    assert ring_protocol_latencies_s("nvlink", 28, 2)[:2] == pytest.approx([(6.6 + 28 + 5.4) * 1e-6,
                                                                          (14.0 + 53.2 + 8.0) * 1e-6])
    # One rank per node (2 nodes): no NVLink step, the tree's NET row (LL 5.0 us).
    assert ring_protocol_latencies_s("nvlink", 0, 2)[LL] == pytest.approx((6.6 + 2 * 5.0) * 1e-6)


def test_a_kilobyte_all_reduce_on_eight_hopper_gpus_is_nccls_ll_time():
    # 1 KiB over 8 H100s: LL, 15.0 us + 1,792 B at Hopper's LL cap of 141 GB/s (below half the
    # profile's 0.82 x 450 GB/s busbw); the Simple ring had charged 14 x 3.4 us = 47.6 us.
    sent = _all_reduce_sent(KIB, 8)
    t = float(ring_collective_time_s(H100, "all_reduce", sent, 8, 1, 8))
    assert t == pytest.approx(15.0e-6 + sent / 141e9, rel=1e-9)
    assert float(ring_alpha_beta_s(H100, "all_reduce", sent, 8, 1, 8)) == pytest.approx(47.6e-6, rel=1e-3)
    # Published: 1 KiB all-reduce on 8 x H20, one Hopper NVSwitch node like the H100's, 16.4 us
    # (deepseek-ai/DeepEP#303; 12.5 us at 4-16 B). The tuner leaves out the host's launch, so it
    # sits below: within 10%.
    assert t == pytest.approx(16.4e-6, rel=0.10)


def test_a_kilobyte_all_reduce_on_four_gb200s_sits_below_the_published_ring_time():
    # Azure ND GB200 v6, nccl-tests all_reduce_perf -g 4 under NCCL_ALGO=Ring (NCCL 2.25.1): 1 KiB at
    # busbw 0.10 GB/s, 1.5 KiB / 0.10 GB/s = 15.4 us (reference B.2). The tuner's LL, 6.6 + 6 x 0.6 =
    # 10.2 us, is a third below it: one process drives the 4 GPUs there (-g 4), launching each
    # GPU's kernel in turn, which the tuner's per-call latency does not count.
    t = float(ring_collective_time_s(GB200, "all_reduce", _all_reduce_sent(KIB, 4), 4, 1, 72))
    assert t == pytest.approx(10.2e-6 + 1536 / 282e9, rel=1e-9)
    assert 0.6 < t / 15.4e-6 < 0.7


def test_large_messages_keep_the_simple_time_to_the_bit():
    # 256 MiB over 8 H100s: Simple wins, and the time is ring_alpha_beta_s x the measured factor.
    for collective, sent in (("all_reduce", _all_reduce_sent(256 * 2**20, 8)), ("all_gather", 7 / 8 * 2**28)):
        tensor = 2**28
        simple = ring_alpha_beta_s(H100, collective, sent, 8, 1, 8) * size_factor(H100, collective, tensor, 8)
        assert ring_collective_time_s(H100, collective, sent, 8, 1, 8) == simple


def test_a_size_a_curve_measured_keeps_the_measurement():
    # 1 MiB all-reduce over 8 H100s: LL's tuner time (15.0 us + 1.84 MB at 141 GB/s = 28.0 us) is
    # below the Simple line, but the XLA table measured 1 MiB (cost.collective_sizes): it stands.
    sent = _all_reduce_sent(2**20, 8)
    simple = float(ring_alpha_beta_s(H100, "all_reduce", sent, 8, 1, 8) * size_factor(H100, "all_reduce", 2**20, 8))
    assert float(ring_collective_time_s(H100, "all_reduce", sent, 8, 1, 8)) == simple
    assert 15.0e-6 + sent / 141e9 < simple
    # Just below it, LL.
    small = _all_reduce_sent(2**20 - 2**10, 8)
    assert float(ring_collective_time_s(H100, "all_reduce", small, 8, 1, 8)) == pytest.approx(
        15.0e-6 + small / 141e9, rel=1e-9)


def test_pcie_nodes_have_no_ll128_and_ll_takes_the_small_calls():
    # L40S (PCIe, sm_89: NCCL's Ampere row, LL cap 87.7 GB/s): 8 KiB all-gather over 8 GPUs, LL's
    # 6.6 + 7 x 1.0 us against Simple's 7 x 5.7 us.
    sent = 7 / 8 * 8 * KIB
    busbw = L40S.intra_node.bandwidth_bytes_per_s * L40S.efficiency.intra_node.all_gather
    t = float(ring_collective_time_s(L40S, "all_gather", sent, 8, 1, 8))
    assert t == pytest.approx(13.6e-6 + max(2 * sent / busbw, sent / 87.7e9), rel=1e-9)
    # LL128 is never picked there, however long the Simple ring's latency.
    pick = fastest_ring(L40S, "all_gather", np.array([1.0]), np.array([1e-3]), np.array([1e8]), 1000, 0)
    assert pick.protocol[0] != LL128


def test_ll128_takes_mid_size_calls_where_the_ring_latency_is_long():
    # 16 H100s on 2 nodes, 64 MiB all-reduce: Simple's 28 x 3.4 + 2 x 14 us = 123.2 us of latency
    # against LL128's 75.2 us; the bytes at 0.92 of the rate cost 8.7% more, less than the 48 us.
    sent = _all_reduce_sent(64 * 2**20, 16)
    simple = float(ring_alpha_beta_s(H100, "all_reduce", sent, 16, 1, 8))
    transfer = simple - 123.2e-6
    t = float(ring_collective_time_s(H100, "all_reduce", sent, 16, 1, 8))
    assert t == pytest.approx(75.2e-6 + transfer / 0.92, rel=1e-9)
    # LL moves at most 39 GB/s across 2 nodes and 20.4 GB/s across more (llMaxBws, non-AMD hosts):
    # 100 kB all-reduced by one rank on each of 2 nodes (2 network steps, the tree's NET row) and of
    # 3 nodes (4 steps), LL against LL128's 14 + 2 x 8.5 us and 14 + 4 x 8.5 us.
    few = fastest_ring(H100, "all_reduce", np.array([1.0]), np.array([1e-9]), np.array([1e5]), 0, 2)
    many = fastest_ring(H100, "all_reduce", np.array([1.0]), np.array([1e-9]), np.array([1e5]), 0, 4)
    assert few.protocol[0] == many.protocol[0] == LL
    assert few.time_s[0] == pytest.approx(6.6e-6 + 2 * 5.0e-6 + 1e5 / 39e9)
    assert many.time_s[0] == pytest.approx(6.6e-6 + 4 * 5.0e-6 + 1e5 / 20.4e9)


@pytest.mark.parametrize("name", ["mi300x", "ascend-910b"])
def test_libraries_other_than_nccl_keep_the_simple_ring(name):
    # RCCL and HCCL have tuners of their own, not read: the profile's ring stands at every size.
    hardware = load_hardware(name)
    sent = _all_reduce_sent(KIB, 8)
    assert ring_collective_time_s(hardware, "all_reduce", sent, 8, 1, 8) == ring_alpha_beta_s(
        hardware, "all_reduce", sent, 8, 1, 8)


def test_calibrated_profiles_keep_their_fit():
    calibrated = H100.model_copy(update={"calibration": object()})
    pick = fastest_ring(calibrated, "all_reduce", np.array([50e-6]), np.array([0.0]), np.array([8.0]), 14, 0)
    assert pick.protocol[0] == SIMPLE and pick.time_s[0] == 50e-6


def test_a_call_that_moves_nothing_or_has_no_peer_costs_its_simple_time():
    pick = fastest_ring(H100, "all_reduce", np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([0.0, 8.0]),
                        np.array([14, 0]), 0)
    assert pick.protocol.tolist() == [SIMPLE, SIMPLE] and pick.time_s.tolist() == [0.0, 0.0]
