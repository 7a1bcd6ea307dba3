"""sp-plan's exit-2 checks of its options beside the degrees: MoE routing, precision, the FP8 recipe
and FP8 attention against the hardware, CPU offloading (with the pipeline and recompute pins it
brings), the framework release and the options only some frameworks emit. Each returns what the
question keeps, or refuses in one line."""

from __future__ import annotations

from typing import Literal

from sp_planner.choices import own_fp8_recipe
from sp_planner.cost.dsa import DSA_FRAMEWORK_FAILURE
from sp_planner.cost.fp8_attention import fp8_attention_problem
from sp_planner.cost.offload import check_host_link
from sp_planner.cost.precision import check_blockwise, precision_problem
from sp_planner.errors import UserInputError
from sp_planner.flags import deepspeed
from sp_planner.flags.base import FlagChoices
from sp_planner.flags.option_refusals import (
    CAPACITY_FRAMEWORKS,
    MEGATRON_ONLY_OPTION_FRAMEWORKS,
    MLA_UP_PROJ_FRAMEWORKS,
    MODULE_RECOMPUTE_FRAMEWORKS,
    MTP_FRAMEWORKS,
)
from sp_planner.plan import FP8_RECIPES, PRECISIONS, Fp8Recipe, Precision, Recompute
from sp_planner.recompute import MLA_UP_PROJ_RECOMPUTES, MLP_RECOMPUTES, MOE_MODULE_RECOMPUTES, RECOMPUTE_MODULES
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import MoEDispatcher, MoERouting


def with_routing(model: ModelSpec, capacity_factor: float | None, pad_to_capacity: bool,
                 routing: MoERouting = "learned", dispatcher: MoEDispatcher = "alltoall") -> ModelSpec:
    """The model with the MoE routing and token dispatcher asked for (cost.moe): dropless unless a
    capacity factor is given, with the learned router's load imbalance unless routing is
    force-balanced."""
    if capacity_factor is None and not pad_to_capacity and routing == "learned" and dispatcher == "alltoall":
        return model
    if model.moe is None:
        raise UserInputError(f"--moe-capacity-factor, --moe-pad-to-capacity, --moe-routing and --moe-dispatcher "
                             f"apply to MoE models; {model.name} has no experts")
    if pad_to_capacity and capacity_factor is None:
        raise UserInputError("--moe-pad-to-capacity needs --moe-capacity-factor (dropless routing has no capacity "
                             "to pad to)")
    if capacity_factor is not None and not 0 < capacity_factor <= model.moe.num_experts:
        raise UserInputError(f"--moe-capacity-factor must be above 0 and at most the {model.moe.num_experts} "
                             f"experts, got {capacity_factor:g}")
    moe = model.moe.model_copy(update={"capacity_factor": capacity_factor, "pad_to_capacity": pad_to_capacity,
                                       "routing": routing, "dispatcher": dispatcher})
    return model.model_copy(update={"moe": moe})


def _unread_recipe(fp8_recipe: Fp8Recipe, precision: str) -> UserInputError:
    """A recipe given where nothing reads it: only per-tensor FP8 (precision fp8, or auto's FP8 plans) does."""
    return UserInputError(f"--fp8-recipe {fp8_recipe} applies to --precision fp8 (or auto), not {precision}")


def check_fp8_recipe(fp8_recipe: Fp8Recipe, precision: Precision | Literal["auto"],
                      profile: HardwareProfile) -> Fp8Recipe:
    """The FP8 recipe, which only per-tensor FP8 (precision fp8, or auto's FP8 plans) reads."""
    if fp8_recipe not in FP8_RECIPES:
        raise UserInputError(f"--fp8-recipe must be one of {', '.join(FP8_RECIPES)}, got {fp8_recipe!r}")
    if fp8_recipe != "delayed" and precision not in ("fp8", "auto"):
        raise _unread_recipe(fp8_recipe, precision)
    if fp8_recipe == "blockwise":
        try:
            check_blockwise(profile)
        except ValueError as err:
            raise UserInputError(f"--fp8-recipe blockwise: {err}") from None
    return fp8_recipe


def offload_pins(offload: int, degrees: dict[str, int | None], recompute: Recompute | None, model: ModelSpec,
                  profile: HardwareProfile) -> tuple[dict[str, int | None], Recompute | None]:
    """Activation CPU offloading (cost.offload) runs at pp 1 without recompute (Megatron-Core
    rejects the rest), so it pins both; the degrees and recompute pins as they become."""
    if not offload:
        return degrees, recompute
    if offload < 0 or offload >= model.num_layers:
        raise UserInputError(f"--cpu-offload-layers must be from 1 to {model.num_layers - 1} (below num_layers "
                             f"{model.num_layers}, as Megatron-Core requires), got {offload}")
    if degrees.get("pp") not in (None, 1) or recompute not in (None, "none"):
        raise UserInputError("--cpu-offload-layers needs --pp 1 and --recompute none (Megatron-Core rejects CPU "
                             "offloading with pipeline parallelism or recompute)")
    try:
        check_host_link(profile, offload)
    except ValueError as err:
        raise UserInputError(f"--cpu-offload-layers: {err}") from None
    return {**degrees, "pp": 1}, "none"


