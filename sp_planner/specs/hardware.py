"""Hardware profile: one accelerator type, its node and its network, with measured efficiencies.

Bandwidths are bytes/s per GPU per direction; latencies are seconds. Efficiencies are fractions
(0, 1] of the peak they multiply. `sources` maps each field path to where its number comes from.
The range each figure must lie in: specs.hardware_limits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from sp_planner.specs.base import whole_bytes
from sp_planner.specs.calibration import CalibrationData
from sp_planner.specs.hardware_limits import (
    MAX_BANDWIDTH_BYTES_PER_S,
    MAX_FLOPS,
    MAX_GPUS_PER_NODE,
    MAX_LATENCY_S,
    MAX_MEMORY_BYTES,
    MIN_BANDWIDTH_BYTES_PER_S,
    MIN_FLOPS,
    MIN_MEMORY_BYTES,
    FiniteModel,
    Fraction,
)

IntraNodeKind = Literal["nvlink", "pcie", "xgmi", "hccs"]
InterNodeKind = Literal["infiniband", "roce", "ethernet"]
FabricTopology = Literal["rail_optimized", "fat_tree"]

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
    "efficiency.memory_bound",
    "memory_reserve_bytes",
)

# EfficiencySpec.memory_bound of a profile that does not state it: an assumption (STREAM-class
# copies reach 80-90% of the datasheet bandwidth on A100/H100, NVIDIA's BabelStream figures; the low
# end), the figure every profile used before the built-ins took measured norm-kernel rates.
MEMORY_BOUND_DEFAULT = 0.8


class LinkSpec(FiniteModel):
    """A link tier: its kind, line rate and latency. A profile holds one of each tier, whose type
    names the kinds it allows (a union of both tiers' kinds made a bad kind two errors, one per
    tier, of which one was beside the point)."""

    kind: str
    bandwidth_bytes_per_s: float = Field(ge=MIN_BANDWIDTH_BYTES_PER_S, le=MAX_BANDWIDTH_BYTES_PER_S,
                                         description="per GPU, per direction, line rate")
    latency_s: float = Field(ge=0, le=MAX_LATENCY_S)


class IntraNodeLink(LinkSpec):
    kind: IntraNodeKind


class InterNodeLink(LinkSpec):
    kind: InterNodeKind


class GroupEfficiency(FiniteModel):
    """All-to-all efficiency measured over a group of `group_size` ranks."""

    group_size: int = Field(gt=1)
    efficiency: float = Fraction


class CollectiveEfficiency(FiniteModel):
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
    # Optional: the all-to-all efficiency of device-initiated expert-parallel kernels (DeepEP's,
    # HybridEP's: RDMA written by the GPU, tokens forwarded over NVLink) where it differs from
    # NCCL's all-to-all (`all_to_all`); None: `all_to_all`. Only the token dispatch of a
    # non-NCCL dispatcher takes it (cost.links.all_to_all_time_s, nccl=False).
    ep_kernel_all_to_all: float | None = Field(default=None, gt=0.0, le=1.0)
    # Optional: the links each GPU has in a full mesh without a switch (MI300X's xGMI, Ascend's
    # HCCS: 7 in an 8-GPU node), on which the collective figures above were measured over the
    # whole node. A collective over g GPUs of the node drives g - 1 of them, so it takes
    # (g - 1) / mesh_links of those figures (cost.links.collective_efficiency); p2p is one link's
    # already. None: a switch or bus, where any group reaches the port's rate.
    mesh_links: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("all_to_all_by_group_size")
    @classmethod
    def _increasing_sizes(cls, points: tuple[GroupEfficiency, ...]) -> tuple[GroupEfficiency, ...]:
        sizes = [p.group_size for p in points]
        if sizes != sorted(set(sizes)):
            raise ValueError(f"all_to_all_by_group_size needs strictly increasing group sizes, got {sizes}")
        return points


class CurvePoint(FiniteModel):
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


class EfficiencySpec(FiniteModel):
    gemm: float = Fraction
    # FP8 (E4M3) GEMM throughput / peak_fp8_flops, from a microbenchmark (None: FP8 not modelled);
    # MXFP8 likewise (Blackwell's block-scaled FP8; None: the chip has none).
    gemm_fp8: float | None = Field(default=None, gt=0.0, le=1.0)
    gemm_mxfp8: float | None = Field(default=None, gt=0.0, le=1.0)
    # The share of their short-run rate the profile's short-run compute figures (efficiency.gemm,
    # the attention curves) sustain in training, where the chip does not hold its short-run clocks
    # (cost.kernels.sustained_fraction; gemm_fp8 and gemm_mxfp8 are given as sustained rates). 1:
    # the figures stand as they are.
    sustained_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    # Flash-attention efficiency (non-causal FLOPs / time / peak) against block length.
    attention_fwd: tuple[CurvePoint, ...]
    attention_bwd: tuple[CurvePoint, ...]
    intra_node: CollectiveEfficiency
    inter_node: CollectiveEfficiency
    # Fraction of hbm_bandwidth_bytes_per_s that memory-bound kernels sustain (elementwise ops, FP8
    # casts, the loss, ring merges, unfused attention: cost.kernels.memory_pass_time_s), from a
    # normalization-kernel benchmark at LLM shapes where one is published; MEMORY_BOUND_DEFAULT
    # where a profile does not state it.
    memory_bound: float = Field(default=MEMORY_BOUND_DEFAULT, gt=0.0, le=1.0)
    # Core attention unfused, as Megatron-LM ran it before FlashAttention and Transformer Engine runs
    # it where no fused backend trains the head dim (cost.kernels unfused_attention_time_s). Only
    # cost.attention_kernels.with_attention_kernel sets it (by model_copy, which skips validation): no
    # profile may, since no ring can run it; a plan file records it as attention_kernel "unfused".
    attention_unfused: bool = False
    # Causal / non-causal throughput of the same kernel by block length (causal FLOPs counted as
    # half the square), forward and backward. None: the ratio of the profile's kernel
    # (cost.attention_kernels.causal_ratio); cost.attention_kernels.with_attention_kernel sets it.
    attention_causal_fwd: tuple[CurvePoint, ...] | None = None
    attention_causal_bwd: tuple[CurvePoint, ...] | None = None
    # How the attention kernel rounds the head dim up to the tile it computes (cost.attention_kernels
    # padded_head_dim): "fa2" (multiples of 32 to 192, then 256), "fa3" (64/96/128/192/256), "pow2"
    # (Triton FlashAttention), "none" (cuDNN, NPU). None: the rule of the profile's own kernel;
    # cost.attention_kernels.with_attention_kernel sets it.
    attention_head_dim_rounding: Literal["fa2", "fa3", "pow2", "none"] | None = None
    # The attention curves are FP8 attention's (cost.fp8_attention.with_fp8_attention sets it, with
    # the curves scaled; a plan file keeps both, so the scaling is applied once).
    attention_fp8: bool = False

    _curves = field_validator("attention_fwd", "attention_bwd")(_check_curve)

    @field_validator("attention_causal_fwd", "attention_causal_bwd")
    @classmethod
    def _check_ratio(cls, points: tuple[CurvePoint, ...] | None) -> tuple[CurvePoint, ...] | None:
        return None if points is None else _check_curve(points)

    @field_validator("attention_unfused")
    @classmethod
    def _unfused_is_not_a_profile_setting(cls, value: bool) -> bool:
        if value:
            raise ValueError("is not a profile setting (sp-validate sets it for runs from before "
                             "FlashAttention); remove it")
        return value


class FabricSpec(FiniteModel):
    """How nodes are wired; used by the simulator's cluster graph."""

    topology: FabricTopology = "rail_optimized"
    nodes_per_pod: int = Field(default=32, gt=0, le=2**20)
    oversubscription: float = Field(default=1.0, ge=1.0, le=1024.0)


