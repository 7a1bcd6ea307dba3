"""Parameters each rank holds, by layer and pipeline stage (vectorized over candidates).

Megatron GPTModel shapes: Q and O projections split over tp, K and V replicated when tp exceeds
the KV heads (cost.attention_comm), MLP (and MoE experts over ep x etp, cost.moe) split over tp,
norms and MLA's down projections replicated (mla_tp_duplicated_params); the first stage adds the
embedding, the last the output layer and final norm.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.cost.moe_params import (
    largest_adjacent_mlp_params_per_rank,
    largest_mlp_params_per_rank,
    mean_mlp_params_per_rank,
)
from sp_planner.cost.mtp import mtp_params_model
from sp_planner.pipeline import StageLayers, stage_layers
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec


def layer_params_per_rank(model: ModelSpec, tp, ep=1, etp=1):
    """Parameters of one layer on one rank (KV projections replicated when tp > kv heads; MoE
    layers' experts split over ep x etp, cost.moe), averaged over the layers."""
    return _attention_params_per_rank(model, tp) + mean_mlp_params_per_rank(model, tp, ep, etp) + (
        model.norm_params_per_layer)


def largest_layer_params_per_rank(model: ModelSpec, tp, ep=1, etp=1):
    """Parameters on one rank of the layer holding the most (cost.moe largest_mlp_params_per_rank;
    the average for models whose layers are all alike)."""
    return _attention_params_per_rank(model, tp) + largest_mlp_params_per_rank(model, tp, ep, etp) + (
        model.norm_params_per_layer)


def largest_adjacent_layers_params_per_rank(model: ModelSpec, tp, ep=1, etp=1):
    """Parameters on one rank of the two neighbouring layers holding the most together (cost.moe
    largest_adjacent_mlp_params_per_rank; twice the average for models whose layers are alike)."""
    return 2 * (_attention_params_per_rank(model, tp) + model.norm_params_per_layer) + (
        largest_adjacent_mlp_params_per_rank(model, tp, ep, etp))


def _attention_params_per_rank(model: ModelSpec, tp):
    h, d = model.hidden_size, model.head_dim
    kv_local = kv_heads_per_tp_rank(model.num_kv_heads, tp)
    q_local = model.q_size / tp
    attn = 2 * h * q_local + 2 * h * kv_local * d
    if model.qkv_bias or model.linear_bias:
        attn = attn + q_local + 2 * kv_local * d
    if model.linear_bias:
        attn = attn + h
    if model.mla is not None:  # MLA's up and output projections split over tp like the heads they serve
        # Its down projections and latent norms, and DSA's indexer (Megatron-LM d98e8a6 dsa.py:
        # parallel_mode "duplicated"), are whole on every TP rank.
        whole = mla_tp_duplicated_params(model)
        attn = (model.mla_params_per_layer - whole) / tp + whole + model.indexer_params_per_layer
    return attn


def mla_tp_duplicated_params(model: ModelSpec) -> int:
    """MLA's parameters of one layer whole on every TP rank, 0 without MLA: linear_q_down_proj
    (hidden x q_lora_rank) with q_layernorm (q_lora_rank), linear_kv_down_proj (hidden x
    (kv_lora_rank + qk_rope_head_dim)) with kv_layernorm (kv_lora_rank). Megatron-LM d98e8a6
    multi_latent_attention.py lines 526-527 and 573-574 build the down projections as TELinear
    parallel_mode "duplicated" with no TP group (TE layer spec, gpt_layer_specs.py lines 302-304;
    not under mla_down_proj_fusion, off by default, whose TE spec fuses the input norm into a
    column-parallel linear_qkv_down_proj, lines 257-272), the latent norms at hidden_size
    q_lora_rank / kv_lora_rank (lines 620-630, whole in the up projections' fused norm under
    qk_layernorm); MindSpeed-LLM c77308a builds the fused down projection as LinearNoTP
    (tasks/models/transformer/multi_latent_attention.py lines 281, 293) and torchtitan b5bcd76c
    replicates wq_a, wkv_a and the norms (deepseek_v3/sharding.py lines 115-128). Under Megatron's
    sequence parallelism each rank runs its s/tp tokens through them (lines 641-661), so their
    FLOPs per rank still split over tp (cost.flops); torchtitan's run on the gathered input, whole
    (cost.gemm_work, TpGathers.whole_mla_down_projections)."""
    return sum(mla_tp_duplicated_param_sizes(model))


def mla_tp_duplicated_param_sizes(model: ModelSpec) -> tuple[int, ...]:
    """The elements of each parameter mla_tp_duplicated_params counts, one entry a parameter:
    the KV down projection and its norm, then the Q ones where q_lora_rank; () without MLA."""
    if model.mla is None:
        return ()
    a, h = model.mla, model.hidden_size
    kv = (h * (a.kv_lora_rank + a.qk_rope_head_dim), a.kv_lora_rank)
    return kv + ((h * a.q_lora_rank, a.q_lora_rank) if a.q_lora_rank else ())


def candidate_stage_layers(model: ModelSpec, c: Candidates) -> StageLayers:
    """Decoder layers on the first, a middle and the last stage of each candidate."""
    return stage_layers(model.num_layers, c.pp, c.first_stage_layers, c.last_stage_layers)


def stage_params_per_rank(model: ModelSpec, tp, pp, stages: StageLayers | None = None, ep=1, etp=1):
    """(first stage, last stage) parameters per rank: layers plus embedding / output / final norm.
    `stages` gives the split (None: the even one); MoE layers' experts split over ep x etp."""
    if stages is None:
        stages = stage_layers(model.num_layers, pp, 0, 0)
    per_layer = layer_params_per_rank(model, tp, ep, etp)
    first_layers, last_layers = stages.first * per_layer, stages.last * per_layer
    table = model.vocab_size * model.hidden_size / tp
    final_norm = model.embedding_params - model.vocab_size * model.hidden_size * (
        1 if model.tie_word_embeddings else 2
    )
    single = pp == 1
    # A tied output layer shares the embedding on a single stage; Megatron keeps a copy on the
    # last stage when pp > 1.
    output = np.where(single & model.tie_word_embeddings, 0.0, table)
    mtp = mtp_params_per_rank(model, tp, pp, ep, etp)
    first = first_layers + table + np.where(single, output + final_norm + mtp, 0.0)
    last = last_layers + output + final_norm + mtp + np.where(single, table, 0.0)
    return first, last


def mtp_params_per_rank(model: ModelSpec, tp, pp, ep=1, etp=1):
    """Parameters of the model's multi-token prediction depths on one rank of the stage holding
    them (the last; cost.mtp), per candidate: each depth's layer of the last layer's kind (its
    routed experts over ep x etp), eh_proj (column-parallel over tp) and its three norms, and with
    pp > 1 the embedding table the stage builds for them (gpt_model.py lines 173-174: beside the
    output layer, whose weight it allocates unless the stage holds the embedding and the model
    ties them, lines 289-290); 0 without MTP."""
    if not model.mtp_layers:
        return 0.0
    eh_proj = model.mtp_eh_proj_params / np.asarray(tp, dtype=np.float64)
    table = np.where(np.asarray(pp) > 1, model.vocab_size * model.hidden_size / np.asarray(tp, dtype=np.float64), 0.0)
    layer = layer_params_per_rank(mtp_params_model(model), tp, ep, etp)
    return model.mtp_layers * (layer + eh_proj + model.mtp_norm_params) + table