def check_fp8_attention(fp8_attention: bool, precision: Precision | Literal["auto"],
                         profile: HardwareProfile) -> bool:
    """FP8 attention needs FP8 GEMMs (every plan of the search) and a measured FP8 SDPA curve."""
    if not fp8_attention:
        return False
    if precision not in ("fp8", "mxfp8"):
        raise UserInputError(f"--fp8-attention needs --precision fp8 or mxfp8, not {precision}")
    problem = fp8_attention_problem(profile)
    if problem:
        raise UserInputError(f"--fp8-attention: {problem}")
    return True


def check_precision(precision: Precision | Literal["auto"], profile: HardwareProfile) -> Precision | None:
    """The pinned precision (None for 'auto': searched over what the profile runs)."""
    if precision == "auto":
        return None
    if precision not in PRECISIONS:
        raise UserInputError(f"--precision must be one of {', '.join((*PRECISIONS, 'auto'))}, got {precision!r}")
    problem = precision_problem(precision, profile)
    if problem:
        raise UserInputError(f"--precision {problem}")
    return precision


def resolve_fp8_recipe(fp8_recipe: Fp8Recipe | None, framework: str,
                       precision: Precision | Literal["auto"]) -> Fp8Recipe:
    """--fp8-recipe, by default the framework's own: torchtitan's torchao float8 scales each tensor
    from its own amax (ScalingType has DYNAMIC only, torchao/float8/config.py), so it runs
    tensorwise and has no delayed scaling; Megatron's TE default is delayed (--fp8-recipe). A recipe
    given with a precision that reads none (bf16, mxfp8) is refused, as check_fp8_recipe refuses the
    others: here the default delayed cannot be told from a given one."""
    if fp8_recipe is not None and precision not in ("fp8", "auto"):
        raise _unread_recipe(fp8_recipe, precision)
    if framework == "torchtitan" and precision in ("fp8", "auto") and fp8_recipe == "delayed":
        raise UserInputError("--fp8-recipe delayed: torchtitan's float8 (torchao) has no delayed scaling, it "
                             "scales each tensor from its own amax; use --fp8-recipe tensorwise or leave it out")
    if fp8_recipe is not None:
        return fp8_recipe
    return own_fp8_recipe(framework) if precision in ("fp8", "auto") else "delayed"


def check_framework_version(framework: str, version: str | None) -> None:
    """--framework-version names a torchtitan release (the only framework with two interfaces)."""
    if version is None:
        return
    if framework not in ("torchtitan", "all"):
        raise UserInputError(f"--framework-version applies to torchtitan only; drop it for --framework {framework}")
    from sp_planner.flags.torchtitan import VERSIONS

    if version not in VERSIONS:
        raise UserInputError(f"--framework-version {version!r} is not a supported torchtitan release; use 0.3.0 "
                             "(the default, 0.3.x) or 0.2.2 (0.2.x)")


def _use(frameworks: tuple[str, ...], instead: str, *, npu: bool) -> str:
    """The advice for an option only `frameworks` take: those of them that run on the profile's
    chips (Megatron-LM's flags are for CUDA GPUs and reach Ascend NPUs only through MindSpeed,
    cli.profile_notes.framework_device_note; MindSpeed runs on NPUs alone), or that none does there;
    `instead` is the other fix ("leave out --mtp-layers")."""
    runs = tuple(f for f in frameworks if f == "mindspeed") if npu else frameworks
    if runs:
        return f"use --framework {' or '.join(runs)}, or {instead}"
    return f"on Ascend NPUs only --framework mindspeed runs, and it does not take it: {instead}"


