"""The notes on a plan's timing that sp-plan prints for its question and sp-simulate for a plan
file's plan, from one function (plan_notes): the cluster against its profile, the attention kernel
that times the plan (Transformer Engine's unfused attention, a softmax's stand-in curve, a kernel the
flags cannot select) and what the model's config prices otherwise than a field says (group-limited
routing). sp-plan adds the notes only its question has (the default batch, edited curves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sp_planner.catalog import import_notes
from sp_planner.cli.profile_notes import domain_split_note, framework_device_note, generic_gpu_note, node_size_note
from sp_planner.cost.framework_kernels import framework_kernel
from sp_planner.flags.flash_head_dim import te_kernel_note, te_unfused_note, torchtitan_sdpa_note
from sp_planner.flags.kernel_choice import kernel_choice_note
from sp_planner.flags.softmax import softmax_timing_note
from sp_planner.flags.torchtitan import resolve_version
from sp_planner.planfile import LoadedPlan, PlanFile
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


class KernelTiming(NamedTuple):
    """How the attention of the plans is timed, which the kernel notes read."""

    framework: str  # sp-plan's --framework ("all" included)
    stack: str  # the framework whose kernel and runtime time the plans (Megatron's for "all")
    chosen: str | None  # --attention-kernel, None for the framework's default
    timed: str | None  # the kernel whose curves time the plans (cost.attention_kernels.timed_kernel)
    runs: str  # the kernel the framework runs by default on the GPU (framework_kernel)
    # Whether the notes say that TE's unfused attention takes no context parallelism: where the
    # plans could have it (sp-plan: --ulysses and --ring do not both pin 1; a plan file: always, as
    # the file does not say what was pinned and its plan is 1 x 1 where it applies).
    context_parallel: bool

    @classmethod
    def of_plan_file(cls, pf: PlanFile) -> KernelTiming:
        """As sp-plan timed the plan file's plan: with its framework's kernel (torchtitan's by its
        release: cost.framework_kernels.TORCHTITAN_KERNEL) and its recorded one (the user's where
        attention_kernel_chosen)."""
        stack = pf.framework or "megatron"  # a file naming none was timed as --framework all times plans
        interface = resolve_version(pf.framework_version) if stack == "torchtitan" else None
        return cls(pf.framework or "all", stack, pf.attention_kernel if pf.attention_kernel_chosen else None,
                   pf.attention_kernel, framework_kernel(stack, pf.hardware, interface), context_parallel=True)


def kernel_notes(model: ModelSpec, hardware: HardwareProfile, workload: Workload,
                 timing: KernelTiming) -> tuple[str | None, ...]:
    """(the framework's chips against the GPU, a softmax's stand-in curve, Transformer Engine's
    unfused attention, the kernel TE or torchtitan's SDPA runs in the timed one's place, a chosen
    kernel the flags cannot select); None where one does not apply."""
    t = timing
    device_note = framework_device_note(hardware, t.framework)
    te_note = (te_kernel_note(model, hardware, stack=t.stack, chosen=t.chosen, timed=t.timed)
               or torchtitan_sdpa_note(model, hardware, stack=t.stack, timed=t.timed))
    # Where the framework does not run on the device at all, the device note says so, not this.
    choice_note = None if device_note else kernel_choice_note(t.stack, t.chosen, t.runs, model=model,
                                                             workload=workload, hardware=hardware)
    return (device_note, softmax_timing_note(model, t.timed, hardware.name, t.stack),
            te_unfused_note(model, hardware, stack=t.stack, chosen=t.chosen, timed=t.timed,
                            context_parallel=t.context_parallel),
            te_note, choice_note)


def plan_notes(model: ModelSpec, hardware: HardwareProfile, *, num_nodes: int, gpus_per_node: int,
               kernel: Sequence[str | None]) -> list[str]:
    """Every note on how plans of `model` on this cluster are timed, in the order sp-plan prints
    them: the profile's GPU and link domains (generic GPU, node size, domain split), the kernel's
    (`kernel`: kernel_notes) and the model's config (catalog.import_notes)."""
    cluster = (generic_gpu_note(hardware), node_size_note(hardware, gpus_per_node),
               domain_split_note(hardware, gpus_per_node, num_nodes))
    return [note for note in (*cluster, *kernel, *import_notes(model)) if note is not None]


# Where kernel_notes holds Transformer Engine's unfused attention.
UNFUSED_NOTE = 2


def plan_file_notes(loaded: LoadedPlan) -> list[str]:
    """plan_notes for a plan file's plan, as sp-plan printed them when it wrote the file; where the
    file was timed with a published curve while TE runs its unfused attention, the file's own line
    on it (LoadedPlan.kernel_note: its figures are not Megatron's) in the place of sp-plan's."""
    pf = loaded.plan_file
    kernel = list(kernel_notes(pf.model, pf.hardware, pf.workload, KernelTiming.of_plan_file(pf)))
    if loaded.kernel_note is not None:
        kernel[UNFUSED_NOTE] = loaded.kernel_note
    return plan_notes(pf.model, pf.hardware, num_nodes=pf.num_nodes, gpus_per_node=pf.gpus_per_node, kernel=kernel)
