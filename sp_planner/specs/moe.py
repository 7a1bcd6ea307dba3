"""Mixture-of-experts spec (ModelSpec.moe): the experts, their routing and how a run dispatches to
and launches them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model_limits import MAX_EXPERTS, MAX_LAYERS, MAX_WIDTH

# How a MoE router's load falls on the experts (MoESpec.routing).
MoERouting = Literal["learned", "balanced"]
# Megatron's MoE token dispatcher (--moe-token-dispatcher-type; cost.moe): alltoall with fused
# permutations, or the flex dispatcher's HybridEP backend, which permutes inside its kernels, or its
# DeepEP backend (cost.deepep), which permutes after its dispatch.
MoEDispatcher = Literal["alltoall", "hybridep", "deepep"]
# How the local experts' GEMMs are launched (cost.gemm_shapes, cost.grouped_gemm): per_expert, one
# GEMM per expert (Transformer Engine's GroupedLinear, Megatron-Core's TEGroupedMLP default);
# grouped, one kernel over every expert (torch._grouped_mm in torchtitan, TE's opt-in CUTLASS
# grouped GEMM, the CuTe-DSL fused grouped MLP).
MoEExpertGemm = Literal["per_expert", "grouped"]
# How the router weighs and limits the chosen experts (MoESpec's comment below): fields the flags
# carry, a cost term only through the groups' dispatch reach (cost.group_routing), and that plan
# files written before 423906e lack (planfile_router).
ROUTER_FIELDS = ("router_pre_softmax", "score_correction_bias", "routed_scaling_factor", "probs_on_input",
                 "router_groups", "router_group_topk", "router_topk_norm")

# Scores a group-limited router sums to rank an expert group (MoESpec.router_groups): HF
# DeepseekV3TopkRouter.get_topk_indices and Glm4MoeMoE.route_tokens_to_experts
# (`.topk(2, dim=-1)[0].sum(dim=-1)`), as torchtitan's TokenChoiceTopKRouter
# (_get_node_limited_routing_scores, b5bcd76c6 and v0.2.2); Megatron-Core sums top_k // group_topk
# (flags.megatron_moe.router_failures).
GROUP_RANK_SCORES = 2


class MoESpec(FrozenModel):
    num_experts: int = Field(gt=0, le=MAX_EXPERTS)
    top_k: int = Field(gt=0, le=MAX_EXPERTS)
    moe_intermediate_size: int = Field(gt=0, le=MAX_WIDTH)
    num_shared_experts: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    # The first layers keep a dense MLP of the model's intermediate_size (DeepSeek-V3: 3; HF
    # first_k_dense_replace, Megatron --moe-layer-freq [0]*k+[1]*(L-k)).
    first_dense_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    # After the dense first layers, every `layer_step`-th layer is MoE and the others dense of the
    # model's intermediate_size (HF Llama4TextConfig interleave_moe_layer_step: moe_layers =
    # range(step - 1, num_layers, step); Llama 4 Maverick 2, Scout 1; Megatron --moe-layer-freq).
    layer_step: int = Field(default=1, gt=0, le=MAX_LAYERS)
    # The router's score function (Megatron --moe-router-score-function; its default softmax):
    # DeepSeek-V3 and Llama 4 score with a sigmoid (HF DeepseekV3 scoring_func, Llama4Router).
    router_score_function: Literal["softmax", "sigmoid"] = "softmax"
    # How the router turns scores into the chosen experts' weights. None of it changes the router's
    # work (its GEMM and element-wise passes are the same; cost.router), and only the groups change
    # where tokens go (HybridEP and DeepEP's reach, cost.group_routing); the flags carry it all so
    # the emitted run trains the model (flags.megatron_moe):
    # - router_pre_softmax: a softmax router takes the softmax over every expert, then the top k,
    #   and keeps those weights unnormalised (HF norm_topk_prob false, the Qwen3MoeConfig default;
    #   Megatron --moe-router-pre-softmax, as Megatron-Bridge's qwen3_moe_bridge.py sets it from
    #   `not norm_topk_prob`); False: softmax over the top k logits, which equals the renormalised
    #   top k of a full softmax (norm_topk_prob true, Mixtral, gpt-oss; Megatron's default).
    # - score_correction_bias: a learned per-expert bias added to the sigmoid scores for the top-k
    #   choice only (aux-loss-free balancing, arXiv 2408.15664; HF DeepseekV3TopkRouter and
    #   Glm4MoeTopkRouter e_score_correction_bias; Megatron --moe-router-enable-expert-bias, which
    #   TransformerConfig allows with the sigmoid score function only).
    # - routed_scaling_factor: the factor on the chosen experts' weights (HF routed_scaling_factor;
    #   Megatron --moe-router-topk-scaling-factor, None = 1; Megatron-Bridge model_bridge.py maps the
    #   one onto the other): DeepSeek-V3 2.5, Kimi K2 2.827, GLM-4.5 2.5.
    # - probs_on_input: the top-1 expert's weight scales its input, not its output (HF Llama4TextMoe:
    #   routed_in * router_scores before self.experts; Megatron --moe-apply-probs-on-input, which the
    #   experts assert only with top-1 routing, megatron-core 0.16.1 experts.py; Megatron-LM's
    #   Llama-4 Scout/Maverick ModelOpt examples pass --export-moe-apply-probs-on-input).
    # - router_groups, router_group_topk: group-limited routing, each token's experts within its top
    #   router_group_topk of router_groups equal expert groups (HF n_group, topk_group; DeepSeek-V3 8
    #   and 4; Megatron --moe-router-num-groups, --moe-router-group-topk, which rank a group by its top
    #   top_k / group_topk scores, HF DeepSeek-V3 by its top 2: the same for DeepSeek-V3's 8 / 4).
    #   1 and 1: none. The flags carry it, and the cost model prices the ranks and nodes a token
    #   reaches under it (HybridEP, DeepEP: cost.hybridep.ranks_reached_per_token). Where top_k /
    #   group_topk is not 2 Megatron ranks the groups otherwise than the model and refuses the plan
    #   (flags.megatron_moe.router_failures).
    # - router_topk_norm: a sigmoid router with top_k > 1 divides its chosen scores by their sum
    #   (HF DeepseekV3TopkRouter / Glm4MoeMoE norm_topk_prob, DeepseekV3Config and Glm4MoeConfig
    #   default true; torchtitan TokenChoiceTopKRouter route_norm); False: the raw sigmoid scores
    #   (norm_topk_prob false), which Megatron cannot run: it renormalises every sigmoid top k > 1
    #   (moe_utils.topk_routing_with_score_function) and so refuses the plan. Every built-in
    #   normalises. A top-1 sigmoid router weighs its expert by the score (Llama4Router, Megatron
    #   top-1) and a softmax router states its weights by router_pre_softmax: both keep True.
    router_pre_softmax: bool = False
    score_correction_bias: bool = False
    probs_on_input: bool = False
    router_groups: int = Field(default=1, gt=0, le=MAX_EXPERTS)
    router_group_topk: int = Field(default=1, gt=0, le=MAX_EXPERTS)
    router_topk_norm: bool = True
    routed_scaling_factor: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)
    # The experts' linear layers carry biases (gpt-oss: HF GptOssExperts gate_up_proj_bias and
    # down_proj_bias; Megatron keeps add_bias_linear, its default, and so allows expert tensor
    # parallelism 1 only: TransformerConfig "Bias in Moe is only supported when ETP==1"). The biases'
    # parameters and adds are not counted (under 0.05% of gpt-oss; catalog.hf_gpt_oss).
    expert_bias: bool = False
    # Routing as trained (Megatron TransformerConfig, which holds these as model fields): None is
    # dropless; a factor F caps each expert at ceil(tokens x top_k / experts x F) of a rank's
    # tokens, dropping the rest (--moe-expert-capacity-factor, moe_utils.get_capacity);
    # pad_to_capacity fills every expert to that capacity (--moe-pad-expert-input-to-capacity).
    capacity_factor: float | None = Field(default=None, gt=0, le=MAX_EXPERTS)
    pad_to_capacity: bool = False
    # learned: the trained router's own choices, unevenly loaded (cost.moe MOE_LOAD_IMBALANCE);
    # balanced: routing forced even for benchmarking (Megatron --moe-router-force-load-balancing,
    # TransformerConfig.moe_router_force_load_balancing: random router logits), busiest load 1.0.
    routing: MoERouting = "learned"
    # The token dispatcher the run uses (TransformerConfig.moe_token_dispatcher_type and
    # moe_flex_dispatcher_backend): its permutations are timed only under alltoall (cost.moe).
    dispatcher: MoEDispatcher = "alltoall"
    # SMs the flex dispatcher's dispatch and combine kernels hold (Megatron moe_flex_dispatcher_num_sms,
    # formerly moe_hybridep_num_sms): None leaves HybridEP's default, 24 inside one NVLink domain and 8
    # across domains (cost.hybridep), or Megatron's 20 for DeepEP (cost.deepep). Flex dispatchers only.
    dispatcher_sms: int | None = Field(default=None, gt=0, le=1024)
    # How the run launches the expert GEMMs (MoEExpertGemm): Megatron-Core's default per_expert.
    # Unstated, sp-plan takes its framework's (cost.grouped_gemm.with_framework_expert_gemm).
    expert_gemm: MoEExpertGemm = "per_expert"

    @model_validator(mode="after")
    def _top_k_within_experts(self) -> "MoESpec":
        # A token is routed to top_k distinct experts (Megatron: "moe_router_topk must be <=
        # num_moe_experts"-style routing over torch.topk of the expert scores).
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k (experts per token) {self.top_k} exceeds num_experts {self.num_experts}: a "
                             "token is routed to that many distinct experts")
        return self

    @model_validator(mode="after")
    def _router_options_fit_its_score_function(self) -> "MoESpec":
        # Megatron-core 0.16.1 TransformerConfig.__post_init__: "Expert bias for aux-loss-free routing
        # only supports sigmoid score function"; pre-softmax is a softmax router's choice, and
        # router_topk_norm a sigmoid router's (the comment above the fields).
        if self.score_correction_bias and self.router_score_function != "sigmoid":
            raise ValueError("score_correction_bias needs router_score_function sigmoid (Megatron refuses "
                             "--moe-router-enable-expert-bias with a softmax router)")
        if self.num_experts % self.router_groups or self.router_group_topk > self.router_groups:
            # TransformerConfig.__post_init__ asserts both for group-limited routing.
            raise ValueError(f"router_groups {self.router_groups} must divide num_experts {self.num_experts} and "
                             f"router_group_topk {self.router_group_topk} may not exceed it")
        if self.probs_on_input and self.top_k != 1:
            raise ValueError(f"probs_on_input needs top-1 routing, got top_k {self.top_k} (Megatron's experts assert "
                             "moe_router_topk 1 with --moe-apply-probs-on-input)")
        if self.router_pre_softmax and self.router_score_function != "softmax":
            raise ValueError("router_pre_softmax is a softmax router's option; a sigmoid router states its "
                             "weights by router_topk_norm")
        if not self.router_topk_norm and (self.router_score_function != "sigmoid" or self.top_k == 1):
            raise ValueError(f"router_topk_norm false is a sigmoid router's option with top_k > 1, got "
                             f"{self.router_score_function} with top_k {self.top_k} (a softmax router states its "
                             "weights by router_pre_softmax; a top-1 sigmoid weight is its score)")
        return self

    @model_validator(mode="after")
    def _sms_are_hybridep_s(self) -> "MoESpec":
        if self.dispatcher_sms is not None and self.dispatcher == "alltoall":
            raise ValueError("dispatcher_sms is the flex dispatcher's SM count; set dispatcher hybridep or deepep, "
                             "or drop it")
        if self.dispatcher == "deepep" and self.dispatcher_sms is not None and self.dispatcher_sms % 2:
            # DeepEP Buffer.set_num_sms: "The SM count must be even".
            raise ValueError(f"dispatcher_sms {self.dispatcher_sms}: DeepEP needs an even SM count")
        return self

    @model_validator(mode="after")
    def _deepep_pads_no_capacity(self) -> "MoESpec":
        # Megatron TransformerConfig: "Flex token dispatcher with deepep backend does not support
        # moe_pad_expert_input_to_capacity" (megatron-core 0.16.1 transformer_config.py __post_init__).
        if self.dispatcher == "deepep" and self.pad_to_capacity:
            raise ValueError("the deepep dispatcher cannot pad experts to capacity (Megatron refuses "
                             "--moe-pad-expert-input-to-capacity with the flex dispatcher's DeepEP backend)")
        return self

    @model_validator(mode="after")
    def _padding_needs_a_capacity(self) -> "MoESpec":
        # Megatron: "moe_expert_capacity_factor must be set to use moe_pad_expert_input_to_capacity"
        # (transformer_config.py, reference moe_fp8_pipeline_frameworks.md 1.1).
        if self.pad_to_capacity and self.capacity_factor is None:
            raise ValueError("pad_to_capacity needs a capacity_factor (dropless routing has no capacity to pad to)")
        return self
