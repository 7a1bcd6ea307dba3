"""The critical path of a pipelined step over every stage's model chunks, each holding its own
layers (vectorized over candidates): where a model mixes layer kinds (cost.layer_kinds), the
chunks of one stage, and the same chunk on different stages, differ.

cost.pipeline_path's closed forms take each stage's chunks alike (its average layer) and the
middle stages alike (cost.stage_layer_times: the slowest). Megatron's schedule is static: every
rank runs its blocks in a fixed order (pipeline_order.stage_order) and each block waits for its
upstream virtual stage's (pipeline_order.upstream_stage), so a costly chunk on one stage holds the
next stage's matching chunk back even where that stage has slack over the step. Gemma 3 27B at
128K over pp 8 with 8 virtual stages of one layer, 3 of the 10 global layers on stages 4 and 6:
the closed forms' path is 21% shorter than the simulator's, which runs each layer at its kind
(sim.layer_program). Here the blocks are walked in that order, free sends, as the simulator's
compute stream runs them; a block's time is its layers' kinds' forward or backward and the ends'
work (the embedding's with the first stage's chunk 0, the output layer's and the loss's with the
last stage's last chunk, as cost.pipeline_path.compute_blocks places them). Past
PLAIN_GROUPS micro-batch groups of pp, each further pair of groups adds the last two groups' time
where the two pairs before agree (the schedule repeats every group or two in its steady state),
else the whole step is walked (tests/cost/test_chunk_path.py checks both against the whole walk).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sp_planner.cost.layer_kinds import chunk_kind_counts
from sp_planner.cost.stage_layer_times import KindTimes
from sp_planner.distinct import distinct_float_rows, distinct_groups
from sp_planner.pipeline_order import micro_batch_group, stage_order, upstream_stage
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec

PLAIN_GROUPS = 6  # micro-batch groups of pp walked block by block; the rest by the last two's time


def chunk_path_s(pp: int, vpp: int, micro_batches: int, fwd_s: np.ndarray, bwd_s: np.ndarray,
                 group: int = 0) -> np.ndarray:
    """Seconds from the first block to the last of a step of `micro_batches` in Megatron's order,
    per candidate; `fwd_s`, `bwd_s`: (pp, vpp, rows) each chunk's forward and backward block.
    `group`: the plan's own micro-batch group N (ParallelPlan.vpp_group; 0: the one sp-plan prices,
    pipeline_order.micro_batch_group)."""
    return chunk_paths_s(pp, vpp, [(micro_batches, fwd_s, bwd_s)], group)[0]


def chunk_paths_s(pp: int, vpp: int, steps: list[tuple[int, np.ndarray, np.ndarray]],
                  group: int = 0) -> list[np.ndarray]:
    """chunk_path_s of each step (micro_batches, fwd_s, bwd_s) of one pp, vpp and `group`. The walk is row
    by row, so each schedule is walked once over the distinct rows (distinct.distinct_float_rows)
    of every step that walks it (past PLAIN_GROUPS groups, the steps of one remainder and parity
    walk the same three), and each row gets the bits its step's own walk gives it."""
    first = _walked(pp, vpp, steps, [_first_walks(pp, vpp, micro_batches, group) for micro_batches, _, _ in steps],
                    group)
    paths: list[np.ndarray | None] = []
    for i, (micro_batches, _, _) in enumerate(steps):
        groups, rest = divmod(micro_batches, pp)
        if groups <= PLAIN_GROUPS or _odd(pp, vpp, micro_batches, group):
            paths.append(first[i][micro_batches])
            continue
        # Past PLAIN_GROUPS groups of pp, the last two walked groups' time for every two groups
        # left: the steady state repeats with a period of one group or two (uneven chunks alternate
        # between a group whose wrap waits and one whose wrap does not; tests/cost/test_chunk_path.py).
        walked = PLAIN_GROUPS - (groups - PLAIN_GROUPS) % 2
        longer, shorter, shortest = (first[i][g * pp + rest] for g in (walked, walked - 2, walked - 4))
        # Where the last two pairs of groups have not yet settled to one increment (stages whose
        # paces are close drift for longer than PLAIN_GROUPS groups: chunks within 10% of each other
        # at pp 4, vpp 2 ran 2.6% short at 32 groups), the whole walk.
        settled = np.allclose(longer - shorter, shorter - shortest, rtol=1e-9, atol=0.0)
        paths.append(longer + (groups - walked) / 2 * (longer - shorter) if settled else None)
    whole = _walked(pp, vpp, steps, [() if path is not None else (micro_batches,)
                                     for path, (micro_batches, _, _) in zip(paths, steps)], group)
    return [whole[i][steps[i][0]] if path is None else path for i, path in enumerate(paths)]


