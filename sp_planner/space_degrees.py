"""The degree tuples of the search space: every (dp, pp, tp, ulysses, ring) that fills the cluster
(with ep, etp for MoE models), their order in the search, and how many there are without listing them."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from sp_planner.layout import EXPERT_GRID_ORDER, GRID_ORDER
from sp_planner.plan import MAX_DEGREE, ParallelPlan

if TYPE_CHECKING:
    from sp_planner.space import Pins

# The degrees (the axes of layout.GRID_ORDER) in ParallelPlan's field order, which is the order
# of the frame's columns and of the JSON, and in Pins' field order, which is the CLI's options'.
DEGREES: tuple[str, ...] = tuple(name for name in ParallelPlan.model_fields if name in GRID_ORDER)
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


def search_order(degrees: np.ndarray) -> np.ndarray:
    """Degree tuples in the order the candidates are enumerated (grouped by dp, stably), so
    expanding consecutive slices and concatenating gives the same candidates in the same order
    as expanding them all at once."""
    return degrees[np.argsort(degrees[:, DEGREES.index("dp")], kind="stable")]
