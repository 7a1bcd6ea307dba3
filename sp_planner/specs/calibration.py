"""Measurements kept in a calibrated hardware profile (`HardwareProfile.calibration`).

`sp-calibrate` fits these from timed collectives and kernels (sp_planner.calibration) and derives
the profile's link and efficiency figures from them; keeping the fits and their sample points lets
a reader see what each figure rests on, and lets a later tool refit them.

Conventions follow NVIDIA/nccl-tests doc/PERFORMANCE.md: `size_bytes` is the nccl-tests "size" S
(all-reduce: the buffer; all-gather: the gathered output; reduce-scatter: the input before
scattering; all-to-all: one rank's whole send buffer; p2p: the bytes one rank sends), and
time = alpha + S / algbw, busbw = algbw x the collective's bus factor.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_serializer, model_validator

from sp_planner.specs.base import FrozenModel, whole_bytes

Collective = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]
COLLECTIVES: tuple[Collective, ...] = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")
# "intra": every member of the group on one node; "inter": the group spans nodes.
LinkTier = Literal["intra", "inter"]

Seconds = Field(gt=0, allow_inf_nan=False)
Rate = Field(gt=0, allow_inf_nan=False)


class TimedPoint(FrozenModel):
    """One message size and its time (the slowest member rank's mean over the timed iterations)."""

    size_bytes: int = Field(gt=0)
    time_s: float = Seconds


class CollectiveFit(FrozenModel):
    """Alpha-beta fit of one collective on one group: time_s = alpha_s + size_bytes / beta_bytes_per_s."""

    collective: Collective
    link: LinkTier
    group_size: int = Field(ge=2)
    alpha_s: float = Field(ge=0, allow_inf_nan=False)
    beta_bytes_per_s: float = Rate  # nccl-tests algbw at large messages
    busbw_bytes_per_s: float = Rate  # beta x bus factor: what the profile's efficiencies describe
    points: tuple[TimedPoint, ...] = Field(min_length=2)


class GemmRate(FrozenModel):
    """One (m, k) x (k, n) matmul of a layer and the rate it ran at (2mnk FLOPs)."""

    name: str = Field(min_length=1)
    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    time_s: float = Seconds
    flops_per_s: float = Rate


class AttentionRate(FrozenModel):
    tokens: int = Field(gt=0)
    batch: int = Field(gt=0)
    time_s: float = Seconds
    flops_per_s: float = Rate


class AttentionCurve(FrozenModel):
    """Flash attention on (batch, heads, tokens, head_dim) blocks with query length = key length.

    FLOPs follow the FlashAttention-2 paper (Dao 2023, section 4.1): forward 4*b*h*d*L^2 for a
    full mask, half that for a causal one; backward 2.5x the forward.
    """

    direction: Literal["fwd", "bwd"]
    causal: bool
    heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    points: tuple[AttentionRate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> "AttentionCurve":
        tokens = [p.tokens for p in self.points]
        if tokens != sorted(set(tokens)):
            raise ValueError(f"attention curve tokens must be strictly increasing, got {tokens}")
        return self


class Environment(FrozenModel):
    """Where the measurements ran."""

    device_name: str = Field(min_length=1)  # torch.cuda.get_device_name(), or "cpu"
    backend: Literal["nccl", "gloo"]
    dtype: str = Field(min_length=1)
    torch_version: str
    nccl_version: str | None = None
    world_size: int = Field(gt=0)
    ranks_per_node: int = Field(gt=0)
    devices_per_node: int = Field(gt=0, description="GPUs on the node (ranks per node on CPU)")
    device_memory_bytes: float = Field(gt=0, allow_inf_nan=False)
    # Device memory in use right after NCCL set up, outside torch's allocator (CUDA context and
    # communicator buffers); None on CPU.
    runtime_reserved_bytes: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # The day the measurements ran (ISO), so that a later refit dates the profile by them; None in
    # measurement files written before stop 42.
    measured_on: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")

    @model_validator(mode="after")
    def _nodes_whole(self) -> "Environment":
        # The fit takes world_size / ranks_per_node nodes (calibration.profile): a remainder would
        # be dropped without a word. NCCL runs one rank per GPU, so a node has at least as many.
        if self.world_size % self.ranks_per_node:
            raise ValueError(f"world_size {self.world_size} is not a whole number of nodes of ranks_per_node "
                             f"{self.ranks_per_node}")
        if self.backend == "nccl" and self.ranks_per_node > self.devices_per_node:
            raise ValueError(f"ranks_per_node {self.ranks_per_node} is more than the node's devices_per_node "
                             f"{self.devices_per_node}; NCCL runs one rank per GPU")
        return self

    @field_serializer("device_memory_bytes", "runtime_reserved_bytes", when_used="json")
    def _json_bytes(self, value: float | None) -> int | float | None:
        return None if value is None else whole_bytes(value)


class CalibrationData(FrozenModel):
    """What was measured, where and how; the profile's figures are derived from it."""

    environment: Environment
    collectives: tuple[CollectiveFit, ...] = ()
    gemm: tuple[GemmRate, ...] = ()
    attention: tuple[AttentionCurve, ...] = ()
    copy_bytes_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                           description="device memory copy, read + write bytes")
