"""A MoE model's router in torchtitan's terms: the MoEArgs router fields (v0.2.2
torchtitan/models/moe/moe.py; the same names in TokenChoiceTopKRouter.Config and MoE.Config at
b5bcd76c6 models/common/moe.py) that reproduce MoESpec's router, the flavors torchtitan ships for the
built-ins, and the routers it cannot run. The fields sit in the model's Python flavor, not in the
TOML sp-plan emits, so the plan names them (router_notes) instead of setting them.

TokenChoiceTopKRouter.forward: scores = sigmoid or softmax over every expert (fp32); the choice adds
the expert bias (MoE.expert_bias, kept when load_balance_coeff is not None) and masks all but the
num_limited_groups groups of num_expert_groups whose top 2 scores sum highest; the chosen scores are
divided by their sum where route_norm (any top_k), then times route_scale; score_before_experts
scales the experts' input, else their output (MoE.forward)."""

from __future__ import annotations

from sp_planner.flags.base import FlagRequest
from sp_planner.specs.moe import GROUP_RANK_SCORES, MoESpec

# MoEArgs.load_balance_coeff, its default (v0.2.2 moe.py MoEArgs; b5bcd76c6 MoE.Config): the expert
# bias's update rate, DeepSeek-V3's bias update speed 0.001 (arXiv 2412.19437 s4.2) and Megatron's
# --moe-router-bias-update-rate default 1e-3.
LOAD_BALANCE_COEFF = 1e-3

# Built-in name -> (module, flavor, its MoEArgs router fields) as torchtitan v0.2.2 ships them
# (torchtitan/models/<module>/__init__.py; fields a flavor leaves out take MoEArgs' defaults:
# score_func sigmoid, route_norm False, route_scale 1.0, no groups, score_before_experts True,
# load_balance_coeff 1e-3).
FLAVORS: dict[str, tuple[str, str, dict[str, object]]] = {
    # deepseek_v3/__init__.py lines 130-148.
    "DeepSeek-V3": ("deepseek_v3", "671B", {"score_func": "sigmoid", "route_norm": True, "route_scale": 2.5,
                                           "num_expert_groups": 8, "num_limited_groups": 4,
                                           "score_before_experts": False, "load_balance_coeff": LOAD_BALANCE_COEFF}),
    # qwen3/__init__.py lines 145-191.
    **{name: ("qwen3", flavor, {"score_func": "softmax", "route_norm": True, "route_scale": 1.0,
                                "num_expert_groups": None, "num_limited_groups": None,
                                "score_before_experts": False, "load_balance_coeff": LOAD_BALANCE_COEFF})
       for name, flavor in (("Qwen3-30B-A3B", "30B-A3B"), ("Qwen3-235B-A22B", "235B-A22B"))},
    # llama4/__init__.py lines 38-60: MoEArgs(num_experts=...) alone.
    **{name: ("llama4", flavor, {"score_func": "sigmoid", "route_norm": False, "route_scale": 1.0,
                                 "num_expert_groups": None, "num_limited_groups": None,
                                 "score_before_experts": True, "load_balance_coeff": LOAD_BALANCE_COEFF})
       for name, flavor in (("Llama-4-Scout-17B-16E", "17bx16e"), ("Llama-4-Maverick-17B-128E", "17bx128e"))},
    # gpt_oss/__init__.py lines 47-76 (also gate_bias True: gpt-oss's router bias, which MoESpec leaves out).
    **{name: ("gpt_oss", flavor, {"score_func": "softmax", "route_norm": True, "route_scale": 1.0,
                                  "num_expert_groups": None, "num_limited_groups": None,
                                  "score_before_experts": False, "load_balance_coeff": LOAD_BALANCE_COEFF})
       for name, flavor in (("gpt-oss-20b", "20b"), ("gpt-oss-120b", "120b"))},
}


def router_args(moe: MoESpec) -> dict[str, object]:
    """The MoEArgs router fields that route as `moe` does. Softmax: torchtitan takes the softmax over
    every expert, so route_norm renormalises the top k (the softmax over the top k logits, Megatron's
    default) and its absence keeps them (router_pre_softmax). Sigmoid: route_norm is router_topk_norm
    for top_k > 1; a top-1 weight is its score (MoESpec), which route_norm would make 1."""
    if moe.router_score_function == "softmax":
        route_norm = not moe.router_pre_softmax
    else:
        route_norm = moe.router_topk_norm and moe.top_k > 1
    groups = moe.router_groups > 1
    return {"score_func": moe.router_score_function, "route_norm": route_norm,
            "route_scale": moe.routed_scaling_factor,
            "num_expert_groups": moe.router_groups if groups else None,
            "num_limited_groups": moe.router_group_topk if groups else None,
            "score_before_experts": moe.probs_on_input,
            # torchtitan has no auxiliary loss: its only balancing is the expert bias.
            "load_balance_coeff": LOAD_BALANCE_COEFF if moe.score_correction_bias else None}


def _listed(args: dict[str, object]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in args.items())


def router_notes(request: FlagRequest) -> list[str]:
    """The MoEArgs the model's flavor needs, and how torchtitan's shipped flavor of it differs."""
    # Worded for 0.2.2 alone: the 0.3.0 flags (flags.torchtitan) need a config function of
    # flags.torchtitan.CONFIGS, which holds dense models only, and refuse every MoE model before
    # their notes (its _config_failure), so these notes render for 0.2.2's TOML sections only.
    m = request.model
    if m.moe is None:
        return []
    wanted = router_args(m.moe)
    head = (f"torchtitan sets the router in the model flavor's MoEArgs, not in these sections: {m.name} routes as "
            f"MoEArgs({_listed(wanted)})")
    shipped = FLAVORS.get(m.name)
    if shipped is None:
        return [f"{head}; torchtitan 0.2.2 ships no {m.name} flavor, so the model you merge these sections into "
                "must set them."]
    module, flavor, args = shipped
    differs = {key: value for key, value in wanted.items() if args[key] != value}
    if not differs:
        return [f"{head}, as torchtitan 0.2.2's {module} flavor {flavor} does."]
    extra = " (an expert bias the model does not have; torchtitan has no auxiliary loss)" if (
        "load_balance_coeff" in differs and differs["load_balance_coeff"] is None) else ""
    theirs = ", ".join(f"{key}={args[key]!r}" for key in differs)
    return [f"{head}; torchtitan 0.2.2's {module} flavor {flavor} sets {theirs}{extra}: set "
            f"{_listed(differs)} in the flavor you run, or the router trains otherwise than planned."]


def router_failures(request: FlagRequest) -> list[str]:
    """Routers torchtitan's TokenChoiceTopKRouter cannot run: groups of fewer than GROUP_RANK_SCORES
    experts (_get_node_limited_routing_scores raises "experts_per_group ... must be >= 2", v0.2.2
    moe.py, as it ranks a group by its top 2 scores)."""
    moe = request.model.moe
    if moe is None or moe.router_groups == 1 or moe.num_experts // moe.router_groups >= GROUP_RANK_SCORES:
        return []
    return [f"router_groups {moe.router_groups} of {moe.num_experts} experts cannot be expressed: torchtitan's "
            f"router ranks a group by its top {GROUP_RANK_SCORES} scores and refuses groups of fewer experts "
            "(experts_per_group must be >= 2)"]
