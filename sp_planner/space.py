"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

import math
from functools import lru_cache

from sp_planner.layout import EXPERT_GRID_ORDER, GRID_ORDER
from sp_planner.pipeline import VPP_CHOICES, default_split, interleave_breaks, split_breaks
from sp_planner.plan import (
    MAX_DEGREE,
    PRECISIONS,
    RECOMPUTE,
    RULES,
    CpComm,
    ParallelPlan,
    Precision,
    Recompute,
    RingLayout,
    RuleFacts,
    rule_breaks,
)
from sp_planner.space_variants import expand_variants, variant_mask
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)
MICRO_BATCH_CHOICES: tuple[int, ...] = (1, 2, 4, 8)


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
    # bf16 unless asked: FP8 changes the numerics, so the search tries it only when told (None).
    precision: Precision | None = "bf16"
    ep: int | None = None
    etp: int | None = None


# The degrees (the axes of layout.GRID_ORDER) in ParallelPlan's field order, which is the order
# of the frame's columns and of the JSON, and in Pins' field order, which is the CLI's options'.
DEGREES: tuple[str, ...] = tuple(name for name in ParallelPlan.model_fields if name in GRID_ORDER)
PIN_DEGREES: tuple[str, ...] = tuple(name for name in Pins.model_fields if name in GRID_ORDER)
# The expert grid's free degrees (layout.EXPERT_GRID_ORDER less pp and the derived edp), columns
# after DEGREES; enumerated only for MoE models.
EXPERT_DEGREES: tuple[str, ...] = tuple(name for name in EXPERT_GRID_ORDER if name not in ("pp", "edp"))

def _divisors(n: int) -> list[int]:
    """Divisors of n, ascending, from trial division up to sqrt(n) (a million-node world has ~10^7
    candidates below it, so counting up to n would dominate the search)."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def degree_tuples(world: int, pins: Pins) -> np.ndarray:
    """All (dp, pp, tp, ulysses, ring) with product == world that respect the pins, each degree
    at most plan.MAX_DEGREE; shape (n, 5), in lexicographic order. Built axis by axis over arrays:
    a million-node world has 150,150."""
    prefix = np.zeros((1, 0), dtype=np.int64)  # (tuples so far, axes chosen)
    rest = np.array([world], dtype=np.int64)  # what the remaining axes must multiply to
    for axis in DEGREES[:-1]:
        pinned = getattr(pins, axis)
        values, inverse = np.unique(rest, return_inverse=True)
        choices = [np.array([d for d in _divisors(int(v)) if d <= MAX_DEGREE] if pinned is None
                            else [pinned] if v % pinned == 0 else [], dtype=np.int64) for v in values]
        per_row = [choices[i] for i in inverse.reshape(-1)]
        counts = np.array([len(c) for c in per_row], dtype=np.int64)
        chosen = np.concatenate(per_row) if per_row else np.zeros(0, dtype=np.int64)
        prefix = np.concatenate([np.repeat(prefix, counts, axis=0), chosen[:, None]], axis=1)
        rest = np.repeat(rest, counts) // chosen
    last = getattr(pins, DEGREES[-1])
    keep = (rest <= MAX_DEGREE) if last is None else rest == last
    return np.concatenate([prefix[keep], rest[keep, None]], axis=1)


def bounded_factorizations(world: int, parts: int, largest: int | None = None) -> int:
    """How many tuples of `parts` positive integers, each at most `largest`, multiply to `world`
    (degree tuples, no pins): ordered_factorizations while world <= largest, else counted over
    the divisors of world. `largest` defaults to plan.MAX_DEGREE."""
    largest = MAX_DEGREE if largest is None else largest
    if world <= largest:
        return ordered_factorizations(world, parts)

    @lru_cache(maxsize=None)
    def count(n: int, k: int) -> int:
        if k == 1:
            return int(n <= largest)
        return sum(count(n // d, k - 1) for d in _divisors(n) if d <= largest)

    return count(world, parts)


def ordered_factorizations(world: int, parts: int) -> int:
    """How many tuples of `parts` positive integers multiply to `world` (degree tuples, no pins):
    the product over world's prime powers p^e of C(e + parts - 1, parts - 1)."""
    count, n, p = 1, world, 2
    while p * p <= n:
        e = 0
        while n % p == 0:
            n, e = n // p, e + 1
        count *= math.comb(e + parts - 1, parts - 1)
        p += 1
    return count * (parts if n > 1 else 1)


