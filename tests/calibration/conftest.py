"""Synthetic measurements of an H100-like 2 x 8 cluster whose times follow exact alpha-beta laws,
so every derived figure can be checked by hand."""

from __future__ import annotations

import pytest

from sp_planner.calibration.fit import attention_flops
from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.calibration.measurements import (
    AttentionSample,
    CollectiveSample,
    CopySample,
    GemmSample,
    Measurements,
)
from sp_planner.specs.calibration import COLLECTIVES, Environment

H100_NAME = "NVIDIA H100 80GB HBM3"
SIZES = (1 << 16, 1 << 20, 1 << 24, 1 << 28)
# (link, group size) -> (alpha_s, busbw bytes/s); the 2-rank inter group is one rank per node.
GROUPS = {("intra", 2): (8e-6, 300e9), ("intra", 8): (20e-6, 360e9),
          ("inter", 2): (30e-6, 45e9), ("inter", 16): (60e-6, 100e9)}
GEMM_RATE = 700e12
ATTENTION_RATES = {("fwd", False): {1024: 500e12, 8192: 600e12}, ("bwd", False): {1024: 400e12, 8192: 480e12},
                   ("fwd", True): {1024: 350e12, 8192: 520e12}, ("bwd", True): {1024: 300e12, 8192: 420e12}}
COPY_RATE = 2.8e12


def environment(**overrides) -> Environment:
    spec = dict(device_name=H100_NAME, backend="nccl", dtype="bfloat16", torch_version="2.13.0",
                nccl_version="2.27.3", world_size=16, ranks_per_node=8, devices_per_node=8,
                device_memory_bytes=85e9, runtime_reserved_bytes=1.5e9)
    return Environment(**(spec | overrides))


def synthetic_measurements(*, skip: tuple[str, ...] = (), groups=GROUPS, **env) -> Measurements:
    """Every rank of a group reports the law's time, except rank 1, which is 10% slower (the fit
    must take the slowest member). `skip` drops "gemm", "attention_bwd", "collectives", "copy"."""
    collectives = []
    for (link, n), (alpha, busbw) in groups.items():
        for collective in COLLECTIVES:
            algbw = busbw / bus_factor(collective, n)
            for size in SIZES:
                for rank, slow in ((0, 1.0), (1, 1.1)):
                    collectives.append(CollectiveSample(collective=collective, link=link, group_size=n, rank=rank,
                                                        size_bytes=size, time_s=slow * (alpha + size / algbw)))
    gemm = [GemmSample(name="mlp_up", m=4096, n=28672, k=4096, rank=r, time_s=2 * 4096 * 28672 * 4096 / GEMM_RATE)
            for r in (0, 1)]
    attention = []
    for (direction, causal), rates in ATTENTION_RATES.items():
        if direction == "bwd" and "attention_bwd" in skip:
            continue
        for tokens, rate in rates.items():
            batch = max(1, 16384 // tokens)
            flops = attention_flops(batch=batch, heads=16, tokens=tokens, head_dim=128, causal=causal,
                                    backward=direction == "bwd")
            attention.append(AttentionSample(direction=direction, causal=causal, batch=batch, heads=16,
                                             tokens=tokens, head_dim=128, rank=0, time_s=flops / rate))
    copy = [CopySample(size_bytes=1 << 30, rank=0, time_s=2 * (1 << 30) / COPY_RATE)]
    return Measurements(
        environment=environment(**env),
        collectives=() if "collectives" in skip else tuple(collectives),
        gemm=() if "gemm" in skip else tuple(gemm), attention=tuple(attention),
        memory_copy=() if "copy" in skip else tuple(copy),
    )


@pytest.fixture
def make_measurements():
    return synthetic_measurements
