"""FLOP counts: the full-square model FLOPs (for MFU) and per-rank GEMM FLOPs (for time).

Model FLOPs per step follow Megatron-LM's `num_floating_point_operations`
(megatron/training/training.py, as of 2024-04, the version the USP paper's Table 5 used; so until
8873b55d, 2025-03-06, first in core_v0.12.0, which halves causal attention):
    F = B * s * 12 * L * h^2 * [(1 + g/a + s/h) * q/h + (ffn/h) * gated] + B * s * 6 * h * V
with q = query projection size, g/a = kv heads / heads, gated = 3/2 for SwiGLU (else 1), the
12 = 3 (fwd + bwd) x 2 (multiply-add) x 2 (two matmuls of each kind), and the attention term
over the full s x s square (no causal halving). Per token and layer that is
6 * (2hq + 2h*kv + 2qs + n_mlp*h*ffn), plus 6hV for the logits. A DeepSeek Sparse Attention layer
counts as the dense MLA it replaces, as Megatron's count has no DSA term (cost.dsa).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dsa import dsa_forward_flops_per_token, dsa_hardware_flops_per_token
from sp_planner.cost.mla_recompute import mla_up_proj_flops_per_token
from sp_planner.cost.mlp_recompute import dense_mlp_flops_per_token
from sp_planner.cost.mtp import mtp_extra_flops_per_token, mtp_layer_model
from sp_planner.cost.window import windowed_attention_flops_per_token
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_SELECTIVE
from sp_planner.recompute import recomputes_mla_up_proj, recomputes_mlp
from sp_planner.specs.model import ModelSpec


def _active_ffn_width(model: ModelSpec) -> float:
    """Summed intermediate width of the MLP one token passes through, averaged over the layers
    (MoE layers: top_k routed plus shared experts; dense first layers: intermediate_size)."""
    if model.moe is None:
        return model.intermediate_size
    moe = (model.moe.top_k + model.moe.num_shared_experts) * model.moe.moe_intermediate_size
    dense_layers = model.num_layers - model.num_moe_layers
    return (dense_layers * model.intermediate_size + model.num_moe_layers * moe) / model.num_layers


def layer_gemm_flops_per_token(model: ModelSpec) -> float:
    """Forward GEMM FLOPs of one layer for one token (QKV, output projection, MLP)."""
    h = model.hidden_size
    # Projections: 2 FLOPs per weight (MLA: its down/up projections, ModelSpec.mla_params_per_layer).
    attn = 2 * model.mla_params_per_layer if model.mla is not None else 2 * h * (2 * model.q_size + 2 * model.kv_size)
    return float(attn + mlp_gemm_flops_per_token(model))


def mla_down_proj_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of MLA's down projections for one token, 0 without MLA: hidden x
    (kv_lora_rank + qk_rope_head_dim), and hidden x q_lora_rank where q_lora_rank (cost.params
    mla_tp_duplicated_param_sizes), 2 FLOPs per weight."""
    if model.mla is None:
        return 0.0
    a = model.mla
    return 2.0 * model.hidden_size * (a.kv_lora_rank + a.qk_rope_head_dim + (a.q_lora_rank or 0))


def mlp_gemm_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of one layer's MLP GEMMs for one token (the experts a token runs through)."""
    return 2 * model.num_mlp_matrices * model.hidden_size * _active_ffn_width(model)


def logits_gemm_flops_per_token(model: ModelSpec) -> float:
    return 2.0 * model.hidden_size * model.vocab_size


def attention_flops_per_token(model: ModelSpec, seq_len: int, *, causal: bool) -> float:
    """Forward QK^T and PV FLOPs of one layer for one token attending to `seq_len` keys."""
    full = 4.0 * model.q_size * seq_len
    return full / 2 if causal else full


