"""Small hand-checkable specs: round numbers, no latency, flat efficiencies."""

import pytest

from sp_planner.specs import HardwareProfile, ModelSpec
from sp_planner.units import GIB


def flat_curve(efficiency: float) -> list[dict]:
    return [{"tokens": 512, "efficiency": efficiency}, {"tokens": 16384, "efficiency": efficiency}]


def toy_hardware(gpus_per_node: int = 4, **overrides) -> HardwareProfile:
    collective = dict(all_reduce=1.0, all_gather=1.0, reduce_scatter=1.0, all_to_all=1.0, p2p=1.0)
    spec = dict(
        name="toy",
        peak_bf16_flops=100e12,
        hbm_bytes=80 * GIB,
        hbm_bandwidth_bytes_per_s=1e12,
        gpus_per_node=gpus_per_node,
        intra_node=dict(kind="nvlink", bandwidth_bytes_per_s=100e9, latency_s=0.0),
        inter_node=dict(kind="infiniband", bandwidth_bytes_per_s=10e9, latency_s=0.0),
        efficiency=dict(gemm=0.5, attention_fwd=flat_curve(0.5), attention_bwd=flat_curve(0.4),
                        intra_node=collective, inter_node=collective),
        memory_reserve_bytes=1e9,
    )
    spec.update(overrides)
    return HardwareProfile(**spec)


@pytest.fixture
def hardware() -> HardwareProfile:
    return toy_hardware()


@pytest.fixture
def toy_model() -> ModelSpec:
    """h 64, ffn 128, 2 layers, 4 heads of 16, 2 KV heads (GQA), vocab 100, SwiGLU."""
    return ModelSpec(name="toy", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=16, vocab_size=100)
