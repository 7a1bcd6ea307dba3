"""What sp-calibrate measures: message sizes, process groups, GEMM shapes and attention lengths.

Built by the CLI (torch-free) and handed to every rank as JSON, so all ranks create the same
groups in the same order and time the same things.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sp_planner.catalog import load_model
from sp_planner.executor.config import Device
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.calibration import COLLECTIVES, Collective, LinkTier
from sp_planner.specs.model import ModelSpec
from sp_planner.units import GIB, KIB, MIB


# GPU attention shapes follow the FlashAttention-2/3 benchmarks (Dao 2023, section 4.1): hidden
# 2048 at head_dim 128 (16 heads) and batch x tokens = 16k, so every length does similar work.
GPU_ATTENTION_HEADS, GPU_ATTENTION_BATCH_TOKENS = 16, 16 * 1024
# Token rows of the GEMMs: one 4k micro-batch on a GPU; few enough on a CPU to stay in seconds.
GPU_GEMM_TOKENS, CPU_GEMM_TOKENS = 4096, 128
# Without --model: Llama-3-8B's layer on a GPU (a common long-context base), and a small dense
# layer of the same proportions on a CPU, where the 8B shapes would take minutes per GEMM.
DEFAULT_GPU_MODEL = "Llama-3-8B"
CPU_DEFAULT_SHAPE: dict[str, Any] = dict(hidden=512, q_heads=4, kv_heads=1, head_dim=128, ffn=1792, gated=True)


class GroupSpec(FrozenModel):
    """A process group to time collectives on (global ranks, in ring order)."""

    link: LinkTier
    ranks: tuple[int, ...] = Field(min_length=2)


class GemmShape(FrozenModel):
    name: str = Field(min_length=1)
    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)


class CalibrationSchedule(FrozenModel):
    device: Device
    # bfloat16 on every device: it is what `sp-run --plan` runs (cli/run_cmd.py) and what the profile
    # predicts. A CPU without bf16 instructions emulates it, and the emulated rate is the one the run
    # gets. gloo reduces bf16 on CPU tensors (every collective timed here; tests/calibration).
    dtype: Literal["bfloat16", "float32"]
    world_size: int = Field(gt=0)
    ranks_per_node: int = Field(gt=0)
    collectives: tuple[Collective, ...] = COLLECTIVES
    sizes_bytes: tuple[int, ...]
    groups: tuple[GroupSpec, ...]
    gemm: tuple[GemmShape, ...]
    attention_tokens: tuple[int, ...]
    attention_heads: int = Field(gt=0)
    attention_head_dim: int = Field(gt=0)
    attention_batch_tokens: int = Field(gt=0, description="batch = max(1, this // tokens)")
    copy_sizes_bytes: tuple[int, ...]
    warmup: int = Field(ge=0)
    iters: int = Field(gt=0)

    @model_validator(mode="after")
    def _groups_fit(self) -> "CalibrationSchedule":
        for group in self.groups:
            if max(group.ranks) >= self.world_size:
                raise ValueError(f"group {group.ranks} names a rank outside world size {self.world_size}")
        return self


def message_sizes(device: Device, quick: bool) -> tuple[int, ...]:
    """nccl-tests sizes S: 64 KiB to 1 GiB on GPUs (x2 steps, x8 with --quick); on CPUs (gloo over
    loopback, ~1 GB/s) 64 KiB to 16 MiB, x4 steps, x16 with --quick. The quick CPU run still ends at
    16 MiB (tens of ms): on a busy machine a few ms of scheduling noise swamped 4 MiB, so the
    times need not grow with size and no bandwidth could be fitted."""
    if device == "cuda":
        step = 8 if quick else 2
        sizes = [64 * KIB * step**i for i in range(20) if 64 * KIB * step**i <= GIB]
        return tuple(sorted(set(sizes) | {GIB}))
    step = 16 if quick else 4
    return tuple(64 * KIB * step**i for i in range(10) if 64 * KIB * step**i <= 16 * MIB)


def collective_groups(world_size: int, ranks_per_node: int, quick: bool) -> tuple[GroupSpec, ...]:
    """Groups of the first g ranks of node 0 for g = 2, 4, 8, ... and the node size (only 2 and the
    node size with --quick); across nodes, local rank 0 of every node (NIC bandwidth, one GPU per
    node) and the whole world. One group runs at a time, as nccl-tests does."""
    if world_size % ranks_per_node != 0:
        raise ValueError(f"world size {world_size} is not a multiple of {ranks_per_node} ranks per node")
    node = min(ranks_per_node, world_size)
    sizes = {2, node} if quick else {2**i for i in range(1, 12) if 2**i <= node} | {node}
    groups = [GroupSpec(link="intra", ranks=tuple(range(g))) for g in sorted(sizes) if 2 <= g <= node]
    num_nodes = world_size // ranks_per_node
    if num_nodes > 1:
        groups.append(GroupSpec(link="inter", ranks=tuple(range(0, world_size, ranks_per_node))))
        if ranks_per_node > 1:
            groups.append(GroupSpec(link="inter", ranks=tuple(range(world_size))))
    return tuple(groups)


def layer_gemms(*, hidden: int, q_heads: int, kv_heads: int, head_dim: int, ffn: int, gated: bool,
                tokens: int) -> tuple[GemmShape, ...]:
    """The forward GEMMs of one transformer layer without tensor parallelism (Megatron GPTModel:
    fused QKV, attention output, MLP up (gate and up fused when gated), MLP down)."""
    return (
        GemmShape(name="qkv", m=tokens, k=hidden, n=(q_heads + 2 * kv_heads) * head_dim),
        GemmShape(name="attn_out", m=tokens, k=q_heads * head_dim, n=hidden),
        GemmShape(name="mlp_up", m=tokens, k=hidden, n=ffn * (2 if gated else 1)),
        GemmShape(name="mlp_down", m=tokens, k=ffn, n=hidden),
    )


def model_gemms(model: ModelSpec, tokens: int) -> tuple[GemmShape, ...]:
    """A MoE model's MLP GEMMs use one expert's width (the per-expert GEMM each token passes)."""
    ffn = model.moe.moe_intermediate_size if model.moe is not None else model.intermediate_size
    return layer_gemms(hidden=model.hidden_size, q_heads=model.num_heads, kv_heads=model.num_kv_heads,
                       head_dim=model.head_dim, ffn=ffn, gated=model.mlp != "gelu", tokens=tokens)


def build_schedule(*, device: Device, quick: bool, world_size: int, ranks_per_node: int,
                   model: ModelSpec | None = None) -> CalibrationSchedule:
    gpu = device == "cuda"
    if model is None and gpu:
        model = load_model(DEFAULT_GPU_MODEL)
    tokens = GPU_GEMM_TOKENS if gpu else CPU_GEMM_TOKENS
    gemm = model_gemms(model, tokens) if model is not None else layer_gemms(**CPU_DEFAULT_SHAPE, tokens=tokens)
    if gpu:
        lengths = (512, 2048, 8192, 65536) if quick else tuple(512 * 2**i for i in range(8))  # 512 .. 64K
    else:
        lengths = (128, 256, 512) if quick else (512, 1024, 2048, 4096)
    return CalibrationSchedule(
        device=device, dtype="bfloat16", world_size=world_size, ranks_per_node=ranks_per_node,
        sizes_bytes=message_sizes(device, quick), groups=collective_groups(world_size, ranks_per_node, quick),
        gemm=gemm, attention_tokens=lengths,
        attention_heads=GPU_ATTENTION_HEADS if gpu else 2,
        attention_head_dim=model.head_dim if model is not None else 128,
        attention_batch_tokens=GPU_ATTENTION_BATCH_TOKENS if gpu else 512,
        copy_sizes_bytes=(256 * MIB, GIB) if gpu else ((16 * MIB,) if quick else (64 * MIB,)),
        warmup=(2 if quick else 5) if gpu else 1,
        iters=(5 if quick else 20) if gpu else (3 if quick else 5),
    )
