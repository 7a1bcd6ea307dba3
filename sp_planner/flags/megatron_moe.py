"""Megatron-LM's MoE flags for a plan (reference moe_fp8_pipeline_frameworks.md 1.1), shared with
MindSpeed through flags/megatron.py common_groups: the experts, their parallelism, the token
dispatcher and the routing the cost model timed (cost.moe)."""

from __future__ import annotations

from sp_planner.flags.base import FlagGroup, FlagRequest
from sp_planner.specs.moe import GROUP_RANK_SCORES


def dispatcher_flags(dispatcher: str, *, mindspeed: bool = False, sms: int | None = None) -> list[str]:
    """The token dispatcher cost.moe times (MoESpec.dispatcher; `sms`: MoESpec.dispatcher_sms)."""
    if dispatcher == "deepep":
        # The flex dispatcher's DeepEP backend (cost.deepep), then Megatron's fused permute around
        # it (_DeepepManager, moe_permute_fusion). megatron-core 0.16's SM count is
        # --moe-deepep-num-sms (default 20; later releases rename it --moe-flex-dispatcher-num-sms).
        return ["--moe-token-dispatcher-type flex", "--moe-flex-dispatcher-backend deepep", "--moe-permute-fusion",
                *([] if sms is None else [f"--moe-deepep-num-sms {sms}"])]
    if dispatcher == "hybridep":
        # The flex dispatcher's HybridEP backend: it permutes inside its own kernels, which cost.moe
        # times as no permutation passes.
        return ["--moe-token-dispatcher-type flex", "--moe-flex-dispatcher-backend hybridep"]
    # The planner costs the all-to-all dispatcher (cost.moe); Megatron's default is allgather. Its
    # fused permutations are what cost.moe times (TE's permute kernels; TransformerConfig refuses
    # --moe-permute-fusion without TE >= 2.1, which Megatron's TE spec needs anyway). MindSpeed
    # patches these ops for the NPU and is left at its default.
    return ["--moe-token-dispatcher-type alltoall", *([] if mindspeed else ["--moe-permute-fusion"])]


def router_pads(model) -> bool:
    """Whether sp-plan's Megatron flags pad each expert's rows in the router under FP8/MXFP8
    (--moe-router-padding-for-quantization): a dropless MoE on the alltoall dispatcher (the grouped
    GEMM is always emitted). Capacity-factor plans keep Megatron's default: the capacity (padded or
    not) is what the cost model times, and HybridEP pads in its own kernels (cost.expert_padding)."""
    return model.moe is not None and model.moe.dispatcher == "alltoall" and model.moe.capacity_factor is None