def check_framework_options(framework: str, *, moe_dispatcher: MoEDispatcher, mtp_layers: int,
                            recompute: Recompute | None, bf16_adam_moments: bool, cpu_offload_layers: int,
                            precision: str, moe_capacity_factor: float | None = None, npu: bool = False) -> None:
    """Options whose flags only some frameworks emit, refused for the others (`framework` "all"
    takes every one); the advice names only frameworks that run on the chips (`npu`: Ascend NPUs,
    cost.families.on_npu)."""
    if moe_capacity_factor is not None and framework not in (*CAPACITY_FRAMEWORKS, "all"):
        # Every plan would be refused by the framework's flags after a whole search (exit 1).
        raise UserInputError(f"--moe-capacity-factor is Megatron's --moe-expert-capacity-factor, which sp-plan does "
                             f"not emit for {framework}; "
                             f"{_use(CAPACITY_FRAMEWORKS, 'leave out --moe-capacity-factor', npu=npu)}")
    if framework == "deepspeed" and precision != "auto" and deepspeed.precision_failure(precision) is not None:
        raise UserInputError(f"--precision {precision}: {deepspeed.NO_FP8}")
    if moe_dispatcher != "alltoall" and framework not in ("megatron", "all"):
        raise UserInputError(f"--moe-dispatcher {moe_dispatcher} is Megatron's flex dispatcher, and {framework} "
                             f"has no such backend; {_use(('megatron',), 'leave out --moe-dispatcher', npu=npu)}")
    if mtp_layers and framework not in (*MTP_FRAMEWORKS, "all"):
        raise UserInputError(f"--mtp-layers is Megatron's --mtp-num-layers, and {framework} has no multi-token "
                             f"prediction; {_use(MTP_FRAMEWORKS, 'leave out --mtp-layers', npu=npu)}")
    if recompute in MLA_UP_PROJ_RECOMPUTES and framework not in (*MLA_UP_PROJ_FRAMEWORKS, "all"):
        raise UserInputError(f"--recompute {recompute} is Megatron's --recompute-modules "
                             f"{' '.join(RECOMPUTE_MODULES[recompute])}, and {framework} "
                             "has no recompute of MLA's up-projections alone; "
                             f"{_use(MLA_UP_PROJ_FRAMEWORKS, '--recompute selective or full', npu=npu)}")
    if recompute in MOE_MODULE_RECOMPUTES and framework not in (*MODULE_RECOMPUTE_FRAMEWORKS, "all"):
        raise UserInputError(f"--recompute {recompute} is Megatron's --recompute-modules "
                             f"{' '.join(RECOMPUTE_MODULES[recompute])}, and {framework} has no recompute of the MoE "
                             "activation or norms alone; "
                             f"{_use(MODULE_RECOMPUTE_FRAMEWORKS, '--recompute selective or full', npu=npu)}")
    if recompute in MLP_RECOMPUTES and framework not in (*MODULE_RECOMPUTE_FRAMEWORKS, "all"):
        raise UserInputError(f"--recompute {recompute} is Megatron's --recompute-modules "
                             f"{' '.join(RECOMPUTE_MODULES[recompute])}, and {framework} has no recompute of the "
                             "dense MLP alone; "
                             f"{_use(MODULE_RECOMPUTE_FRAMEWORKS, '--recompute selective or full', npu=npu)}")
    if bf16_adam_moments and framework not in ("megatron", "all"):
        raise UserInputError(f"--bf16-adam-moments is Megatron's --use-precision-aware-optimizer, which sp-plan does "
                             f"not emit for {framework}; "
                             f"{_use(MEGATRON_ONLY_OPTION_FRAMEWORKS, 'leave out --bf16-adam-moments', npu=npu)}")
    if cpu_offload_layers and framework not in ("megatron", "all"):
        raise UserInputError(f"--cpu-offload-layers is Megatron's --cpu-offloading-num-layers, which sp-plan does "
                             f"not emit for {framework}; "
                             f"{_use(MEGATRON_ONLY_OPTION_FRAMEWORKS, 'leave out --cpu-offload-layers', npu=npu)}")


def check_plan_file_framework(framework: str, *, writes_plan_file: bool, choices: FlagChoices, model: ModelSpec,
                              hardware: HardwareProfile, timed: str | None) -> None:
    """--framework all writes its plan file as Megatron's wherever Megatron's flags express the plan
    (the first framework that runs it: cli.plan_file_out), timed with a published curve; where
    Transformer Engine runs its unfused attention (FlagChoices.te_unfused_attention) Megatron's plans
    are timed with that (cli.plan_kernel), so the file would carry a time and a memory Megatron does
    not run (Gemma-2-9B 32K on 8 B300s under dropout: 32.82 s fitting; --framework megatron: 185.86
    s, 4,964 GiB per GPU) and sp-simulate/sp-report replay them."""
    if framework != "all" or not writes_plan_file or not choices.te_unfused_attention:
        return
    raise UserInputError(f"--out with --framework all writes a Megatron plan file, but Transformer Engine runs "
                         f"{model.name}'s attention unfused on {hardware.name}, which --framework all does not time "
                         f"(it times {timed}); write the file with one --framework (megatron times the unfused "
                         "attention) or drop --out")


def check_model_framework(framework: str, model: ModelSpec) -> None:
    """A model the framework cannot run at all, refused before the search (whose every plan its
    flags would refuse, exit 1): DeepSeek Sparse Attention outside Megatron-LM (cost.dsa)."""
    if model.dsa is not None and framework in DSA_FRAMEWORK_FAILURE:
        raise UserInputError(f"--framework {framework}: {DSA_FRAMEWORK_FAILURE[framework]}, which {model.name} "
                             "uses; use --framework megatron")