def _odd(pp: int, vpp: int, micro_batches: int, group: int = 0) -> bool:
    """Whether the step runs micro-batch groups other than pp (pipeline_order.micro_batch_group: m not a
    multiple of pp, or a plan's own N, interleaved), whose group size the counts of whole groups of
    pp that chunk_paths_s extrapolates from would change: walked whole."""
    return vpp > 1 and (micro_batches % pp != 0 or group not in (0, pp))


def _first_walks(pp: int, vpp: int, micro_batches: int, group: int = 0) -> tuple[int, ...]:
    """The micro-batch counts chunk_paths_s walks a step over first: the whole step, or past
    PLAIN_GROUPS groups the three whose last two pairs of groups it extrapolates."""
    groups, rest = divmod(micro_batches, pp)
    if groups <= PLAIN_GROUPS or _odd(pp, vpp, micro_batches, group):
        return (micro_batches,)
    walked = PLAIN_GROUPS - (groups - PLAIN_GROUPS) % 2
    return tuple(g * pp + rest for g in (walked, walked - 2, walked - 4))


def _walked(pp: int, vpp: int, steps: list[tuple[int, np.ndarray, np.ndarray]],
            counts: list[tuple[int, ...]], group: int = 0) -> list[dict[int, np.ndarray]]:
    """Each step's walk_path_s of each micro-batch count in its `counts`, a count walked once over
    the distinct rows of every step that asks for it."""
    asking: dict[int, list[int]] = {}
    for i, wanted in enumerate(counts):
        for count in wanted:
            asking.setdefault(count, []).append(i)
    out: list[dict[int, np.ndarray]] = [{} for _ in steps]
    for count, which in asking.items():
        fwd = np.concatenate([steps[i][1] for i in which], axis=2)  # (pp, vpp, the steps' rows)
        bwd = np.concatenate([steps[i][2] for i in which], axis=2)
        rows = fwd.shape[2]
        first, inverse = distinct_float_rows(np.concatenate([fwd.reshape(-1, rows), bwd.reshape(-1, rows)]).T)
        ends = walk_path_s(pp, vpp, count, fwd[:, :, first], bwd[:, :, first], group)[inverse]
        bounds = np.cumsum([steps[i][1].shape[2] for i in which])[:-1]
        for i, part in zip(which, np.split(ends, bounds)):
            out[i][count] = part
    return out


def walk_path_s(pp: int, vpp: int, micro_batches: int, fwd_s: np.ndarray, bwd_s: np.ndarray,
                group: int = 0) -> np.ndarray:
    """chunk_path_s block by block: each rank's next block starts when the rank is free and its
    upstream block has ended (`group`: chunk_path_s')."""
    rows = fwd_s.shape[2]
    blocks = list(np.concatenate([bwd_s.reshape(pp * vpp, rows), fwd_s.reshape(pp * vpp, rows)]))  # _walk_steps' order
    free = [np.zeros(rows) for _ in range(pp)]  # each rank's end so far
    # Whether the rank's end is also held in `waited`: its next block then writes a new array, else
    # the end is advanced in place (a fresh array per block cost a third of the walk's time).
    held = [False] * pp
    waited: dict[int, np.ndarray] = {}  # the ends a later block waits for, until it starts
    maximum = np.maximum
    for i, (stage, block, waits, is_waited) in enumerate(zip(*_walk_steps(pp, vpp, micro_batches, group))):
        end, own = free[stage], not held[stage]
        if waits >= 0:
            end = maximum(end, waited.pop(waits), out=end if own else None)
            own = True
        if own:
            end += blocks[block]
        else:
            end = end + blocks[block]
        free[stage], held[stage] = end, is_waited
        if is_waited:
            waited[i] = end
    return np.maximum.reduce(free)


