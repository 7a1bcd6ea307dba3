"""Turn sp-plan's raw options into one validated question: specs, workload, GPUs and pinned degrees.

Everything here runs before any output is written, so a bad option never leaves half a file.
"""

from __future__ import annotations

from typing import Literal
from pathlib import Path

from pydantic import Field

from sp_planner.cost.attention_kernels import TimedKernel
from sp_planner.cost.deepep import deepep_refusal
from sp_planner.cost.dsa import dsa_untimed, indexer_loss_problem
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cli.option_checks import (check_fp8_attention, check_fp8_recipe, check_precision, offload_pins,
                                          with_routing)
from sp_planner.cli.pin_checks import (check_degrees, check_fsdp_pins, check_pins, check_split_pins, check_vpp_group,
                                       gpus_left_to, with_derived_dp)
from sp_planner.destination import (
    check_file_destination,
    check_folder_destination,
    lies_inside,
    refuse_reading_file_as_output,
    same_destination,
)
from sp_planner.errors import UserInputError
from sp_planner.flags import FlagChoices
from sp_planner.plan import CpComm, Fp8Recipe, Precision, Recompute
from sp_planner.specs.attention import IndexerLossChoice
from sp_planner.search import Pins
from sp_planner.space import PIN_DEGREES
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.batch import DEFAULT_TOKENS_PER_STEP, batch_over_budget, budget_ratio, default_global_batch
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import MoEDispatcher, MoERouting
from sp_planner.specs.workload import Workload, tokens_per_gpu_problem
from sp_planner.units import format_tokens, parse_tokens, plural



class PlanQuestion(FrozenModel):
    """How to train `model` on `num_nodes` x `gpus_per_node` GPUs of `hardware`, within `pins`."""

    model: ModelSpec
    hardware: HardwareProfile
    workload: Workload
    num_nodes: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    pins: Pins
    # True when --global-batch was left out and defaults to a token budget (specs/batch.py).
    default_batch: bool = False
    # The named kernel whose curves time the plans (cost.attention_kernels.timed_kernel; set by
    # sp-plan once the framework is known); None where none is named: a profile sp-calibrate measured.
    attention_kernel: TimedKernel | None = None
    # How to render the flags (set by sp-plan with the framework): --framework-version's release and
    # the user's --attention-kernel, which the flags then select (None where none was given: the
    # flags leave the framework's own).
    flag_choices: FlagChoices = FlagChoices()
    # The profile as given, before sp-plan put its framework's kernel's curves in `hardware`
    # (cli.plan_kernel.set_up_kernel; None: `hardware` is it): another framework's default kernel is
    # read from it (cli.plan_file_out).
    given_hardware: HardwareProfile | None = None
    # The model before sp-plan set its framework's expert GEMMs in `model` (None: `model` is it), and
    # whether --fp8-recipe was given (else the pins hold the framework's, option_checks.resolve_fp8_recipe):
    # a plan file naming another framework takes that one's (cli.plan_file_out).
    given_model: ModelSpec | None = None
    fp8_recipe_given: bool = False

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def all_degrees_pinned(self) -> bool:
        """tp, pp, ulysses and ring pinned (dp is then whatever fills the GPUs)."""
        return all(getattr(self.pins, axis) is not None for axis in PIN_DEGREES if axis != "dp")


def default_batch_note(question: PlanQuestion) -> str | None:
    """One line when the default batch (no --global-batch) is far over its token budget
    (specs.batch.batch_over_budget): the GPU count's odd factors, which only data parallelism can
    take, made it a multiple of them. None otherwise."""
    workload = question.workload
    if not question.default_batch or not batch_over_budget(workload.seq_len, workload.global_batch):
        return None
    ratio = budget_ratio(workload.seq_len, workload.global_batch)
    return (f"the default global batch, {plural(workload.global_batch, 'sequence')} of "
            f"{format_tokens(workload.seq_len)} tokens, is {ratio:.0f}x its {format_tokens(DEFAULT_TOKENS_PER_STEP)}-"
            f"token budget per step: data parallelism takes the {question.world_size:,} GPUs' odd factors and "
            "must divide it; --global-batch sets the batch")


