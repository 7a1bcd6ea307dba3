"""When each kind of pipeline stage ends its last backward, against the first stage's, and how long
the interleaved first stage runs each chunk's drain (cost.pipeline_tails, cost.pipeline_dp): from
what each stage waits for at the end of Megatron's schedule (megatron/core/pipeline_parallel/
schedules.py, d98e8a6) over the stages' bare blocks (cost.pipeline_blocks.bare_blocks).
Vectorized over candidates."""

from __future__ import annotations

from functools import reduce

import numpy as np

from sp_planner.cost.pipeline_path import StageBlocks
from sp_planner.pipeline import pile_up_s
from sp_planner.pipeline_order import last_group, micro_batch_group


def finish_lags_s(bare: tuple[StageBlocks, StageBlocks, StageBlocks], middles, micro_batches, vpp, vpp_group=None):
    """(0, the first middle stage's lag, the last stage's): how long before the first stage's last
    backward ends each one's does, from what each stage waits for at the end of Megatron's
    schedule (pipeline_parallel/schedules.py, d98e8a6), over the stages' `bare` blocks
    (pipeline_blocks.bare_blocks; b_0 is the first stage's chunk-0 backward, with the
    embedding's). Each stage's last backward follows the one above's (the drain), and the first
    stage's also its own last J backwards (the last micro-batch group's, pipeline_order.last_group:
    min(pp, m) in groups of pp, r in Megatron's groups of N), which pile up behind the stages above
    where it is the slower (pipeline.pile_up_s); a later stage running behind its own backlog ends
    later. Vectorized over candidates. `vpp_group`: the plans' own N (pipeline_order.micro_batch_group's
    `pinned`)."""
    one = np.asarray(vpp) == 1
    ends = [np.where(one, plain, chunked) for plain, chunked in
            zip(_plain_ends_s(bare, middles, micro_batches), _chunked_ends_s(bare, middles, micro_batches, vpp_group))]
    return (0.0, ends[0] - ends[1], ends[0] - ends[2])


def first_stage_phases_s(bare: tuple[StageBlocks, StageBlocks, StageBlocks], middles, micro_batches, vpp_group=None):
    """(D_1, D_full, D_top): how long the interleaved first stage runs from its last backward of
    chunk k to its last of chunk k - 1, over the last group's backwards (_chunked_ends_s's
    relay, each block of the chunks at hand): k = 1 (its chunk-0 blocks, with the embedding's),
    a middle k (full chunks), k = vpp - 1 (the chunks above it come down a middle stage's last,
    short one under a layout: pipeline_chunks.chunk_shape). Where the stages above are slower
    the first stage waits between its chunks, where its syncs' queue drains
    (dp_once.chunked_exposed_s): Llama-3-8B 12 / 8 over pp 4 x vpp 4 (middle chunks 2 / 2 / 2 /
    0) waits 11 ms before its chunk-2 backwards, as sim.pipeline runs it. Past one group (m > pp) a
    first stage that paces the pipeline (the slowest cycle: Narayanan et al. 2021, arXiv
    2104.04473 section 2.2.1) runs the last group's backwards from its own backlog, back to back:
    no wait (0 here; the same plan at 8 micro-batches runs so in sim.pipeline). `vpp_group`:
    finish_lags_s'."""
    n = np.asarray(middles, dtype=np.float64)
    jobs = last_group(n + 2, micro_batches, vpp_group)  # the last group's micro-batches (pipeline_order.last_group)
    first, middle, last = bare
    b_mid = np.where(n > 0, middle.first_bwd_s, 0.0)
    d1 = _chunked_ends_s(bare, middles, micro_batches, vpp_group)[0]
    full = _phase_ends_s(n, jobs, first.last_bwd_s, b_mid, last.first_bwd_s, first.last_bwd_s, b_mid)[0]
    top = _phase_ends_s(n, jobs, first.last_bwd_s, b_mid, last.first_bwd_s, first.last_bwd_s,
                        np.where(n > 0, middle.last_bwd_s, 0.0))[0]
    paces = first.cycle_s >= np.maximum(np.where(n > 0, middle.cycle_s, 0.0), last.cycle_s)
    relayed = (np.asarray(micro_batches) <= micro_batch_group(n + 2, micro_batches, vpp_group)) | ~paces  # one group
    return tuple(np.where(relayed, phase, 0.0) for phase in (d1, full, top))


