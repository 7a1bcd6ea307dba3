"""Mixture-of-experts parameters on one rank (vectorized over candidates): a layer's MLP by kind
(dense, MoE), the largest layer or pair of neighbouring layers a buffer must hold, a stage's routed
experts and its MoE layers counted from where they sit (cost.moe.mlp_layer_is_moe).

Megatron-Core's placement (the module docstring of cost.moe): routed experts / (ep x etp), shared
experts / tp, the router replicated (TopKRouter's weight is a plain parameter, not TP-sharded);
dense MLPs / tp but linear_fc2's bias, whole (dense_mlp_tp_duplicated_params).
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from sp_planner.cost.moe import mlp_layer_is_moe, moe_layer_fraction
from sp_planner.specs.model import ModelSpec


def dense_mlp_tp_duplicated_params(model: ModelSpec) -> int:
    """A dense MLP's parameters whole on every TP rank: linear_fc2's bias (hidden) under
    linear_bias, as the attention's linear_proj's (cost.params). RowParallelLinear allocates its
    bias at output_size on every rank and marks it sequence_parallel (Megatron-LM d98e8a6
    tensor_parallel/layers.py lines 1482-1499; Transformer Engine's the same,
    extensions/transformer_engine.py lines 1992-1998)."""
    return model.hidden_size if model.linear_bias else 0


def _dense_mlp_per_rank(dense_mlp, tp, whole):
    """`dense_mlp` parameters on one rank of tp: `whole` of them duplicated, the rest split."""
    return (dense_mlp - whole) / tp + whole


def mean_mlp_params_per_rank(model: ModelSpec, tp, ep, etp):
    """MLP parameters of one layer on one rank, averaged over the layers."""
    whole = dense_mlp_tp_duplicated_params(model)
    if model.moe is None:
        return _dense_mlp_per_rank(model.mean_mlp_params_per_layer, tp, whole)
    dense_mlp = model.mean_mlp_params_per_layer - moe_layer_fraction(model) * model.mlp_params_per_layer
    routed = model.routed_expert_params_per_layer
    router = model.hidden_size * model.moe.num_experts
    shared = model.mlp_params_per_layer - routed - router
    f = moe_layer_fraction(model)
    return _dense_mlp_per_rank(dense_mlp, tp, (1 - f) * whole) + f * (routed / (ep * etp) + shared / tp + router)


def layer_mlp_params_per_rank(model: ModelSpec, tp, ep, etp):
    """(dense layer, MoE layer) MLP parameters on one rank: dense / tp (its fc2 bias whole);
    routed experts / (ep*etp), shared / tp, router whole."""
    tp = np.asarray(tp, dtype=np.float64)
    whole = dense_mlp_tp_duplicated_params(model)
    if model.moe is None:
        return _dense_mlp_per_rank(model.mean_mlp_params_per_layer, tp, whole), np.zeros_like(tp)
    routed = model.routed_expert_params_per_layer
    router = model.hidden_size * model.moe.num_experts
    shared = model.mlp_params_per_layer - routed - router
    moe_layer = routed / (np.asarray(ep, dtype=np.float64) * etp) + shared / tp + router
    dense_layers = model.num_layers - model.num_moe_layers
    dense_total = model.mean_mlp_params_per_layer * model.num_layers - model.num_moe_layers * model.mlp_params_per_layer
    return _dense_mlp_per_rank(dense_total / max(dense_layers, 1), tp, whole if dense_layers else 0), moe_layer


def largest_mlp_params_per_rank(model: ModelSpec, tp, ep, etp):
    """MLP parameters on one rank of the layer that holds the most. Models with dense layers
    beside MoE ones (Llama 4 Maverick: every 2nd layer MoE; DeepSeek-V3's 3 first dense layers)
    have layers of very different sizes, and a buffer that holds one layer must fit the largest."""
    dense, moe = layer_mlp_params_per_rank(model, tp, ep, etp)
    kinds = set(mlp_layer_is_moe(model))
    return np.maximum(np.where(True in kinds, moe, 0.0), np.where(False in kinds, dense, 0.0))


def largest_adjacent_mlp_params_per_rank(model: ModelSpec, tp, ep, etp):
    """MLP parameters on one rank of the two neighbouring layers that hold the most together (a
    ZeRO-3 layer and the next one prefetched): a MoE and a dense layer on Maverick, two MoE layers
    on DeepSeek-V3; twice the largest for a one-layer model."""
    dense, moe = layer_mlp_params_per_rank(model, tp, ep, etp)
    kinds = mlp_layer_is_moe(model)
    pairs = set(zip(kinds, kinds[1:])) or {(kinds[0], kinds[0])}
    size = {True: moe, False: dense}
    return reduce(np.maximum, [size[a] + size[b] for a, b in pairs])


def expert_params_per_rank(model: ModelSpec, pp, ep, etp, layers=None, moe_layers=None):
    """Routed-expert parameters on one rank of a pipeline stage (reduced over edp, not dp x cp).
    `layers`: the stage's decoder layers (pipeline.stage_layers; None: the even split
    num_layers / pp), of which moe_layer_fraction are MoE on average; `moe_layers`: the stage's
    own count of MoE layers instead (stage_moe_layers)."""
    if moe_layers is None:
        stage = model.num_layers / pp if layers is None else layers
        moe_layers = stage * moe_layer_fraction(model)
    return moe_layers * model.routed_expert_params_per_layer / (ep * etp)


def stage_moe_layers(model: ModelSpec, stages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MoE layers on the first stage, the second (the middle one cost.memory prices) and the last
    of a split (pipeline.StageLayers), counted from mlp_layer_is_moe: DeepSeek-V3's first stage of 3
    layers holds its 3 dense ones and no expert, Llama 4 Maverick's stages of 3 alternate 1 and 2
    MoE layers. Where a stage's bounds are not whole layers (an even split that does not divide
    num_layers, priced in fractions of a layer) its layers x moe_layer_fraction, the average."""
    first, middle, last = (np.asarray(x, dtype=np.float64) for x in stages)
    n = model.num_layers
    before = np.concatenate([[0], np.cumsum(mlp_layer_is_moe(model))])  # MoE layers below layer k

    def upto(k):
        whole = (k == np.round(k)) & (k >= 0) & (k <= n)
        return whole, before[np.where(whole, np.round(k), 0).astype(np.int64)]

    f = moe_layer_fraction(model)
    ok1, a = upto(first)
    ok2, b = upto(first + middle)
    ok3, c = upto(n - last)
    second = first + middle <= n - last  # pp >= 3 (at pp 2 the middle is no stage: the average)
    return (np.where(ok1, a, first * f), np.where(ok1 & ok2 & second, b - a, middle * f),
            np.where(ok3, model.num_moe_layers - c, last * f))


def stage_mlp_params_per_rank(model: ModelSpec, tp, ep, etp, layers, moe_layers):
    """MLP parameters on one rank of a stage's `layers` layers, `moe_layers` of them MoE
    (stage_moe_layers): each layer its own (layer_mlp_params_per_rank), not the average."""
    dense, moe = layer_mlp_params_per_rank(model, tp, ep, etp)
    if model.moe is None:
        return layers * dense
    return (layers - moe_layers) * dense + moe_layers * moe
