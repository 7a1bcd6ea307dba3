"""cli.option_checks: sp-plan's options beside the degrees, checked or resolved before any search."""

from __future__ import annotations

import pytest

from sp_planner.cli.option_checks import check_framework_options, resolve_fp8_recipe
from sp_planner.errors import UserInputError
from tests.cli.conftest import assert_one_line_error


@pytest.mark.parametrize(("given", "framework", "precision", "expected"), [
    (None, "megatron", "fp8", "delayed"),  # Transformer Engine's default in Megatron
    (None, "all", "fp8", "delayed"),
    (None, "torchtitan", "fp8", "tensorwise"),  # torchao float8 has dynamic scaling only
    (None, "torchtitan", "auto", "tensorwise"),
    (None, "torchtitan", "bf16", "delayed"),  # unread without FP8 GEMMs
    ("blockwise", "torchtitan", "fp8", "blockwise"),
    ("tensorwise", "megatron", "fp8", "tensorwise"),
])
def test_fp8_recipe_defaults_to_the_frameworks_own(given, framework, precision, expected):
    assert resolve_fp8_recipe(given, framework, precision) == expected


@pytest.mark.parametrize(("given", "precision"), [("delayed", "bf16"), ("delayed", "mxfp8"), ("tensorwise", "bf16")])
def test_a_given_recipe_needs_per_tensor_fp8(given, precision):
    # The default (None) resolves to delayed whatever the precision; a given recipe that nothing
    # reads is refused, not ignored.
    with pytest.raises(UserInputError, match=f"--fp8-recipe {given} applies to --precision fp8 .or auto., "
                                             f"not {precision}"):
        resolve_fp8_recipe(given, "megatron", precision)


def test_delayed_scaling_is_refused_for_torchtitan():
    with pytest.raises(UserInputError, match="torchtitan's float8 .torchao. has no delayed scaling"):
        resolve_fp8_recipe("delayed", "torchtitan", "fp8")


PLAIN = dict(moe_dispatcher="alltoall", mtp_layers=0, recompute=None, bf16_adam_moments=False, cpu_offload_layers=0,
             precision="bf16")


@pytest.mark.parametrize(("update", "framework", "message"), [
    ({"moe_dispatcher": "deepep"}, "torchtitan", "--moe-dispatcher deepep is Megatron's flex dispatcher"),
    ({"mtp_layers": 1}, "deepspeed", "--mtp-layers is Megatron's --mtp-num-layers"),
    ({"recompute": "mla_up_proj"}, "torchtitan", "--recompute mla_up_proj is Megatron's --recompute-modules"),
    ({"recompute": "moe_act"}, "deepspeed", "no recompute of the MoE activation or norms alone"),
    ({"recompute": "mlp"}, "torchtitan", "no recompute of the dense MLP alone"),
    ({"bf16_adam_moments": True}, "mindspeed", "--bf16-adam-moments is Megatron's"),
    ({"cpu_offload_layers": 2}, "torchtitan", "--cpu-offload-layers is Megatron's"),
    # A search whose every plan DeepSpeed refuses ran to its end and exited 1.
    ({"precision": "fp8"}, "deepspeed", "--precision fp8: DeepSpeed has no FP8 training recipe"),
    ({"precision": "mxfp8"}, "deepspeed", "--precision mxfp8: DeepSpeed has no FP8 training recipe"),
    # Token dropping: the search ran to its end and every plan's flags refused it (exit 1, 6 s).
    ({"moe_capacity_factor": 1.5}, "torchtitan", "--moe-capacity-factor is Megatron's --moe-expert-capacity-factor, "
                                                 "which sp-plan does not emit for torchtitan"),
    ({"moe_capacity_factor": 1.0}, "deepspeed", "which sp-plan does not emit for deepspeed"),
    ({"moe_capacity_factor": 1.0}, "yunchang", "which sp-plan does not emit for yunchang"),
])
def test_options_only_some_frameworks_emit(update, framework, message):
    options = {**PLAIN, **update}
    with pytest.raises(UserInputError, match=message):
        check_framework_options(framework, **options)
    check_framework_options("megatron", **options)  # Megatron emits every one
    check_framework_options("all", **options)
    if "moe_capacity_factor" in update:  # MindSpeed takes Megatron's flag
        check_framework_options("mindspeed", **options)


