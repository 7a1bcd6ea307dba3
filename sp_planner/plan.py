"""A parallel plan (degrees and memory options) and the hard rules it must obey."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

Recompute = Literal["none", "selective", "full"]
RingLayout = Literal["zigzag", "contiguous"]


class Violation(FrozenModel):
    """A broken hard rule: `rule` is a short stable key, `message` names the offending values."""

    rule: str
    message: str


class ParallelPlan(FrozenModel):
    dp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    tp: int = Field(default=1, ge=1)
    ulysses: int = Field(default=1, ge=1)
    ring: int = Field(default=1, ge=1)
    # ZeRO stage over the dp x cp ranks, as Megatron's dp-cp group (distributed optimizer = 1).
    zero: int = Field(default=1, ge=0, le=3)
    recompute: Recompute = "none"
    micro_batch: int = Field(default=1, ge=1)
    # zigzag = load-balanced causal ring (2*ring chunks, rank i holds chunks i and 2R-1-i).
    ring_layout: RingLayout = "zigzag"

    @property
    def cp(self) -> int:
        """Context-parallel degree: Ulysses x Ring (USP's 2D sequence mesh)."""
        return self.ulysses * self.ring

    @property
    def world_size(self) -> int:
        return self.dp * self.pp * self.tp * self.ulysses * self.ring

    def num_micro_batches(self, workload: Workload) -> int:
        return workload.global_batch // (self.dp * self.micro_batch)

    def seq_len_divisor(self) -> int:
        """What the sequence length must divide by for this plan to shard evenly.

        Ring zigzag splits into 2*ring*ulysses chunks (yunchang extract_local, Megatron p2p with
        load balancing: S % (2*CP) == 0); Megatron sequence parallel then splits each CP shard
        over tp (torchtitan states the combined rule S % (2*CP*TP) == 0).
        """
        chunks = 2 * self.ring if (self.ring > 1 and self.ring_layout == "zigzag") else self.ring
        return chunks * self.ulysses * self.tp

    def kv_replication(self, model: ModelSpec) -> int:
        """How many times each KV head is copied so that tp*ulysses ranks each hold one.

        Megatron replicates KV heads when TP > num_query_groups (G % TP == 0 or TP % G == 0);
        DeepSpeed ALST and verl do the same for Ulysses (U % G == 0). Returns 1 when none is needed.
        """
        shards = self.tp * self.ulysses
        return max(1, shards // model.num_kv_heads)


def violations(plan: ParallelPlan, model: ModelSpec, workload: Workload) -> list[Violation]:
    """Hard rules; a plan breaking any of them cannot run at all (not merely OOM)."""
    found: list[Violation] = []
    heads_split = plan.tp * plan.ulysses
    if model.num_heads % heads_split != 0:
        found.append(Violation(
            rule="heads",
            message=f"num_heads {model.num_heads} is not divisible by tp*ulysses = {plan.tp}*{plan.ulysses}",
        ))
    kv = model.num_kv_heads
    if not (kv % heads_split == 0 or heads_split % kv == 0):
        found.append(Violation(
            rule="kv_heads",
            message=(
                f"num_kv_heads {kv} and tp*ulysses {heads_split} must divide one another "
                "(Megatron: G % TP == 0 or TP % G == 0; Ulysses: G % U == 0 or U % G == 0)"
            ),
        ))
    divisor = plan.seq_len_divisor()
    if workload.seq_len % divisor != 0:
        found.append(Violation(
            rule="seq_len",
            message=(
                f"seq_len {workload.seq_len} is not divisible by {divisor} "
                f"(tp {plan.tp} x ulysses {plan.ulysses} x ring {plan.ring}"
                f"{' x 2 for zigzag' if divisor != plan.tp * plan.cp else ''})"
            ),
        ))
    if model.num_layers % plan.pp != 0:
        found.append(Violation(
            rule="layers",
            message=f"num_layers {model.num_layers} is not divisible by pp {plan.pp}",
        ))
    if workload.global_batch % (plan.dp * plan.micro_batch) != 0:
        found.append(Violation(
            rule="batch",
            message=(
                f"global_batch {workload.global_batch} is not divisible by "
                f"dp*micro_batch = {plan.dp}*{plan.micro_batch} (Megatron: GBS % (MBS*DP) == 0)"
            ),
        ))
    return found
