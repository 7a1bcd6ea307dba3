"""plan.json: the chosen plan with its model, hardware and workload, read back by sp-run.

The schema is versioned; `plan_file_json_schema()` exports it (docs/plan.schema.json). The rank
groups are written as their generator (`rank_layout`: axis order and degrees, a few lines at any
scale); the full lists (`rank_groups`) only on request. Reading a plan file expands the generator
and checks it, and any full lists, against the layout the executor uses. Fields added since a file
was written read as their defaults (one schema_version throughout), but for the model's attention
fields whose default would change what sp-run computes and the framework release the plan was timed
for (sp_planner.planfile_unrecorded), and the MoE router, whose default would change the flags
(sp_planner.planfile_router). A model whose MLA head dims or window neither the file nor the catalog
tells cannot be timed either: sp-report and sp-simulate refuse it as sp-run does
(LoadedPlan.timing_problem).
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pydantic import Field, model_validator

from sp_planner import __version__
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate
from sp_planner.cost.attention_kernels import UNFUSED, TimedKernel, with_attention_kernel
from sp_planner.cost.deepep import deepep_refusal
from sp_planner.cost.families import on_npu
from sp_planner.destination import deliver_text
from sp_planner.fileio import kind_of, read_structured, validate_as
from sp_planner.cost.runtime import Runtime
from sp_planner.flags import FlagChoices, release_runtime
from sp_planner.flags.base import Framework
from sp_planner.flags.flash_head_dim import te_runs_unfused
from sp_planner.flags.torchtitan import VERSIONS
from sp_planner.catalog.models import builtin_models
from sp_planner.plan import ParallelPlan
from sp_planner.planfile_checks import hardware_problems
from sp_planner.planfile_layout import RankLayout, layout_problem, rank_groups_problem
from sp_planner.planfile_router import UnrecordedRouter, unrecorded_router
from sp_planner.planfile_unrecorded import Unrecorded, unfused_untimed_note, unrecorded_fields, unrecorded_release
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload, tokens_per_gpu_problem

SchemaVersion = Literal["sp-planner.plan/1"]
SCHEMA_VERSION: SchemaVersion = "sp-planner.plan/1"


class PlanFile(FrozenModel):
    schema_version: SchemaVersion = SCHEMA_VERSION
    created_by: str = f"sp-planner {__version__}"
    model: ModelSpec
    hardware: HardwareProfile
    workload: Workload
    num_nodes: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    # The framework that runs the plan (its runtime timed it; sp-plan's flags for it); null where
    # none does (sp-plan --framework all: no framework's flags run its plan 1; timed, as there, with
    # Megatron's runtime: cli.plan_file_out).
    framework: Framework | None = "megatron"
    # The framework release whose runtime timed the plan and whose flags sp-plan emitted: torchtitan's
    # --framework-version (flags.torchtitan.VERSIONS; sp-plan writes its default where none was
    # given, null: the newest); null for the frameworks with one. A file naming no framework
    # (framework null) records the --framework-version given, null where none was: it times
    # nothing there (Megatron's runtime), but the report renders torchtitan's flags for that release,
    # as sp-plan printed them (files written before 2026-12-08 record null: the newest). Absent from
    # files written before it (planfile_unrecorded.unrecorded_release).
    framework_version: str | None = None
    # The named attention kernel whose curves (in `hardware`) timed the plan
    # (cost.attention_kernels.timed_kernel: fa2, fa3, cudnn, sdpa, npu); null where none is named (a
    # profile whose curves sp-calibrate measured or the user edited) and in files written before it
    # (2026-12-07), whose `hardware` still holds the curves that timed them. A record for tools:
    # readers time the plan with the curves in `hardware`, not with this name, except "unfused"
    # (Transformer Engine's unfused attention timed Megatron's plan: cost.kernels), which no profile
    # holds (efficiency.attention_unfused): load_plan_file sets it on `hardware` again.
    attention_kernel: TimedKernel | None = None
    # Whether attention_kernel is the user's sp-plan --attention-kernel, whose backend the flags then
    # select (FlagRequest.attention_kernel); false for the framework's default and in files written
    # before it, whose flags select no kernel.
    attention_kernel_chosen: bool = False
    # Whether sp-plan was given --fp8-recipe; where not, the report asks each framework's flags with its
    # own FP8 recipe (flags.own_recipe), as sp-plan printed them. True in files written before it
    # (2026-12-07): the flags read the plan's recipe, as they did.
    fp8_recipe_given: bool = True
    plan: ParallelPlan
    estimate: PlanEstimate | None = None
    # The rank groups' generator (written by sp-plan; absent from files written before it).
    rank_layout: RankLayout | None = None
    # Group kind -> list of global-rank groups, in the framework's layout (see sp_planner.layout):
    # written only on request (sp-plan --rank-groups), as it grows with the world size.
    rank_groups: dict[str, list[list[int]]] = Field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def flag_choices(self) -> FlagChoices:
        """How sp-plan rendered the plan's flags: for its release, selecting the user's kernel choice,
        else none (attention_kernel_chosen without a kernel named selects none), whether
        Transformer Engine runs the model's attention unfused on the file's GPU, whether its
        chips are Ascend NPUs, and whether --fp8-recipe was given."""
        return FlagChoices(framework_version=self.framework_version,
                           attention_kernel=self.attention_kernel if self.attention_kernel_chosen else None,
                           te_unfused_attention=te_runs_unfused(self.model, self.hardware),
                           on_npu=on_npu(self.hardware), fp8_recipe_given=self.fp8_recipe_given)

    @property
    def runtime(self) -> Runtime:
        """The runtime sp-plan timed the plan with, which its readers time it again with."""
        return release_runtime(self.framework or "all", self.framework_version, model=self.model)

    @model_validator(mode="after")
    def _unfused_plan_has_no_context_parallelism(self) -> PlanFile:
        """Transformer Engine's unfused attention takes no context parallelism (get_attention_backend
        at d0067d0) and no ring merges its blocks (cost.attention)."""
        cp = self.plan.ulysses * self.plan.ring
        if self.attention_kernel == UNFUSED and cp > 1:
            raise ValueError(f"attention_kernel unfused with ulysses x ring {cp}: Transformer Engine's unfused "
                             "attention takes no context parallelism; set ulysses and ring to 1 or write the plan "
                             "again with sp-plan --out")
        return self

    @model_validator(mode="after")
    def _release_is_the_frameworks(self) -> PlanFile:
        """A release sp-plan never writes for the framework would be timed as some other one. A file
        naming no framework may hold torchtitan's, for its flags (it times nothing there)."""
        version = self.framework_version
        if version is not None and self.framework not in ("torchtitan", None):
            raise ValueError(f"framework_version {version!r}: sp-planner times one {self.framework} "
                             "release; remove framework_version")
        if version is not None and version not in VERSIONS:
            raise ValueError(f"framework_version {version!r} is not a torchtitan release sp-planner times; "
                             f"give one of {', '.join(VERSIONS)}")
        return self

    @model_validator(mode="after")
    def _step_tokens_bounded(self) -> PlanFile:
        """A batch edited past what the search prices exactly (specs.workload.MAX_TOKENS_PER_GPU)."""
        problem = tokens_per_gpu_problem(self.workload.seq_len, self.workload.global_batch,
                                         self.num_nodes * self.gpus_per_node)
        if problem is not None:
            raise ValueError(f"workload: {problem}")
        return self

    @model_validator(mode="after")
    def _rank_layout_is_the_plans(self) -> PlanFile:
        """A generator edited to another order or other degrees would lay out another plan."""
        if self.rank_layout is not None and (problem := layout_problem(self.plan, self.rank_layout)) is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _hardware_runs_the_plan(self) -> PlanFile:
        """A plan edited to a precision (or FP8 attention, block scaling, offloading) its hardware
        cannot run would fail deep in the cost model: every reader of a plan file refuses it here."""
        problems = hardware_problems(self.plan, self.hardware)
        deepep = deepep_refusal(self.hardware, self.model, self.gpus_per_node)
        problems += [] if deepep is None else [f"model.moe.dispatcher deepep: {deepep}"]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _rank_groups_follow_the_degrees(self) -> PlanFile:
        """Groups edited by hand to disagree with the degrees would run another plan than the one named."""
        if self.rank_groups and (problem := rank_groups_problem(self.plan, self.rank_groups)) is not None:
            raise ValueError(problem)
        return self