@pytest.mark.parametrize(("update", "framework", "fix"), [
    # Megatron-LM's flags are for CUDA GPUs: on Ascend NPUs the advice names MindSpeed alone, where
    # MindSpeed takes the option (flags.option_refusals.MTP_FRAMEWORKS and the like) ...
    ({"mtp_layers": 1}, "deepspeed", "use --framework mindspeed, or leave out --mtp-layers"),
    ({"recompute": "mlp"}, "torchtitan", "use --framework mindspeed, or --recompute selective or full"),
    ({"recompute": "moe_act"}, "yunchang", "use --framework mindspeed, or --recompute selective or full"),
    ({"recompute": "mla_up_proj"}, "deepspeed", "use --framework mindspeed, or --recompute selective or full"),
    ({"moe_capacity_factor": 1.0}, "torchtitan", "use --framework mindspeed, or leave out --moe-capacity-factor"),
    # ... and else says no framework for NPUs takes it (sp-plan emits these for Megatron-LM alone).
    ({"bf16_adam_moments": True}, "mindspeed", "on Ascend NPUs only --framework mindspeed runs, and it does not take "
                                               "it: leave out --bf16-adam-moments"),
    ({"cpu_offload_layers": 2}, "deepspeed", "on Ascend NPUs only --framework mindspeed runs, and it does not take "
                                             "it: leave out --cpu-offload-layers"),
    ({"moe_dispatcher": "deepep"}, "mindspeed", "on Ascend NPUs only --framework mindspeed runs, and it does not "
                                                "take it: leave out --moe-dispatcher"),
])
def test_on_npus_the_advice_names_only_frameworks_for_npus(update, framework, fix):
    options = {**PLAIN, **update}
    with pytest.raises(UserInputError) as refused:
        check_framework_options(framework, **options, npu=True)
    assert str(refused.value).endswith(f"; {fix}")
    assert "megatron" not in str(refused.value).split("; ")[-1]
    with pytest.raises(UserInputError) as on_gpus:
        check_framework_options(framework, **options)
    assert "use --framework megatron" in str(on_gpus.value)


def test_sp_plan_on_ascend_advises_no_gpu_framework(sp_plan):
    # sp-plan read the chips: it advised --framework megatron, whose flags are for CUDA GPUs.
    result = sp_plan("--model", "llama3-8b", "--hardware", "ascend-910b", "--nodes", "2", "--seq-len", "8k",
                     "--framework", "mindspeed", "--bf16-adam-moments")
    assert_one_line_error(result, "which sp-plan does not emit for mindspeed; on Ascend NPUs only --framework "
                                  "mindspeed runs, and it does not take it: leave out --bf16-adam-moments")
    assert "megatron" not in result.stderr.split("; ")[-1]


@pytest.mark.parametrize("framework", ["deepspeed", "yunchang", "torchtitan", "mindspeed"])
def test_a_sparse_attention_model_is_refused_up_front_outside_megatron(framework):
    # Each of their flags refuses every DSA plan (cost.dsa.DSA_FRAMEWORK_FAILURE): the search ran
    # for seconds and exited 1; now one line, before it.
    from sp_planner.catalog import load_model
    from sp_planner.cli.option_checks import check_model_framework

    v32 = load_model("deepseek-v3.2-exp")
    with pytest.raises(UserInputError, match=rf"^--framework {framework}: .*, which DeepSeek-V3.2-Exp uses; "
                                             "use --framework megatron$"):
        check_model_framework(framework, v32)
    for runs in ("megatron", "all"):
        check_model_framework(runs, v32)
    check_model_framework(framework, load_model("deepseek-v3"))