def _chunked_ends_s(bare, middles, micro_batches, vpp_group=None):
    """The interleaved schedule's (first, first middle, last) stage's last backward ends, from the
    end of the first stage's last chunk-1 backward: every rank ends on the last group's J chunk-0
    backwards, after its chunk-1 ones (get_schedule_table lines 989-1016; backwards in reverse
    chunk order, get_model_chunk_id lines 1244-1249), and the last stage's chunk-0 backward of
    micro-batch i waits for the first stage's chunk-1 backward of it (the next virtual stage).
    The last micro-batch then runs down the stages (b, b_L: a middle and the last stage's chunk
    blocks), unless a stage is still running its own J chunk-0 backwards, which it started no
    earlier than its chunk-1 backward of the last micro-batch, the chunk-1 blocks below it (d,
    the first stage's) before the origin. The first stage ends J b_0 after the origin, or b_0
    after the stage above, whose last J backwards reach it b_top apart (the slowest block above)
    where they ran back to back there."""
    n, _, c, b, b_last = _stage_terms(bare, middles, micro_batches)
    jobs = last_group(n + 2, micro_batches, vpp_group)  # J: the last group's micro-batches (min(pp, m) in groups of pp)
    return _phase_ends_s(n, jobs, c, b, b_last, bare[0].last_bwd_s, b)


def _phase_ends_s(n, jobs, c, b, b_last, d, b_before):
    """_chunked_ends_s over one chunk phase's blocks: the first stage's (c), a middle stage's (b)
    and the last stage's (b_last) of the chunk the phase runs, the first stage's (d) and a
    middle stage's (b_before) of the chunk before it."""
    end_last = np.maximum(b_last, jobs * b_last - d - n * b_before)
    end_mid = np.maximum(end_last + n * b, jobs * b - d)
    above = np.where(n > 0, end_mid, end_last)
    top = np.maximum(b, b_last)
    return np.maximum(above + c + pile_up_s(c, jobs, charged_s=top), jobs * c), end_mid, end_last


def _plain_ends_s(bare, middles, micro_batches):
    """1F1B's (first, first middle, last) stage's last backward ends, from the step's start: rank
    r runs min(pp - r - 1, m) forwards, then a forward and a backward in turn, then the rest of
    its backwards (lines 2276-2279, 2378-2452). Each stage's end is the longest of the paths that
    ride one stage from its first block: the first stage's m forwards and backwards (f_0, b_0),
    or its forwards up to its last one, m - J backwards among them, then micro-batch m - 1 up and
    down the stages; the last stage's m laps after micro-batch 0's forwards below it; the last
    middle stage's m laps, or up to its last forward (m - 2 backwards among them) then the last
    stage's lap, or the first stage's last forward up to it then its last min(2, m) backwards
    (pp - r of them follow a rank's last forward). The first stage's last J backwards reach it
    from the stage above no closer together than the slowest stage above runs a lap, or its own
    forwards (Delta), and pile up where b_0 is longer: Narayanan et al. 2021 (arXiv 2104.04473,
    section 2.2.1), the slowest stage paces."""
    first, middle, last = bare
    n, jobs, c, b, b_last = _stage_terms(bare, middles, micro_batches)
    m = np.asarray(micro_batches, dtype=np.float64)
    has_mid = n > 0
    f0, f, f_last = first.forward_s, np.where(has_mid, middle.forward_s, 0.0), last.forward_s
    fill_mid = f0 + np.maximum(n - 1, 0) * f  # micro-batch 0 reaches the last middle stage
    last_fwd_first = m * f0 + (m - jobs) * c
    last_fwd_mid = fill_mid + m * f + np.maximum(m - 2, 0) * b
    end_last = reduce(np.maximum, [f0 + n * f + m * (f_last + b_last), last_fwd_first + n * f + f_last + b_last,
                                  np.where(has_mid, last_fwd_mid + f_last + b_last, -np.inf)])
    # The last middle stage's own laps, or its last min(2, m) backwards after the first stage's last
    # forward reaches it; then down the middle stages.
    own_mid = np.maximum(fill_mid + m * (f + b), last_fwd_first + n * f + np.minimum(2, m) * b)
    end_mid = np.maximum(end_last + n * b, np.where(has_mid, own_mid + np.maximum(n - 1, 0) * b, -np.inf))
    delta = reduce(np.maximum, [f0, f_last + b_last, np.where(has_mid, f + b, 0.0)])
    above = np.where(has_mid, end_mid, end_last)
    return np.maximum(above + c + pile_up_s(c, jobs, charged_s=delta), m * (f0 + c)), end_mid, end_last


def _stage_terms(bare, middles, micro_batches):
    """(middle stages, J = min(pp, m), b_0, a middle stage's chunk-0 backward (0 without one),
    the last stage's)."""
    first, middle, last = bare
    n = np.asarray(middles, dtype=np.float64)
    b = np.where(n > 0, middle.first_bwd_s, 0.0)
    return n, np.minimum(n + 2, micro_batches), first.first_bwd_s, b, last.first_bwd_s
