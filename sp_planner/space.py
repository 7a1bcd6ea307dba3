"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sp_planner.layout import GRID_ORDER
from sp_planner.pipeline import VPP_CHOICES, default_split, interleave_breaks, split_breaks
from sp_planner.plan import (
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


def enumerate_candidates(workload: Workload, world: int, pins: Pins, *, num_layers: int,
                         precisions: tuple[Precision, ...] = PRECISIONS) -> Candidates:
    """Every candidate: degree tuples x ZeRO stage x recompute x micro-batch x vpp x precision,
    one ring layout, and for each pp the pipeline split `pipeline.default_split` gives.

    Unpinned vpp is tried over VPP_CHOICES where the split and the interleaved schedule allow it
    (vpp 1 always, so that a broken split is still reported once); unpinned precision over
    `precisions` (what the hardware runs)."""
    degrees = degree_tuples(world, pins)
    zeros = [pins.zero] if pins.zero is not None else list(ZERO_STAGES)
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else list(range(len(RECOMPUTE)))
    vpps = [pins.vpp] if pins.vpp is not None else list(VPP_CHOICES)
    codes = [PRECISIONS.index(p) for p in ([pins.precision] if pins.precision is not None else precisions)]
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
