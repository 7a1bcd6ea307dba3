"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized (how many
candidates there are, without expanding them: space_count)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from sp_planner.candidates import Candidates
from sp_planner.distinct import distinct_columns
from sp_planner.layout import GRID_ORDER
from sp_planner.pipeline_split import search_split
from sp_planner.plan import (
    RULES,
    CpComm,
    Fp8Recipe,
    Precision,
    Recompute,
    RingLayout,
    RuleFacts,
    rule_breaks,
)
from sp_planner.space_choices import (  # re-exported: the choices beside the degrees live there
    MICRO_BATCH_CHOICES,
    ZERO_STAGES,
    Axes,
    _micro_batches,
    _num_experts,
    _precision_codes,
    _variants,
    _vpp_choices,
    _vpp_keep,
    _vpp_refine,
    _zeros_and_recomputes,
    pinned_split,
)
from sp_planner.space_degrees import (  # re-exported: the space's degree tuples live there
    DEGREES,
    EXPERT_DEGREES,
    bounded_factorizations,
    degree_tuples,
    ordered_factorizations,
    search_order,
    with_expert_degrees,
)
from sp_planner.space_variants import variant_rows
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


class Pins(FrozenModel):
    """Values the search must keep; None leaves a choice free."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ulysses: int | None = None
    ring: int | None = None
    zero: int | None = None
    recompute: Recompute | None = None
    micro_batch: int | None = None
    ring_layout: RingLayout | None = None
    cp_comm: CpComm | None = None
    dp_replicate: int | None = None
    reshard_after_forward: bool | None = None
    vpp: int | None = None
    # Not searched: the interleaved schedule's micro-batch group N (sp-plan --vpp-group; None: the
    # one sp-plan prices, pipeline_order.micro_batch_group), on the rows with vpp > 1.
    vpp_group: int | None = Field(default=None, ge=1)
    # bf16 unless asked: FP8 changes the numerics, so the search tries it only when told (None).
    precision: Precision | None = "bf16"
    # Not searched: the FP8 recipe is the user's choice, as it changes the numerics.
    fp8_recipe: Fp8Recipe = "delayed"
    fp8_attention: bool = False
    ep: int | None = None
    etp: int | None = None
    # Not searched: layers whose activations go to host memory (cost.offload), the user's choice;
    # with it the pipeline and recompute pins are 1 and none (ParallelPlan).
    cpu_offload_layers: int = 0
    # Not searched: Adam's moments in bf16 (cost.states), the user's choice.
    adam_moments_bf16: bool = False
    # The pipeline split, both or neither (None: pipeline_split.search_split's for each pp and vpp):
    # decoder layers on the first and the last stage, with pp pinned (sp-plan --first-stage-layers
    # and --last-stage-layers; a Megatron-Bridge layout such as DeepSeek-V3's 4 / 1 over pp 16).
    first_stage_layers: int | None = Field(default=None, ge=1)
    last_stage_layers: int | None = Field(default=None, ge=1)


# The degrees in Pins' field order, which is the CLI's options' (DEGREES: space_degrees).
PIN_DEGREES: tuple[str, ...] = tuple(name for name in Pins.model_fields if name in GRID_ORDER)

__all__ = ["DEGREES", "EXPERT_DEGREES", "MICRO_BATCH_CHOICES", "PIN_DEGREES", "ZERO_STAGES", "Axes", "Pins",
           "bounded_factorizations", "degree_tuples", "enumerate_candidates", "expand_candidates",
           "first_rule", "iter_candidates", "ordered_factorizations", "rule_masks", "search_order",
           "with_expert_degrees"]


def enumerate_candidates(workload: Workload, world: int, pins: Pins, gpus_per_node: int | None = None,
                         *, axes: Axes | None = None) -> Candidates:
    """Every candidate: degree tuples (with ep, etp for MoE) x ZeRO stage x recompute x micro-batch
    x the variants of space_variants (cp_comm, HSDP, reshard; HSDP only with a known node size)
    x vpp x precision, one ring layout."""
    degrees = with_expert_degrees(degree_tuples(world, pins), _num_experts(axes), pins)
    return expand_candidates(workload, search_order(degrees), pins, gpus_per_node, axes=axes)


def iter_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, *, chunk_candidates: int,
                    gpus_per_node: int | None = None, axes: Axes | None = None,
                    refine: bool = False) -> Iterator[tuple[int, Candidates]]:
    """`expand_candidates` over consecutive slices of `degrees` (in search_order), about
    `chunk_candidates` candidates each: (degree tuples done, candidates). Whatever the non-degree
    axes multiply a tuple by, the slice length adapts to it (the first slice, one tuple, measures it)."""
    step, done = 1, 0
    while done < len(degrees):
        rows = degrees[done:done + step]
        chunk = expand_candidates(workload, rows, pins, gpus_per_node, axes=axes, refine=refine)
        done += len(rows)
        yield done, chunk
        per_tuple = max(1.0, len(chunk) / len(rows))
        step = max(1, int(chunk_candidates / per_tuple))


def expand_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, gpus_per_node: int | None = None,
                      *, axes: Axes | None = None, refine: bool = False) -> Candidates:
    """Degree tuples (in search_order; with with_expert_degrees' ep, etp columns, or without them
    for ep = etp = 1) times ZeRO stage, recompute and micro-batch, each then times its valid
    variants (space_variants), which stay next to it, then times vpp and precision, and for each
    pp the pipeline split `pipeline_split.search_split` gives.

    Unpinned vpp is tried over VPP_CHOICES where the split and the interleaved schedule allow it
    (vpp 1 always, so that a broken split is still reported once); unpinned precision over
    `axes.precisions` (what the hardware runs). Without `axes`: vpp 1, even split, bf16.
    `refine` (unpinned vpp and split, with `axes`): instead, only the vpp > 1 rows that the layout
    mask leaves out, each with a pinned vpp's split (space_choices._vpp_refine; search_refine)."""
    if degrees.shape[1] == len(DEGREES):
        degrees = with_expert_degrees(degrees, 0, pins)
    zeros, recomputes = _zeros_and_recomputes(pins, axes)
    blocks = []
    for dp in np.unique(degrees[:, DEGREES.index("dp")]):
        mbs = _micro_batches(workload, int(dp), pins)
        rows = degrees[degrees[:, DEGREES.index("dp")] == dp]
        # (rows, zero, recompute, micro_batch) -> flat candidates: degrees, the three choices, ep, etp
        grid = np.stack(np.meshgrid(np.arange(len(rows)), zeros, recomputes, mbs, indexing="ij"), -1)
        grid = grid.reshape(-1, 4)
        picked = rows[grid[:, 0]]
        blocks.append(np.concatenate([picked[:, :len(DEGREES)], grid[:, 1:], picked[:, len(DEGREES):]], axis=1))
    width = len(DEGREES) + len(EXPERT_DEGREES) + 3
    table = np.concatenate(blocks) if blocks else np.zeros((0, width), dtype=np.int64)
    mask, replicas = _variants(dict(zip(DEGREES, table.T)), table[:, len(DEGREES)], pins, gpus_per_node)
    # (rows, width) -> variants: each base row once per valid variant (space_variants), kept as each
    # variant's base row and its three columns; every column is gathered once, below.
    base, *variant_columns = variant_rows(mask, replicas)
    layout = pins.ring_layout or ("zigzag" if workload.causal else "contiguous")
    names = (*DEGREES, "zero", "recompute", "micro_batch", *EXPERT_DEGREES)
    # variants -> variants x vpp x precision, each row's next to it,
    # without the (variant, vpp) pairs _vpp_keep drops: decided on the (variants, vpp x precision)
    # grid, so that only the rows kept are ever built.
    vpps, codes = _vpp_choices(pins, axes), _precision_codes(pins, axes)
    extra = np.array([(v, c) for v in vpps for c in codes], dtype=np.int64).reshape(-1, 2)
    num_layers = axes.num_layers if axes is not None else 1
    at = {name: i for i, name in enumerate(names)}
    # Decided once per distinct (dp, pp, micro-batch): a chunk's variants hold a few dozen.
    # One contiguous array per field: the rules and the cost model read every column many times,
    # several times faster than as strided views of a row-major table.
    by_field = np.ascontiguousarray(table.T, dtype=np.int64)  # (width, base rows)
    first_row, inverse = distinct_columns([by_field[at[name]][base] for name in ("dp", "pp", "micro_batch")])
    dp, pp, mb = (by_field[at[name]][base[first_row], None] for name in ("dp", "pp", "micro_batch"))
    mtp = axes.mtp_layers if axes is not None else 0
    keep = _vpp_refine(workload, dp, pp, mb, extra[None, :, 0], num_layers, mtp) if refine else \
        _vpp_keep(workload, dp, pp, mb, extra[None, :, 0], num_layers, pins.vpp is not None or axes is None, mtp,
                  pinned_split(pins))
    keep = np.broadcast_to(keep, (len(first_row), len(extra)))[inverse]  # (distinct, E) -> (variants, E)
    rows, picked = np.nonzero(np.broadcast_to(keep, (len(base), len(extra))))  # row-major: rows in order
    # Each field gathered once from the base rows (at_base) or the variants' columns (rows).
    at_base = base[rows]
    columns = [column[at_base] for column in by_field] + [column[rows] for column in variant_columns] + \
        [extra[picked, 0], extra[picked, 1]]
    named = dict(zip((*names, "allgather", "dp_replicate", "reshard", "vpp", "precision"), columns))
    split = pinned_split(pins)
    if split is not None:
        first, last = (np.full(len(rows), v, dtype=np.int64) for v in split)
    elif axes is not None:
        first, last = search_split(axes.num_layers, named["pp"], named["vpp"], axes.mtp_layers,
                                   recipes=pins.vpp is not None or refine)
    else:
        first = last = np.zeros(len(rows), dtype=np.int64)
    return Candidates(**{k: v for k, v in named.items() if k not in ("allgather", "reshard")},
                      zigzag=np.full(len(rows), layout == "zigzag"), allgather=named["allgather"].astype(bool),
                      reshard=named["reshard"].astype(bool), first_stage_layers=np.asarray(first, dtype=np.int64),
                      last_stage_layers=np.asarray(last, dtype=np.int64),
                      fp8_current=np.full(len(rows), pins.fp8_recipe == "tensorwise"),
                      fp8_attention=np.full(len(rows), pins.fp8_attention),
                      cpu_offload_layers=np.full(len(rows), pins.cpu_offload_layers, dtype=np.int64),
                      fp8_blockwise=np.full(len(rows), pins.fp8_recipe == "blockwise"),
                      adam_moments_bf16=np.full(len(rows), pins.adam_moments_bf16),
                      vpp_group=np.where(named["vpp"] > 1, pins.vpp_group or 0, 0).astype(np.int64))


def rule_masks(model: ModelSpec, workload: Workload, c: Candidates) -> dict[str, np.ndarray]:
    """True where a candidate breaks the rule: `plan.rule_breaks` over the columns."""
    return rule_breaks(RuleFacts.of(model, workload), c)


def first_rule(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Index into RULES of the first broken rule, or -1."""
    code = np.full(n, -1, dtype=np.int64)
    for i, rule in reversed(list(enumerate(RULES))):
        code = np.where(masks[rule], i, code)
    return code
