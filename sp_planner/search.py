"""Whole-space search: enumerate, evaluate every candidate in columns, prune with reasons, rank.

Candidates and their costs are typed numpy arrays (candidates.Candidates, cost.*Columns); `evaluate`
runs one plan through the same code, so a single plan and the search agree.

The search streams: candidates are enumerated and costed in chunks of about CHUNK_CANDIDATES,
those that break a rule are counted and not costed (unless too few plans pass the rules to fill
the ranking), and only the best HEAD_ROWS rows are kept, so memory stays bounded whatever the
cluster size. Those that pass are priced several chunks at a time, and a fitting one whose step's
lower bound keeps it out of the ranking and of the refinement below is not timed in full
(search_prune, search_pruned_scan.PrunedScan): the same answer, in a fraction of the time. The
frame of every candidate is built only when a caller asks for it. After the scan, the best plans'
degrees are refined with the interleaved layouts the scan leaves out (search_refine), priced and
ranked as every other candidate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from sp_planner import columns
from sp_planner.cost.fp8_attention import with_fp8_attention
from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.errors import UserInputError
from sp_planner.plan import RULES, ParallelPlan
from sp_planner.search_columns import evaluate_rows, explained_rows, search_axes
from sp_planner.search_refine import tuples_to_refine
from sp_planner.search_rank import Best, keep_best, ranked_union
from sp_planner.search_scan import scan_chunks, Scanned
from sp_planner.space import Axes, Pins, degree_tuples, iter_candidates, search_order, with_expert_degrees
from sp_planner.candidates import Candidates
from sp_planner.space_count import count_candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload, tokens_per_gpu_problem
from sp_planner.units import plural

if TYPE_CHECKING:  # pandas loads where a frame is built (search_columns.Evaluated.frame), not with the planner
    import pandas as pd

__all__ = ["Pins", "SearchTooLarge", "evaluate", "search", "search_axes"]

# Candidates enumerated and costed at once: a chunk's columns take a few hundred bytes per
# candidate, so this bounds the search's working memory (about a hundred MB; the pruned scan holds
# up to search_pruned_scan.PRUNE_BATCH_ROWS of those that pass the rules, twice this, and up to
# BOUND_BATCH_ROWS fitting ones besides) at any cluster size.
CHUNK_CANDIDATES = 1 << 16
# Rows kept in rank order besides top_k: present.expressible scans this many for a plan the
# asked framework can express.
HEAD_ROWS = 2000
# The most candidates one search takes on: about 30 s on one core of a loaded 2-core machine at
# the ~5 us per candidate of a search where nothing passes the rules (benchmarks/scale.py).
MAX_CANDIDATES = 4_000_000
# Node counts below the asked one tried when looking for the largest the search answers.
MAX_SMALLER_TRIED = 1000
# progress(done, total, what): candidates searched out of all of them. SEARCH_STEPS is the total
# that callers report their own steps after the search against (cli/plan_solve.py).
Progress = Callable[..., None]
SEARCH_STEPS = 5


def _no_progress(done: int, total: int, description: str | None = None) -> None:
    pass


class SearchTooLarge(UserInputError):
    """More candidates than MAX_CANDIDATES: refused before any work, naming a size that is answered.
    `size` says how many candidates which cluster gives; `fixes` what makes a search of sp-plan's
    answerable (a command without sp-plan's options says its own)."""

    def __init__(self, size: str, fixes: str) -> None:
        super().__init__(f"{size}; {fixes}")
        self.size = size


def _check_size(workload: Workload, num_nodes: int, gpus_per_node: int, pins: Pins, axes: Axes) -> int:
    """The number of candidates, when the search takes them on."""
    count = count_candidates(workload, num_nodes * gpus_per_node, pins, gpus_per_node, axes=axes)
    if count <= MAX_CANDIDATES:
        return count
    def searched(n: int) -> bool:
        return 0 < count_candidates(workload, n * gpus_per_node, pins, gpus_per_node, axes=axes) <= MAX_CANDIDATES

    # A round count first: a power of two times 1, 3, 5 or 9, whose few odd factors degrees can take
    # (the nearest count below a highly composite one is often a prime, searched but of no use).
    round_counts = sorted({m << k for m in (1, 3, 5, 9) for k in range(num_nodes.bit_length())
                           if (m << k) < num_nodes}, reverse=True)
    smaller = next((n for n in round_counts if searched(n)), None)
    if smaller is None:
        smaller = next((n for n in range(num_nodes - 1, max(0, num_nodes - MAX_SMALLER_TRIED), -1) if searched(n)),
                       None)
    largest = f"the largest round node count below it that is searched is {smaller}" if smaller else \
        f"no node count within {MAX_SMALLER_TRIED} below it is searched"
    raise SearchTooLarge(
        f"{num_nodes} nodes x {gpus_per_node} GPUs give {count:,} candidate plans, more than the "
        f"{MAX_CANDIDATES:,} one search takes on (about 30 s)", f"{largest}, or pin a degree (e.g. --tp 8)")


def _check_cluster(num_nodes: int, gpus_per_node: int) -> int:
    if num_nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"num_nodes ({num_nodes}) and gpus_per_node ({gpus_per_node}) must be >= 1")
    return num_nodes * gpus_per_node