class HardwareProfile(FiniteModel):
    name: str = Field(min_length=1)
    # The built-in profile whose GPU this is (a renamed copy, a calibrated cluster): the cost
    # model's tables keyed by GPU read it instead of `name` (cost.families.profile_key). None: the
    # profile's own name is the key (built-in profiles leave it unset).
    base_profile: str | None = Field(default=None, min_length=1, description=(
        "the built-in profile whose GPU this is: its kernel benchmarks, best published MFU, GEMM and "
        "host tables apply (default: the profile's own name, where that names a built-in profile)"))
    description: str = ""
    peak_bf16_flops: float = Field(ge=MIN_FLOPS, le=MAX_FLOPS, description="dense bf16 tensor-core peak")
    peak_fp8_flops: float | None = Field(default=None, ge=MIN_FLOPS, le=MAX_FLOPS,
                                         description="dense fp8 tensor-core peak")
    hbm_bytes: float = Field(ge=MIN_MEMORY_BYTES, le=MAX_MEMORY_BYTES)
    hbm_bandwidth_bytes_per_s: float = Field(ge=MIN_BANDWIDTH_BYTES_PER_S, le=MAX_BANDWIDTH_BYTES_PER_S)
    gpus_per_node: int = Field(gt=0, le=MAX_GPUS_PER_NODE)
    # GPUs sharing the intra-node link when that fast domain spans several hosts (GB200 NVL72: 72
    # GPUs on NVLink, 4 per host). None: the domain is the host. The cost model's "intra-node"
    # means inside this domain; launchers (torchrun, SLURM) still count gpus_per_node per host.
    nvlink_domain_gpus: int | None = Field(default=None, gt=0, le=MAX_GPUS_PER_NODE)
    intra_node: IntraNodeLink
    inter_node: InterNodeLink
    efficiency: EfficiencySpec
    # Measured CPU-GPU copy rate per direction (copy engines, pinned host memory): what activation
    # offloading moves at (cost.offload). None: not known, and offloading cannot be timed.
    host_link_bytes_per_s: float | None = Field(default=None, ge=MIN_BANDWIDTH_BYTES_PER_S,
                                                le=MAX_BANDWIDTH_BYTES_PER_S)
    # CUDA context, NCCL buffers and allocator fragmentation held back from HBM.
    memory_reserve_bytes: float = Field(ge=0, le=MAX_MEMORY_BYTES)
    fabric: FabricSpec = FabricSpec()
    measured_on: str | None = Field(default=None, description="date of calibration, if measured")
    sources: dict[str, str] = Field(default_factory=dict)
    # Raw fits and curves behind a calibrated profile's figures (sp-calibrate); None for spec sheets.
    calibration: CalibrationData | None = None

    @field_serializer("hbm_bytes", "memory_reserve_bytes", when_used="json")
    def _json_bytes(self, value: float) -> int | float:
        return whole_bytes(value)

    @field_validator("base_profile")
    @classmethod
    def _names_a_builtin(cls, value: str | None) -> str | None:
        """The built-in profile's own spelling (forgiving as --hardware is: case, separators, aliases)."""
        if value is None:
            return None
        # Imported here: the catalog validates its own profiles with this class (they set no base_profile).
        from sp_planner.catalog.hardware import builtin_hardware_names, builtin_profile_name

        name = builtin_profile_name(value)
        if name is None:
            raise ValueError(f"{value!r} names no built-in hardware profile; one of "
                             f"{', '.join(builtin_hardware_names())}")
        return name

    @model_validator(mode="after")
    def _reserve_below_memory(self) -> "HardwareProfile":
        if self.memory_reserve_bytes >= self.hbm_bytes:
            raise ValueError(f"memory_reserve_bytes {self.memory_reserve_bytes:.4g} must be below hbm_bytes "
                             f"{self.hbm_bytes:.4g} (it is held back from the memory)")
        return self

    @model_validator(mode="after")
    def _domain_of_hosts(self) -> "HardwareProfile":
        domain = self.nvlink_domain_gpus
        if domain is not None and domain % self.gpus_per_node != 0:
            raise ValueError(f"nvlink_domain_gpus {domain} must be a multiple of gpus_per_node {self.gpus_per_node}")
        return self

    def link_domain_gpus(self, gpus_per_node: int, world: int | None = None) -> int:
        """The fast domain for a cluster of `gpus_per_node`-GPU hosts (a caller may override the
        profile's host size; a multi-host domain is kept only for the profile's own host size).
        Given the job's `world`, a multi-host domain is the share of one the job uses, every domain
        it touches filled alike: the world when it fits in one, else the most hosts' GPUs that
        divide the world and fit a domain (256 GPUs on NVL72 racks: 4 racks of 64), so that the
        layout's groups never straddle a domain they could fit in."""
        if self.nvlink_domain_gpus is None or gpus_per_node != self.gpus_per_node:
            return gpus_per_node
        domain = self.nvlink_domain_gpus
        if world is None:
            return domain
        if world <= domain:
            return world
        return max(d for d in range(gpus_per_node, domain + 1, gpus_per_node) if world % d == 0)

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

    @property
    def fp8_gemm_any_layout(self) -> bool:
        """FP8 GEMMs take either operand layout, so Transformer Engine keeps no FP8 transpose
        (TE v2.9 utils.py is_non_tn_fp8_gemm_supported: compute capability 10.x-11.x or 13+;
        quantizer.cpp: with_transpose = columnwise_usage && !nvte_is_non_tn_fp8_gemm_supported()).
        Read from the profile as the chips with MXFP8, which are those (Blackwell, SM 10.x);
        Hopper and Ada FP8 GEMMs are TN only."""
        return self.efficiency.gemm_mxfp8 is not None