def moe_groups(request: FlagRequest, mindspeed: bool = False) -> list[FlagGroup]:
    """Experts and their parallelism (reference moe_fp8_pipeline_frameworks.md 1.1): the expert grid
    is Megatron-Core's second RankGenerator (etp, ep, edp, pp; layout.EXPERT_GRID_ORDER)."""
    p, m = request.plan, request.model
    if m.moe is None:
        return []
    flags = [
        f"--num-experts {m.moe.num_experts}",
        f"--moe-router-topk {m.moe.top_k}",
        # Defaults to --ffn-hidden-size with a warning (arguments.py); always the expert's own width.
        f"--moe-ffn-hidden-size {m.moe.moe_intermediate_size}",
        f"--expert-model-parallel-size {p.ep}",
        # None means ETP = TP (arguments.py); the plan's value is always explicit.
        f"--expert-tensor-parallel-size {p.etp}",
        *dispatcher_flags(m.moe.dispatcher, mindspeed=mindspeed, sms=m.moe.dispatcher_sms),
        "--moe-grouped-gemm",
    ]
    if not m.linear_bias and not m.moe.expert_bias:
        # add_bias_linear defaults to True, and TransformerConfig refuses biased experts with ETP > 1
        # (expert_bias_failures).
        flags.append("--disable-bias-linear")
    if m.moe.router_score_function != "softmax":
        # TransformerConfig refuses top-1 softmax routing without --moe-router-pre-softmax; Llama 4's
        # top-1 router is a sigmoid.
        flags.append(f"--moe-router-score-function {m.moe.router_score_function}")
    flags += router_flags(m.moe, mindspeed=mindspeed)
    if m.moe.num_shared_experts:
        # The total width of the shared experts (TransformerConfig.moe_shared_expert_intermediate_size).
        flags.append(f"--moe-shared-expert-intermediate-size {m.moe.num_shared_experts * m.moe.moe_intermediate_size}")
    if m.moe.first_dense_layers or m.moe.layer_step > 1:
        flags.append(f'--moe-layer-freq "{moe_layer_pattern(m)}"')
    if not mindspeed and p.precision in ("fp8", "mxfp8") and router_pads(m):
        # The router pads each expert's count to TE's FP8/MXFP8 alignment (TransformerConfig
        # moe_router_padding_for_quantization; token_dispatcher.py pad_routing_map), so TEGroupedMLP
        # skips its Fp8Padding copies (moe_utils.skip_routed_expert_padding): Runtime.expert_row_padding
        # ROUTER_PADS in flags.release_runtime. The padded entries route with probability 0 but are
        # dispatched and computed (cost.expert_padding.router_pad_load).
        flags.append("--moe-router-padding-for-quantization")
    routing = "dropless routing"
    if "--moe-router-padding-for-quantization" in flags:
        routing += ", counts padded to the FP8 alignment by the router (no grouped-MLP padding copies)"
    if m.moe.routing == "balanced":
        # Benchmarking only: random router logits spread the tokens evenly (TransformerConfig
        # moe_router_force_load_balancing, "[Experimental] ... only for benchmark"); the plan was
        # costed with an even load (cost.moe router_imbalance).
        flags.append("--moe-router-force-load-balancing")
    if m.moe.capacity_factor is not None:
        # Token dropping (TransformerConfig.moe_expert_capacity_factor; its default load-balancing
        # type aux_loss is one of those it accepts); padded to capacity when the plan was costed so.
        flags.append(f"--moe-expert-capacity-factor {m.moe.capacity_factor:g}")
        routing = f"capacity factor {m.moe.capacity_factor:g}, overflow dropped"
        if m.moe.pad_to_capacity:
            flags.append("--moe-pad-expert-input-to-capacity")
            routing += ", padded to capacity"
    if m.moe.routing == "balanced":
        routing = f"force-balanced {routing}"
    if mindspeed and m.moe.probs_on_input:
        routing += ("; the expert weight scales the expert's output: Megatron 0.12.1 under MindSpeed has no "
                    "--moe-apply-probs-on-input (the model scales its input)")
    return [(f"experts: ep {p.ep} x etp {p.etp} x edp {p.edp} x pp {p.pp}, {routing}", flags)]


def router_flags(moe, *, mindspeed: bool = False) -> list[str]:
    """How the router weighs the chosen experts (MoESpec's router fields; none of them a cost term):
    Megatron's flags, each off by default (arguments.py at core_r0.12.0 lines 2529-2538, MindSpeed's
    base, and megatron-core 0.16.1 TransformerConfig), so a model without them gets none.
    --moe-apply-probs-on-input came to arguments.py in core_v0.13.0, after MindSpeed's Megatron
    0.12.1: MindSpeed gets it never (moe_groups says so).
    MindSpeed-LLM (Ascend/MindSpeed-LLM c77308a1, on core_v0.12.1) parses the same flags (its
    features_manager/moe/moe_router.py adds choices and flags of its own, and maps its deprecated
    --n-group, --topk-group, --routed-scaling-factor onto these) and routes with them alike: its
    patched TopKRouter.routing (core/transformer/moe/router.py) sends the default load-balancing type
    aux_loss to Megatron's aux_loss_load_balancing -> topk_softmax_with_capacity with these options.
    Its own --norm-topk-prob, off by default, divides the weights by their sum again after the scaling
    factor (undoing it) in that branch, and its --moe-router-load-balancing-type group_limited_greedy
    ranks a group by its top score: neither is emitted."""
    flags = []
    if moe.router_pre_softmax:
        flags.append("--moe-router-pre-softmax")
    if moe.score_correction_bias:
        flags.append("--moe-router-enable-expert-bias")
    if moe.routed_scaling_factor != 1:
        flags.append(f"--moe-router-topk-scaling-factor {moe.routed_scaling_factor:g}")
    if moe.router_groups > 1:
        flags += [f"--moe-router-num-groups {moe.router_groups}", f"--moe-router-group-topk {moe.router_group_topk}"]
    if moe.probs_on_input and not mindspeed:
        flags.append("--moe-apply-probs-on-input")
    return flags