def search(model: ModelSpec, hardware: HardwareProfile, workload: Workload, *, num_nodes: int,
           gpus_per_node: int, pins: Pins = Pins(), top_k: int = 10, progress: Progress | None = None,
           runtime: Runtime = MEGATRON_RUNTIME, every_row: bool = False) -> SearchResult:
    """Every candidate plan, ranked; the best `top_k` as estimates, every row on `result.frame`
    (built on first access). progress(done, total, what) hears of each chunk (candidates). More than MAX_CANDIDATES
    candidates raise SearchTooLarge before any work. `runtime`: what the framework overlaps, the training
    states it keeps and the CUDA graphs it replays (cost.runtime).
    `every_row`: the caller will read `frame` (a report): every candidate is costed once, in the one
    pass, and kept (memory grows with the space), instead of costed again by two more passes on access."""
    progress = progress or _no_progress
    world = _check_cluster(num_nodes, gpus_per_node)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if (too_many := tokens_per_gpu_problem(workload.seq_len, workload.global_batch, world)) is not None:
        raise UserInputError(too_many)  # past what the int64 byte columns hold (specs.workload)
    axes = search_axes(model, hardware)
    if hardware.efficiency.attention_unfused:
        # Unfused attention runs where Transformer Engine runs it (flags.flash_head_dim.te_runs_unfused),
        # which takes no context parallelism, and no ring merges its blocks (cost.attention).
        pins = pins.model_copy(update={axis: 1 for axis in ("ulysses", "ring") if getattr(pins, axis) is None})
    total = _check_size(workload, num_nodes, gpus_per_node, pins, axes)
    degrees = search_order(with_expert_degrees(degree_tuples(world, pins), axes.num_experts, pins))
    if len(degrees) == 0:
        raise ValueError(f"no (dp, pp, tp, ulysses, ring) with product {world} matches the pins {pins}")
    keep = max(top_k, HEAD_ROWS)
    args = (model, hardware, workload, degrees, pins, gpus_per_node, runtime, CHUNK_CANDIDATES)
    progress(0, total, f"searching {plural(total, 'candidate')}")
    if every_row:
        return _search_every_row(model, hardware, workload, args, keep=keep, top_k=top_k, progress=progress,
                                 total=total)
    passing = scan_chunks(*args, keep=keep, breakers=False, progress=progress, total=total)
    refining = _refined_chunks(args, tuples_to_refine(passing.tuples, pins))
    # The refinement's rows pruned against the scan's rows kept, which its best holds too (search_scan `after`).
    refined = _refine_scan(args, refining, keep=keep, breakers=False, progress=progress, done=total,
                           after=passing.best, offset=passing.candidates)
    counts = passing.counts + _counts(refined)  # breakers do not run out of memory
    best = passing.best if refined is None else _merged(None, refined, passing.candidates, hardware.hbm_bytes, keep)
    candidates = passing.candidates + (refined.candidates if refined else 0)
    if passing.costed + (refined.costed if refined else 0) < keep:  # too few pass the rules: rank the rest
        broken = scan_chunks(*args, keep=keep, breakers=True, progress=_no_progress)
        best = _merged(best, broken, 0, hardware.hbm_bytes, keep)
        best = _merged(best, _refine_scan(args, refining, keep=keep, breakers=True), passing.candidates,
                       hardware.hbm_bytes, keep)
    if best is None:  # degrees exist but no variant of them (HSDP replicas, cp_comm) matches the pins
        raise ValueError(f"no candidate plan on {world} GPUs matches the pins {pins}")
    shown = explained_rows(model, hardware, workload, best.evaluated, gpus_per_node, runtime)
    prune_counts = {rule: int(k) for rule, k in zip((*RULES, "oom"), counts) if k}
    ranked = tuple(shown.estimate(i) for i in range(min(top_k, len(shown.fits))))
    head = shown.frame()
    if candidates <= keep:  # every candidate is in the head: it is the frame
        return SearchResult(candidates_evaluated=candidates, ranked=ranked, prune_counts=prune_counts, frame=head)

    def every_costed_row() -> pd.DataFrame:
        parts = []
        for breakers in (False, True):  # each in rank order, the refined rows merged into it
            scan = scan_chunks(*args, keep=None, breakers=breakers, progress=_no_progress)
            part = _ranked_together(scan, _refine_scan(args, refining, keep=None, breakers=breakers),
                                    passing.candidates, hardware.hbm_bytes)
            if part is not None:
                parts.append(part)
        e = explained_rows(model, hardware, workload, columns.concat([b.evaluated for b in parts]), gpus_per_node,
                           runtime)
        return e.frame()

    return SearchResult(candidates_evaluated=candidates, ranked=ranked, prune_counts=prune_counts,
                        frame=every_costed_row, head=head)


