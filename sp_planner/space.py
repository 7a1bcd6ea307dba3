"""The search space as columns: every (dp, pp, tp, ulysses, ring) that fills the cluster, times
ZeRO stage, recompute and micro-batch, with the hard rules of `plan.violations` vectorized."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sp_planner.layout import GRID_ORDER
from sp_planner.plan import (
    RECOMPUTE,
    RULES,
    CpComm,
    ParallelPlan,
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
    cp_comm: CpComm | None = None
    dp_replicate: int | None = None
    reshard_after_forward: bool | None = None


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
    (RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL); `zigzag` is the ring layout as bool,
    `allgather` the ring's cp_comm as bool (False: p2p), `dp_replicate` int64 and `reshard` the
    plan's reshard_after_forward (bool).
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

    def __len__(self) -> int:
        return len(self.tp)

    @classmethod
    def of_plan(cls, plan: ParallelPlan) -> "Candidates":
        """One plan as one-entry arrays."""
        ints = {name: np.array([getattr(plan, name)], dtype=np.int64) for name in (*DEGREES, "zero", "micro_batch")}
        return cls(**ints, recompute=np.array([RECOMPUTE.index(plan.recompute)], dtype=np.int64),
                   zigzag=np.array([plan.zigzag]), allgather=np.array([plan.allgather]),
                   dp_replicate=np.array([plan.dp_replicate], dtype=np.int64),
                   reshard=np.array([plan.reshard_after_forward]))

    def plan(self, i: int) -> ParallelPlan:
        """Candidate `i` as a ParallelPlan."""
        ints = {name: int(getattr(self, name)[i]) for name in (*DEGREES, "zero", "micro_batch")}
        return ParallelPlan(**ints, recompute=RECOMPUTE[int(self.recompute[i])],
                            ring_layout="zigzag" if self.zigzag[i] else "contiguous",
                            cp_comm="allgather" if self.allgather[i] else "p2p",
                            dp_replicate=int(self.dp_replicate[i]), reshard_after_forward=bool(self.reshard[i]))


def enumerate_candidates(workload: Workload, world: int, pins: Pins, gpus_per_node: int | None = None
                         ) -> Candidates:
    """Every candidate: degree tuples x ZeRO stage x recompute x micro-batch x (ring > 1) cp_comm
    x (ZeRO-3) HSDP replicate degree and reshard_after_forward, one ring layout. Without
    `gpus_per_node` HSDP (dp_replicate > 1) is searched only when pinned."""
    degrees = degree_tuples(world, pins)
    zeros = [pins.zero] if pins.zero is not None else list(ZERO_STAGES)
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else list(range(len(RECOMPUTE)))
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
        # (rows, zero, recompute, micro_batch) -> flat candidates
        grid = np.stack(np.meshgrid(np.arange(len(rows)), zeros, recomputes, mbs, indexing="ij"), -1)
        grid = grid.reshape(-1, 4)
        blocks.append(np.concatenate([rows[grid[:, 0]], grid[:, 1:]], axis=1))
    width = len(DEGREES) + 3
    table = np.concatenate(blocks) if blocks else np.zeros((0, width), dtype=np.int64)
    layout = pins.ring_layout or ("zigzag" if workload.causal else "contiguous")
    table = _with_fsdp_and_cp_comm(table, pins, gpus_per_node)
    columns = table.T.astype(np.int64)  # (candidates, width + 3) -> one array per field
    named = dict(zip((*DEGREES, "zero", "recompute", "micro_batch", "allgather", "dp_replicate", "reshard"),
                     columns))
    return Candidates(**{k: v for k, v in named.items() if k not in ("allgather", "reshard")},
                      zigzag=np.full(len(table), layout == "zigzag"), allgather=named["allgather"].astype(bool),
                      reshard=named["reshard"].astype(bool))


def ones_like(table: np.ndarray) -> np.ndarray:
    return np.ones((len(table), 1), dtype=np.int64)


def _node_hsdp(table: np.ndarray, gpus_per_node: int | None) -> np.ndarray:
    """ZeRO-3 rows again with HSDP's usual replicate degree: shards inside a node, replicas across
    nodes (torchtitan docs/fsdp.md; PyTorch HYBRID_SHARD), i.e. dp_shard = gpus_per_node / (tp x cp)
    (at least 1) when that leaves dp_replicate > 1."""
    if gpus_per_node is None:
        return np.zeros((0, table.shape[1] + 1), dtype=np.int64)
    dp, zero = table[:, DEGREES.index("dp")], table[:, len(DEGREES)]
    inner = table[:, DEGREES.index("tp")] * table[:, DEGREES.index("ulysses")] * table[:, DEGREES.index("ring")]
    shard = np.maximum(gpus_per_node // inner, 1)
    ok = (zero == 3) & (dp % shard == 0) & (dp > shard)
    rows = table[ok]
    return np.concatenate([rows, (dp[ok] // shard[ok])[:, None]], axis=1)


def _with_fsdp_and_cp_comm(table: np.ndarray, pins: Pins, gpus_per_node: int | None) -> np.ndarray:
    """Append the columns allgather, dp_replicate and reshard to (degrees, zero, recompute, mb) rows.

    Unpinned, the ring's cp_comm is searched where ring > 1 and ulysses == 1 (p2p and allgather:
    no framework runs all-gather CP under a Ulysses level, Transformer Engine's cp_comm_type has
    p2p, all_gather, a2a and a2a+p2p only, so it is evaluated there only when pinned), and ZeRO-3 rows
    also search HSDP with one node's shard (`_node_hsdp`) and, without HSDP, reshard_after_forward
    false (FSDP's axes; pinned, every combination is evaluated);
    elsewhere the choice changes nothing, so one row (p2p, 1, True) stands for it. A pinned value
    keeps only the rows it applies to (dp_replicate > 1: zero >= 1 dividing dp; reshard false: zero 3).
    """
    ring = table[:, DEGREES.index("ring")]
    dp, zero = table[:, DEGREES.index("dp")], table[:, len(DEGREES)]
    ones = np.ones((len(table), 1), dtype=np.int64)
    if pins.cp_comm is not None:
        table = np.concatenate([table, ones * (pins.cp_comm == "allgather")], axis=1)
    else:  # (rows, w) -> (rows + rows with a pure ring axis, w + 1)
        pure_ring = (ring > 1) & (table[:, DEGREES.index("ulysses")] == 1)
        table = np.concatenate([np.concatenate([table, 0 * ones], axis=1),
                                np.concatenate([table, ones], axis=1)[pure_ring]])
    dp, zero = table[:, DEGREES.index("dp")], table[:, len(DEGREES)]
    if pins.dp_replicate is not None:
        keep = (dp % pins.dp_replicate == 0) & ((zero >= 1) | (pins.dp_replicate == 1))
        table = np.concatenate([table, np.full((len(table), 1), pins.dp_replicate)], axis=1)[keep]
    else:
        table = np.concatenate([np.concatenate([table, ones_like(table)], axis=1),
                                _node_hsdp(table, gpus_per_node)])
    zero = table[:, len(DEGREES)]
    if pins.reshard_after_forward is not None:
        keep = (zero == 3) | pins.reshard_after_forward
        table = np.concatenate([table, np.full((len(table), 1), int(pins.reshard_after_forward))], axis=1)[keep]
    else:
        # Kept parameters are tried with plain FSDP (dp_replicate 1, as the Llama 3 paper ran it).
        plain = (zero == 3) & (table[:, -1] == 1)
        table = np.concatenate([np.concatenate([table, ones_like(table)], axis=1),
                                np.concatenate([table, 0 * ones_like(table)], axis=1)[plain]])
    return table


def rule_masks(model: ModelSpec, workload: Workload, c: Candidates) -> dict[str, np.ndarray]:
    """True where a candidate breaks the rule: `plan.rule_breaks` over the columns."""
    return rule_breaks(RuleFacts.of(model, workload), c)


def first_rule(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Index into RULES of the first broken rule, or -1."""
    code = np.full(n, -1, dtype=np.int64)
    for i, rule in reversed(list(enumerate(RULES))):
        code = np.where(masks[rule], i, code)
    return code
