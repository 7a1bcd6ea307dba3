"""Decoder layers of different kinds, and which a pipeline stage holds.

Some models mix layers of different cost: DeepSeek-V3's 3 dense layers before its MoE ones,
Llama 4 Maverick's dense and MoE layers in turn (cost.moe.mlp_layer_is_moe), Gemma 3's 5 local
(sliding) to 1 global attention layers and Llama 4's 3 chunked to 1 global (cost.window.
layer_is_local). The cost model prices one average layer (cost.layer_times, every per-layer term
blended by the model's share of each kind); a pipeline stage holds its own layers, and at 128K
one of Gemma 3's global layers costs 2.6x a local one (H100, tp 1, ulysses 8), so a stage with
two or three of them paces the pipeline (arXiv 2104.04473 section 2.2.1: the slowest stage sets
the pace). Here a kind is priced as a model whose every layer is of that kind (kind_model; every
layer term is a per-kind blend, so blending the kinds' times by the model's shares gives the
average layer's times again, tests/cost/test_layer_kinds.py), and a stage's layers are those
Megatron places on it (stage_global_layers).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.window import layer_is_local
from sp_planner.pipeline import chunk_layer_counts, split_breaks, stage_layers
from sp_planner.specs.model import ModelSpec


class LayerKind(NamedTuple):
    """What sets a decoder layer's cost apart from another's."""

    moe: bool  # a mixture-of-experts MLP (else the dense MLP of intermediate_size)
    local: bool  # local attention over a window shorter than the sequence (else full attention)


def layer_kinds(model: ModelSpec, seq_len: int) -> tuple[LayerKind, ...]:
    """Each decoder layer's kind, first layer first; a local layer whose window covers the whole
    sequence is full attention (cost.window.local_window) and counts as global."""
    return tuple(LayerKind(moe, local) for moe, local in zip(mlp_layer_is_moe(model), layer_is_local(model, seq_len)))


def distinct_kinds(model: ModelSpec, seq_len: int) -> tuple[LayerKind, ...]:
    """The kinds the model has, in a fixed order (dense before MoE, global before local)."""
    return tuple(sorted(set(layer_kinds(model, seq_len))))


def kind_model(model: ModelSpec, kind: LayerKind) -> ModelSpec:
    """The model with every decoder layer of `kind`: its MoE MLP on every layer (no dense first
    layers, a step of 1) or none (the dense intermediate_size MLP), local attention on every layer
    or none. Only its layers' costs are read: its parameter count is not the model's."""
    update: dict[str, object] = {}
    if model.moe is not None:
        update["moe"] = model.moe.model_copy(update={"first_dense_layers": 0, "layer_step": 1}) if kind.moe else None
    if model.window is not None:
        every = {"local_layers": 1, "global_layers": 0}
        update["window"] = model.window.model_copy(update=every) if kind.local else None
    # Validated afresh (model_copy would keep the copied model's derived state).
    return ModelSpec.model_validate({**dict(model), **update})


def stage_global_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                        last_stage_layers: int) -> tuple[tuple[int, ...], ...]:
    """Each pipeline stage's decoder layers (model indices) in its own order, chunk 0's first.
    Megatron numbers the virtual stages chunk by chunk (virtual stage c x pp + p is stage p's
    chunk c) and gives them consecutive layers (transformer_layer.py get_transformer_layer_offset,
    Megatron-LM d98e8a6; Narayanan et al. 2021 section 2.2.2), each chunk as many as
    pipeline.chunk_layer_counts says (the counted split's one fewer at either end)."""
    split = stage_layers(num_layers, np.array([pp]), np.array([first_stage_layers]), np.array([last_stage_layers]))
    first, middle, last = (int(v[0]) for v in split)
    sizes = [chunk_layer_counts(first if p == 0 else last if p == pp - 1 else middle, vpp, first_stage=p == 0)
             for p in range(pp)]
    held: list[list[int]] = [[] for _ in range(pp)]
    start = 0
    for chunk in range(vpp):
        for p in range(pp):
            held[p].extend(range(start, start + sizes[p][chunk]))
            start += sizes[p][chunk]
    assert start == num_layers, (num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    return tuple(tuple(layers) for layers in held)


def stage_kind_counts(model: ModelSpec, seq_len: int, pp: int, vpp: int, first_stage_layers: int,
                      last_stage_layers: int) -> np.ndarray:
    """(pp, K) layers of each of the model's K distinct_kinds on each stage."""
    kinds = layer_kinds(model, seq_len)
    order = {kind: k for k, kind in enumerate(distinct_kinds(model, seq_len))}
    counts = np.zeros((pp, len(order)))
    for p, layers in enumerate(stage_global_layers(model.num_layers, pp, vpp, first_stage_layers, last_stage_layers)):
        for layer in layers:
            counts[p, order[kinds[layer]]] += 1
    return counts


def stage_rows_kind_counts(model: ModelSpec, seq_len: int, pp, vpp, first_stage_layers, last_stage_layers
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's layers of each of the model's K distinct_kinds, (rows, K)
    each, per candidate (the second is the middle stage cost.memory prices: it holds the most
    micro-batches in flight of the middle ones); NaN on rows without a pipeline or whose split
    Megatron does not place (pipeline.split_breaks: the search prices them only to say why)."""
    columns = [np.asarray(v, dtype=np.int64).ravel() for v in np.broadcast_arrays(pp, vpp, first_stage_layers,
                                                                                    last_stage_layers)]
    n, k = len(columns[0]), len(distinct_kinds(model, seq_len))
    out = tuple(np.full((n, k), np.nan) for _ in range(3))
    placed = (columns[0] > 1) & ~split_breaks(model.num_layers, *columns)
    layouts, inverse = np.unique(np.stack(columns, axis=1)[placed], axis=0, return_inverse=True)
    rows = np.flatnonzero(placed)
    for i, (p, v, first, last) in enumerate(layouts.tolist()):
        at = rows[inverse.ravel() == i]
        counts = stage_kind_counts(model, seq_len, p, v, first, last)
        for stage, held in zip((0, 1, p - 1), out):
            held[at] = counts[stage]
    return out[0], out[1], out[2]


def stage_rows_moe_layers(model: ModelSpec, pp, vpp, first_stage_layers, last_stage_layers
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's MoE layers as Megatron places them, per candidate: NaN where
    stage_rows_kind_counts has none, and on every row of a dense model or where the interleaving
    leaves each stage a contiguous run (vpp 1: cost.moe.stage_moe_layers counts those)."""
    vpp = np.asarray(vpp)
    if len(set(mlp_layer_is_moe(model))) == 1 or not np.any(vpp > 1):  # every layer's MLP alike, or no interleaving
        none = np.full(np.shape(np.asarray(pp).ravel()), np.nan)
        return none, none, none
    seq_len = 1  # the MLP's kind does not depend on it (every window covers one token: one attention kind)
    moe = np.array([kind.moe for kind in distinct_kinds(model, seq_len)])
    counts = stage_rows_kind_counts(model, seq_len, pp, vpp, first_stage_layers, last_stage_layers)
    first, second, last = (np.where(vpp.ravel() > 1, held[:, moe].sum(axis=1), np.nan) for held in counts)
    return first, second, last
