"""The order of a pipeline stage's blocks under 1F1B (PipeDream-Flush; Narayanan et al. 2021, section
2.2) and interleaved 1F1B (section 2.2.2) as Megatron orders them, which block each one waits for, and
before which forward Megatron dispatches a model chunk's parameter all-gather, and the micro-batch
groups of its interleaved schedule (--microbatch-group-size-per-virtual-pipeline-stage: which N it
accepts, the one sp-plan runs, the last group's size). Pure functions of the degrees, micro-batch
count and stage; sim.pipeline times the blocks in this order.
"""

from __future__ import annotations

import numpy as np


def stage_order(pp: int, m: int, stage: int, vpp: int = 1, group: int | None = None) -> list[tuple[str, int, int]]:
    """(kind, chunk, micro-batch) in the order the stage runs them. Plain 1F1B for vpp 1; else
    Megatron's interleaved schedule (pipeline_parallel/schedules.py at d98e8a6,
    get_pp_rank_microbatches and get_schedule_table, lines 930-1016), micro-batch groups of N =
    `group` (--microbatch-group-size-per-virtual-pipeline-stage; None: Megatron's default, pp):
    virtual micro-batch k is entry k of schedule_table, forward in order and the chunks in reverse
    backward; warm-up 2(pp-1-s) + (vpp-1) N of them, capped at all m*vpp."""
    total = m * vpp
    if vpp == 1:
        warmup = min(pp - 1 - stage, m)
        table = [(0, mb) for mb in range(m)]
    else:
        n = pp if group is None else group
        warmup = min(2 * (pp - 1 - stage) + (vpp - 1) * n, total)
        table = schedule_table(m, vpp, n)

    def virtual(k: int, kind: str) -> tuple[str, int, int]:
        chunk, mb = table[k]
        return kind, (chunk if kind == "forward" else vpp - 1 - chunk), mb

    order = [virtual(k, "forward") for k in range(warmup)]
    for k in range(total - warmup):
        order += [virtual(warmup + k, "forward"), virtual(k, "backward")]
    order += [virtual(k, "backward") for k in range(total - warmup, total)]
    return order


def schedule_table(m: int, vpp: int, group: int) -> list[tuple[int, int]]:
    """(chunk, micro-batch) of each virtual micro-batch: Megatron's get_schedule_table
    (schedules.py lines 989-1016 at d98e8a6), groups of `group` micro-batches run chunk by chunk,
    the last group all the micro-batches from its first on (m % group of them where that is not 0)."""
    table = []
    for first in range(0, m, group):
        stop = m if first + group >= m else first + group
        table += [(chunk, mb) for chunk in range(vpp) for mb in range(first, stop)]
    return table


def upstream_stage(kind: str, stage: int, chunk: int, pp: int, vpp: int) -> tuple[int, int] | None:
    """(stage, chunk) whose output this block needs: the previous virtual stage's forward, or the
    next one's backward (virtual stage chunk*pp + stage, Megatron's interleaved layer placement)."""
    virtual = chunk * pp + stage + (-1 if kind == "forward" else 1)
    if not 0 <= virtual < pp * vpp:
        return None
    return virtual % pp, virtual // pp


def gather_dispatched(pp: int, vpp: int, stage: int, k: int, group: int | None = None) -> int:
    """The model chunk whose parameter all-gather Megatron dispatches before the stage's forward
    number k, or -1: chunk j + 1 when forward k + stage is chunk j's first micro-batch, for
    j + 1 >= 2 (chunks 0 and 1 go at the step's start). schedules.py
    forward_backward_pipelining_with_interleaving, forward_step_helper_preprocess
    (param_sync_virtual_microbatch_id = virtual_microbatch_id + pipeline_parallel_rank). Chunk j's
    first micro-batch is virtual micro-batch j N, N the micro-batch group (`group`, None: pp;
    schedule_table)."""
    n = pp if group is None else group
    virtual = k + stage
    if virtual % n or virtual >= n * vpp:
        return -1
    chunk = virtual // n + 1
    return chunk if 1 < chunk < vpp else -1


