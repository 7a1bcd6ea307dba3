"""The search's chunked scan: candidates enumerated and costed chunk by chunk, the best K rows kept
in rank order by merging each chunk into them (search_rank; search.search drives it); those that
pass the rules priced several chunks at a time and timed only where they can change the answer
(search_pruned_scan.PrunedScan)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner import columns
from sp_planner.cost.runtime import Runtime
from sp_planner.plan import RULES
from sp_planner.search_columns import evaluate_rows, search_axes
from sp_planner.search_pruned_scan import PrunedScan
from sp_planner.search_rank import Best, keep_best
from sp_planner.search_refine import TupleBests, merged, tuple_bests
from sp_planner.space import Pins, first_rule, iter_candidates, rule_masks
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import plural

if TYPE_CHECKING:
    from sp_planner.search import Progress


class Scanned(NamedTuple):
    best: Best | None
    candidates: int
    costed: int
    counts: np.ndarray  # candidates per RULES entry, then OOM
    tuples: TupleBests  # each degree tuple's fastest fitting pp > 1 row (search_refine)
    pieces: tuple[Best, ...] = ()  # keep=None: each chunk's rows, unsorted (best is None)


def scan_chunks(model: ModelSpec, hardware: HardwareProfile, workload: Workload, degrees: np.ndarray, pins: Pins,
                gpus_per_node: int, runtime: Runtime, chunk_candidates: int, *, keep: int | None,
                breakers: bool | None, progress: Progress, total: int = 0, chunks: list[Candidates] | None = None,
                what: str = "searching {}", after: Best | None = None) -> Scanned:
    """Cost the candidates that pass the rules (`breakers`: those that break one instead; None:
    every candidate), chunk by chunk of about `chunk_candidates`, keeping the best `keep` rows in
    rank order (keep None: every row, left unsorted in `pieces` for the caller to rank with others
    in one sort, ranked_union). `costed` counts the rows costed that pass the rules; `tuples`
    each degree tuple's fastest fitting pipelined row (search_refine.tuple_bests). `chunks`: the
    candidates, enumerated by the caller (search._refined_chunks), instead of those of `degrees`
    (space.iter_candidates); `what` names the candidates counted for progress ({}: how many).
    `after`: the rows kept by a scan this one goes on from (search's refinement; breakers False,
    places before this scan's), in `best` too, which then holds both scans' best `keep` rows
    (search_pruned_scan.PrunedScan prunes against them; `tuples` then holds the rows timed only)."""
    parts: list[Best] = []
    bests = merged([])
    best: Best | None = None
    # The rows that pass the rules, ranked with the fewest timed (breakers False): PrunedScan.
    pruned = None if breakers is not False or keep is None else PrunedScan(model, hardware, workload, gpus_per_node,
                                                                           runtime, keep, after)
    assert after is None or pruned is not None
    counts = np.zeros(len(RULES) + 1, dtype=np.int64)
    seen = costed = 0
    axes = search_axes(model, hardware)
    enumerated: Iterable[Candidates] = chunks if chunks is not None else (
        c for _, c in iter_candidates(workload, degrees, pins, chunk_candidates=chunk_candidates,
                                      gpus_per_node=gpus_per_node, axes=axes))
    for chunk in enumerated:
        code = first_rule(rule_masks(model, workload, chunk), len(chunk))
        if pruned is not None:
            pruned.add(chunk, code, seen)  # costed, its OOM rows counted, when it finishes
        else:
            if breakers is None:
                rows = np.arange(len(chunk))
                e = evaluate_rows(model, hardware, workload, chunk, gpus_per_node, code, runtime)
            else:
                rows = np.flatnonzero(code >= 0 if breakers else code < 0)
                e = evaluate_rows(model, hardware, workload, columns.take(chunk, rows), gpus_per_node, code[rows],
                                  runtime)
            counts[len(RULES)] += np.count_nonzero(e.rule_code == len(RULES))  # the OOM rows (a breaker keeps its rule)
            index = seen + rows
            if not breakers:  # each tuple's best so far (search_prune reads them): merged([all chunks']) as it goes
                bests = merged([bests, tuple_bests(e, index)])
            if keep is None:
                parts.append(Best(e, index))
            elif len(rows):
                best = keep_best(best, e, index, hardware.hbm_bytes, keep)
        if not breakers:  # the rules are counted once, in the pass over every candidate
            counts += np.bincount(code[code >= 0], minlength=len(RULES) + 1)
        seen += len(chunk)
        costed += int(np.count_nonzero(code >= 0 if breakers else code < 0))
        progress(seen, total, what.format(plural(total, 'candidate')))
    if pruned is not None:
        best, bests, oom = pruned.finish()
        counts[len(RULES)] += oom
    return Scanned(best, seen, costed, counts, bests, tuple(parts))


