"""Plan options that only some frameworks' flags express, and the refusal each other framework gives.

FP8 core attention (no Megatron flag sets it; yunchang trains none), multi-token prediction and the
named module recomputes (the Megatron family only), activation CPU offloading and bf16 Adam moments
(emitted for Megatron-LM only): flags.base.refusal asks option_failures of every plan it renders,
and sp-plan's option checks name the same frameworks (cli.option_checks). Each rule cites the
framework source.
"""

from __future__ import annotations

from sp_planner.plan_checks import adam_moments_problem
from sp_planner.recompute import MLA_UP_PROJ_RECOMPUTES, MLP_RECOMPUTES, MOE_MODULE_RECOMPUTES
from sp_planner.specs.model import ModelSpec

# Frameworks whose flags express activation CPU offloading and bf16 Adam moments
# (ParallelPlan.cpu_offload_layers, adam_moments_bf16).
MEGATRON_ONLY_OPTION_FRAMEWORKS: tuple[str, ...] = ("megatron",)


# FP8 core attention has no command-line flag: Megatron-LM builds its arguments from
# TransformerConfig but leaves fp8_dot_product_attention out (megatron/training/arguments.py at
# d98e8a6, _add_network_size_args' exclude list, line 2333; so at core_v0.16.0, line 1587);
# Megatron-Bridge sets it in its recipes' config (model.fp8_dot_product_attention).
FP8_ATTENTION_NO_FLAG = ("fp8_attention cannot be expressed on the command line: Megatron-LM leaves "
                         "TransformerConfig.fp8_dot_product_attention out of its arguments (set it in the config, "
                         "as Megatron-Bridge's model.fp8_dot_product_attention does)")


# yunchang's attention types with a backward are FA, FA3 (flash-attn, bf16/fp16) and NPU; its FP8
# types (SAGE_FP8, SAGE_FP8_SM90: SageAttention) run forward only (yunchang/kernels/__init__.py at
# 56118e0, reference/usp_yunchang_notes.md section 3.1), so it trains no FP8 attention.
FP8_ATTENTION_YUNCHANG = ("fp8_attention cannot be expressed: yunchang's attention types that train (FA, FA3) run "
                          "flash-attn in bf16 and its FP8 types (SAGE_FP8*) run forward only; plan without "
                          "--fp8-attention")
_FP8_ATTENTION_REFUSALS = {"megatron": FP8_ATTENTION_NO_FLAG, "mindspeed": FP8_ATTENTION_NO_FLAG,
                           "yunchang": FP8_ATTENTION_YUNCHANG}


def option_failures(framework: str, plan, model: ModelSpec) -> list[str]:
    """Why `framework`'s flags cannot express the options `plan` of `model` takes (none: [])."""
    return [*_megatron_only_failures(framework, plan), *_fp8_attention_failures(framework, plan),
            *_mtp_failures(framework, model), *_mla_up_proj_failures(framework, plan),
            *_module_recompute_failures(framework, plan), *_mlp_recompute_failures(framework, plan)]


def _fp8_attention_failures(framework: str, plan) -> list[str]:
    """FP8 attention for the Megatron-based frameworks and yunchang (torchtitan refuses it on its
    own, DeepSpeed with its FP8 GEMMs)."""
    refusal = _FP8_ATTENTION_REFUSALS.get(framework)
    return [refusal] if plan.fp8_attention and refusal is not None else []


# The Megatron family: Megatron-LM and MindSpeed, which takes Megatron's flags as they are. Only
# they train multi-token prediction depths (ModelSpec.mtp_layers, cost.mtp: --mtp-num-layers,
# megatron/training/arguments.py at d98e8a6; MindSpeed-LLM's DeepSeek-V3 recipe,
# examples/mcore/deepseek3/pretrain_deepseek3_671b_4k_ptd.sh) and recompute MLA's up-projections
# alone (plan recompute mla_up_proj: --recompute-modules mla_up_proj, transformer_config.py at
# d98e8a64 lines 1969-1973) and the other named modules (moe_act, layernorm: lines 560-581).
MTP_FRAMEWORKS: tuple[str, ...] = ("megatron", "mindspeed")
MLA_UP_PROJ_FRAMEWORKS = MTP_FRAMEWORKS
MODULE_RECOMPUTE_FRAMEWORKS = MTP_FRAMEWORKS
# Token dropping (--moe-capacity-factor): Megatron's --moe-expert-capacity-factor, which MindSpeed
# takes too; the others' flags cannot set it (flags.experts.capacity_failures, torchtitan_failures).
CAPACITY_FRAMEWORKS = MTP_FRAMEWORKS


