"""Megatron's dense-MLP recompute (plan recompute "mlp" and "mla_up_proj+mlp"): what it frees,
keeps and re-runs.

Megatron-LM at d98e8a64 (megatron/core/transformer/transformer_layer.py), --recompute-granularity
selective --recompute-modules mlp: recompute_mlp is set on layers that are not MoE layers only
(lines 537-539), so it acts on a dense model's every layer, on DeepSeek-V3's 3 dense first layers,
and on nothing of a model whose every layer is MoE (plan rule mlp). Such a layer's MLP runs under
tensor_parallel.checkpoint (te_checkpoint under FP8; lines 992-1010) from pre_mlp_layernorm_output,
which with the Transformer Engine spec is the residual itself (the pre-MLP norm is fused into fc1,
TELayerNormColumnParallelLinear: models/gpt/gpt_layer_specs.py lines 294-338).
  Kept: the checkpoint's input, the residual, which the fused norm saved anyway (LN2 in of
    cost.activations' norms). Freed: everything inside the MLP: the norm's output (fc1's input, h
    wide in the sequence-parallel region: LN2 out of cost.activations' norms), fc1's output and
    the activation's output (cost.activations' MLP term, num_mlp_matrices x ffn per token / tp),
    and under FP8 the FP8 saving on fc1's and fc2's inputs, which are not saved at all.
  Re-run in backward (CheckpointFunction.backward, before the MLP's own backward): the MLP's
    forward, fc1 and fc2 with the activation between, and with sequence parallelism its TP
    all-gather before fc1 and reduce-scatter after fc2 (cost.tp_calls counts them).
Per-layer averages over the layers, as cost.activations and cost.layer_times count: the dense
layers' share (dense_mlp_fraction) of each term.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.recompute import recomputes_mlp
from sp_planner.specs.model import ModelSpec


def dense_mlp_fraction(model: ModelSpec) -> float:
    """Share of layers whose MLP is dense (recompute_mlp applies; transformer_layer.py lines 537-539)."""
    return 1.0 - moe_layer_fraction(model)


def dense_mlp_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of the dense layers' MLP GEMMs for one token, averaged over the layers (the
    GEMMs the recompute re-runs: 2 per weight of fc1 and fc2)."""
    return dense_mlp_fraction(model) * 2.0 * model.num_mlp_matrices * model.hidden_size * model.intermediate_size


def dense_mlp_gemm_share(model: ModelSpec) -> float:
    """The re-run GEMMs' share of an (average) layer's forward GEMM FLOPs (cost.flops)."""
    from sp_planner.cost.flops import layer_gemm_flops_per_token  # cost.flops prices the recompute from here

    return dense_mlp_flops_per_token(model) / layer_gemm_flops_per_token(model)


def mlp_recompute_saved_delta_bytes(model: ModelSpec, *, tokens, region, tp, recompute):
    """Bytes the mlp recompute saves beyond nothing recomputed (negative: it frees; module
    docstring): the norm's output (`region`: the rank's tokens in the sequence-parallel region),
    fc1's and the activation's outputs, bf16 as cost.activations counts them. `tokens`: n."""
    inner = BF16_BYTES * model.num_mlp_matrices * np.asarray(tokens) * model.intermediate_size / np.asarray(tp)
    norm_out = BF16_BYTES * np.asarray(region) * model.hidden_size
    return -np.where(recomputes_mlp(recompute), dense_mlp_fraction(model) * (inner + norm_out), 0.0)


def mlp_recompute_fp8_unsaved_elements(model: ModelSpec, *, tokens, tp, recompute):
    """Elements of the GEMM inputs cost.precision counts as saved in FP8 that the recompute frees
    instead: fc1's (h) and fc2's (ffn) inputs of the dense layers, per token / tp."""
    per_token = np.asarray(tokens) / np.asarray(tp)
    width = dense_mlp_fraction(model) * (model.hidden_size + model.intermediate_size)
    return np.where(recomputes_mlp(recompute), per_token * width, 0.0)


def mlp_recompute_s(model: ModelSpec, *, gemm_fwd_s, tp_all_gather_s, tp_reduce_scatter_s, recompute):
    """Seconds per layer and micro-batch backward spends re-running the dense MLP: its share of the
    layer's forward GEMM time (`gemm_fwd_s`, cost.gemm_work) and its TP all-gather and
    reduce-scatter again (0 without sequence parallelism is the caller's: pass the seconds it pays)."""
    tp_again = _tp_again_s(model, tp_all_gather_s, tp_reduce_scatter_s)
    again = dense_mlp_gemm_share(model) * np.asarray(gemm_fwd_s) + tp_again
    return np.where(recomputes_mlp(recompute), again, 0.0)


def mlp_recompute_comm_s(model: ModelSpec, *, tp_all_gather_s, tp_reduce_scatter_s, recompute):
    """Of mlp_recompute_s, the TP all-gather and reduce-scatter run again: the breakdown shows them
    with TP communication, as every recomputed collective (LayerTimes.recompute_tp_s)."""
    return np.where(recomputes_mlp(recompute), _tp_again_s(model, tp_all_gather_s, tp_reduce_scatter_s), 0.0)


def _tp_again_s(model: ModelSpec, tp_all_gather_s, tp_reduce_scatter_s):
    """The dense layers' share of one TP all-gather and one reduce-scatter (cost.tp_calls)."""
    return dense_mlp_fraction(model) * (np.asarray(tp_all_gather_s) + np.asarray(tp_reduce_scatter_s))


def mlp_recompute_layers(model: ModelSpec, *, layers, recompute):
    """Of a stage's `layers`, those whose MLP re-runs (cost.tp_calls' mlp_recomputes): every layer
    of a dense model, the dense share (rounded) of a mixed one's."""
    dense = np.rint(np.asarray(layers) * dense_mlp_fraction(model)).astype(np.int64)
    return np.where(recomputes_mlp(recompute), dense, 0)
