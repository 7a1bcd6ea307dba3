"""Shared types and checks for rendering a plan as one framework's flags.

Every renderer takes a FlagRequest and returns FrameworkFlags: either the exact text to paste, or
supported=False with the reason the framework cannot express the plan (never approximate flags).
Facts come from the shared reference framework_flags.md; each rule cites the framework source.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field, model_validator

from sp_planner.choices import Framework  # noqa: F401 (re-exported: it was defined here)
from sp_planner.cost import attention_comm
from sp_planner.cost.attention_kernels import AttentionKernel
from sp_planner.flags.dsa import dsa_failures
from sp_planner.flags.option_refusals import option_failures
from sp_planner.flags.softmax import softmax_failures
from sp_planner.pipeline_order import micro_batch_group
from sp_planner.plan import ParallelPlan, violations
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

FRAMEWORKS: tuple[str, ...] = ("megatron", "mindspeed", "deepspeed", "yunchang", "torchtitan")
# A commented group of flags: (the comment, its flags), as a renderer lays them out (megatron.bash_array).
FlagGroup = tuple[str, list[str]]


class FlagChoices(FrozenModel):
    """How to render any plan's flags: the user's choices, beside the plan, that the renderers read.
    One value from sp-plan's options (or a plan file's fields) to every FlagRequest it builds, so a
    new choice is a field here, read by its renderer, and no new keyword along the way."""

    # The framework release whose interface to emit (torchtitan: 0.3.0 or 0.2.2); None = newest.
    framework_version: str | None = None
    # The attention kernel the user timed the plan with (sp-plan --attention-kernel), which the flags
    # then select where the framework can (flags.kernel_choice); None = the framework's own, no flag.
    attention_kernel: AttentionKernel | None = None
    # Whether Transformer Engine runs its unfused attention for the model on the plan's GPU
    # (flags.flash_head_dim.te_runs_unfused: Gemma-2's head dim 256 on sm89), which takes no context
    # parallelism, so Megatron's flags refuse ulysses x ring > 1; a fact of the GPU, not a choice.
    te_unfused_attention: bool = False
    # Whether the plan's chips are Ascend NPUs (cost.families.on_npu), where only MindSpeed's flags
    # run, so a refusal advises no GPU-only framework; a fact of the chips, not a choice.
    on_npu: bool = False
    # Whether sp-plan was given --fp8-recipe; where not, each framework's flags are asked with its own
    # recipe (flags.own_recipe: torchtitan's tensorwise where --framework all ranked with Megatron's
    # delayed). True by default: the plan's recipe, as ranked (a plan file written before it).
    fp8_recipe_given: bool = True

    def request(self, plan: ParallelPlan, *, model: ModelSpec, workload: Workload, num_nodes: int,
                gpus_per_node: int) -> FlagRequest:
        """The flags' question for `plan` of `model` on num_nodes x gpus_per_node GPUs, with these choices."""
        return FlagRequest(model=model, workload=workload, plan=plan, num_nodes=num_nodes,
                           gpus_per_node=gpus_per_node, **_choice_values(self))


def _choice_values(value: FlagChoices) -> dict[str, object]:
    """The FlagChoices fields of `value` (a FlagRequest's too, without its plan)."""
    return {name: getattr(value, name) for name in FlagChoices.model_fields}


class FlagRequest(FlagChoices):
    """A chosen plan for one model and workload on num_nodes x gpus_per_node GPUs, with the user's
    choices of how to render it (FlagChoices' fields)."""

    model: ModelSpec
    workload: Workload
    plan: ParallelPlan
    num_nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)

    @model_validator(mode="after")
    def _check_world(self) -> "FlagRequest":
        gpus = self.num_nodes * self.gpus_per_node
        if gpus != self.plan.world_size:
            p = self.plan
            raise ValueError(
                f"num_nodes*gpus_per_node = {self.num_nodes}*{self.gpus_per_node} = {gpus} GPUs, but the "
                f"plan needs dp*pp*tp*ulysses*ring = {p.dp}*{p.pp}*{p.tp}*{p.ulysses}*{p.ring} = "
                f"{p.world_size}"
            )
        return self

    @property
    def choices(self) -> FlagChoices:
        """The choices alone, to build the request of another plan (FlagChoices.request)."""
        return FlagChoices(**_choice_values(self))

    @property
    def world_size(self) -> int:
        return self.plan.world_size

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per optimizer step per data-parallel rank: GBS / (MBS * DP)."""
        return self.plan.num_micro_batches(self.workload)


class FrameworkFlags(FrozenModel):
    framework: str
    supported: bool
    text: str  # the exact lines/config to paste ("" if unsupported)
    reason: str | None = None  # why the framework cannot express the plan (None if supported)
    notes: tuple[str, ...] = ()  # caveats: KV-head replication, version requirements, ...

    @model_validator(mode="after")
    def _check_consistent(self) -> "FrameworkFlags":
        if self.supported:
            assert self.text and self.reason is None, "supported flags need text and no reason"
        else:
            assert not self.text and self.reason, "unsupported flags need a reason and no text"
        return self


def supported(framework: str, text: str, notes: list[str]) -> FrameworkFlags:
    return FrameworkFlags(framework=framework, supported=True, text=text, notes=tuple(notes))


def unsupported(framework: str, reasons: list[str]) -> FrameworkFlags:
    """Not expressible: the reasons, joined, say which rule or missing feature is at fault."""
    return FrameworkFlags(framework=framework, supported=False, text="", reason="; ".join(reasons))


def plan_rule_failures(request: FlagRequest) -> list[str]:
    """The plan's own hard rules (sp_planner.plan.violations); any framework fails on these."""
    return [v.message for v in violations(request.plan, request.model, request.workload)]


