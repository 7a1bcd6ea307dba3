"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized."""

from __future__ import annotations

from typing import get_args

import numpy as np

from sp_planner.layout import GRID_ORDER
from sp_planner.plan import RULES, ParallelPlan, Recompute, RingLayout, RuleFacts, rule_breaks
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

RECOMPUTE: tuple[str, ...] = get_args(Recompute)  # codes 0 none, 1 selective, 2 full
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


# The degrees (the axes of layout.GRID_ORDER) in ParallelPlan's field order, which is the order
# of the frame's columns and of the JSON, and in Pins' field order, which is the CLI's options'.
DEGREES: tuple[str, ...] = tuple(name for name in ParallelPlan.model_fields if name in GRID_ORDER)
PIN_DEGREES: tuple[str, ...] = tuple(name for name in Pins.model_fields if name in GRID_ORDER)

def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def degree_tuples(world: int, pins: Pins) -> np.ndarray:
    """All (dp, pp, tp, ulysses, ring) with product == world that respect the pins; shape (n, 5)."""
    rows: list[tuple[int, ...]] = []

    def extend(prefix: tuple[int, ...], rest: int) -> None:
        axis = DEGREES[len(prefix)]
        pinned = getattr(pins, axis)
        if len(prefix) == len(DEGREES) - 1:
            if pinned is None or pinned == rest:
                rows.append(prefix + (rest,))
            return
        for d in ([pinned] if pinned is not None else _divisors(rest)):
            if rest % d == 0:
                extend(prefix + (d,), rest // d)

    extend((), world)
    return np.array(rows, dtype=np.int64).reshape(-1, len(DEGREES))


def enumerate_candidates(workload: Workload, world: int, pins: Pins) -> dict:
    """Columns of every candidate: degrees, zero, recompute_code, micro_batch, zigzag."""
    degrees = degree_tuples(world, pins)
    zeros = [pins.zero] if pins.zero is not None else [0, 1, 2, 3]
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else [0, 1, 2]
    blocks = []
    for dp in np.unique(degrees[:, 0]):
        if pins.micro_batch is not None:
            mbs = [pins.micro_batch]
        elif workload.global_batch % dp == 0:
            per_replica = workload.global_batch // dp
            mbs = [x for x in MICRO_BATCH_CHOICES if per_replica % x == 0]
        else:
            mbs = [1]  # broken batch rule: evaluated once, reported with its reason
        rows = degrees[degrees[:, 0] == dp]
        # (rows, zero, recompute, micro_batch) -> flat candidates
        grid = np.stack(np.meshgrid(np.arange(len(rows)), zeros, recomputes, mbs, indexing="ij"), -1)
        grid = grid.reshape(-1, 4)
        blocks.append(np.concatenate([rows[grid[:, 0]], grid[:, 1:]], axis=1))
    table = np.concatenate(blocks) if blocks else np.zeros((0, 8), dtype=np.int64)
    cols = {name: table[:, i].astype(np.int64) for i, name in enumerate(DEGREES)}
    cols["zero"] = table[:, 5].astype(np.int64)
    cols["recompute_code"] = table[:, 6].astype(np.int64)
    cols["micro_batch"] = table[:, 7].astype(np.int64)
    layout = pins.ring_layout or ("zigzag" if workload.causal else "contiguous")
    cols["zigzag"] = np.full(len(table), layout == "zigzag")
    return cols


def rule_masks(model: ModelSpec, workload: Workload, c: dict) -> dict[str, np.ndarray]:
    """True where a candidate breaks the rule: `plan.rule_breaks` over the columns."""
    return rule_breaks(RuleFacts.of(model, workload), c)


def first_rule(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Index into RULES of the first broken rule, or -1."""
    code = np.full(n, -1, dtype=np.int64)
    for i, rule in reversed(list(enumerate(RULES))):
        code = np.where(masks[rule], i, code)
    return code


def plan_columns(plan: ParallelPlan) -> dict:
    """One plan as one-row columns (same layout as enumerate_candidates)."""
    cols = {name: np.array([getattr(plan, name)], dtype=np.int64) for name in DEGREES}
    cols["zero"] = np.array([plan.zero], dtype=np.int64)
    cols["recompute_code"] = np.array([RECOMPUTE.index(plan.recompute)], dtype=np.int64)
    cols["micro_batch"] = np.array([plan.micro_batch], dtype=np.int64)
    cols["zigzag"] = np.array([plan.ring_layout == "zigzag"])
    return cols
