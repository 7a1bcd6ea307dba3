"""cost.runtime_memory: the runtime's own memory, part by part, against its sources."""

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.runtime_memory import p2p_channels_per_peer, runtime_bytes
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates

MIB = 2**20
CHANNEL = 10_485_760 + 2_097_152  # NCCL's buffers per channel and peer (nccl#1685)


def _bytes(hardware, domain_gpus=8, **plan) -> float:
    return float(runtime_bytes(hardware, Candidates.of_plan(ParallelPlan(**plan)), domain_gpus=domain_gpus)[0])


def test_h100_usp_plan_by_hand():
    h100 = load_hardware("h100-sxm")
    # tp 2 (a pair: 544 MB), ulysses 4 and ring 2 (688 MB, 544 MB), dp 2 x cp 8 = 16 (688 MB);
    # the all-to-all with 3 peers inside the node, 32 channels of 12 MiB each (nccl#1685); the ring's
    # one neighbour 8 ranks away, on the next node: 4 channels (NDR 50 GB/s / 14, NCCL's network
    # rule); context 287,047,680 B (PyTorch PR #86509); PyTorch + TE cuBLAS workspaces on sm90,
    # 64 MiB + 1 KiB; 3% of 80 GiB fragmentation.
    expected = (287_047_680 + 64 * 2**20 + 1024 + 544e6 + 688e6 + 544e6 + 688e6 + 3 * 384 * 2**20
                + 48 * 2**20 + h100.memory_reserve_bytes)
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


def test_allgather_cp_uses_the_ring_communicator_and_opens_no_peer_connections():
    h100 = load_hardware("h100-sxm")
    # The p2p ring of 4 inside a node sends to two neighbours, 32 channels each; all-gather CP
    # gathers over the same communicator and connects no peer.
    p2p = _bytes(h100, ring=4, dp=2)
    assert p2p - _bytes(h100, ring=4, dp=2, cp_comm="allgather") == pytest.approx(2 * 32 * CHANNEL)
    # A ring of 2 has one neighbour.
    assert _bytes(h100, ring=2, dp=4) - _bytes(h100, ring=2, dp=4, cp_comm="allgather") == pytest.approx(
        32 * CHANNEL)


def test_p2p_channels_follow_nccl_nvlink_lanes_inside_a_node():
    # 2 per NVLink lane, rounded up to a power of 2, at most 32: H100 18 lanes (450 GB/s / 25)
    # -> 36 -> 32, the measured figure; A100 12 lanes -> 24 -> 32; A800 8 lanes (200 GB/s) -> 16;
    # B200 18 NVLink5 lanes (900 / 50) -> 32.
    for name, channels in (("h100-sxm", 32), ("a100-80gb", 32), ("a800", 16), ("h800", 16), ("b200", 32)):
        assert p2p_channels_per_peer(load_hardware(name), [8], 1, 8).tolist() == [channels], name
    # PCIe peers: 2 (ncclTopoGetNchannels).
    assert p2p_channels_per_peer(load_hardware("l40s"), [4], 1, 8).tolist() == [2]
    a800 = load_hardware("a800")
    # Ulysses 8 on one A800 node against dp 8: its own communicator (688 MB) and 7 peers x 16 channels.
    assert _bytes(a800, ulysses=8) - _bytes(a800, dp=8) == pytest.approx(688e6 + 7 * 16 * CHANNEL)


def test_p2p_channels_across_nodes_take_the_network_count_for_every_peer():
    h100, a800 = load_hardware("h100-sxm"), load_hardware("a800")
    # Ulysses 16 over two nodes: the network peers set every peer's channels, NIC GB/s / 14
    # rounded up to a power of 2: NDR 50 GB/s -> 4, HDR 25 -> 2.
    assert p2p_channels_per_peer(h100, [16], 1, 8).tolist() == [4]
    assert p2p_channels_per_peer(a800, [16], 1, 8).tolist() == [2]
    assert _bytes(a800, ulysses=16) - _bytes(a800, dp=16) == pytest.approx(688e6 + 15 * 2 * CHANNEL)
    # Halved while channels x ceil(ranks / 8) exceeds 32: 64 ranks keep 4 (4 x 8), 128 take 2,
    # 256 take 1.
    assert p2p_channels_per_peer(h100, [64, 128, 256], 1, 8).tolist() == [4, 2, 1]


def test_a_rack_scale_nvlink_domain_keeps_nvlink_channels_across_trays():
    gb200 = load_hardware("gb200-nvl72")  # 4 GPUs a tray, 72 on NVLink
    # 8 ranks over two trays: NVLink inside the 72-GPU domain, the network on 4-GPU hosts.
    assert p2p_channels_per_peer(gb200, [8], 1, 72).tolist() == [32]
    assert p2p_channels_per_peer(gb200, [8], 1, 4).tolist() == [4]


def test_expert_parallelism_adds_the_expert_grid_groups_and_the_dispatch_peers():
    h100 = load_hardware("h100-sxm")
    # dp 16 with ep 1 and etp 1: no expert groups (Megatron's expert grid only matters with ep/etp).
    dense = _bytes(h100, dp=16)
    # ep 8 (688 MB), etp 1 (none), edp 16 / 8 = 2 (a pair, 544 MB); the ep all-to-all adds 7 peers
    # of 384 MiB each (nccl#1685), as the Ulysses all-to-all does.
    assert _bytes(h100, dp=16, ep=8) - dense == pytest.approx(688e6 + 544e6 + 7 * 384 * 2**20)
    # tp 2 with etp 2 and ep 1: etp (a pair) and edp 8 (688 MB), no all-to-all peers.
    tp2 = _bytes(h100, tp=2, dp=8)
    assert _bytes(h100, tp=2, dp=8, etp=2) - tp2 == pytest.approx(544e6 + 688e6)


def test_hybridep_dispatch_opens_no_nccl_peer_connections():
    # HybridEP moves tokens with its own kernels: the expert grid's communicators stay, the 7
    # all-to-all peers' 384 MiB each do not.
    h100 = load_hardware("h100-sxm")
    c = Candidates.of_plan(ParallelPlan(dp=16, ep=8))
    nccl = float(runtime_bytes(h100, c, domain_gpus=8)[0])
    hybridep = float(runtime_bytes(h100, c, domain_gpus=8, nccl_dispatch=False)[0])
    assert nccl - hybridep == pytest.approx(7 * 384 * 2**20)


def test_hsdp_splits_the_expert_data_parallel_group_too():
    h100 = load_hardware("h100-sxm")
    # dp 16, ep 4: edp 4 (688 MB); 2 replicas put the experts' traffic on a shard pair and a
    # replicate pair (544 MB each) instead, beside the dense groups' change (a shard group of 8,
    # 688 MB, as dp's, and a replicate pair): 544 + 2 x 544 - 688 MB more.
    plain = _bytes(h100, dp=16, ep=4, zero=1)
    assert _bytes(h100, dp=16, ep=4, zero=1, dp_replicate=2) - plain == pytest.approx(544e6 + 2 * 544e6 - 688e6)