def write_plan_file(path: Path, plan_file: PlanFile) -> None:
    """Write plan.json; if the write fails, the text is kept elsewhere and WriteFailed names it. A
    profile timed with TE's unfused attention is written without that setting, which no profile may
    hold (attention_kernel "unfused" records it; load_plan_file sets it again)."""
    efficiency = plan_file.hardware.efficiency
    if efficiency.attention_unfused:
        hardware = plan_file.hardware.model_copy(update={"efficiency": efficiency.model_copy(
            update={"attention_unfused": False})})
        plan_file = plan_file.model_copy(update={"hardware": hardware})
    deliver_text(Path(path), plan_file.model_dump_json(indent=2) + "\n", what="plan")


class LoadedPlan(NamedTuple):
    plan_file: PlanFile
    # A file written before plan files recorded some of the model's attention fields: how they
    # were settled (planfile_unrecorded); None where the file records them all.
    unrecorded: Unrecorded | None
    # A file written before plan files recorded the framework release, where its plan's timing
    # depends on it: the release it is timed as, in a line (planfile_unrecorded.unrecorded_release).
    release_note: str | None = None
    # A file written before plan files recorded the MoE router: how it was settled (planfile_router);
    # None for a dense model or a file that records it.
    router: UnrecordedRouter | None = None
    # A Megatron file timed with a published curve where TE runs its unfused attention, in a line
    # (planfile_unrecorded.unfused_untimed_note).
    kernel_note: str | None = None

    def timing_problem(self) -> str | None:
        """Why sp-report and sp-simulate cannot time the plan (sp-run refuses it too): its model lacks
        a field that changes the step's time and memory (TIMED_LATER_FIELDS) which neither the file
        nor the catalog tells; None otherwise. The softmax scale changes neither."""
        unrecorded = self.unrecorded
        if unrecorded is None or not TIMED_LATER_FIELDS & set(unrecorded.unsettled):
            return None
        return unrecorded.problem


