"""The MoE router's gating GEMM, forward and backward (vectorized).

Every MoE layer scores its tokens with one GEMM of the rank's tokens (n/tp, the sequence-parallel
shard) by the replicated h x E router weight before it routes them: Megatron-Core's TopKRouter.gating
(router_gating_linear, megatron/core/transformer/moe/moe_utils.py RouterGatingLinearFunction, lines
1329-1404 at 9c5258f1, te_general_gemm forward, data and weight gradient), torchtitan's
TokenChoiceTopKRouter gate (an nn.Linear). It runs whatever the routing (force-balanced routing
replaces the logits after the GEMM, router.py TopKRouter.forward) and outside FP8 (bf16 operands).
Three GEMMs a layer and micro-batch, each at cost.gemm_shapes' K and output-size ratios for its
shape (layer_gemm_factors): forward tokens x E outputs over K = h; data gradient tokens x h over
K = E; weight gradient h x E over K = tokens. Dense layers have no router: the times are the
MoE-average layer's (x the share of MoE layers).

Not modelled: --moe-router-dtype fp32 (Megatron-LM's examples/moe_recipes set it, e.g.
qwen3_30b/h100/bf16_32GPU_TP1PP1EP8.yaml at b1c2006cf; Megatron-Core's default None keeps the input's
bf16, as Megatron-Bridge's Qwen3 recipes do). Its forward is the same bf16 GEMM with an fp32
output, but its backward casts the input and the weight to fp32 and runs both gradient GEMMs on fp32
operands, which Transformer Engine sends to TF32 tensor cores (common/gemm/cublaslt_gemm.cu lines
444-448 at v2.14, CUBLAS_COMPUTE_32F_FAST_TF32: half the bf16 dense peak on the datasheets of
reference/hardware_and_models.md A.1), plus a cast of tokens x h back to bf16. Nor the small kernels
after the GEMM (top-k, softmax, aux loss: kilobytes a token; cost.host counts their launches).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.gemm_shapes import layer_gemm_factors
from sp_planner.cost.kernels import gemm_time_s
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def router_gemm_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of the router's gating GEMM for one token, averaged over the layers."""
    if model.moe is None:
        return 0.0
    return moe_layer_fraction(model) * 2.0 * model.hidden_size * model.moe.num_experts


def router_times_s(hardware: HardwareProfile, model: ModelSpec, tokens_per_tp_rank):
    """(forward, backward) seconds of the router's gating GEMM on one rank per layer and micro-batch,
    averaged over the layers (module docstring); zeros for a dense model."""
    tokens = np.asarray(tokens_per_tp_rank, dtype=np.float64)
    if model.moe is None:
        return np.zeros_like(tokens), np.zeros_like(tokens)
    flops = router_gemm_flops_per_token(model) * tokens
    fwd_factor, bwd_factor = layer_gemm_factors(hardware, model.hidden_size, model.moe.num_experts, tokens, False)
    return gemm_time_s(hardware, flops) * fwd_factor, gemm_time_s(hardware, 2 * flops) * bwd_factor
