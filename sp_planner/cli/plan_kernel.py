"""sp-plan's attention kernel: which kernel's curves time the plans (the framework's default on the
GPU, the user's --attention-kernel, or a profile's own curves), the refusals where the framework
cannot run it, and how the plans are timed, which the notes that say what the timing and the flags
leave out read (cli.plan_notes)."""

from __future__ import annotations

from typing import NamedTuple

from sp_planner.cli.plan_notes import KernelTiming, kernel_notes
from sp_planner.cli.profile_notes import edited_curves_note
from sp_planner.cli.question import PlanQuestion
from sp_planner.cost.attention_kernels import UNFUSED, timed_kernel, with_attention_kernel
from sp_planner.cost.framework_kernels import default_kernel, framework_kernel
from sp_planner.cost.families import on_npu
from sp_planner.cost.fp8_attention import with_fp8_attention
from sp_planner.cost.grouped_gemm import with_framework_expert_gemm
from sp_planner.errors import UserInputError
from sp_planner.flags.base import FlagChoices
from sp_planner.flags.flash_head_dim import (
    flash_head_dim_problem,
    te_context_parallel_problem,
    te_default_kernel,
    te_runs_unfused,
    torchtitan_default_kernel,
)
from sp_planner.flags.torchtitan import resolve_version
from sp_planner.flags.softmax import softmax_kernel_problem
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class KernelSetup(NamedTuple):
    """The question timed with its framework's kernel and expert GEMMs, how (`timing`: the kernel
    notes', cli.plan_notes), and the note on a profile's edited curves (None where none)."""

    question: PlanQuestion
    curves_note: str | None
    timing: KernelTiming

    @property
    def kernel_notes(self) -> tuple[str | None, ...]:
        """The kernel's notes (cli.plan_notes.kernel_notes), which plan_notes prints."""
        q = self.question
        return kernel_notes(q.model, q.hardware, q.workload, self.timing)


def stack_default_kernel(model: ModelSpec, hardware: HardwareProfile, stack: str,
                         interface: str | None) -> str | None:
    """The kernel whose curves time `stack`'s plans where the user names none, on the profile as
    given (not one whose curves a kernel already replaced): its default on the GPU (default_kernel),
    FA2 where TE runs it in cuDNN's place (Megatron), SDPA's flash where PyTorch's cuDNN SDPA refuses
    the head dims (torchtitan); `interface`: torchtitan's (resolve_version). sp-plan --framework X
    and the plan file that --framework all names X in (cli.plan_file_out) both read it."""
    kernel = default_kernel(stack, hardware, interface)
    if stack == "megatron":
        return te_default_kernel(model, hardware, kernel)
    if stack == "torchtitan":
        runs = framework_kernel(stack, hardware, interface)
        return torchtitan_default_kernel(model, hardware, runs=runs, kernel=kernel)
    return kernel


def set_up_kernel(question: PlanQuestion, *, framework: str, attention_kernel: str | None,
                  framework_version: str | None, ulysses: int | None, ring: int | None,
                  fp8_attention: bool) -> KernelSetup:
    """Time the plans with the chosen framework's attention kernel and expert GEMMs (Megatron's
    for "all"), or refuse (UserInputError) a kernel, head dim, context split or FP8 attention the
    framework cannot run; `ulysses`/`ring`: the pinned degrees (None where the search picks)."""
    stack = "megatron" if framework == "all" else framework
    question = question.model_copy(update={"model": with_framework_expert_gemm(question.model, stack),
                                           "given_hardware": question.hardware, "given_model": question.model})
    # torchtitan's kernel follows the release its flags target (cost.framework_kernels.TORCHTITAN_KERNEL).
    interface = resolve_version(framework_version) if stack == "torchtitan" else None
    runs = framework_kernel(stack, question.hardware, interface)
    # Before the kernel's curves replace the profile's: whether they are the user's own.
    curves_note = edited_curves_note(question.hardware, runs, attention_kernel)
    # Whether Transformer Engine runs its unfused attention here (the GPU's, not the curves').
    te_unfused = te_runs_unfused(question.model, question.hardware)
    try:
        kernel = (stack_default_kernel(question.model, question.hardware, stack, interface)
                  if attention_kernel is None else attention_kernel)
        # Where TE runs its unfused attention, that times Megatron's plans (cost.kernels: its s x s
        # scores; the search then holds no context parallelism); under --framework all a published
        # curve times every framework's ranking, as yunchang and DeepSpeed call flash-attn 2 there.
        if attention_kernel is None and framework == "megatron" and kernel is not None and te_unfused:
            kernel = UNFUSED
        question = question.model_copy(update={"hardware": with_attention_kernel(question.hardware, kernel)})
    except ValueError as err:
        raise UserInputError(f"--attention-kernel: {err}") from None
    if (problem := softmax_kernel_problem(question.model, attention_kernel, stack)) is not None:
        raise UserInputError(problem)
    timed = timed_kernel(question.hardware, kernel)
    if (problem := flash_head_dim_problem(question.model, question.hardware, stack=stack, chosen=attention_kernel,
                                          timed=timed)) is not None:
        raise UserInputError(problem)
    if (problem := te_context_parallel_problem(question.model, question.hardware, framework=framework,
                                               chosen=attention_kernel, timed=timed, ulysses=ulysses,
                                               ring=ring)) is not None:
        raise UserInputError(problem)
    choices = FlagChoices(framework_version=framework_version, attention_kernel=attention_kernel,
                          te_unfused_attention=te_unfused, on_npu=on_npu(question.hardware))
    question = question.model_copy(update={"attention_kernel": timed, "flag_choices": choices})
    # Context parallelism is possible unless both its degrees are pinned to 1.
    timing = KernelTiming(framework, stack, attention_kernel, timed, runs,
                          context_parallel=(ulysses or 2) * (ring or 2) > 1)
    if fp8_attention:
        if framework != "all":
            raise UserInputError(f"--fp8-attention: no command-line flag of {framework} turns FP8 attention on "
                                 "(Megatron-LM leaves TransformerConfig.fp8_dot_product_attention out of its "
                                 "arguments; Megatron-Bridge sets it in its config); plan with --framework all to "
                                 "time it")
        if kernel != "cudnn":
            raise UserInputError(f"--fp8-attention is cuDNN's FP8 SDPA (Transformer Engine); the plans "
                                 f"would run {kernel}")
        question = question.model_copy(update={"hardware": with_fp8_attention(question.hardware)})
    return KernelSetup(question, curves_note, timing)