@lru_cache(maxsize=256)
def _walk_steps(pp: int, vpp: int, micro_batches: int,
                group: int = 0) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
    """walk_order's blocks as walk_path_s takes them, a tuple per field (a tuple per block held
    tens of thousands of objects for the garbage collector to scan; docs/cost-model.md Stop 58):
    the stage, the block's row of the backward then forward (stage, chunk) durations, the index
    of the block it waits for or -1, whether a later block waits for it. Each block has one
    downstream block at most (upstream_stage is one to one), so an end waited for is dropped once
    read: the walk holds a few, not every one."""
    stages, forwards, chunks, waits = _walk_columns(pp, vpp, micro_batches, group)
    waited = {w for w in waits if w >= 0}
    assert len(waited) == sum(w >= 0 for w in waits), "a block two blocks wait for"
    return (tuple(stages), tuple((f * pp + s) * vpp + c for s, f, c in zip(stages, forwards, chunks)), tuple(waits),
            tuple(i in waited for i in range(len(waits))))


def walk_order(pp: int, vpp: int, micro_batches: int, group: int = 0) -> tuple[tuple[int, int, int, int], ...]:
    """Every block of the step as (stage, forward, chunk, the index of the block it waits for or
    -1), each after the one it waits for and after its stage's earlier blocks: the ranks' orders
    (pipeline_order.stage_order) merged, each rank advancing while its next block's upstream
    block (pipeline_order.upstream_stage) is placed. `group`: chunk_path_s'."""
    return tuple(zip(*_walk_columns(pp, vpp, micro_batches, group)))


def _walk_columns(pp: int, vpp: int, micro_batches: int,
                  group: int = 0) -> tuple[list[int], list[int], list[int], list[int]]:
    """walk_order as four lists (stage, forward, chunk, waits): ints only, so no object per block."""
    orders = [_keyed_order(pp, vpp, micro_batches, s, group) for s in range(pp)]
    placed: dict[int, int] = {}
    stages: list[int] = []
    forwards: list[int] = []
    chunks: list[int] = []
    waits: list[int] = []
    cursor = [0] * pp
    moved = True
    while moved:
        moved = False
        for s in range(pp):
            forward, chunk, upstream, key = orders[s]
            at = cursor[s]
            while at < len(key):
                up = upstream[at]
                if up >= 0 and up not in placed:
                    break
                placed[key[at]] = len(stages)
                stages.append(s)
                forwards.append(forward[at])
                chunks.append(chunk[at])
                waits.append(placed[up] if up >= 0 else -1)
                at += 1
                moved = True
            cursor[s] = at
    assert all(c == len(o[3]) for c, o in zip(cursor, orders)), "the schedule deadlocked"
    return stages, forwards, chunks, waits


def _keyed_order(pp: int, vpp: int, micro_batches: int, stage: int,
                 group: int = 0) -> tuple[list[int], list[int], list[int], list[int]]:
    """walk_order's view of the stage's blocks (pipeline_order.stage_order), a list per field:
    forward (1) or backward (0), chunk, the key of the upstream block it waits for
    (pipeline_order.upstream_stage) or -1, its own key; each block keyed by one int of (forward,
    stage, chunk, micro-batch): (forward, stage, chunk) << 40, plus the micro-batch (below 2**40)."""
    def base(forward: int, s: int, chunk: int) -> int:
        return ((forward * pp + s) * vpp + chunk) << 40

    # (forward, own base, upstream base or None) of each of the stage's 2 x vpp (kind, chunk)
    # blocks, asked once each rather than once a block (tens of thousands a search).
    kinds: dict[tuple[str, int], tuple[int, int, int | None]] = {}
    for kind in ("forward", "backward"):
        for chunk in range(vpp):
            forward = int(kind == "forward")
            up = upstream_stage(kind, stage, chunk, pp, vpp)
            kinds[kind, chunk] = (forward, base(forward, stage, chunk),
                                  None if up is None else base(forward, up[0], up[1]))
    forwards, chunks, upstream, keys = [], [], [], []
    group = group or int(micro_batch_group(pp, micro_batches))  # Megatron's micro-batch group N
    for kind, chunk, mb in stage_order(pp, micro_batches, stage, vpp, group):
        forward, own, up_base = kinds[kind, chunk]
        forwards.append(forward)
        chunks.append(chunk)
        upstream.append(-1 if up_base is None else up_base + mb)
        keys.append(own + mb)
    return forwards, chunks, upstream, keys


