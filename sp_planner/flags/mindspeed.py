"""MindSpeed (Ascend) flags for a plan (shared reference framework_flags.md, section 2).

MindSpeed patches Megatron-LM: the parallel, batch and recompute flags are Megatron's; the CP
algorithm is chosen with --context-parallel-algo instead of Megatron's --cp-comm-type.
Flag definitions: mindspeed/features_manager/context_parallel/context_parallel_feature.py and the
legacy mindspeed/arguments.py::_add_cp_args (validation at lines 645-690).
"""

from __future__ import annotations

from sp_planner.flags.base import (
    FlagRequest,
    FrameworkFlags,
    kv_heads_per_tp_rank,
    refusal,
    supported,
)
from sp_planner.flags.attention_mask import mindspeed_non_causal_failures
from sp_planner.flags.experts import dispatcher_failures
from sp_planner.flags.megatron import bash_array, common_failures, common_groups, common_notes, env_lines
from sp_planner.flags.megatron_moe import expert_bias_failures, router_failures
from sp_planner.flags.stages import split_form


def _algo(request: FlagRequest) -> tuple[list[str], list[str]]:
    """(flags, failures) for the CP algorithm. Rules: mindspeed/arguments.py:645-690 (legacy) and
    features_manager/context_parallel/*.py validate_args, as tabled in reference section 2."""
    p, m, s = request.plan, request.model, request.workload.seq_len
    if p.cp == 1:
        return [], []
    failures = []
    if p.ring == 1:
        algo = ["--context-parallel-algo ulysses_cp_algo"]
        if s % p.cp != 0:
            failures.append(f"seq_len {s} is not divisible by cp {p.cp} (ulysses_cp_algo)")
        if m.num_heads % (p.cp * p.tp) != 0:
            failures.append(
                f"num_attention_heads {m.num_heads} is not divisible by cp*tp = {p.cp}*{p.tp} "
                "(ulysses_cp_algo)"
            )
    elif p.allgather:
        # kvallgather_cp_algo (features path from 26.0.0, c1e421eb 2025-12-31): K/V all-gathered before
        # attention, the Llama 3 paper's CP; validate_args: a causal mask, seq % 2cp == 0 (load-balanced
        # split), --transformer-impl transformer_engine (docs/zh/features/kvallgather-context-parallel.md;
        # context_parallel_feature.py at 028de58c lines 20-23, 82-92). One level: no Ulysses beside it.
        algo = ["--context-parallel-algo kvallgather_cp_algo", "--transformer-impl transformer_engine"]
        if p.ulysses > 1:
            failures.append(f"all-gather CP under ulysses {p.ulysses} cannot be expressed: MindSpeed's "
                            "kvallgather_cp_algo is one level (no hybrid with Ulysses); use ulysses 1 or cp_comm p2p")
        if s % (2 * p.cp) != 0:
            failures.append(f"seq_len {s} is not divisible by 2*cp = 2*{p.cp} (kvallgather_cp_algo)")
    else:
        if p.ulysses == 1:
            algo = ["--context-parallel-algo megatron_cp_algo"]
        else:
            # hybrid: CP % U == 0 and ring = CP/U > 1 hold by construction (cp = ulysses * ring).
            algo = ["--context-parallel-algo hybrid_cp_algo", f"--ulysses-degree-in-cp {p.ulysses}"]
            if m.num_heads % (p.ulysses * p.tp) != 0:
                failures.append(
                    f"num_attention_heads {m.num_heads} is not divisible by ulysses*tp = "
                    f"{p.ulysses}*{p.tp} (hybrid_cp_algo)"
                )
        if s % (2 * p.cp) != 0:
            failures.append(f"seq_len {s} is not divisible by 2*cp = 2*{p.cp} ({algo[0].split()[-1]})")
        # 1 <= cp_window_size < ring and ring % window == 0; window 1 is the plain (single) ring.
        algo.append("--cp-window-size 1")
    if m.position_embedding == "alibi":
        # ALiBi under CP: megatron_cp_algo only, with --alibi-fusion-attn-type 2 and a causal mask
        # (context_parallel_feature.py at 028de58c lines 41-44 and 53-55; arguments.py lines 645-657).
        if algo[0] != "--context-parallel-algo megatron_cp_algo":
            failures.append(f"ALiBi under {algo[0].split()[-1]} cannot be expressed: MindSpeed runs ALiBi with "
                            "context parallelism only as megatron_cp_algo (ulysses 1, cp_comm p2p)")
        else:
            algo.append("--alibi-fusion-attn-type 2")
    # MindSpeed-LLM's default (context_parallel_feature.py at c77308a1 lines 31-37), stated as its CP docs
    # do; general is the same causal mask from the dataloader, not a bidirectional one (flags.attention_mask).
    algo.append("--attention-mask-type causal")
    if p.ring > 1 and not p.allgather:
        # Recommended by the MindSpeed CP docs (docs/zh/features/hybrid-context-parallel.md).
        algo += ["--use-cp-send-recv-overlap", "--megatron-cp-in-bnsd"]
    return algo, failures