def with_expert_degrees(degrees: np.ndarray, num_experts: int, pins: Pins) -> np.ndarray:
    """Degree rows (n, len(DEGREES)) extended by (ep, etp) columns: (n', len(DEGREES) + 2).

    Dense models get ep = etp = 1 (pins other than 1 are kept, for the rules to refuse). For MoE,
    ep runs over the divisors of num_experts and etp over {1, tp} (ETP = 1 is Megatron's
    recommendation for fine-grained experts, moe/README.md; ETP = TP its default), keeping rows
    whose expert grid fills each pipeline stage: (world/pp) % (ep*etp) == 0 (parallel_state.py)
    unless ep or etp is pinned.
    """
    n = len(degrees)
    if num_experts == 0:
        fixed = np.array([[pins.ep or 1, pins.etp or 1]] * n, dtype=np.int64).reshape(n, 2)
        return np.concatenate([degrees, fixed], axis=1)
    tp = degrees[:, DEGREES.index("tp")]
    stage = degrees.prod(axis=1) // degrees[:, DEGREES.index("pp")]
    eps = [pins.ep] if pins.ep is not None else _divisors(num_experts)
    blocks = []
    for ep in eps:
        etp_choices = [np.full(n, pins.etp)] if pins.etp is not None else [np.ones(n, dtype=np.int64), tp]
        seen = np.zeros((n, 0), dtype=np.int64)
        for etp in etp_choices:
            # A pinned degree is kept even where it breaks the grid, so that the rule names it.
            fills = (stage % (ep * etp) == 0) | (pins.ep is not None) | (pins.etp is not None)
            keep = fills & ~(seen == etp[:, None]).any(axis=1)
            seen = np.concatenate([seen, etp[:, None]], axis=1)
            rows = np.concatenate([degrees, np.full((n, 1), ep), etp[:, None]], axis=1)[keep]
            blocks.append(rows)
    width = len(DEGREES) + len(EXPERT_DEGREES)
    return np.concatenate(blocks).astype(np.int64) if blocks else np.zeros((0, width), dtype=np.int64)


