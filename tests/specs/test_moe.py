"""MoESpec's router fields: what Megatron-Core accepts, refused otherwise with the reason."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_model
from sp_planner.specs.moe import MoESpec

SIGMOID = {"num_experts": 8, "top_k": 2, "moe_intermediate_size": 64, "router_score_function": "sigmoid"}
SOFTMAX = {**SIGMOID, "router_score_function": "softmax"}


def test_router_fields_default_to_megatrons_defaults():
    # Megatron: pre-softmax off, no expert bias, scaling factor None (1), probs applied after the
    # expert (megatron-core 0.16.1 TransformerConfig).
    moe = MoESpec.model_validate(SOFTMAX)
    assert (moe.router_pre_softmax, moe.score_correction_bias, moe.routed_scaling_factor, moe.probs_on_input) == (
        False, False, 1.0, False)


def test_score_correction_bias_needs_a_sigmoid_router():
    assert MoESpec.model_validate({**SIGMOID, "score_correction_bias": True}).score_correction_bias
    with pytest.raises(ValueError, match="score_correction_bias needs router_score_function sigmoid"):
        MoESpec.model_validate({**SOFTMAX, "score_correction_bias": True})


def test_pre_softmax_is_a_softmax_routers_option():
    assert MoESpec.model_validate({**SOFTMAX, "router_pre_softmax": True}).router_pre_softmax
    with pytest.raises(ValueError, match="router_pre_softmax is a softmax router's option"):
        MoESpec.model_validate({**SIGMOID, "router_pre_softmax": True})


def test_probs_on_input_needs_top_1_routing():
    assert MoESpec.model_validate({**SIGMOID, "top_k": 1, "probs_on_input": True}).probs_on_input
    with pytest.raises(ValueError, match="probs_on_input needs top-1 routing, got top_k 2"):
        MoESpec.model_validate({**SIGMOID, "probs_on_input": True})


@pytest.mark.parametrize("factor", [0.0, -1.0, float("inf")])
def test_routed_scaling_factor_is_a_positive_finite_number(factor):
    with pytest.raises(ValueError):
        MoESpec.model_validate({**SIGMOID, "routed_scaling_factor": factor})


@pytest.mark.parametrize(("name", "bias", "factor", "on_input"), [
    # HF config.json routed_scaling_factor and e_score_correction_bias (noaux_tc), as Megatron-Bridge's
    # providers set moe_router_topk_scaling_factor and moe_router_enable_expert_bias.
    ("DeepSeek-V3", True, 2.5, False), ("Kimi-K2", True, 2.827, False), ("GLM-4.5", True, 2.5, False),
    ("GLM-4.5-Air", True, 1.0, False),
    # Llama4TextMoe scales the expert's input by its top-1 sigmoid weight.
    ("Llama-4-Scout-17B-16E", False, 1.0, True), ("Llama-4-Maverick-17B-128E", False, 1.0, True),
    # Softmax routers whose top k are renormalised (norm_topk_prob true) or softmaxed after the top k.
    ("Qwen3-30B-A3B", False, 1.0, False), ("Mixtral-8x7B", False, 1.0, False), ("gpt-oss-120b", False, 1.0, False),
])
def test_builtin_routers(name, bias, factor, on_input):
    moe = load_model(name).moe
    assert (moe.score_correction_bias, moe.routed_scaling_factor, moe.probs_on_input) == (bias, factor, on_input)
    assert not moe.router_pre_softmax


def test_router_groups_divide_the_experts_and_open_no_more_than_there_are():
    moe = MoESpec.model_validate({**SIGMOID, "router_groups": 4, "router_group_topk": 2})
    assert (moe.router_groups, moe.router_group_topk) == (4, 2)
    with pytest.raises(ValueError, match="router_groups 3 must divide num_experts 8"):
        MoESpec.model_validate({**SIGMOID, "router_groups": 3})
    with pytest.raises(ValueError, match="router_group_topk 4 may not exceed it"):
        MoESpec.model_validate({**SIGMOID, "router_groups": 2, "router_group_topk": 4})


def test_deepseek_v3_routes_within_4_of_8_groups_and_the_others_without_groups():
    assert (load_model("DeepSeek-V3").moe.router_groups, load_model("DeepSeek-V3").moe.router_group_topk) == (8, 4)
    for name in ("Kimi-K2", "GLM-4.5", "Qwen3-235B-A22B"):
        assert (load_model(name).moe.router_groups, load_model(name).moe.router_group_topk) == (1, 1)


def test_router_topk_norm_false_is_a_sigmoid_top_k_routers_option():
    # HF norm_topk_prob false on a sigmoid router (DeepseekV3TopkRouter, Glm4MoeMoE): the raw scores.
    assert not MoESpec.model_validate({**SIGMOID, "router_topk_norm": False}).router_topk_norm
    with pytest.raises(ValueError, match="router_topk_norm false is a sigmoid router's option with top_k > 1, got "
                                         "softmax with top_k 2"):
        MoESpec.model_validate({**SOFTMAX, "router_topk_norm": False})
    with pytest.raises(ValueError, match="got sigmoid with top_k 1"):
        MoESpec.model_validate({**SIGMOID, "top_k": 1, "router_topk_norm": False})


@pytest.mark.parametrize("name", ["DeepSeek-V3", "Kimi-K2", "GLM-4.5", "GLM-4.5-Air", "Llama-4-Scout-17B-16E",
                                  "Qwen3-30B-A3B", "Mixtral-8x7B", "gpt-oss-120b"])
def test_every_builtin_router_normalises_its_top_k(name):
    # Their config.json files set norm_topk_prob true (DeepSeek-V3, Kimi K2, GLM-4.5/Air) or route
    # top-1 (Llama 4) or with softmax (the rest).
    assert load_model(name).moe.router_topk_norm