def _mtp_failures(framework: str, model: ModelSpec) -> list[str]:
    """Multi-token prediction where the framework cannot train it."""
    if not model.mtp_layers or framework in MTP_FRAMEWORKS:
        return []
    return [f"mtp_layers {model.mtp_layers} cannot be expressed: {framework} has no multi-token prediction "
            "(Megatron-Core's --mtp-num-layers); use megatron or mindspeed, or leave out --mtp-layers"]


def _mla_up_proj_failures(framework: str, plan) -> list[str]:
    """Recompute mla_up_proj where the framework has no such module recompute (cost.mla_recompute)."""
    if plan.recompute not in MLA_UP_PROJ_RECOMPUTES or framework in MLA_UP_PROJ_FRAMEWORKS:
        return []
    return [f"recompute {plan.recompute} cannot be expressed: {framework} has no recompute of MLA's up-projections "
            "alone (Megatron-LM's --recompute-modules mla_up_proj); plan with recompute selective or full"]


def _mlp_recompute_failures(framework: str, plan) -> list[str]:
    """Recompute mlp (cost.mlp_recompute) where the framework has no recompute of the dense MLP alone
    (Megatron-LM's --recompute-modules mlp, transformer_layer.py at d98e8a64 lines 537-539)."""
    if plan.recompute not in MLP_RECOMPUTES or framework in MODULE_RECOMPUTE_FRAMEWORKS:
        return []
    return [f"recompute {plan.recompute} cannot be expressed: {framework} has no recompute of the dense MLP alone "
            "(Megatron-LM's --recompute-modules mlp); plan with selective or full"]


def _module_recompute_failures(framework: str, plan) -> list[str]:
    """The MoE module recomputes (moe_act, moe_act+layernorm; cost.module_recompute) where the framework
    has no such recompute, or with delayed-scaling FP8, which Megatron refuses for them
    (transformer_config.py at d98e8a64 lines 2000-2006)."""
    if plan.recompute not in MOE_MODULE_RECOMPUTES:
        return []
    if framework not in MODULE_RECOMPUTE_FRAMEWORKS:
        return [f"recompute {plan.recompute} cannot be expressed: {framework} has no recompute of the MoE activation "
                "or norms alone (Megatron-LM's --recompute-modules moe_act layernorm); plan with selective or full"]
    if plan.precision == "fp8" and plan.fp8_recipe == "delayed":
        return [f"recompute {plan.recompute} with fp8_recipe delayed: Megatron refuses moe_act and layernorm recompute "
                "under delayed scaling (\"Delayed scaling does not support moe_act and layernorm recompute\"); "
                "use --fp8-recipe tensorwise or blockwise"]
    return []


def _megatron_only_failures(framework: str, plan) -> list[str]:
    """Plan options sp-plan emits for Megatron-LM only (MEGATRON_ONLY_OPTION_FRAMEWORKS)."""
    failures = []
    if plan.cpu_offload_layers and framework not in MEGATRON_ONLY_OPTION_FRAMEWORKS:
        failures.append(f"cpu_offload_layers {plan.cpu_offload_layers} cannot be expressed: sp-plan emits activation "
                        "CPU offloading for Megatron-LM only (--cpu-offloading-num-layers, cost.offload)")
    if plan.adam_moments_bf16 and framework not in MEGATRON_ONLY_OPTION_FRAMEWORKS:
        failures.append("adam_moments_bf16 cannot be expressed: sp-plan emits bf16 Adam moments for Megatron-LM only "
                        "(--use-precision-aware-optimizer, cost.states)")
    elif (adam := adam_moments_problem(plan)) is not None:
        failures.append(adam)
    return failures