# The later model fields (planfile_unrecorded.LATER_FIELDS) the cost model reads: MLA's head dims
# and a local window or softcap change attention's FLOPs, bytes and memory.
TIMED_LATER_FIELDS = frozenset({"mla", "window"})


def load_plan_file(path: Path, given: Mapping[str, Any] | None = None) -> LoadedPlan:
    """Read plan.json. Fields added after a file was written read as their defaults, except the
    model's attention fields and the framework release (planfile_unrecorded) and its MoE router
    (planfile_router): a built-in model's are taken from the catalog, or `given`'s (sp-run's flags)
    where the file lacks them."""
    data = read_structured(Path(path), what="plan")
    if not isinstance(data, dict):
        # A CSV, a list or an empty file: what it holds, and which file to give instead.
        raise UserInputError(f"plan file {path} is not a plan file (it holds {kind_of(data)}, not a mapping); "
                             "give a plan.json written by sp-plan --out")
    version = data.get("schema_version")
    if isinstance(version, str) and not is_plan_file(data):
        # sp-plan --format json's output and sp-report's summary.json are "sp-planner.summary/N":
        # another kind of file, not a plan file of another release.
        raise UserInputError(f"plan file {path} is not a plan file but {version!r} (as sp-plan --format json "
                             "prints); give a plan.json written by sp-plan --out")
    if version not in (None, SCHEMA_VERSION):
        raise UserInputError(f"plan file {path} has schema_version {version!r}; this sp-planner reads "
                             f"{SCHEMA_VERSION!r}")
    if not {"schema_version", "model"} & data.keys():
        # Another kind of file (a hardware profile, an sp-run result, sp-simulate's timeline.json,
        # which holds a plan but no model): one short line, not a list of every field it lacks and
        # every field it has (a line of 1,000 columns).
        raise UserInputError(f"plan file {path} is not a plan file (no schema_version or model); give a "
                             "plan.json written by sp-plan --out")
    plan_file = validate_as(PlanFile, data, what="plan", path=path)
    unrecorded = unrecorded_fields(data["model"], plan_file.model, builtin_models(), source=f"plan file {path}",
                                   given=given)
    if unrecorded is not None and unrecorded.updates:
        model = plan_file.model.model_copy(update=dict(unrecorded.updates))
        plan_file = plan_file.model_copy(update={"model": model})
    router = unrecorded_router(data["model"], plan_file.model, builtin_models(), source=f"plan file {path}")
    if router is not None and router.updates:
        assert plan_file.model.moe is not None  # unrecorded_router settles MoE models only
        moe = plan_file.model.moe.model_copy(update=dict(router.updates))
        plan_file = plan_file.model_copy(update={"model": plan_file.model.model_copy(update={"moe": moe})})
    if plan_file.attention_kernel == UNFUSED:  # TE's unfused attention timed it (PlanFile.attention_kernel)
        plan_file = plan_file.model_copy(update={"hardware": with_attention_kernel(plan_file.hardware, UNFUSED)})
    release_note = None
    if "framework_version" not in data:
        release = unrecorded_release(plan_file.framework, plan_file.plan, source=f"plan file {path}")
        plan_file, release_note = plan_file.model_copy(update={"framework_version": release.version}), release.note
    te_unfused = plan_file.flag_choices.te_unfused_attention
    kernel_note = unfused_untimed_note(framework=plan_file.framework, te_unfused=te_unfused,
                                       attention_kernel=plan_file.attention_kernel,
                                       chosen=plan_file.attention_kernel_chosen, model_name=plan_file.model.name,
                                       gpu=plan_file.hardware.name, source=f"plan file {path}")
    return LoadedPlan(plan_file, unrecorded, release_note, router, kernel_note)


def is_plan_file(data: object) -> bool:
    """Whether parsed JSON/YAML is a plan file, of this schema version or another: its
    schema_version names it (for a command given one where it takes another file)."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    return isinstance(version, str) and version.startswith(SCHEMA_VERSION.rsplit("/", 1)[0] + "/")


def read_plan_file(path: Path) -> PlanFile:
    return load_plan_file(path).plan_file


def plan_file_json_schema() -> str:
    return json.dumps(PlanFile.model_json_schema(), indent=2) + "\n"
