"""flags.torchtitan_router: each MoE built-in's router in torchtitan's MoEArgs, against the model's
own (transformers) router on seeded logits, and the notes and refusals sp-plan prints."""

from __future__ import annotations

import pytest
import torch

from sp_planner.catalog import load_model
from sp_planner.flags import FlagRequest
from sp_planner.flags.torchtitan_router import FLAVORS, router_args, router_failures, router_notes
from sp_planner.flags.torchtitan import render as render_newest
from sp_planner.flags.torchtitan_v02 import render
from sp_planner.plan import ParallelPlan
from sp_planner.specs.workload import Workload

MOE_BUILTINS = ["Mixtral-8x7B", "Qwen3-30B-A3B", "DeepSeek-V3", "Llama-4-Scout-17B-16E", "Kimi-K2", "gpt-oss-20b",
                "GLM-4.5", "GLM-4.5-Air"]


def _torchtitan_weights(logits: torch.Tensor, top_k: int, args: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """TokenChoiceTopKRouter.forward (v0.2.2 models/moe/moe.py) without groups and bias: (experts, weights)."""
    scores = torch.sigmoid(logits) if args["score_func"] == "sigmoid" else torch.softmax(logits, dim=-1)
    experts = scores.topk(top_k, dim=-1).indices
    weights = scores.gather(1, experts)
    if args["route_norm"]:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return experts, weights * args["route_scale"]


def _model_weights(name: str, logits: torch.Tensor, top_k: int, scale: float) -> torch.Tensor:
    """The chosen experts' weights as transformers computes them (4.57): MixtralSparseMoeBlock and
    GptOssTopKRouter a softmax over the top-k logits; Qwen3MoeSparseMoeBlock a softmax over every expert,
    renormalised (norm_topk_prob true in both published configs); DeepseekV3TopkRouter and Glm4MoeMoE
    sigmoid scores divided by their sum, times routed_scaling_factor; Llama4Router the top-1 sigmoid."""
    experts = logits.topk(top_k, dim=-1).indices
    chosen = logits.gather(1, experts)
    if name.startswith(("Mixtral", "gpt-oss")):
        return torch.softmax(chosen, dim=-1)
    if name.startswith("Qwen3"):
        weights = torch.softmax(logits, dim=-1).gather(1, experts)
        return weights / weights.sum(dim=-1, keepdim=True)
    if name.startswith("Llama-4"):
        return torch.sigmoid(chosen)
    weights = torch.sigmoid(chosen)
    return weights / (weights.sum(dim=-1, keepdim=True) + 1e-20) * scale


@pytest.mark.parametrize("name", MOE_BUILTINS)
def test_the_moe_args_route_as_the_model(name):
    moe = load_model(name).moe
    args = router_args(moe)
    logits = torch.randn(256, moe.num_experts, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    experts, weights = _torchtitan_weights(logits, moe.top_k, args)
    # Both pick the top-k logits (sigmoid and softmax keep their order); same experts, same weights.
    assert torch.equal(experts.sort().values, logits.topk(moe.top_k, dim=-1).indices.sort().values)
    torch.testing.assert_close(weights, _model_weights(name, logits, moe.top_k, moe.routed_scaling_factor))
    assert args["score_before_experts"] is name.startswith("Llama-4")  # Llama4TextMoe scales the input
    assert (args["load_balance_coeff"] is not None) is moe.score_correction_bias


def test_a_pre_softmax_router_keeps_torchtitans_full_softmax_unnormalised():
    # Qwen3MoeConfig's default norm_topk_prob false: softmax over every expert, top k kept as they are.
    model = load_model("qwen3-30b-a3b")
    moe = model.moe.model_copy(update={"router_pre_softmax": True})
    args = router_args(moe)
    assert args["route_norm"] is False
    logits = torch.randn(64, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    experts, weights = _torchtitan_weights(logits, 8, args)
    torch.testing.assert_close(weights, torch.softmax(logits, dim=-1).gather(1, experts))


def _request(name: str, **moe) -> FlagRequest:
    model = load_model(name)
    if moe:
        model = model.model_copy(update={"moe": model.moe.model_copy(update=moe)})
    return FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64),
                       plan=ParallelPlan(tp=1, dp=8, ep=8, etp=1, zero=1), num_nodes=1, gpus_per_node=8)


def test_deepseek_v3_is_torchtitans_671b_flavor():
    assert router_args(load_model("deepseek-v3").moe) == FLAVORS["DeepSeek-V3"][2]
    assert router_notes(_request("DeepSeek-V3")) == [
        "torchtitan sets the router in the model flavor's MoEArgs, not in these sections: DeepSeek-V3 routes as "
        "MoEArgs(score_func='sigmoid', route_norm=True, route_scale=2.5, num_expert_groups=8, num_limited_groups=4, "
        "score_before_experts=False, load_balance_coeff=0.001), as torchtitan 0.2.2's deepseek_v3 flavor 671B does."]


@pytest.mark.parametrize(("name", "module", "flavor"), [("Qwen3-30B-A3B", "qwen3", "30B-A3B"),
                                                         ("Llama-4-Scout-17B-16E", "llama4", "17bx16e"),
                                                         ("gpt-oss-20b", "gpt_oss", "20b")])
def test_a_shipped_flavor_with_an_expert_bias_the_model_lacks_is_named(name, module, flavor):
    # Each of these flavors keeps MoEArgs' load_balance_coeff 1e-3 (an expert bias); the models' routers have none.
    note = router_notes(_request(name))[0]
    assert note.endswith(f"load_balance_coeff=None); torchtitan 0.2.2's {module} flavor {flavor} sets "
                         "load_balance_coeff=0.001 (an expert bias the model does not have; torchtitan has no "
                         "auxiliary loss): set load_balance_coeff=None in the flavor you run, or the router trains "
                         "otherwise than planned.")


def test_a_model_without_a_flavor_is_told_to_set_the_args():
    note = router_notes(_request("Kimi-K2"))[0]
    assert "route_norm=True, route_scale=2.827, num_expert_groups=None" in note
    assert note.endswith("torchtitan 0.2.2 ships no Kimi-K2 flavor, so the model you merge these sections into must "
                         "set them.")
    assert router_notes(FlagRequest(model=load_model("llama3-8b"), workload=Workload(seq_len=4096, global_batch=64),
                                    plan=ParallelPlan(tp=1, dp=8), num_nodes=1, gpus_per_node=8)) == []


def test_the_rendered_sections_carry_the_router_note():
    flags = render(_request("Qwen3-30B-A3B"))
    assert flags.supported and any(n.startswith("torchtitan sets the router") for n in flags.notes)


@pytest.mark.parametrize("name", MOE_BUILTINS)
def test_the_0_3_0_flags_refuse_every_moe_model_so_the_router_notes_name_0_2_2(name):
    # flags.torchtitan.CONFIGS (0.3.0's config functions) holds dense models only: no 0.3.0 flags for a MoE
    # model carry the router note, whose wording is 0.2.2's.
    flags = render_newest(_request(name), "0.3.0")
    assert not flags.supported and f"torchtitan 0.3.0 has no config function for {name}" in (flags.reason or "")


def test_groups_of_one_expert_are_refused():
    # _get_node_limited_routing_scores: "experts_per_group ... must be >= 2" (its group rank is a top-2 sum).
    request = _request("DeepSeek-V3", num_experts=16, top_k=8, router_groups=16, router_group_topk=8)
    assert router_failures(request) == [
        "router_groups 16 of 16 experts cannot be expressed: torchtitan's router ranks a group by its top 2 scores "
        "and refuses groups of fewer experts (experts_per_group must be >= 2)"]
    assert not render(request).supported
    assert router_failures(_request("DeepSeek-V3")) == []
