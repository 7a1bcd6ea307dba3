"""A parallel plan (degrees and memory options) and the hard rules it must obey (predicates: plan_rules;
the checks that refuse a plan before any work: plan_checks)."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

from pydantic import Field, model_validator

from sp_planner.choices import MAX_DEGREE, CpComm, Fp8Recipe, Precision  # noqa: F401 (re-exported: they were defined here)
from sp_planner.layout import CP_AXES, GRID_ORDER
from sp_planner.pipeline_order import priced_group
from sp_planner.plan_messages import rule_message
from sp_planner.plan_rules import (  # noqa: F401 (re-exported: the rules were defined here)
    ATTENTION_RULES,
    RULE_CHECKS,
    RULES,
    RuleFacts,
    rule_breaks,
    seq_len_divisor,
)
from sp_planner.recompute import (  # noqa: F401 (re-exported: the choices were defined here)
    RECOMPUTE,
    RECOMPUTE_FULL,
    RECOMPUTE_MLA_UP_PROJ,
    RECOMPUTE_MOE_ACT,
    RECOMPUTE_MOE_ACT_LAYERNORM,
    RECOMPUTE_NONE,
    RECOMPUTE_SELECTIVE,
    Recompute,
)
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.model_limits import MAX_LAYERS
from sp_planner.specs.workload import MAX_GLOBAL_BATCH, Workload

RingLayout = Literal["zigzag", "contiguous"]
# The choices are defined in sp_planner.choices (what each means is said there).
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
FP8_RECIPES: tuple[Fp8Recipe, ...] = get_args(Fp8Recipe)
CP_COMMS: tuple[CpComm, ...] = get_args(CpComm)


def offload_problem(cpu_offload_layers: int, pp: int, recompute: str | None) -> str | None:
    """Why CPU offloading cannot run with this pipeline and recompute, or None. Megatron-Core's
    TransformerConfig rejects both (transformer_config.py: "no support for Pipeline parallelism
    with CPU offloading", "does not work when activation recomputation is enabled")."""
    if cpu_offload_layers and (pp > 1 or recompute != "none"):
        return (f"cpu_offload_layers needs pp 1 and recompute none (Megatron-Core rejects CPU offloading with "
                f"pipeline parallelism or recompute), not pp {pp} and recompute {recompute}")
    return None


def fp8_recipe_names(fp8_current, fp8_blockwise):
    """The FP8_RECIPES name of candidates' recipe flags (vectorized; Candidates keeps the recipe as
    the two flags fp8_current and fp8_blockwise, one recipe per search)."""
    return np.select([np.asarray(fp8_current, dtype=bool), np.asarray(fp8_blockwise, dtype=bool)],
                     ["tensorwise", "blockwise"], "delayed").astype(object)


def master_as_remainder(precision, fp8_current, fp8_blockwise):
    """With bf16 Adam moments, whether TE's FusedAdam keeps the fp32 master as a 16-bit remainder:
    bf16 and delayed-scaling FP8 plans (cost.states.PARAM_REMAINDER_BYTES). Vectorized over
    precision codes (PRECISIONS) and the recipe flags."""
    precision = np.asarray(precision)
    delayed = ~np.asarray(fp8_current, dtype=bool) & ~np.asarray(fp8_blockwise, dtype=bool)
    return (precision == PRECISIONS.index("bf16")) | ((precision == PRECISIONS.index("fp8")) & delayed)


class Violation(FrozenModel):
    """A broken hard rule: `rule` is a short stable key, `message` names the offending values."""

    rule: str
    message: str



class ParallelPlan(FrozenModel):
    dp: int = Field(default=1, ge=1, le=MAX_DEGREE)
    pp: int = Field(default=1, ge=1, le=MAX_DEGREE)
    tp: int = Field(default=1, ge=1, le=MAX_DEGREE)
    ulysses: int = Field(default=1, ge=1, le=MAX_DEGREE)
    ring: int = Field(default=1, ge=1, le=MAX_DEGREE)
    # ZeRO stage over the dp x cp ranks, as Megatron's dp-cp group (distributed optimizer = 1).
    zero: int = Field(default=1, ge=0, le=3)
    recompute: Recompute = "none"
    micro_batch: int = Field(default=1, ge=1, le=MAX_GLOBAL_BATCH)
    # zigzag = load-balanced causal ring (2*ring chunks, rank i holds chunks i and 2R-1-i).
    ring_layout: RingLayout = "zigzag"
    cp_comm: CpComm = "p2p"
    # FSDP/HSDP: data-parallel replicas (HSDP's replicate degree, dividing dp); the ZeRO group
    # shards over dp/dp_replicate x cp (torchtitan data_parallel_replicate_degree, Megatron-FSDP
    # --num-distributed-optimizer-instances).
    dp_replicate: int = Field(default=1, ge=1, le=MAX_DEGREE)
    # ZeRO-3 only: free the gathered parameters after forward and gather them again in backward
    # (FSDP2 reshard_after_forward); False keeps them from forward to backward (Llama 3 section 3.3.2).
    reshard_after_forward: bool = True
    # Virtual pipeline stages per rank (interleaved 1F1B); 1 = plain 1F1B.
    vpp: int = Field(default=1, ge=1, le=MAX_DEGREE)
    # Megatron's micro-batch group of the interleaved schedule, N
    # (--microbatch-group-size-per-virtual-pipeline-stage; pipeline_order.micro_batch_group): None, the
    # one sp-plan prices, Megatron's default pp where pp divides the micro-batches per step, else
    # the smallest N Megatron accepts (sp-plan --out writes it for every interleaved plan); an N given must be that one
    # (the vpp rule).
    vpp_group: int | None = Field(default=None, ge=1, le=MAX_GLOBAL_BATCH)
    # Decoder layers on the first / last pipeline stage; None = the even split num_layers / pp
    # (sp_planner.pipeline: uneven splits as Megatron expresses them).
    # At most MAX_LAYERS, as sp-plan's options: a plan file's 10**30 overflowed int64 in the split checks.
    first_stage_layers: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    last_stage_layers: int | None = Field(default=None, ge=1, le=MAX_LAYERS)
    precision: Precision = "bf16"
    fp8_recipe: Fp8Recipe = "delayed"
    # FP8 core attention (TransformerConfig.fp8_dot_product_attention, which has no Megatron-LM flag;
    # cost.fp8_attention), FP8/MXFP8 only.
    fp8_attention: bool = False
    # Expert parallelism (MoE layers only; layout.EXPERT_GRID_ORDER): experts split over ep ranks,
    # each expert's FFN over etp ranks (Megatron --expert-model-parallel-size and
    # --expert-tensor-parallel-size). Both 1 for dense models.
    ep: int = Field(default=1, ge=1, le=MAX_DEGREE)
    etp: int = Field(default=1, ge=1, le=MAX_DEGREE)
    # Activation CPU offloading (Megatron --cpu-offloading-num-layers; cost.offload): the saved
    # activations of the first N layers go to host memory in forward and come back in backward.
    cpu_offload_layers: int = Field(default=0, ge=0, le=MAX_DEGREE)
    # Adam's moments in bf16 (Megatron --use-precision-aware-optimizer --exp-avg-dtype bf16
    # --exp-avg-sq-dtype bf16; cost.states.optimizer_bytes_per_param).
    adam_moments_bf16: bool = False

    @model_validator(mode="after")
    def _check_fsdp(self) -> "ParallelPlan":
        if self.dp % self.dp_replicate != 0:
            raise ValueError(f"dp {self.dp} is not divisible by dp_replicate {self.dp_replicate} "
                             "(HSDP: dp = dp_replicate x dp_shard)")
        if self.dp_replicate > 1 and self.zero == 0:
            raise ValueError(f"dp_replicate {self.dp_replicate} needs zero >= 1: with zero 0 every "
                             "data-parallel rank is already a full replica")
        if self.fp8_attention and self.precision == "bf16":
            raise ValueError("fp8_attention needs precision fp8 or mxfp8 (FP8 attention runs under "
                             "Transformer Engine's FP8 autocast)")
        offload = offload_problem(self.cpu_offload_layers, self.pp, self.recompute)
        if offload:
            raise ValueError(offload)
        if not self.reshard_after_forward and self.zero != 3:
            raise ValueError(f"reshard_after_forward false needs zero 3 (zero {self.zero} keeps the "
                             "parameters whole; only ZeRO-3/FSDP shards them)")
        return self

    @property
    def cp(self) -> int:
        """Context-parallel degree: Ulysses x Ring (USP's 2D sequence mesh)."""
        return math.prod(getattr(self, axis) for axis in CP_AXES)

    @property
    def world_size(self) -> int:
        return math.prod(getattr(self, axis) for axis in GRID_ORDER)

    @property
    def edp(self) -> int:
        """Expert data-parallel degree: world / (pp*ep*etp) (Megatron's EDP; expert gradients and
        the distributed optimizer's expert shards are over this group)."""
        return self.world_size // (self.pp * self.ep * self.etp)

    def num_micro_batches(self, workload: Workload) -> int:
        return self.num_micro_batches_of(workload.global_batch)

    def num_micro_batches_of(self, global_batch: int) -> int:
        return global_batch // (self.dp * self.micro_batch)

    def priced_vpp_group(self, global_batch: int) -> int | None:
        """The interleaved micro-batch group the plan is priced with at `global_batch`: its own
        vpp_group (--vpp-group) or the one sp-plan prices, None at vpp 1 (pipeline_order.priced_group)."""
        return priced_group(self.pp, self.vpp, self.num_micro_batches_of(global_batch), self.vpp_group)

    @property
    def dp_shard(self) -> int:
        """Data-parallel ranks one ZeRO/FSDP shard group spans (times cp): dp / dp_replicate."""
        return self.dp // self.dp_replicate

    @property
    def fp8_current(self) -> bool:
        """Per-tensor FP8 with current scaling (the tensorwise recipe)."""
        return self.precision == "fp8" and self.fp8_recipe == "tensorwise"

    @property
    def master_as_remainder(self) -> bool:
        """master_as_remainder for this plan."""
        return bool(master_as_remainder(PRECISIONS.index(self.precision), self.fp8_current, self.fp8_blockwise))

    @property
    def fp8_blockwise(self) -> bool:
        """FP8 with block scaling (the blockwise recipe)."""
        return self.precision == "fp8" and self.fp8_recipe == "blockwise"

    @property
    def allgather(self) -> bool:
        return self.cp_comm == "allgather"

    @property
    def zigzag(self) -> bool:
        return self.ring_layout == "zigzag"

    def seq_len_divisor(self) -> int:
        """What the sequence length must divide by for this plan to shard evenly (seq_len_divisor)."""
        return int(seq_len_divisor(tp=self.tp, ulysses=self.ulysses, ring=self.ring, zigzag=self.zigzag))


def facts_violations(facts: RuleFacts, plan: ParallelPlan, rules: tuple[str, ...] = RULES) -> list[Violation]:
    """The broken rules among `rules`, each with a message naming the offending values."""
    broken = rule_breaks(facts, plan, rules)
    return [Violation(rule=rule, message=rule_message(rule, facts, plan)) for rule in rules if broken[rule]]


def violations(plan: ParallelPlan, model: ModelSpec, workload: Workload) -> list[Violation]:
    """Hard rules; a plan breaking any of them cannot run at all (not merely OOM)."""
    return facts_violations(RuleFacts.of(model, workload), plan)
