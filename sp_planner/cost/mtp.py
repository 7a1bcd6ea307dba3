"""Multi-token prediction (ModelSpec.mtp_layers; DeepSeek-V3, arXiv 2412.19437 section 2.2) as
Megatron-Core trains it (Megatron-LM d98e8a6, megatron/core/transformer/multi_token_prediction.py),
vectorized over candidates.

All of it runs on the last pipeline stage's last model chunk, after the decoder layers in forward
and before them in backward (lines 825-831: with no --pipeline-model-parallel-layout every MTP
depth sits there), so the cost model counts it as that stage's work beyond its layers, beside the
output layer and the loss (cost.step's head). Each depth D, per token:
- the embedding of the tokens shifted once more (the model's own table: the last stage builds a
  copy when pp > 1, gpt_model.py lines 173-174, and its gradient is all-reduced with the first
  stage's over the embedding group, finalize_model_grads.py lines 146 and 164-239:
  cost.tied_embedding),
- enorm and hnorm over the embedding and the previous hidden state, eh_proj's GEMM over their
  concatenation [2h -> h] (column-parallel, no bias: lines 1157-1186, 1334-1363),
- one transformer layer of the last decoder layer's spec (gpt_layer_specs.py lines 765-772;
  DeepSeek-V3's: MLA and MoE), then final_layernorm (line 1247),
- the shared output layer's logits and cross entropy again (lines 1012-1027), each head's kept for
  its backward (they are computed before the main head's, gpt_model.py _postprocess).
FLOPs as Megatron's num_floating_point_operations counts them (training.py lines 1042-1049 and
1288-1303): the layer as one more decoder layer, 3 x 2 x (3h + 2h^2) per token for eh_proj and the
norms, and 3 x 2 x h x V for each head's logits.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s
from sp_planner.cost.layer_kinds import LayerKind, distinct_kinds, kind_model, layer_kinds
from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# enorm, hnorm and final_layernorm: each reads and writes its h-wide input once each way
# (memory-bound; RMSNorm's statistics are per token and negligible).
MTP_NORMS = 3


def mtp_kind(model: ModelSpec, seq_len: int) -> LayerKind:
    """The kind of the MTP depths' transformer layer: the last decoder layer's (its spec)."""
    return layer_kinds(model, seq_len)[-1]


def mtp_layer_model(model: ModelSpec, seq_len: int) -> ModelSpec | None:
    """The model whose layer an MTP depth runs (cost.layer_kinds.kind_model of mtp_kind), or None
    where every layer is alike and the model's own average layer is it."""
    if len(distinct_kinds(model, seq_len)) == 1:
        return None
    return kind_model(model, mtp_kind(model, seq_len))


def mtp_params_model(model: ModelSpec) -> ModelSpec:
    """A model whose every layer has the MTP layer's parameters (its MLP the last decoder layer's;
    attention's parameters do not depend on its window)."""
    return kind_model(model, LayerKind(moe=mlp_layer_is_moe(model)[-1], local=False))


def mtp_extra_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of one depth beyond its layer and logits, per token: 2 x (eh_proj's 2h^2 and
    the norms' 3h), as training.py lines 1288-1297 count them."""
    return 2.0 * model.mtp_extra_params


def mtp_depth_extras_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, tp, logits_s,
                       logits_bwd_share: float, emb_fwd_s, emb_bwd_s, out_tp_fwd_s, out_tp_bwd_s, emb_tp_fwd_s,
                       emb_tp_bwd_s):
    """(forward, backward) seconds of one MTP depth's work beyond its transformer layer per
    micro-batch, per candidate: eh_proj's GEMM (bf16 rate; backward twice the forward, Narayanan et
    al. 2021), the norms' passes, the embedding's work and TP collectives (cost.embedding_work, as
    the first stage's), the output layer's TP collectives, and `logits_s` again (the output layer's
    GEMMs and loss, cost.gemm_work), `logits_bwd_share` of it in backward. `tokens`: a rank's tokens
    per micro-batch (micro-batch x sequence / cp). The simulator runs the same (sim.step_work)."""
    h = model.hidden_size
    tp = np.asarray(tp, dtype=np.float64)
    eh_fwd = gemm_time_s(hardware, 2.0 * model.mtp_eh_proj_params * tokens / tp)
    # The norms run in the sequence-parallel region (tokens / tp): read and write h each way.
    norms_fwd = memory_pass_time_s(hardware, MTP_NORMS * 2 * BF16_BYTES * h * tokens / tp)
    fwd = eh_fwd + norms_fwd + emb_fwd_s + emb_tp_fwd_s + out_tp_fwd_s + (1 - logits_bwd_share) * logits_s
    bwd = 2 * eh_fwd + 2 * norms_fwd + emb_bwd_s + emb_tp_bwd_s + out_tp_bwd_s + logits_bwd_share * logits_s
    return fwd, bwd


def mtp_head_s(model: ModelSpec, hardware: HardwareProfile, *, layer_total_s, layer_bwd_s, **extras
               ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(all, backward) seconds of the model's MTP depths per micro-batch on the last stage, per
    candidate (0 without MTP): each depth its layer (`layer_*`: cost.layer_times of mtp_layer_model,
    all its parts and its backward with recompute) and mtp_depth_extras_s (`extras`, its keywords)."""
    depths = model.mtp_layers
    if depths == 0:
        return 0.0, 0.0
    fwd, bwd = mtp_depth_extras_s(model, hardware, **extras)
    return depths * (layer_total_s + fwd + bwd), depths * (layer_bwd_s + bwd)


def mtp_saved_extra_bytes(model: ModelSpec, region_tokens):
    """Bytes the model's MTP depths save for backward per micro-batch beyond their layers: each
    depth's eh_proj input (the 2h-wide concatenation) and its three norms' h-wide inputs, bf16, on
    the rank's `region_tokens` (the sequence-parallel region's: cost.activations
    sequence_parallel_region_tokens), as the layers' linears and norms save theirs (Korthikanti et
    al. 2022, arXiv 2205.05198, section 4.1)."""
    return model.mtp_layers * (2 + MTP_NORMS) * BF16_BYTES * model.hidden_size * np.asarray(region_tokens)