def grad_sync_launches(pp: int, m: int, stage: int, vpp: int, group: int | None = None) -> dict[int, tuple[int, ...]]:
    """The model chunks whose gradient sync Megatron's aligned grad reduce launches after the
    stage's backward number k, by k: chunk c after backward k_c + stage, k_c its last micro-batch's
    (the pipeline ranks launch together, the later ones that many backwards behind), and the rest
    after the last backward in chunk order. schedules.py forward_backward_pipelining_with_interleaving,
    backward_step_helper_postprocess (grad_sync_virtual_microbatch_id = virtual_microbatch_id -
    pipeline_parallel_rank) and "Launch any remaining grad reductions", lines 1445-1456 and 2063-2068
    at d98e8a6. `group`: stage_order's."""
    backwards = [(chunk, mb) for kind, chunk, mb in stage_order(pp, m, stage, vpp, group) if kind == "backward"]
    launches: dict[int, tuple[int, ...]] = {}
    for k, (chunk, mb) in enumerate(backwards):
        if mb == m - 1 and k + stage < len(backwards):
            launches[k + stage] = launches.get(k + stage, ()) + (chunk,)
    launched = {c for chunks in launches.values() for c in chunks}
    rest = tuple(c for c in range(vpp) if c not in launched)
    if rest:
        launches[len(backwards) - 1] = launches.get(len(backwards) - 1, ()) + rest
    return launches


def micro_batch_group(pp, num_micro_batches, pinned=None):
    """N, the micro-batch group of Megatron's interleaved schedule as sp-plan runs it
    (--microbatch-group-size-per-virtual-pipeline-stage): the plan's own N where `pinned` names one
    (ParallelPlan.vpp_group, sp-plan --vpp-group; per row, 0 or None: none), else Megatron's default
    pp (model_parallel_config.py lines 567-568 at d98e8a6) where m % pp == 0, else the smallest N
    that Megatron accepts (megatron_group_sizes: the fewest forwards before the first backward,
    2(pp - rank - 1) + (vpp - 1) N, so the least memory); pp where none does (m < pp, refused by
    interleave_breaks). Vectorized; the common case, no N pinned but pp and every m a multiple of
    pp, returns `pp` itself (the same object: callers tell that case by identity)."""
    if pinned is not None and np.any(np.asarray(pinned) > 0):
        own, priced = np.asarray(pinned), micro_batch_group(pp, num_micro_batches)
        differs = (own > 0) & (own != priced)
        # A pin equal to the group priced (a plan file's, which records it) prices as no pin.
        return np.where(differs, own, priced) if np.any(differs) else priced
    given, pp, m = pp, np.asarray(pp), np.asarray(num_micro_batches)
    per = m / np.maximum(pp, 1)  # whole where pp divides m: floor, not np.mod's slower remainder (chunk_counts)
    odd = (per != np.floor(per)) & (per > 1) & (pp > 1)
    if not np.any(odd):
        return given
    out = np.array(np.broadcast_to(pp, np.broadcast(pp, m).shape), dtype=np.int64)
    pairs = np.stack(np.broadcast_arrays(pp, m), axis=-1)[odd].astype(np.int64)
    firsts = {(p, n): megatron_group_sizes(p, n)[0] for p, n in set(map(tuple, pairs.tolist()))}
    out[odd] = [firsts[p, n] for p, n in pairs.tolist()]
    return out


def priced_group(pp: int, vpp: int, num_micro_batches: int, pinned: int | None = None) -> int | None:
    """The micro-batch group an interleaved plan is priced with, as sp-plan's JSON, both plans.csv
    files and plan.json carry it (ParallelPlan.vpp_group): the plan's own `pinned` N, else
    micro_batch_group, Megatron's default pp included, or None at vpp 1 (no interleaved schedule,
    no group)."""
    return int(micro_batch_group(pp, num_micro_batches, pinned)) if vpp > 1 else None


def priced_groups(pp, vpp, num_micro_batches, pinned=None) -> np.ndarray:
    """priced_group over arrays (plans.csv's rows): N where vpp > 1, 0 (no group) at vpp 1."""
    vpp = np.asarray(vpp)
    return np.where(vpp > 1, micro_batch_group(pp, num_micro_batches, pinned), 0)


def last_group(pp, num_micro_batches, pinned=None):
    """Micro-batches in the schedule's last group (get_schedule_table, schedules.py lines 989-1016
    at d98e8a6): m % N, or N where that is 0 (N: micro_batch_group, `pinned` as there)."""
    m = np.asarray(num_micro_batches)
    n = micro_batch_group(pp, m, pinned)
    rest = m % np.maximum(n, 1)
    return np.where(rest == 0, n, rest)


def megatron_group_sizes(pp: int, num_micro_batches: int) -> tuple[int, ...]:
    """The values of --microbatch-group-size-per-virtual-pipeline-stage N that Megatron's
    interleaved schedule accepts for m micro-batches: pp <= N <= m, and the last group, m % N,
    empty or at least pp (megatron/core/pipeline_parallel/schedules.py at d98e8a6,
    forward_backward_pipelining_with_interleaving lines 1160-1180: ValueError, then RuntimeError
    "dependency bubbles"). N defaults to pp (model_parallel_config.py lines 567-568), so m % pp
    == 0 there; any m >= pp runs with N = m."""
    m = num_micro_batches
    return tuple(n for n in range(pp, m + 1) if m % n == 0 or m % n >= pp)