def kind_chunk_blocks_s(model: ModelSpec, seq_len: int, kinds: KindTimes, cols, pp: int, vpp: int, first_n: int,
                        last_n: int, *, first_s, first_bwd_s, head_s, head_bwd_s) -> tuple[np.ndarray, np.ndarray]:
    """Each chunk's forward and backward block, (pp, vpp, len(cols)) each, on the `kinds` columns
    `cols` of one split: its layers' kinds' times (cost.layer_kinds.chunk_kind_counts) with the
    first stage's work beyond its layers (`first_s`, of which `first_bwd_s` backward) in its chunk
    0 and the last stage's (`head_s`, of which `head_bwd_s` backward) in its last chunk."""
    counts = chunk_kind_counts(model, seq_len, pp, vpp, first_n, last_n)  # (pp, vpp, K)
    fwd, bwd = counts @ kinds.fwd_s[:, cols], counts @ kinds.bwd_s[:, cols]  # (pp, vpp, rows)
    fwd[0, 0] += first_s - first_bwd_s
    bwd[0, 0] += first_bwd_s
    fwd[-1, -1] += head_s - head_bwd_s
    bwd[-1, -1] += head_bwd_s
    return fwd, bwd


def kinds_path_s(model: ModelSpec, seq_len: int, c: Candidates, micro_batches, kinds: KindTimes, *, first_s,
                 first_bwd_s, head_s, head_bwd_s) -> np.ndarray:
    """chunk_path_s of the pipelined candidates `kinds.rows` (NaN elsewhere), each chunk's blocks
    its layers' kinds' (`kinds`: cost.stage_layer_times) with the first stage's work beyond its
    layers (`first_s`, of which `first_bwd_s` backward) in its chunk 0 and the last stage's
    (`head_s`, of which `head_bwd_s` backward) in its last chunk; every argument per candidate."""
    n, rows = len(c.pp), kinds.rows
    out = np.full(n, np.nan)

    def at_rows(values) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[rows]

    m = at_rows(micro_batches).astype(np.int64)
    ends = [at_rows(v) for v in (first_s, first_bwd_s, head_s, head_bwd_s)]
    columns = [c.pp[rows], c.vpp[rows], c.first_stage_layers[rows], c.last_stage_layers[rows], m, c.vpp_group[rows]]
    # by (pp, vpp, the plan's own micro-batch group): chunk_paths_s
    steps: dict[tuple[int, int, int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    targets: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for row, at in distinct_groups(columns):
        pp, vpp, first_n, last_n, mb, group = (int(column[row]) for column in columns)
        first, first_bwd, head, head_bwd = (v[at] for v in ends)
        fwd, bwd = kind_chunk_blocks_s(model, seq_len, kinds, at, pp, vpp, first_n, last_n, first_s=first,
                                       first_bwd_s=first_bwd, head_s=head, head_bwd_s=head_bwd)
        steps.setdefault((pp, vpp, group), []).append((mb, fwd, bwd))
        targets.setdefault((pp, vpp, group), []).append(rows[at])
    for (pp, vpp, group), same in steps.items():
        for at, path in zip(targets[(pp, vpp, group)], chunk_paths_s(pp, vpp, same, group)):
            out[at] = path
    return out