def _refined_chunks(args: tuple, tuples: np.ndarray) -> list[Candidates]:
    """The left-out interleaved rows of the degree `tuples` (search_refine) in the scan's chunks,
    enumerated once: counted for progress, then costed by every pass over them (_refine_scan)."""
    model, hardware, workload, _, pins, gpus_per_node, _, chunk = args
    if len(tuples) == 0:
        return []
    return [c for _, c in iter_candidates(workload, tuples, pins, chunk_candidates=chunk, gpus_per_node=gpus_per_node,
                                          axes=search_axes(model, hardware), refine=True)]


def _refine_scan(args: tuple, chunks: list[Candidates], *, keep: int | None, breakers: bool | None,
                 progress: Progress = _no_progress, done: int = 0, after: Best | None = None,
                 offset: int = 0) -> Scanned | None:
    """scan_chunks of the refinement's candidates (_refined_chunks), None when there are none; its
    progress counts on from the `done` candidates of the scan before it. `after`: the rows the scan
    before it kept (their places in it; the refinement's come after its `offset` candidates), in
    the refinement's best too (scan_chunks)."""
    model, hardware, workload, degrees, pins, gpus_per_node, runtime, chunk = args
    n = sum(len(c) for c in chunks)
    if n == 0:
        return None

    def counted_on(seen: int, _total: int, what: str | None = None) -> None:
        progress(done + seen, done + n, what)

    kept = None if after is None else Best(after.evaluated, after.place - offset)
    return scan_chunks(model, hardware, workload, degrees, pins, gpus_per_node, runtime, chunk, keep=keep,
                       breakers=breakers, progress=counted_on, total=n, chunks=chunks,
                       what="interleaving the best plans: {}", after=kept)


