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
