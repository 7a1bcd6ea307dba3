"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

import math
from functools import lru_cache

from sp_planner.layout import GRID_ORDER
from sp_planner.pipeline import VPP_CHOICES, default_split, interleave_breaks, split_breaks
from sp_planner.plan import (
    MAX_DEGREE,
    PRECISIONS,
    RECOMPUTE,
    RULES,
    ParallelPlan,
    Precision,
    Recompute,
    RingLayout,
    RuleFacts,
    rule_breaks,
)
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
    vpp: int | None = None
    # bf16 unless asked: FP8 changes the numerics, so the search tries it only when told (None).
    precision: Precision | None = "bf16"


# The degrees (the axes of layout.GRID_ORDER) in ParallelPlan's field order, which is the order
# of the frame's columns and of the JSON, and in Pins' field order, which is the CLI's options'.
DEGREES: tuple[str, ...] = tuple(name for name in ParallelPlan.model_fields if name in GRID_ORDER)
PIN_DEGREES: tuple[str, ...] = tuple(name for name in Pins.model_fields if name in GRID_ORDER)

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


@dataclass(frozen=True)
class Candidates:
    """Candidate plans as parallel numpy arrays, one entry per candidate (the cost model's input).

    Degrees, ZeRO stage and micro-batch are int64; `recompute` holds plan.RECOMPUTE codes
    (RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL); `zigzag` is the ring layout as bool;
    `vpp` virtual stages per rank; `first/last_stage_layers` the pipeline split (0 = even, see
    sp_planner.pipeline); `precision` holds plan.PRECISIONS codes.
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
    vpp: np.ndarray
    first_stage_layers: np.ndarray
    last_stage_layers: np.ndarray
    precision: np.ndarray

    def __len__(self) -> int:
        return len(self.tp)

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
                   zigzag=np.array([plan.zigzag]),
                   precision=np.array([PRECISIONS.index(plan.precision)], dtype=np.int64))

    def plan(self, i: int) -> ParallelPlan:
        """Candidate `i` as a ParallelPlan."""
        ints = {name: int(getattr(self, name)[i]) for name in _INT_FIELDS}
        for name in ("first_stage_layers", "last_stage_layers"):
            ints[name] = ints[name] or None  # 0 = the even split
        return ParallelPlan(**ints, recompute=RECOMPUTE[int(self.recompute[i])],
                            ring_layout="zigzag" if self.zigzag[i] else "contiguous",
                            precision=PRECISIONS[int(self.precision[i])])


_INT_FIELDS: tuple[str, ...] = (*DEGREES, "zero", "micro_batch", "vpp", "first_stage_layers", "last_stage_layers")


class Axes(NamedTuple):
    """What the non-degree axes read beside the pins: the model's layers (pipeline splits and the
    vpp values that fit them) and the precisions the hardware runs (tried when unpinned)."""

    num_layers: int
    precisions: tuple[Precision, ...] = ("bf16",)


def enumerate_candidates(workload: Workload, world: int, pins: Pins, *, axes: Axes) -> Candidates:
    """Every candidate: degree tuples x ZeRO stage x recompute x micro-batch x vpp x precision,
    one ring layout."""
    return expand_candidates(workload, search_order(degree_tuples(world, pins)), pins, axes=axes)


def count_candidates(workload: Workload, world: int, pins: Pins, *, axes: Axes) -> int:
    """How many candidates enumerate_candidates gives, without enumerating them: the degree tuples
    with each (dp, pp) (a formula unless a degree other than dp and pp is pinned) times what one of
    them expands to (the vpp values kept depend on dp and pp only)."""
    dp_axis, pp_axis = DEGREES.index("dp"), DEGREES.index("pp")
    if any(getattr(pins, axis) is not None for axis in DEGREES if axis not in ("dp", "pp")):
        pairs, per_pair = np.unique(degree_tuples(world, pins)[:, [dp_axis, pp_axis]], axis=0, return_counts=True)
    else:
        found = [(dp, pp) for dp in _divisors(world) if pins.dp in (None, dp) and dp <= MAX_DEGREE
                 for pp in _divisors(world // dp) if pins.pp in (None, pp) and pp <= MAX_DEGREE]
        pairs = np.array(found, dtype=np.int64).reshape(-1, 2)
        per_pair = np.array([bounded_factorizations(world // int(dp * pp), len(DEGREES) - 2) for dp, pp in found],
                            dtype=np.int64)
    total = 0
    for (dp, pp), tuples in zip(pairs.tolist(), per_pair.tolist()):
        one = np.ones((1, len(DEGREES)), dtype=np.int64)  # (dp, pp, the rest on the last axis)
        one[0, dp_axis], one[0, pp_axis], one[0, -1] = dp, pp, world // (dp * pp)
        total += tuples * len(expand_candidates(workload, one, pins, axes=axes))
    return total


def search_order(degrees: np.ndarray) -> np.ndarray:
    """Degree tuples in the order the candidates are enumerated (grouped by dp, stably), so
    expanding consecutive slices and concatenating gives the same candidates in the same order
    as expanding them all at once."""
    return degrees[np.argsort(degrees[:, DEGREES.index("dp")], kind="stable")]


def iter_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, *, axes: Axes,
                    chunk_candidates: int) -> Iterator[tuple[int, Candidates]]:
    """`expand_candidates` over consecutive slices of `degrees` (in search_order), about
    `chunk_candidates` candidates each: (degree tuples done, candidates). Whatever the non-degree
    axes multiply a tuple by, the slice length adapts to it (the first slice, one tuple, measures it)."""
    step, done = 1, 0
    while done < len(degrees):
        rows = degrees[done:done + step]
        chunk = expand_candidates(workload, rows, pins, axes=axes)
        done += len(rows)
        yield done, chunk
        per_tuple = max(1.0, len(chunk) / len(rows))
        step = max(1, int(chunk_candidates / per_tuple))


def expand_candidates(workload: Workload, degrees: np.ndarray, pins: Pins, *, axes: Axes) -> Candidates:
    """Degree tuples (in search_order) times ZeRO stage, recompute, micro-batch, vpp and
    precision, and for each pp the pipeline split `pipeline.default_split` gives.

    Unpinned vpp is tried over VPP_CHOICES where the split and the interleaved schedule allow it
    (vpp 1 always, so that a broken split is still reported once); unpinned precision over
    `axes.precisions` (what the hardware runs)."""
    zeros = [pins.zero] if pins.zero is not None else list(ZERO_STAGES)
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else list(range(len(RECOMPUTE)))
    vpps = [pins.vpp] if pins.vpp is not None else list(VPP_CHOICES)
    codes = [PRECISIONS.index(p) for p in ([pins.precision] if pins.precision is not None else axes.precisions)]
    num_layers = axes.num_layers
    blocks = []
    for dp in np.unique(degrees[:, DEGREES.index("dp")]):
        if pins.micro_batch is not None:
            mbs = [pins.micro_batch]
        elif workload.global_batch % dp == 0:
            per_replica = workload.global_batch // dp
            mbs = [x for x in MICRO_BATCH_CHOICES if per_replica % x == 0]
        else:
            mbs = [1]  # broken batch rule: evaluated once, reported with its reason
        rows = degrees[degrees[:, DEGREES.index("dp")] == dp]
        # (rows, zero, recompute, micro_batch, vpp, precision) -> flat candidates
        grid = np.stack(np.meshgrid(np.arange(len(rows)), zeros, recomputes, mbs, vpps, codes, indexing="ij"), -1)
        grid = grid.reshape(-1, 6)
        blocks.append(np.concatenate([rows[grid[:, 0]], grid[:, 1:]], axis=1))
    width = len(DEGREES) + 5
    table = np.concatenate(blocks) if blocks else np.zeros((0, width), dtype=np.int64)
    table = _keep_vpp(table, workload, num_layers, pinned=pins.vpp is not None)
    columns = table.T.astype(np.int64)  # (candidates, width) -> one array per field
    pp, vpp = columns[DEGREES.index("pp")], columns[-2]
    first, last = default_split(num_layers, pp, vpp)
    layout = pins.ring_layout or ("zigzag" if workload.causal else "contiguous")
    return Candidates(**dict(zip(DEGREES, columns)), zero=columns[-5], recompute=columns[-4],
                      micro_batch=columns[-3], zigzag=np.full(len(table), layout == "zigzag"),
                      vpp=vpp, first_stage_layers=first, last_stage_layers=last, precision=columns[-1])


def _keep_vpp(table: np.ndarray, workload: Workload, num_layers: int, *, pinned: bool) -> np.ndarray:
    """Drop unpinned vpp > 1 rows that Megatron would reject (no split, or no interleaved
    schedule for the micro-batch count), so that the search does not list them as rule breakers."""
    if pinned:
        return table
    dp, pp, vpp = table[:, DEGREES.index("dp")], table[:, DEGREES.index("pp")], table[:, -2]
    mb = table[:, -3]
    m = workload.global_batch // (dp * mb)
    first, last = default_split(num_layers, pp, vpp)
    bad = (vpp > 1) & (split_breaks(num_layers, pp, vpp, first, last) | interleave_breaks(pp, vpp, m))
    return table[~bad]


def rule_masks(model: ModelSpec, workload: Workload, c: Candidates) -> dict[str, np.ndarray]:
    """True where a candidate breaks the rule: `plan.rule_breaks` over the columns."""
    return rule_breaks(RuleFacts.of(model, workload), c)


def first_rule(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Index into RULES of the first broken rule, or -1."""
    code = np.full(n, -1, dtype=np.int64)
    for i, rule in reversed(list(enumerate(RULES))):
        code = np.where(masks[rule], i, code)
    return code
