"""flags.option_refusals: the plan options only some frameworks' flags express."""

from __future__ import annotations

from sp_planner.flags.base import FRAMEWORKS
from sp_planner.flags.option_refusals import FP8_ATTENTION_NO_FLAG, FP8_ATTENTION_YUNCHANG, option_failures
from sp_planner.plan import ParallelPlan
from tests.flags.conftest import LLAMA3_8B

OFFLOAD = ("cpu_offload_layers 2 cannot be expressed: sp-plan emits activation CPU offloading for Megatron-LM "
           "only (--cpu-offloading-num-layers, cost.offload)")


def test_a_plan_without_such_options_is_refused_by_none():
    assert all(option_failures(framework, ParallelPlan(), LLAMA3_8B) == [] for framework in FRAMEWORKS)


def test_multi_token_prediction_is_the_megatron_familys():
    model = LLAMA3_8B.model_copy(update={"mtp_layers": 1})
    assert option_failures("megatron", ParallelPlan(), model) == []
    assert option_failures("mindspeed", ParallelPlan(), model) == []
    assert option_failures("deepspeed", ParallelPlan(), model) == [
        "mtp_layers 1 cannot be expressed: deepspeed has no multi-token prediction (Megatron-Core's "
        "--mtp-num-layers); use megatron or mindspeed, or leave out --mtp-layers"]


def test_each_refusal_in_order_offloading_before_fp8_attention():
    plan = ParallelPlan(precision="fp8", fp8_attention=True, cpu_offload_layers=2, recompute="none")
    assert option_failures("megatron", plan, LLAMA3_8B) == [FP8_ATTENTION_NO_FLAG]
    assert option_failures("mindspeed", plan, LLAMA3_8B) == [OFFLOAD, FP8_ATTENTION_NO_FLAG]
    assert option_failures("yunchang", plan, LLAMA3_8B) == [OFFLOAD, FP8_ATTENTION_YUNCHANG]
    # torchtitan and DeepSpeed refuse FP8 attention in their own rules, not here.
    assert option_failures("torchtitan", plan, LLAMA3_8B) == [OFFLOAD]
