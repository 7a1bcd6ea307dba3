"""A pipeline stage's model chunks (interleaved 1F1B, vpp > 1): how many decoder layers each holds.

Megatron gives each stage's vpp chunks an even share of its layers (transformer_block.py
get_num_layers_to_build at Megatron-LM d98e8a6); under the counted split
(--account-for-embedding/loss-in-pipeline-split) the chunk holding the embedding (the first
stage's chunk 0) or the loss (the last stage's last chunk) holds one fewer, and under a
--pipeline-model-parallel-layout whose end stage does not divide by vpp every chunk holds the
middle stages' chunk (sp_planner.pipeline.stage_chunk) and the end chunk the rest
(sp_planner.pipeline, module docstring). cost.buckets, cost.dp_exposure, cost.chunk_path,
cost.layer_kinds and sim.layer_program place the layers so. Vectorized over candidates where the
name says so.
"""

from __future__ import annotations

import numpy as np

from sp_planner.pipeline import stage_chunk, stage_layers


def chunk_layer_counts(layers: int, vpp: int, *, first_stage: bool, chunk: int = 0) -> tuple[int, ...]:
    """Decoder layers of each of a stage's vpp model chunks, chunk 0 first: an even share, and
    where the stage does not divide by vpp, `chunk` (stage_chunk; 0: ceil(layers / vpp)) in each
    chunk and the rest in its end chunk, the first stage's chunk 0 (the embedding's) or another
    stage's last (the loss's): the counted split's one fewer there (transformer_block.py
    get_num_layers_to_build lines 191-201 at Megatron-LM d98e8a6) and the layout's rest (module
    docstring). A stage too short for that (a split Megatron does not place) keeps the nearly even
    share. cost.buckets (each chunk's gradient bucket) and sim.layer_program place the layers so."""
    full = int(chunk) or -(-layers // vpp)
    rest = layers - (vpp - 1) * full
    if layers % vpp and rest >= 0:
        return (rest, *[full] * (vpp - 1)) if first_stage else (*[full] * (vpp - 1), rest)
    base, extra = divmod(layers, vpp)
    sizes = [base + 1] * extra + [base] * (vpp - extra)
    return tuple(reversed(sizes)) if first_stage else tuple(sizes)


def stage_chunk_sizes(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                      last_stage_layers: int) -> tuple[tuple[int, ...], ...]:
    """chunk_layer_counts of each pipeline stage, [stage][chunk]; 0 first/last: the even split."""
    split = stage_layers(num_layers, np.array([pp]), np.array([first_stage_layers]), np.array([last_stage_layers]))
    first, middle, last = (int(v[0]) for v in split)
    chunk = int(stage_chunk(first, middle, last, pp, vpp))
    return tuple(chunk_layer_counts(first if p == 0 else last if p == pp - 1 else middle, vpp, first_stage=p == 0,
                                    chunk=chunk) for p in range(pp))


def _chunks(layers, vpp, chunk):
    """(full, rest, uneven): the full chunks' layers (`chunk`, 0 meaning ceil(layers / vpp)), the
    end chunk's rest, and where a stage runs so (not divisible by vpp, rest >= 0)."""
    layers, vpp = np.asarray(layers), np.asarray(vpp)
    full = np.where(np.asarray(chunk) > 0, chunk, np.ceil(layers / vpp))
    rest = layers - (vpp - 1) * full
    return full, rest, (layers - np.floor(layers / vpp) * vpp > 0) & (rest >= 0)


def later_chunk_layers(layers, vpp, chunk=0):
    """Decoder layers of a model chunk that holds neither the embedding nor the loss: a later
    chunk of the first stage, an earlier one of the last (chunk_layer_counts' full chunk, more than
    the chunk with either under the counted split or the layout), vectorized over candidates."""
    full, _, uneven = _chunks(layers, vpp, chunk)
    return np.where(uneven, full, np.ceil(np.asarray(layers) / np.asarray(vpp)))


def end_chunk_layers(layers, vpp, *, first_stage: bool, chunk=0):
    """(chunk 0's, the last chunk's) decoder layers of a stage of `layers` over vpp model chunks:
    chunk_layer_counts vectorized over candidates (`chunk`: stage_chunk, 0 meaning the stage's own
    ceil): an even share, and where the stage does not divide by vpp the rest beyond vpp - 1 full
    chunks in the first stage's chunk 0 and in another stage's last chunk (Megatron's counted
    split, the embedding and the loss each in a layer's place, one fewer; the layout's rest), the
    floor and the ceiling where that rest would be negative. Whole numbers: floor and ceil are
    exact at a fraction of np.mod's time on floats (chunk_counts)."""
    layers = np.asarray(layers)
    if not np.any(np.asarray(chunk) > 0):  # the stage's own ceiling: the counted split's closed form
        base = np.floor(layers / vpp)
        full = base + (layers - base * vpp > 0)
        rest = layers - (np.asarray(vpp) - 1) * full
        end = np.where(rest >= 0, rest, base)
        return (end, full) if first_stage else (full, end)
    full, rest, uneven = _chunks(layers, vpp, chunk)
    end = np.where(uneven, rest, np.floor(layers / vpp))
    other = np.where(uneven, full, np.ceil(layers / vpp))
    return (end, other) if first_stage else (other, end)


def virtual_stage_layers(num_layers: int, pp: int, vpp: int, first_stage_layers: int,
                         last_stage_layers: int) -> tuple[int, ...]:
    """Decoder layers of each of the pp x vpp virtual stages in Megatron's order, virtual stage
    c x pp + p being stage p's chunk c (pipeline_parallel_layer_layout.py __init__, its 1D-to-2D
    conversion), each chunk as stage_chunk_sizes places it."""
    sizes = stage_chunk_sizes(num_layers, pp, vpp, first_stage_layers, last_stage_layers)
    return tuple(sizes[p][c] for c in range(vpp) for p in range(pp))
