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

from functools import cache, lru_cache
from typing import NamedTuple

import numpy as np

from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.window import layer_is_local
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline import split_breaks
from sp_planner.pipeline_chunks import stage_chunk_sizes
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
    return _distinct(layer_kinds(model, seq_len))


def _distinct(kinds: tuple[LayerKind, ...]) -> tuple[LayerKind, ...]:
    return tuple(sorted(set(kinds)))


@lru_cache(maxsize=64)
def kind_model(model: ModelSpec, kind: LayerKind) -> ModelSpec:
    """The model with every decoder layer of `kind`: its MoE MLP on every layer (no dense first
    layers, a step of 1) or none (the dense intermediate_size MLP), local attention on every layer
    or none. Only its layers' costs are read: its parameter count is not the model's. Remembered
    (a frozen model, a function of its fields): a search's bucket layouts ask for it once per
    distinct layout, a few thousand times (cost.rank_tensors.stage_tensors), and validating a
    model afresh costs ~60 us where hashing it costs a few."""
    update: dict[str, object] = {}
    if model.moe is not None:
        update["moe"] = model.moe.model_copy(update={"first_dense_layers": 0, "layer_step": 1}) if kind.moe else None
    if model.window is not None:
        every = {"local_layers": 1, "global_layers": 0}
        update["window"] = model.window.model_copy(update=every) if kind.local else None
    # Validated afresh (model_copy would keep the copied model's derived state).
    return ModelSpec.model_validate({**dict(model), **update})


def kind_indices(model: ModelSpec, seq_len: int) -> tuple[int, ...]:
    """Each decoder layer's kind as its index in distinct_kinds."""
    each = layer_kinds(model, seq_len)
    order = {kind: k for k, kind in enumerate(_distinct(each))}
    return tuple(order[kind] for kind in each)


def chunk_global_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                        last_stage_layers: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """_chunk_global_layers of these integers (a search asks the same few splits again and again)."""
    return _chunk_global_layers(int(num_layers), int(pp), int(vpp), int(first_stage_layers), int(last_stage_layers))


@cache
def _chunk_global_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                         last_stage_layers: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """Each pipeline stage's model chunks' decoder layers (model indices), [stage][chunk].
    Megatron numbers the virtual stages chunk by chunk (virtual stage c x pp + p is stage p's
    chunk c) and gives them consecutive layers (transformer_layer.py get_transformer_layer_offset,
    Megatron-LM d98e8a6; Narayanan et al. 2021 section 2.2.2), each chunk as many as
    pipeline_chunks.stage_chunk_sizes says (the counted split's one fewer at either end, the layout's rest)."""
    sizes = stage_chunk_sizes(num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    held: list[list[tuple[int, ...]]] = [[] for _ in range(pp)]
    start = 0
    for chunk in range(vpp):
        for p in range(pp):
            held[p].append(tuple(range(start, start + sizes[p][chunk])))
            start += sizes[p][chunk]
    assert start == num_layers, (num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    return tuple(tuple(chunks) for chunks in held)


def stage_global_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                        last_stage_layers: int) -> tuple[tuple[int, ...], ...]:
    """Each pipeline stage's decoder layers (model indices) in its own order, chunk 0's first
    (chunk_global_layers)."""
    return tuple(sum(chunks, ()) for chunks in
                 chunk_global_layers(num_layers, pp, vpp, first_stage_layers, last_stage_layers))


def chunk_kind_counts(model: ModelSpec, seq_len: int, pp: int, vpp: int, first_stage_layers: int,
                      last_stage_layers: int) -> np.ndarray:
    """(pp, vpp, K) layers of each of the model's K distinct_kinds in each stage's chunks."""
    kinds = kind_indices(model, seq_len)
    counts = np.zeros((pp, vpp, max(kinds) + 1))  # every kind some layer's
    for p, chunks in enumerate(chunk_global_layers(model.num_layers, pp, vpp, first_stage_layers, last_stage_layers)):
        for chunk, layers in enumerate(chunks):
            for layer in layers:
                counts[p, chunk, kinds[layer]] += 1
    return counts


def stage_kind_counts(model: ModelSpec, seq_len: int, pp: int, vpp: int, first_stage_layers: int,
                      last_stage_layers: int) -> np.ndarray:
    """(pp, K) layers of each of the model's K distinct_kinds on each stage."""
    return chunk_kind_counts(model, seq_len, pp, vpp, first_stage_layers, last_stage_layers).sum(axis=1)


def stage_rows_kind_counts(model: ModelSpec, seq_len: int, pp, vpp, first_stage_layers, last_stage_layers
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's layers of each of the model's K distinct_kinds, (rows, K)
    each, per candidate (the second is the middle stage cost.memory prices: it holds the most
    micro-batches in flight of the middle ones); NaN on rows without a pipeline or whose split
    Megatron does not place (pipeline.split_breaks: the search prices them only to say why)."""
    columns = [np.asarray(v, dtype=np.int64).ravel() for v in np.broadcast_arrays(pp, vpp, first_stage_layers,
                                                                                    last_stage_layers)]
    n, k = len(columns[0]), len(distinct_kinds(model, seq_len))
    first, second, last = (np.full((n, k), np.nan) for _ in range(3))
    placed = np.flatnonzero((columns[0] > 1) & ~split_breaks(model.num_layers, *columns))
    for row, at in distinct_groups([column[placed] for column in columns]):
        pp_, vpp_, first_n, last_n = (int(column[placed[row]]) for column in columns)
        counts = stage_kind_counts(model, seq_len, pp_, vpp_, first_n, last_n)
        first[placed[at]], second[placed[at]], last[placed[at]] = counts[0], counts[1], counts[pp_ - 1]
    return first, second, last
