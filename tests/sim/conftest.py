"""Small hand-checkable hardware for the simulator tests: every efficiency 1, round bandwidths."""

from __future__ import annotations

import pytest

from sp_planner.specs.hardware import (
    CollectiveEfficiency,
    CurvePoint,
    EfficiencySpec,
    FabricSpec,
    HardwareProfile,
    InterNodeLink,
    IntraNodeLink,
)

GB = 1e9


def toy_hardware(*, gpus_per_node: int = 8, intra_kind: str = "nvlink", intra_bw: float = 400 * GB,
                 nic_bw: float = 50 * GB, topology: str = "rail_optimized", nodes_per_pod: int = 32,
                 oversubscription: float = 1.0, latency_s: float = 0.0) -> HardwareProfile:
    ones = CollectiveEfficiency(all_reduce=1, all_gather=1, reduce_scatter=1, all_to_all=1, p2p=1)
    flat = (CurvePoint(tokens=1, efficiency=1.0),)
    return HardwareProfile(
        name="toy", peak_bf16_flops=1e15, hbm_bytes=80 * GB, hbm_bandwidth_bytes_per_s=3000 * GB,
        gpus_per_node=gpus_per_node,
        intra_node=IntraNodeLink(kind=intra_kind, bandwidth_bytes_per_s=intra_bw, latency_s=latency_s),
        inter_node=InterNodeLink(kind="infiniband", bandwidth_bytes_per_s=nic_bw, latency_s=latency_s),
        efficiency=EfficiencySpec(gemm=1, attention_fwd=flat, attention_bwd=flat, intra_node=ones, inter_node=ones),
        memory_reserve_bytes=0,
        fabric=FabricSpec(topology=topology, nodes_per_pod=nodes_per_pod, oversubscription=oversubscription),
    )


@pytest.fixture
def toy():
    return toy_hardware
