"""A pipeline stage's model chunks (interleaved 1F1B, vpp > 1): how many decoder layers each holds.

Megatron gives each stage's vpp chunks an even share of its layers (transformer_block.py
get_num_layers_to_build at Megatron-LM d98e8a6); under the counted split
(--account-for-embedding/loss-in-pipeline-split) the chunk holding the embedding (the first
stage's chunk 0) or the loss (the last stage's last chunk) holds one fewer, and under a
--pipeline-model-parallel-layout a stage not divisible by vpp holds vpp - 1 full chunks and the
rest in its end chunk (chunk_shape; sp_planner.pipeline, module docstring). cost.buckets,
cost.dp_exposure, cost.chunk_path, cost.layer_kinds and sim.layer_program place the layers so.
Vectorized over candidates where the name says so.
"""

from __future__ import annotations

import numpy as np

from sp_planner.pipeline import stage_chunk, stage_layers


def chunk_shape(layers, vpp, chunk=0):
    """(full, end): a stage of `layers` over vpp model chunks as vpp - 1 full chunks and an end
    chunk of the rest (the first stage's chunk 0, the embedding's, or another stage's last, the
    loss's), vectorized over candidates. A stage divisible by vpp: an even share (Megatron's
    get_num_layers_to_build). Else the first of these whose rest is not negative: `chunk` (a middle
    stage's, pipeline.stage_chunk; 0: none), the stage's ceil(layers / vpp) (the counted split's one
    fewer in the end chunk, transformer_block.py get_num_layers_to_build lines 191-201 at
    Megatron-LM d98e8a6), its floor (the rest then the larger). Each is a
    --pipeline-model-parallel-layout Megatron parses (module docstring) and every stage three chunk
    sizes at most, as cost.pipeline_path prices them. Whole numbers: floor, not np.mod's slower
    float remainder (chunk_counts)."""
    layers, vpp = np.asarray(layers), np.asarray(vpp)
    base = np.floor(layers / vpp)
    uneven = layers - base * vpp > 0
    full = np.where(uneven & (layers - (vpp - 1) * (base + 1) >= 0), base + 1, base)
    if np.any(np.asarray(chunk) > 0):
        full = np.where(uneven & (np.asarray(chunk) > 0) & (layers - (vpp - 1) * np.asarray(chunk) >= 0), chunk, full)
    return full, layers - (vpp - 1) * full


def _chunk_shape_int(layers: int, vpp: int, chunk: int) -> tuple[int, int]:
    """chunk_shape of one stage in whole numbers (the search asks it per distinct bucket layout,
    where numpy's per-call cost on scalars dominated): floor division is the float floor there."""
    base = layers // vpp
    uneven = layers - base * vpp > 0
    full = base + 1 if uneven and layers - (vpp - 1) * (base + 1) >= 0 else base
    if uneven and chunk > 0 and layers - (vpp - 1) * chunk >= 0:
        full = chunk
    return full, layers - (vpp - 1) * full


def chunk_layer_counts(layers: int, vpp: int, *, first_stage: bool, chunk: int = 0) -> tuple[int, ...]:
    """Decoder layers of each of a stage's vpp model chunks, chunk 0 first (chunk_shape; `chunk`:
    pipeline.stage_chunk, 0 for the stage's own): the rest in the first stage's chunk 0 or another
    stage's last chunk. cost.buckets (each chunk's gradient bucket), sim.layer_program and the
    flags' layout string place the layers so."""
    full, end = _chunk_shape_int(int(layers), int(vpp), int(chunk))
    return (end, *[full] * (vpp - 1)) if first_stage else (*[full] * (vpp - 1), end)


def stage_chunk_sizes(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                      last_stage_layers: int) -> tuple[tuple[int, ...], ...]:
    """chunk_layer_counts of each pipeline stage, [stage][chunk]; 0 first/last: the even split."""
    split = stage_layers(num_layers, np.array([pp]), np.array([first_stage_layers]), np.array([last_stage_layers]))
    first, middle, last = (int(v[0]) for v in split)
    chunk = int(stage_chunk(first, middle, last, pp, vpp))
    return tuple(chunk_layer_counts(first if p == 0 else last if p == pp - 1 else middle, vpp, first_stage=p == 0,
                                    chunk=chunk) for p in range(pp))


def later_chunk_layers(layers, vpp, chunk=0):
    """Decoder layers of a model chunk that holds neither the embedding nor the loss: a later
    chunk of the first stage, an earlier one of the last (chunk_shape's full chunk), vectorized
    over candidates."""
    return chunk_shape(layers, vpp, chunk)[0]


def end_chunk_layers(layers, vpp, *, first_stage: bool, chunk=0):
    """(chunk 0's, the last chunk's) decoder layers of a stage of `layers` over vpp model chunks:
    chunk_layer_counts vectorized over candidates (`chunk`: pipeline.stage_chunk, 0 meaning the
    stage's own), the end chunk's rest in the first stage's chunk 0 and in another stage's last."""
    full, end = chunk_shape(layers, vpp, chunk)
    return (end, full) if first_stage else (full, end)


def virtual_stage_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                         last_stage_layers: int) -> tuple[int, ...]:
    """Decoder layers of each of the pp x vpp virtual stages in Megatron's order, virtual stage
    c x pp + p being stage p's chunk c (pipeline_parallel_layer_layout.py __init__, its 1D-to-2D
    conversion), each chunk as stage_chunk_sizes places it."""
    sizes = stage_chunk_sizes(num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    return tuple(sizes[p][c] for c in range(vpp) for p in range(pp))


def empty_chunks(num_layers: int, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int) -> int:
    """Model chunks holding no layer at all: no decoder layer (virtual_stage_layers), and neither
    the first virtual stage (the embedding's) nor the last (the loss's). Megatron parses such a
    layout and prints each as "(empty stage)" (pipeline_parallel_layer_layout.py at Megatron-LM
    d98e8a6); each is still a pipeline hop and a schedule slot."""
    return sum(n == 0 for n in virtual_stage_layers(num_layers, pp, vpp, first_stage_layers, last_stage_layers)[1:-1])