def _stage_failures(request: FlagRequest) -> list[str]:
    """MindSpeed-LLM documents virtual stages only as --num-layers-per-virtual-pipeline-stage
    (docs/en/pytorch/features/mcore/virtual_pipeline_parallel.md), which Megatron rejects with uneven
    stages (arguments.py:529-531), and no --pipeline-model-parallel-layout."""
    p = request.plan
    if split_form(request) == "layout":
        # Megatron-Core 0.12.1 has the flag (arguments.py line 2266 at core_v0.12.1); MindSpeed-LLM's
        # docs name no such path, and its patches of the layer placement are not checked against it.
        return [f"the {p.first_stage_layers}/{p.last_stage_layers} first/last stage layers with vpp {p.vpp} cannot be "
                "expressed: they need Megatron's --pipeline-model-parallel-layout, which MindSpeed-LLM does not "
                "document (it sets virtual stages with --num-layers-per-virtual-pipeline-stage, refused with "
                "uneven stages); use vpp 1, first/last counts that divide by vpp, or --framework megatron"]
    if p.vpp > 1 and split_form(request) != "even":
        return [f"vpp {p.vpp} with uneven pipeline stages cannot be expressed: MindSpeed sets virtual stages "
                "with --num-layers-per-virtual-pipeline-stage, which Megatron refuses with uneven first/last "
                "stages; use vpp 1 or a layer count pp x vpp divides"]
    return []


def _routing_failures(request: FlagRequest) -> list[str]:
    """MindSpeed master patches Megatron-Core 0.12.1 (its installation guide's version table), which
    has no force-balanced routing: moe_router_force_load_balancing is absent from
    NVIDIA/Megatron-LM core_v0.12.1's transformer_config.py and arguments.py and first in core_v0.13.0."""
    moe = request.model.moe
    if moe is None or moe.routing != "balanced":
        return []
    return ["force-balanced routing cannot be expressed: MindSpeed runs on Megatron-Core 0.12.1, which has no "
            "--moe-router-force-load-balancing (added in 0.13.0); plan with --moe-routing learned"]


def render(request: FlagRequest) -> FrameworkFlags:
    algo, algo_failures = _algo(request)
    refused = refusal("mindspeed", request,
                      lambda: common_failures(request, "MindSpeed") + mindspeed_non_causal_failures(request)
                      + algo_failures + _stage_failures(request)
                      + dispatcher_failures(request, "MindSpeed (Ascend NPUs)")
                      + _routing_failures(request) + expert_bias_failures(request)
                      + router_failures(request, "MindSpeed's Megatron-Core 0.12.1")
                      + (["fp8_recipe blockwise cannot be expressed: MindSpeed master adds --fp8-recipe blockwise "
                          "(features_manager/megatron_basic/transformer_engine_basic.py at 028de58c) for its NPU "
                          "Transformer Engine, whereas sp-plan times block scaling from NVIDIA TE's GEMMs; plan with "
                          "--framework megatron"]
                         if request.plan.fp8_blockwise else []))
    if refused is not None:
        return refused
    args = bash_array("MINDSPEED_ARGS", common_groups(request, algo, mindspeed=True))
    text = "\n".join([*env_lines(request), args])
    script = "a Megatron pretrain_gpt.py that imports mindspeed.megatron_adaptor"
    notes = common_notes(request, "MINDSPEED_ARGS", script, mindspeed=True)
    p, m = request.plan, request.model
    if p.cp > 1:
        notes += [
            "--context-parallel-algo is passed explicitly because its default depends on the MindSpeed "
            "version (ulysses_cp_algo in the legacy arguments.py, megatron_cp_algo in the features path).",
            *(["kvallgather_cp_algo (all-gather CP) is in MindSpeed's features path from 26.0.0 on; earlier "
               "versions have no all-gather CP."] if p.allgather and p.ring > 1 else []),
            "MindSpeed 1.0.RC2 spells --attention-mask-type as --cp-attention-mask-type.",
        ]
    kv_per_tp = kv_heads_per_tp_rank(m, p.tp)
    if p.ulysses > 1 and kv_per_tp % p.ulysses != 0:
        notes.append(
            f"Only {kv_per_tp} KV heads per TP rank for ulysses {p.ulysses}: MindSpeed documents no rule "
            "for this GQA case (it checks query heads only); verify its Ulysses all-to-all accepts it."
        )
    return supported("mindspeed", text, notes)