def model_flops_per_step(model: ModelSpec, *, seq_len: int, global_batch: int) -> float:
    """The full-square count (3 x forward, attention over the whole square: Megatron-LM to
    core_v0.11, module docstring); multi-token
    prediction's depths as training.py lines 1042-1049 and 1288-1303 count them (cost.mtp): a
    layer of the last layer's kind each, eh_proj and its norms, and the logits again."""
    per_token = model.num_layers * (
        layer_gemm_flops_per_token(model) + attention_flops_per_token(model, seq_len, causal=False)
    ) + logits_gemm_flops_per_token(model)
    if model.mtp_layers:
        mtp = mtp_layer_model(model, seq_len) or model
        per_token += model.mtp_layers * (layer_gemm_flops_per_token(mtp) + attention_flops_per_token(
            model, seq_len, causal=False) + mtp_extra_flops_per_token(model) + logits_gemm_flops_per_token(model))
    return 3.0 * per_token * seq_len * global_batch


def hardware_flops_per_step(model: ModelSpec, *, seq_len: int, global_batch: int, causal: bool,
                            recompute, tp=1, whole_mla_down_projections: bool = False) -> np.ndarray:
    """FLOPs actually executed: causal half of attention (DeepSeek Sparse Attention's indexer and
    sparse MLA, cost.dsa), plus the recomputed forward.

    `recompute` is an array of plan.RECOMPUTE codes: selective re-runs the core attention
    forward, full the whole layer forward, mla_up_proj MLA's up-projection GEMMs
    (cost.mla_recompute), mlp the dense layers' MLP GEMMs (cost.mlp_recompute). Counted in the
    same 3 x forward convention as the model FLOPs so the two are comparable.
    `whole_mla_down_projections` (torchtitan, cost.tp_gathers.TpGathers): each of the `tp` ranks
    runs MLA's down projections on every token of its TP group, as cost.gemm_work times them, so
    the group executes them tp times, (tp - 1) x beyond the model's once, each way and again
    under full recompute; Megatron's run each token once (cost.params.mla_tp_duplicated_params).
    """
    recompute = np.asarray(recompute)

    def layer(spec: ModelSpec):
        """A layer of `spec`'s (average) kind, each way, with what recompute runs again."""
        gemm = layer_gemm_flops_per_token(spec)
        attn = windowed_attention_flops_per_token(spec, seq_len, attention_flops_per_token(spec, seq_len,
                                                                                            causal=causal))
        attn_fwd, attn_steps = attn, 3 * attn
        if spec.dsa is not None:  # what DSA runs (cost.dsa), not the dense MLA the model FLOPs count
            attn_fwd, attn_steps = (dsa_forward_flops_per_token(spec, seq_len),
                                    dsa_hardware_flops_per_token(spec, seq_len))
        extra = np.where(recompute == RECOMPUTE_FULL, gemm + attn_fwd,
                         np.where(recompute == RECOMPUTE_SELECTIVE, attn_fwd, 0.0))
        if spec.mla is not None:
            extra = np.where(recomputes_mla_up_proj(recompute), mla_up_proj_flops_per_token(spec), extra)
        # The dense layers' fc1 and fc2 again (transformer_layer.py at d98e8a64 lines 992-1010).
        extra = extra + np.where(recomputes_mlp(recompute), dense_mlp_flops_per_token(spec), 0.0)
        if whole_mla_down_projections:  # the other TP ranks' copies (docstring)
            copies = (np.asarray(tp) - 1) * mla_down_proj_flops_per_token(spec)
            extra = extra + copies * np.where(recompute == RECOMPUTE_FULL, 4.0, 3.0)
        return 3 * gemm + attn_steps + extra

    per_token = model.num_layers * layer(model) + 3 * logits_gemm_flops_per_token(model)
    if model.mtp_layers:  # cost.mtp: each depth's layer, eh_proj and norms, and logits
        per_token = per_token + model.mtp_layers * (layer(mtp_layer_model(model, seq_len) or model) + 3 * (
            mtp_extra_flops_per_token(model) + logits_gemm_flops_per_token(model)))
    return per_token * seq_len * global_batch
