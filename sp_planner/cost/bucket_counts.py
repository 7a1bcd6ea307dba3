"""The data-parallel collectives of a pipeline stage summarised per candidate, for the vectorized model.

cost.buckets lays out one stage's gradient buckets or FSDP units (stage_layouts); the search asks
for thousands of candidates at once, so bucket_counts summarises each distinct layout they need in
a row of numbers (BucketCounts: calls per pass, the unhideable ones and their parameters, and
under ZeRO-2 with virtual stages each chunk's own), computed once per distinct input and
remembered per model. The simulator runs the layouts call by call (sim.dp_work); both read the
same layouts.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from sp_planner.cost.buckets import DDP_BUCKET_MIN_PARAMS, DDP_BUCKET_PARAMS_PER_DP_RANK, BucketLayout, stage_layouts
from sp_planner.cost.moe import mlp_layer_is_moe
from sp_planner.cost.stage_params import dp_lightest_middle_stage, dp_middle_stage, stage_moe_flags
from sp_planner.distinct import distinct_columns
from sp_planner.pipeline_chunks import chunk_layer_counts
from sp_planner.specs.model import ModelSpec


class BucketCounts(NamedTuple):
    """Per candidate: collectives per pass over the stage, the unhideable ones (count, params),
    and of those the ones issued after the embedding (the layout's tail: count, params); under
    ZeRO-2 with virtual stages (0 elsewhere, _chunk_summary), chunk 0's layers' buckets and the
    last chunk's (on a model whose layers differ, else 0), the last chunk's first layer's and
    chunk 1's first layer's (count, params each)."""

    num_calls: np.ndarray
    num_unhideable: np.ndarray
    unhideable_params: np.ndarray
    num_tail: np.ndarray
    tail_params: np.ndarray
    num_chunk0: np.ndarray
    chunk0_params: np.ndarray
    num_end: np.ndarray
    end_params: np.ndarray
    num_end_first: np.ndarray
    end_first_params: np.ndarray
    num_later_first: np.ndarray
    later_first_params: np.ndarray


def bucket_counts(model: ModelSpec, *, tp, ep, etp, layers, pp, dp, zero, vpp=1, first_stage=True,
                  last_stage=False, first_stage_layers=0, last_stage_layers=0, chunk=0, lightest=False
                  ) -> tuple[BucketCounts, BucketCounts]:
    """stage_layouts summarised per candidate (dense, expert) for the stage that `first_stage` /
    `last_stage` name (bools, or per candidate; a middle one, the second, when neither; a single
    stage holds both whatever they say), its layers of their own MLP kinds where the model's
    differ (placed by pp, vpp, first_stage_layers, last_stage_layers: cost.stage_params.
    stage_moe_flags), `chunk` a full model chunk's layers (pipeline.stage_chunk, 0: the stage's own
    ceiling); `lightest`: a middle stage's chunks' buckets (num_chunk0 ... end_first_params) those
    of the one with the fewest MoE layers (stage_params.dp_lightest_middle_stage), its other fields
    dp_middle_stage's as without it; computed once per distinct input."""
    # Where the layers are alike the placement does not matter (0: the average layers).
    mixed = len(set(mlp_layer_is_moe(model))) > 1
    placement = [np.asarray(v) * mixed for v in (pp, vpp, first_stage_layers, last_stage_layers, lightest)]
    # Only what the layout depends on tells rows apart (stage_layouts): dp only sets Megatron's
    # bucket size, the same up to dp 40, and ZeRO-0 and 1 share a layout; FSDP units (ZeRO-3)
    # depend on neither dp nor vpp.
    zero = np.asarray(zero)
    dp = np.where(zero == 3, 0, np.maximum(dp, DDP_BUCKET_MIN_PARAMS // DDP_BUCKET_PARAMS_PER_DP_RANK))
    vpp = np.where(zero == 3, 1, vpp)
    chunk = np.where(vpp > 1, chunk, 0)
    columns = [np.broadcast_to(np.asarray(v, dtype=np.int64), np.shape(tp)).ravel()
               for v in (tp, ep, etp, layers, np.asarray(pp) == 1, dp, np.maximum(zero, 1), vpp, first_stage,
                         last_stage, chunk, *placement)]
    first, inverse = distinct_columns(columns)
    unique = np.stack([column[first] for column in columns], axis=1)
    known = _known_summaries(model)
    if len(known) > SUMMARIES_KEPT:
        known.clear()
    table = np.array([known[key] if (key := tuple(row)) in known else known.setdefault(key, _summary(model, key))
                      for row in unique.tolist()]).reshape(-1, 2 * FIELDS)
    rows = np.take(table, np.ravel(inverse), axis=0)  # several times faster than table[inverse]
    return BucketCounts(*rows[:, :FIELDS].T), BucketCounts(*rows[:, FIELDS:].T)


FIELDS = len(BucketCounts._fields)


# Distinct layouts remembered per model: the search asks for the same few hundred shapes in every
# chunk of candidates (a few thousand in all on a 1,024-GPU MoE search).
SUMMARIES_KEPT = 65536


@lru_cache(maxsize=8)
def _known_summaries(model: ModelSpec) -> dict[tuple[int, ...], tuple[float, ...]]:
    """_summary's answers for `model`, keyed by bucket_counts' distinct row: looked up in a dict
    whose model is hashed once a call (a frozen pydantic model's hash walks every field; an
    lru_cache keyed by it hashed it once a row)."""
    return {}


def _summary(model: ModelSpec, row: tuple[int, ...]) -> tuple[float, ...]:
    """BucketCounts' fields of the dense and the expert layout of bucket_counts' distinct `row`
    (bucket_counts remembers them, _known_summaries): tp, ep, etp, layers, single, dp, zero, vpp,
    first_stage, last_stage, chunk, then the placement (pp, vpp, first_stage_layers,
    last_stage_layers, lightest) of a model whose MLP kinds differ, else 0s."""
    tp, ep, etp, layers, single, dp, zero, vpp, first, last, chunk = row[:11]
    first_stage, last_stage, placement, lightest = bool(first), bool(last), row[11:15], bool(row[15])
    pp = placement[0]
    # A middle stage: the one whose calls stand for the middle ones (cost.stage_params.dp_middle_stage).
    middle = dp_middle_stage(model, *placement)[0] if pp else 1
    moe = None if pp == 0 else stage_moe_flags(model, *placement, stage=0 if single or first_stage else
                                               pp - 1 if last_stage else middle)
    shape: dict[str, Any] = dict(tp=tp, ep=ep, etp=etp, layers=layers, single_stage=bool(single), dp=dp,
                                 zero=zero, vpp=vpp, first_stage=first_stage, last_stage=last_stage, chunk=chunk)
    layouts = stage_layouts(model, moe=moe, **shape)
    # ZeRO-2's model chunks, each its own layers' buckets (_chunk_summary); `lightest`: the relayed
    # middle stage's chunks its own layers' (dp_lightest_middle_stage), its stage's calls the
    # heaviest's (cost.pipeline_dp._relay_blocks; docs/cost-model.md Stop 57).
    # Every model's later chunks' first layers: their own buckets, not chunk 0's (whose last one
    # the first stage's embedding carries on).
    sizes = chunk_layer_counts(layers, vpp, first_stage=first_stage, chunk=chunk) if zero == 2 else ()
    own = layouts
    if moe and zero == 2 and lightest and not (single or first_stage or last_stage):
        relayed = dp_lightest_middle_stage(model, *placement)[0]
        own = stage_layouts(model, moe=stage_moe_flags(model, *placement, stage=relayed), **shape)
    out: list[float] = []
    for layout, chunks in zip(layouts, own):
        out += [layout.num_calls, len(layout.unhideable), sum(layout.unhideable), len(layout.tail), sum(layout.tail),
                *_chunk_summary(chunks, sizes, mixed=bool(moe))]
    return tuple(out)


def _chunk_summary(layout: BucketLayout, sizes: tuple[int, ...], *, mixed: bool) -> tuple[float, ...]:
    """(count, params) of the buckets of chunk 0's layers and of the last chunk's (`mixed`: a model
    whose layers differ, else 0s: those chunks price a share of the stage's calls), of the last
    chunk's first layer's (the one it issues last in backward, which cannot hide) and of chunk 1's
    first layer's in a ZeRO-2 stage of model chunks of `sizes` layers (cost.buckets._bucketed_chunks:
    each chunk bucketed on its own, so each holds its own layers' buckets, and a later chunk's first
    layer the rest its walk leaves, which chunk 0's of the first stage leaves to the embedding's bucket:
    Megatron walks each chunk's own parameters, training.py wrap_model_chunks_with_ddp lines
    2300-2331, param_and_grad_buffer.py _compute_default_per_buffer_param_layout lines 954-994 at
    d98e8a6); the embedding's (tail) and output layer's (head) are left to the stage's root calls.
    0s at one chunk (`sizes` () or (n,))."""
    if len(sizes) < 2:
        return (0.0,) * 8
    end_start = len(layout.layers) - sizes[-1]
    parts = (layout.layers[:sizes[0]] if mixed else (), layout.layers[end_start:] if mixed else (),
             layout.layers[end_start:end_start + 1], layout.layers[sizes[0]:sizes[0] + min(sizes[1], 1)])
    return tuple(x for part in parts for x in (float(sum(len(b) for b in part)), math.fsum(sum(b) for b in part)))