@dataclass(frozen=True)
class Candidates:
    """Candidate plans as parallel numpy arrays, one entry per candidate (the cost model's input).

    Degrees, ZeRO stage and micro-batch are int64; `recompute` holds plan.RECOMPUTE codes
    (RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL); `zigzag` is the ring layout as bool,
    `allgather` the ring's cp_comm as bool (False: p2p), `dp_replicate` int64 and `reshard` the
    plan's reshard_after_forward (bool); space_variants says which are searched. `vpp` virtual
    stages per rank; `first/last_stage_layers` the pipeline split (0 = even, sp_planner.pipeline);
    `precision` holds plan.PRECISIONS codes.
    """

    dp: np.ndarray
    pp: np.ndarray
    tp: np.ndarray
    ulysses: np.ndarray
    ring: np.ndarray
    zero: np.ndarray
    recompute: np.ndarray
    micro_batch: np.ndarray
    zigzag: np.ndarray
    allgather: np.ndarray
    dp_replicate: np.ndarray
    reshard: np.ndarray
    vpp: np.ndarray
    first_stage_layers: np.ndarray
    last_stage_layers: np.ndarray
    precision: np.ndarray
    ep: np.ndarray
    etp: np.ndarray

    def __len__(self) -> int:
        return len(self.tp)

    @property
    def edp(self) -> np.ndarray:
        """Expert data-parallel degree, world / (pp*ep*etp) (ParallelPlan.edp)."""
        return self.dp * self.ring * self.ulysses * self.tp // (self.ep * self.etp)

    def take(self, index: np.ndarray) -> "Candidates":
        """The candidates at `index` (every column, whatever columns the container has)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence["Candidates"]) -> "Candidates":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def of_plan(cls, plan: ParallelPlan) -> "Candidates":
        """One plan as one-entry arrays."""
        ints = {name: np.array([getattr(plan, name) or 0], dtype=np.int64) for name in _INT_FIELDS}
        return cls(**ints, recompute=np.array([RECOMPUTE.index(plan.recompute)], dtype=np.int64),
                   zigzag=np.array([plan.zigzag]), allgather=np.array([plan.allgather]),
                   dp_replicate=np.array([plan.dp_replicate], dtype=np.int64),
                   reshard=np.array([plan.reshard_after_forward]),
                   precision=np.array([PRECISIONS.index(plan.precision)], dtype=np.int64))

    def plan(self, i: int) -> ParallelPlan:
        """Candidate `i` as a ParallelPlan."""
        ints: dict[str, int | None] = {name: int(getattr(self, name)[i]) for name in _INT_FIELDS}
        for name in ("first_stage_layers", "last_stage_layers"):
            ints[name] = ints[name] or None  # 0 = the even split
        return ParallelPlan(**ints, recompute=RECOMPUTE[int(self.recompute[i])],
                            ring_layout="zigzag" if self.zigzag[i] else "contiguous",
                            cp_comm="allgather" if self.allgather[i] else "p2p",
                            dp_replicate=int(self.dp_replicate[i]), reshard_after_forward=bool(self.reshard[i]),
                            precision=PRECISIONS[int(self.precision[i])])


_INT_FIELDS: tuple[str, ...] = (*DEGREES, "zero", "micro_batch", "vpp", "first_stage_layers", "last_stage_layers",
                                *EXPERT_DEGREES)


class Axes(NamedTuple):
    """What the pipeline, precision and expert axes read beside the pins: the model's layers (the
    split and the vpp values that fit it), the precisions the hardware runs (tried when unpinned)
    and the model's routed experts (0: dense; ep runs over their divisors). None where a caller
    passes no Axes: vpp 1, the even split, the pinned (else bf16) precision, dense."""

    num_layers: int
    precisions: tuple[Precision, ...] = ("bf16",)
    num_experts: int = 0


def _num_experts(axes: Axes | None) -> int:
    return axes.num_experts if axes is not None else 0


def enumerate_candidates(workload: Workload, world: int, pins: Pins, gpus_per_node: int | None = None,
                         *, axes: Axes | None = None) -> Candidates:
    """Every candidate: degree tuples (with ep, etp for MoE) x ZeRO stage x recompute x micro-batch
    x the variants of space_variants (cp_comm, HSDP, reshard; HSDP only with a known node size)
    x vpp x precision, one ring layout."""
    degrees = with_expert_degrees(degree_tuples(world, pins), _num_experts(axes), pins)
    return expand_candidates(workload, search_order(degrees), pins, gpus_per_node, axes=axes)


# Above this many degree tuples count_candidates counts without them (the base count, which is
# then already far above any search's size limit, so the refusal stands).
COUNT_TUPLES_LIMIT = 2_000_000


def count_candidates(workload: Workload, world: int, pins: Pins, gpus_per_node: int | None = None,
                     *, axes: Axes | None = None) -> int:
    """How many candidates enumerate_candidates gives, without expanding them: per degree tuple and
    ZeRO stage, its valid variants x recompute x micro-batch choices (MoE: per (ep, etp) row too).
    Beyond COUNT_TUPLES_LIMIT tuples, the degree tuples with each dp by formula times what one of
    them expands to, variants and expert rows aside (a lower bound)."""
    dp_axis = DEGREES.index("dp")
    zeros, recomputes = _zeros_and_recomputes(pins)
    if ordered_factorizations(world, len(DEGREES)) <= COUNT_TUPLES_LIMIT:
        tuples = with_expert_degrees(degree_tuples(world, pins), _num_experts(axes), pins)[:, :len(DEGREES)]
        named = dict(zip(DEGREES, tuples.T))
        per_tuple = np.zeros(len(tuples), dtype=np.int64)
        for zero in zeros:
            mask, _ = _variants(named, np.full(len(tuples), zero), pins, gpus_per_node)
            per_tuple += mask.sum(axis=1)
        # vpp x precision per (tuple, micro-batch): the vpp values kept depend on dp, pp and the micro-batch.
        mbs = np.array([sum(_vpps_kept(workload, int(dp), int(pp), mb, pins, axes)
                            for mb in _micro_batches(workload, int(dp), pins))
                        for dp, pp in zip(named["dp"], named["pp"])], dtype=np.int64)
        return int((per_tuple * mbs).sum()) * len(recomputes) * len(_precision_codes(pins, axes))
    if any(getattr(pins, axis) is not None for axis in DEGREES if axis != "dp"):
        dps, per_dp = np.unique(degree_tuples(world, pins)[:, dp_axis], return_counts=True)
    else:
        dps = np.array([d for d in _divisors(world) if pins.dp in (None, d) and d <= MAX_DEGREE], dtype=np.int64)
        per_dp = np.array([bounded_factorizations(world // int(dp), len(DEGREES) - 1) for dp in dps], dtype=np.int64)
    return sum(tuples * len(zeros) * len(recomputes) * len(_micro_batches(workload, dp, pins))
               for dp, tuples in zip(dps.tolist(), per_dp.tolist())) * len(_precision_codes(pins, axes))


def search_order(degrees: np.ndarray) -> np.ndarray:
    """Degree tuples in the order the candidates are enumerated (grouped by dp, stably), so
    expanding consecutive slices and concatenating gives the same candidates in the same order
    as expanding them all at once."""
    return degrees[np.argsort(degrees[:, DEGREES.index("dp")], kind="stable")]


def iter_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, *, chunk_candidates: int,
                    gpus_per_node: int | None = None, axes: Axes | None = None) -> Iterator[tuple[int, Candidates]]:
    """`expand_candidates` over consecutive slices of `degrees` (in search_order), about
    `chunk_candidates` candidates each: (degree tuples done, candidates). Whatever the non-degree
    axes multiply a tuple by, the slice length adapts to it (the first slice, one tuple, measures it)."""
    step, done = 1, 0
    while done < len(degrees):
        rows = degrees[done:done + step]
        chunk = expand_candidates(workload, rows, pins, gpus_per_node, axes=axes)
        done += len(rows)
        yield done, chunk
        per_tuple = max(1.0, len(chunk) / len(rows))
        step = max(1, int(chunk_candidates / per_tuple))


def _zeros_and_recomputes(pins: Pins) -> tuple[list[int], list[int]]:
    zeros = [pins.zero] if pins.zero is not None else list(ZERO_STAGES)
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else list(range(len(RECOMPUTE)))
    return zeros, recomputes


def _micro_batches(workload: Workload, dp: int, pins: Pins) -> list[int]:
    if pins.micro_batch is not None:
        return [pins.micro_batch]
    if workload.global_batch % dp == 0:
        per_replica = workload.global_batch // dp
        return [x for x in MICRO_BATCH_CHOICES if per_replica % x == 0]
    return [1]  # broken batch rule: evaluated once, reported with its reason


def _variants(named, zero, pins: Pins, gpus_per_node: int | None):
    return variant_mask(named["dp"], named["tp"], named["ulysses"], named["ring"], zero, cp_comm=pins.cp_comm,
                        dp_replicate=pins.dp_replicate, reshard_after_forward=pins.reshard_after_forward,
                        gpus_per_node=gpus_per_node)


def _precision_codes(pins: Pins, axes: Axes | None) -> list[int]:
    if pins.precision is not None:
        return [PRECISIONS.index(pins.precision)]
    return [PRECISIONS.index(p) for p in (axes.precisions if axes is not None else ("bf16",))]


def _vpp_choices(pins: Pins, axes: Axes | None) -> list[int]:
    if pins.vpp is not None:
        return [pins.vpp]
    return list(VPP_CHOICES) if axes is not None else [1]


def _vpp_keep(workload: Workload, dp, pp, mb, vpp, num_layers: int, pinned: bool):
    """False for unpinned vpp > 1 that Megatron would reject (no split, or no interleaved schedule
    for the micro-batch count), so that the search does not list them as rule breakers."""
    if pinned:
        return np.ones(np.shape(vpp), dtype=bool)
    m = workload.global_batch // (dp * mb)
    first, last = default_split(num_layers, pp, vpp)
    return ~((vpp > 1) & (split_breaks(num_layers, pp, vpp, first, last) | interleave_breaks(pp, vpp, m)))


def _vpps_kept(workload: Workload, dp: int, pp: int, mb: int, pins: Pins, axes: Axes | None) -> int:
    vpps = np.array(_vpp_choices(pins, axes), dtype=np.int64)
    num_layers = axes.num_layers if axes is not None else 1
    return int(_vpp_keep(workload, dp, pp, mb, vpps, num_layers, pins.vpp is not None or axes is None).sum())


def expand_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, gpus_per_node: int | None = None,
                      *, axes: Axes | None = None) -> Candidates:
    """Degree tuples (in search_order; with with_expert_degrees' ep, etp columns, or without them
    for ep = etp = 1) times ZeRO stage, recompute and micro-batch, each then times its valid
    variants (space_variants), which stay next to it, then times vpp and precision, and for each
    pp the pipeline split `pipeline.default_split` gives.

    Unpinned vpp is tried over VPP_CHOICES where the split and the interleaved schedule allow it
    (vpp 1 always, so that a broken split is still reported once); unpinned precision over
    `axes.precisions` (what the hardware runs). Without `axes`: vpp 1, even split, bf16."""
    if degrees.shape[1] == len(DEGREES):
        degrees = with_expert_degrees(degrees, 0, pins)
    zeros, recomputes = _zeros_and_recomputes(pins)
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
    table = expand_variants(table, mask, replicas)  # (rows, width) -> (variants, width + 3)
    columns = table.T.astype(np.int64)  # (candidates, width + 3) -> one array per field
    layout = pins.ring_layout or ("zigzag" if workload.causal else "contiguous")
    names = (*DEGREES, "zero", "recompute", "micro_batch", *EXPERT_DEGREES, "allgather", "dp_replicate", "reshard")
    # (variants, width + 3) -> (variants x vpp x precision, width + 5), each row's next to it
    vpps, codes = _vpp_choices(pins, axes), _precision_codes(pins, axes)
    extra = np.array([(v, c) for v in vpps for c in codes], dtype=np.int64).reshape(-1, 2)
    table = np.concatenate([np.repeat(table, len(extra), axis=0), np.tile(extra, (len(table), 1))], axis=1)
    num_layers = axes.num_layers if axes is not None else 1
    at = {name: i for i, name in enumerate((*names, "vpp", "precision"))}
    keep = _vpp_keep(workload, table[:, at["dp"]], table[:, at["pp"]], table[:, at["micro_batch"]],
                     table[:, at["vpp"]], num_layers, pins.vpp is not None or axes is None)
    table = table[keep]
    columns = table.T.astype(np.int64)  # (candidates, width + 5) -> one array per field
    named = dict(zip((*names, "vpp", "precision"), columns))
    if axes is not None:
        first, last = default_split(axes.num_layers, named["pp"], named["vpp"])
    else:
        first = last = np.zeros(len(table), dtype=np.int64)
    return Candidates(**{k: v for k, v in named.items() if k not in ("allgather", "reshard")},
                      zigzag=np.full(len(table), layout == "zigzag"), allgather=named["allgather"].astype(bool),
                      reshard=named["reshard"].astype(bool), first_stage_layers=np.asarray(first, dtype=np.int64),
                      last_stage_layers=np.asarray(last, dtype=np.int64))


def rule_masks(model: ModelSpec, workload: Workload, c: Candidates) -> dict[str, np.ndarray]:
    """True where a candidate breaks the rule: `plan.rule_breaks` over the columns."""
    return rule_breaks(RuleFacts.of(model, workload), c)


def first_rule(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Index into RULES of the first broken rule, or -1."""
    code = np.full(n, -1, dtype=np.int64)
    for i, rule in reversed(list(enumerate(RULES))):
        code = np.where(masks[rule], i, code)
    return code