def refusal(framework: str, request: FlagRequest, own_failures: Callable[[], list[str]]) -> FrameworkFlags | None:
    """The unsupported result when the plan breaks its own rules or else `framework`'s (asked only
    of a plan that obeys its rules); None when the framework can express it."""
    failures = plan_rule_failures(request) or own_failures()
    failures = [*failures, *option_failures(framework, request.plan, request.model),
                *softmax_failures(framework, request), *dsa_failures(framework, request.model),
                *_group_failures(framework, request)]
    return unsupported(framework, failures) if failures else None


def _group_failures(framework: str, request: FlagRequest) -> list[str]:
    """Interleaved micro-batches that are not a multiple of pp, which sp-plan prices in Megatron's
    groups of N (pipeline_order.micro_batch_group) and expresses with Megatron-LM's
    --microbatch-group-size-per-virtual-pipeline-stage only: MindSpeed-LLM's arguments and
    torch's Interleaved1F1B (torchtitan) order such a step otherwise or not at all, unchecked."""
    p, m = request.plan, request.num_micro_batches
    group = int(micro_batch_group(p.pp, m, p.vpp_group))  # the plan's own N (--vpp-group) or the one priced
    if framework == "megatron" or p.vpp == 1 or group == p.pp:
        return []
    # Where pp divides m the group is pinned (--vpp-group): without the pin pp would run.
    pinned = f"{'' if request.on_npu else '--framework megatron or '}no --vpp-group"
    fix = pinned if m % p.pp == 0 else _group_fix(request)
    return [f"vpp {p.vpp} with {m} micro-batches per step over pp {p.pp} cannot be expressed: sp-plan prices "
            f"Megatron's interleaved schedule in micro-batch groups of {group} "
            f"(--microbatch-group-size-per-virtual-pipeline-stage, Megatron-LM only); use {fix}"]


def _group_fix(request: FlagRequest) -> str:
    """The fixes for _group_failures that run on the plan's chips: Megatron-LM's flags are for CUDA
    GPUs and reach Ascend NPUs only through MindSpeed (cli.profile_notes.framework_device_note)."""
    batch = "a global batch whose micro-batches are a multiple of pp"
    return batch if request.on_npu else f"--framework megatron or {batch}"


def kv_heads_per_tp_rank(model: ModelSpec, tp: int) -> int:
    """KV heads one TP rank holds (the cost model's count: Megatron copies KV heads when
    TP % G == 0, one per rank)."""
    return int(attention_comm.kv_heads_per_tp_rank(model.num_kv_heads, tp))


def megatron_tp_head_failures(model: ModelSpec, tp: int) -> list[str]:
    """Megatron's TP head rules (transformer_config.py:1446-1468); MindSpeed inherits them."""
    failures = []
    if model.num_heads % tp != 0:
        failures.append(f"num_attention_heads {model.num_heads} is not divisible by tp {tp}")
    g = model.num_kv_heads
    if not (g % tp == 0 or tp % g == 0):
        failures.append(f"num_query_groups {g} and tp {tp} must divide one another")
    return failures


def megatron_zero_failure(plan: ParallelPlan, name: str) -> str | None:
    """Megatron-LM core has ZeRO-1 only: --use-distributed-optimizer shards the optimizer state over
    the dp x cp group (megatron/training/arguments.py:3156); gradients stay in a full buffer."""
    if plan.zero <= 1:
        return None
    return (
        f"zero={plan.zero} cannot be expressed: {name} has ZeRO-1 only (--use-distributed-optimizer shards "
        "the optimizer state over the dp x cp ranks; gradients and parameters stay whole); sharding "
        "those needs Megatron-LM's separate FSDP paths, which this planner does not emit; use zero=1 "
        "or zero=0"
    )


def describe_degrees(plan: ParallelPlan, axes: tuple[str, ...]) -> str:
    """'tp 8 and pp 2' for the axes whose degree exceeds 1 (for reasons naming the culprits)."""
    return " and ".join(f"{axis} {getattr(plan, axis)}" for axis in axes if getattr(plan, axis) > 1)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def dropout_flags(model: ModelSpec) -> list[str]:
    """The model's dropout probabilities (ModelSpec.hidden_dropout, attention_dropout; cost.dropout),
    always explicit: Megatron-LM defaults both to 0.1 (TransformerConfig hidden_dropout and
    attention_dropout, whose fields arguments.py turns into these flags at d98e8a64dd; a plain
    add_argument default=0.1 at core_v0.12.1 lines 1465-1468, the parser MindSpeed patches, which
    keeps them), so a Llama-style plan run without them would draw dropout masks it never timed."""
    return [f"--hidden-dropout {model.hidden_dropout:g}", f"--attention-dropout {model.attention_dropout:g}"]