def _merged(best: Best | None, scan: Scanned | None, offset: int, capacity_bytes: float,
            keep: int | None) -> Best | None:
    """`best` with the rows of `scan` (their places after `offset` enumerated ones), in rank order."""
    if scan is None or scan.best is None:
        return best
    return keep_best(best, scan.best.evaluated, scan.best.place + offset, capacity_bytes, keep)


def _ranked_together(scan: Scanned, refined: Scanned | None, offset: int, capacity_bytes: float) -> Best | None:
    """Every row of `scan` and of its refinement `refined` (their places after `offset` enumerated
    ones), both run with keep None, in rank order by one sort (ranked_union): the order ranking the
    scan and then merging the refined rows into it gives, with one copy of every row. None where
    neither holds a chunk."""
    pieces = scan.pieces + (() if refined is None else
                            tuple(Best(p.evaluated, p.place + offset) for p in refined.pieces))
    return ranked_union(pieces, capacity_bytes) if pieces else None


def _counts(scan: Scanned | None) -> np.ndarray | int:
    return 0 if scan is None else scan.counts


def _search_every_row(model: ModelSpec, hardware: HardwareProfile, workload: Workload, args: tuple, *,
                      keep: int, top_k: int, progress: Progress, total: int) -> SearchResult:
    """search(every_row=True): one pass costs every candidate. Its rank order puts the plans that
    pass the rules before the breakers (tier, search_rank.rank_keys), ties in enumeration order,
    so its first `keep` rows and the whole are the rows and the frame the streaming passes give
    (the refined rows, search_refine, after the scan's in that order)."""
    gpus_per_node, runtime = args[5], args[6]
    scan = scan_chunks(*args, keep=None, breakers=None, progress=progress, total=total)
    refining = _refined_chunks(args, tuples_to_refine(scan.tuples, args[4]))
    refined = _refine_scan(args, refining, keep=None, breakers=None, progress=progress, done=total)
    best = _ranked_together(scan, refined, scan.candidates, hardware.hbm_bytes)
    assert best is not None
    every = best.evaluated
    candidates = scan.candidates + (refined.candidates if refined else 0)
    prune_counts = {rule: int(k) for rule, k in zip((*RULES, "oom"), scan.counts + _counts(refined)) if k}
    shown = explained_rows(model, hardware, workload, columns.take(every, np.arange(min(keep, candidates))),
                           gpus_per_node, runtime)
    ranked = tuple(shown.estimate(i) for i in range(min(top_k, len(shown.fits))))
    head = shown.frame()
    if candidates <= keep:
        return SearchResult(candidates_evaluated=candidates, ranked=ranked, prune_counts=prune_counts, frame=head)
    return SearchResult(candidates_evaluated=candidates, ranked=ranked, prune_counts=prune_counts,
                        frame=lambda: explained_rows(model, hardware, workload, every, gpus_per_node, runtime).frame(),
                        head=head)


def evaluate(model: ModelSpec, hardware: HardwareProfile, workload: Workload, plan: ParallelPlan, *,
             num_nodes: int, gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> PlanEstimate:
    """One plan, through the same columns as the search; fits False with a reason when it cannot run.
    `runtime`: the framework's (cost.runtime); its CUDA graph scopes are a corpus row's only."""
    world = _check_cluster(num_nodes, gpus_per_node)
    if plan.world_size != world:
        raise ValueError(
            f"plan uses dp*pp*tp*ulysses*ring = {plan.world_size} GPUs but the cluster has {world} "
            f"({plural(num_nodes, 'node')} x {gpus_per_node})"
        )
    if plan.fp8_attention:  # its curves (once; a question's or plan file's profile has them already)
        hardware = with_fp8_attention(hardware)
    e = evaluate_rows(model, hardware, workload, Candidates.of_plan(plan), gpus_per_node, runtime=runtime)
    return explained_rows(model, hardware, workload, e, gpus_per_node, runtime).estimate(0)