def resolve_question(
    *,
    model: str,
    hardware: str,
    num_nodes: int,
    gpus_per_node: int | None,
    seq_len: str,
    global_batch: int | None,
    degrees: dict[str, int | None],
    zero: int | None,
    recompute: Recompute | None,
    micro_batch: int | None,
    cp_comm: CpComm | None = None,
    dp_replicate: int | None = None,
    reshard_after_forward: bool | None = None,
    vpp: int | None = None,
    vpp_group: int | None = None,
    precision: Precision | Literal["auto"] = "bf16",
    fp8_recipe: Fp8Recipe = "delayed",
    fp8_attention: bool = False,
    expert_degrees: dict[str, int | None] | None = None,
    moe_capacity_factor: float | None = None,
    moe_pad_to_capacity: bool = False,
    moe_routing: MoERouting = "learned",
    moe_dispatcher: MoEDispatcher = "alltoall",
    mtp_layers: int = 0,
    dsa_indexer_loss: IndexerLossChoice = "none",
    split: tuple[int | None, int | None] | None = None,
    cpu_offload_layers: int = 0,
    adam_moments_bf16: bool = False,
) -> PlanQuestion:
    """Load the specs, build the workload and pins, and reject pins that break a hard rule.

    `expert_degrees` pins ep and etp (the expert grid, which reuses the same GPUs)."""
    experts = {name: value for name, value in (expert_degrees or {}).items() if value is not None}
    for name, value in experts.items():
        if value <= 0:
            raise UserInputError(f"--{name} must be at least 1, got {value}")
    seq_len_tokens = parse_tokens(seq_len)
    if num_nodes <= 0:
        raise UserInputError(f"--nodes must be at least 1, got {num_nodes}")
    model_spec = with_routing(load_model(model), moe_capacity_factor, moe_pad_to_capacity, moe_routing,
                              moe_dispatcher)
    if mtp_layers:  # multi-token prediction depths trained with the model (cost.mtp)
        model_spec = model_spec.model_copy(update={"mtp_layers": mtp_layers})
    problem = indexer_loss_problem(model_spec, dsa_indexer_loss)
    if problem is not None:
        raise UserInputError(f"--dsa-indexer-loss {dsa_indexer_loss}: {problem}")
    if model_spec.dsa is not None and dsa_indexer_loss == "sparse":  # the indexer trained (cost.dsa_loss)
        model_spec = model_spec.model_copy(update={"dsa": model_spec.dsa.model_copy(update={"indexer_loss": "sparse"})})
    profile = load_hardware(hardware)
    untimed = dsa_untimed(model_spec, profile)  # DeepSeek-V3.2's sparse attention where no rate is published
    if untimed is not None:
        raise UserInputError(f"--model {model} --hardware {hardware}: {untimed}")
    gpus = profile.gpus_per_node if gpus_per_node is None else gpus_per_node
    if gpus <= 0:
        raise UserInputError(f"--gpus-per-node must be at least 1, got {gpus}")
    refusal = deepep_refusal(profile, model_spec, gpus)
    if refusal is not None:
        raise UserInputError(f"--moe-dispatcher deepep: {refusal}")
    world_size = num_nodes * gpus
    check_degrees(degrees, world_size)
    # By default a token budget per step (specs/batch.py), rounded so that dp divides it.
    batch = default_global_batch(seq_len_tokens, world_size) if global_batch is None else global_batch
    if batch <= 0:
        raise UserInputError(f"--global-batch must be at least 1, got {batch}")
    too_many = tokens_per_gpu_problem(seq_len_tokens, batch, world_size)
    if too_many is not None:
        given = f"--global-batch {batch}" if global_batch is not None else "the default global batch"
        raise UserInputError(f"--seq-len {seq_len}, {given}: {too_many}")
    workload = Workload(seq_len=seq_len_tokens, global_batch=batch, causal=True)
    if vpp is not None and vpp <= 0:
        raise UserInputError(f"--vpp must be at least 1, got {vpp}")
    if cp_comm == "allgather" and degrees.get("ring") == 1:
        raise UserInputError("--cp-comm allgather gathers K/V along the ring axis: it needs --ring 2 or more, not "
                             "--ring 1 (or drop --cp-comm)")
    if vpp is not None and vpp > 1 and degrees.get("pp") == 1:
        raise UserInputError(f"--vpp {vpp} interleaves pipeline stages: it needs --pp 2 or more, not --pp 1 "
                             "(or drop --vpp)")
    check_vpp_group(vpp_group, vpp, degrees.get("pp"))
    pinned_split = check_split_pins(split, degrees.get("pp"))
    degrees, recompute = offload_pins(cpu_offload_layers, degrees, recompute, model_spec, profile)
    if adam_moments_bf16 and zero not in (None, 1):
        raise UserInputError(f"--bf16-adam-moments needs --zero 1 (Megatron's precision-aware optimizer runs only "
                             f"with the distributed optimizer), not --zero {zero}")
    zero = 1 if adam_moments_bf16 else zero
    pins = Pins(**degrees, **experts, zero=zero, recompute=recompute, micro_batch=micro_batch, cp_comm=cp_comm,
                dp_replicate=dp_replicate, reshard_after_forward=reshard_after_forward, vpp=vpp,
                vpp_group=vpp_group, precision=check_precision(precision, profile),
                fp8_recipe=check_fp8_recipe(fp8_recipe, precision, profile),
                fp8_attention=check_fp8_attention(fp8_attention, precision, profile),
                cpu_offload_layers=cpu_offload_layers, adam_moments_bf16=adam_moments_bf16,
                first_stage_layers=pinned_split[0] if pinned_split else None,
                last_stage_layers=pinned_split[1] if pinned_split else None)
    check_pins(with_derived_dp(degrees, world_size), micro_batch, model_spec, workload, experts, vpp,
               world_size=world_size, recompute=recompute, split=pinned_split, vpp_group=vpp_group)
    check_fsdp_pins(with_derived_dp(degrees, world_size)["dp"], zero, dp_replicate, reshard_after_forward,
                    data_parallel_gpus=gpus_left_to(degrees, world_size, "dp"))
    return PlanQuestion(
        model=model_spec,
        hardware=profile,
        workload=workload,
        num_nodes=num_nodes,
        gpus_per_node=gpus,
        pins=pins,
        default_batch=global_batch is None,
    )


def check_outputs(*, out: Path | None, report: Path | None, inputs: tuple[tuple[str, object], ...] = ()) -> None:
    """Refuse, before any work, an --out that cannot take a file or a --report that cannot take a
    report (a file, someone's folder, a read-only place), the two naming one path or the plan file
    inside the report's folder, and an --out that is one of the run's `inputs` ((option, value):
    --model or --hardware given as a file)."""
    if out is not None:
        check_file_destination(out, option="--out")
        refuse_reading_file_as_output(out, option="--out", inputs=inputs)
    if report is not None:
        from sp_planner.report.writer import check_report_target  # the report code loads only when asked

        check_folder_destination(report, option="--report")
        check_report_target(report)
    if out is not None and report is not None and same_destination(out, report):
        raise UserInputError(f"--out and --report both name {out}; give the plan file and the report folder "
                             "different paths")
    if out is not None and report is not None and lies_inside(out, report):
        raise UserInputError(f"--out {out} lies inside the --report folder {report}, which holds the report's "
                             "files only; write the plan file beside the folder")