def router_failures(request: FlagRequest, core: str = "Megatron-Core") -> list[str]:
    """Routers Megatron-Core computes otherwise than the model (MoESpec.router_topk_norm,
    router_groups), one line each; `core` names the Megatron-Core that runs it (MindSpeed's 0.12.1
    has the same router lines)."""
    moe, name = request.model.moe, request.model.name
    if moe is None:
        return []
    failures = []
    if not moe.router_topk_norm:
        # A sigmoid router's top k > 1 is always divided by its sum: `probs = scores / (scores.sum(...)
        # + 1e-20) if topk > 1 else scores` (topk_routing_with_score_function, Megatron-LM d98e8a64dd
        # moe_utils.py line 929, core_v0.16.1 line 724, core_v0.12.1 topk_softmax_with_capacity line
        # 552), with no option to skip it.
        failures.append(f"router_topk_norm false cannot be expressed: {name}'s sigmoid router keeps its top "
                        f"{moe.top_k} scores unnormalised (HF norm_topk_prob false), and {core} divides "
                        "a sigmoid router's top k by their sum; run the model's own router instead (its transformers "
                        "code, or torchtitan's with route_norm false)")
    # Megatron-Core ranks an expert group by the sum of its top (top_k // group_topk) scores
    # (moe_utils.group_limited_topk: Megatron-LM d98e8a64dd lines 711-712, core_v0.16.1 line 554,
    # core_v0.12.1 line 459), the model by its top GROUP_RANK_SCORES.
    per_group = moe.top_k // moe.router_group_topk
    if moe.router_groups > 1 and per_group != GROUP_RANK_SCORES:
        failures.append(f"router_groups {moe.router_groups} with router_group_topk {moe.router_group_topk} cannot be "
                        f"expressed: {core} ranks each expert group by its top top_k // "
                        f"group_topk = {moe.top_k} // {moe.router_group_topk} = {per_group} scores, {name}'s router "
                        f"(HF n_group / topk_group) by its top {GROUP_RANK_SCORES}, so it would route to other "
                        "groups; run the model's own router instead (its transformers code, or torchtitan's with "
                        "num_expert_groups, which ranks by the top 2)")
    return failures


def expert_bias_failures(request: FlagRequest) -> list[str]:
    """Biased experts (MoESpec.expert_bias) keep Megatron's add_bias_linear, which megatron-core 0.16.1
    allows with expert tensor parallelism 1 only (TransformerConfig.__post_init__: "Bias in Moe is only
    supported when ETP==1")."""
    m, p = request.model, request.plan
    if m.moe is None or not m.moe.expert_bias or p.etp == 1:
        return []
    return [f"etp {p.etp} cannot be expressed: {m.name}'s experts carry biases, which Megatron-Core allows only with "
            "expert tensor parallelism 1; plan with --etp 1"]


def moe_layer_pattern(m) -> str:
    """Megatron's --moe-layer-freq list (1 = MoE layer, one entry per layer, as arguments.py
    evaluates it) for the dense first layers, then every layer_step-th layer MoE (MoESpec)."""
    dense, step = m.moe.first_dense_layers, m.moe.layer_step
    cycles = m.num_moe_layers
    tail = m.num_layers - dense - cycles * step
    parts = [f"[0]*{dense}"] if dense else []
    parts.append(f"([0]*{step - 1}+[1])*{cycles}" if step > 1 else f"[1]*{cycles}")
    if tail:
        parts.append(f"[0]*{tail}")
    return "(" + "+".join(parts) + ")"
