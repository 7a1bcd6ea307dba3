"""Hardware profile: one accelerator type, its node and its network, with measured efficiencies.

Bandwidths are bytes/s per GPU per direction; latencies are seconds. Efficiencies are fractions
(0, 1] of the peak they multiply. `sources` maps each field path to where its number comes from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sp_planner.specs.base import FrozenModel
from sp_planner.specs.calibration import CalibrationData

IntraNodeKind = Literal["nvlink", "pcie", "xgmi", "hccs"]
InterNodeKind = Literal["infiniband", "roce", "ethernet"]

# Fields whose numbers every built-in profile must source (checked by tests/catalog).
SOURCED_FIELDS: tuple[str, ...] = (
    "peak_bf16_flops",
    "hbm_bytes",
    "hbm_bandwidth_bytes_per_s",
    "gpus_per_node",
    "intra_node",
    "inter_node",
    "efficiency.gemm",
    "efficiency.attention_fwd",
    "efficiency.attention_bwd",
    "efficiency.intra_node",
    "efficiency.inter_node",
    "memory_reserve_bytes",
)

Fraction = Field(gt=0.0, le=1.0)


class LinkSpec(FrozenModel):
    kind: IntraNodeKind | InterNodeKind
    bandwidth_bytes_per_s: float = Field(gt=0, description="per GPU, per direction, line rate")
    latency_s: float = Field(ge=0)


class GroupEfficiency(FrozenModel):
    """All-to-all efficiency measured over a group of `group_size` ranks."""

    group_size: int = Field(gt=1)
    efficiency: float = Fraction


class CollectiveEfficiency(FrozenModel):
    """Achieved bus bandwidth at large messages (nccl-tests busbw) divided by the link's line rate."""

    all_reduce: float = Fraction
    all_gather: float = Fraction
    reduce_scatter: float = Fraction
    all_to_all: float = Fraction
    p2p: float = Fraction
    # Optional: all-to-all efficiency against group size, for links whose all-to-all slows as it
    # spans more GPUs (PCIe trees across CPU sockets). When given, an all-to-all over g ranks uses
    # the value interpolated in log2(g), clamped at the ends, instead of `all_to_all`.
    all_to_all_by_group_size: tuple[GroupEfficiency, ...] = ()

    @field_validator("all_to_all_by_group_size")
    @classmethod
    def _increasing_sizes(cls, points: tuple[GroupEfficiency, ...]) -> tuple[GroupEfficiency, ...]:
        sizes = [p.group_size for p in points]
        if sizes != sorted(set(sizes)):
            raise ValueError(f"all_to_all_by_group_size needs strictly increasing group sizes, got {sizes}")
        return points


class CurvePoint(FrozenModel):
    """Kernel efficiency measured at one sequence-block length (tokens per query/key block)."""

    tokens: int = Field(gt=0)
    efficiency: float = Fraction


def _check_curve(points: tuple[CurvePoint, ...]) -> tuple[CurvePoint, ...]:
    tokens = [p.tokens for p in points]
    if not points:
        raise ValueError("an efficiency curve needs at least one point")
    if tokens != sorted(set(tokens)):
        raise ValueError(f"curve points must have strictly increasing tokens, got {tokens}")
    return points


class EfficiencySpec(FrozenModel):
    gemm: float = Fraction
    # FP8 (E4M3) GEMM throughput / peak_fp8_flops, from a microbenchmark (None: FP8 not modelled);
    # MXFP8 likewise (Blackwell's block-scaled FP8; None: the chip has none).
    gemm_fp8: float | None = Field(default=None, gt=0.0, le=1.0)
    gemm_mxfp8: float | None = Field(default=None, gt=0.0, le=1.0)
    # Flash-attention efficiency (non-causal FLOPs / time / peak) against block length.
    attention_fwd: tuple[CurvePoint, ...]
    attention_bwd: tuple[CurvePoint, ...]
    intra_node: CollectiveEfficiency
    inter_node: CollectiveEfficiency

    _curves = field_validator("attention_fwd", "attention_bwd")(_check_curve)


class FabricSpec(FrozenModel):
    """How nodes are wired; used by the simulator's cluster graph."""

    topology: Literal["rail_optimized", "fat_tree"] = "rail_optimized"
    nodes_per_pod: int = Field(default=32, gt=0)
    oversubscription: float = Field(default=1.0, ge=1.0)


class HardwareProfile(FrozenModel):
    name: str = Field(min_length=1)
    description: str = ""
    peak_bf16_flops: float = Field(gt=0, description="dense bf16 tensor-core peak")
    peak_fp8_flops: float | None = Field(default=None, gt=0, description="dense fp8 tensor-core peak")
    hbm_bytes: float = Field(gt=0)
    hbm_bandwidth_bytes_per_s: float = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    intra_node: LinkSpec
    inter_node: LinkSpec
    efficiency: EfficiencySpec
    # CUDA context, NCCL buffers and allocator fragmentation held back from HBM.
    memory_reserve_bytes: float = Field(ge=0)
    fabric: FabricSpec = FabricSpec()
    measured_on: str | None = Field(default=None, description="date of calibration, if measured")
    sources: dict[str, str] = Field(default_factory=dict)
    # Raw fits and curves behind a calibrated profile's figures (sp-calibrate); None for spec sheets.
    calibration: CalibrationData | None = None

    @property
    def precisions(self) -> tuple[str, ...]:
        """GEMM precisions this profile can model: bf16, plus fp8 / mxfp8 where their peak and
        microbenchmarked efficiency are given."""
        found = ["bf16"]
        if self.peak_fp8_flops is not None and self.efficiency.gemm_fp8 is not None:
            found.append("fp8")
        if self.peak_fp8_flops is not None and self.efficiency.gemm_mxfp8 is not None:
            found.append("mxfp8")
        return tuple(found)

    @field_validator("intra_node")
    @classmethod
    def _intra_kind(cls, link: LinkSpec) -> LinkSpec:
        if link.kind not in ("nvlink", "pcie", "xgmi", "hccs"):
            raise ValueError(f"intra_node.kind {link.kind!r} is not an intra-node link")
        return link

    @field_validator("inter_node")
    @classmethod
    def _inter_kind(cls, link: LinkSpec) -> LinkSpec:
        if link.kind not in ("infiniband", "roce", "ethernet"):
            raise ValueError(f"inter_node.kind {link.kind!r} is not an inter-node link")
        return link
