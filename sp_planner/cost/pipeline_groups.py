"""The waits of an interleaved pipeline's groups on the last stage's laps of a group's last chunk
(cost.pipeline_path.critical_path_s, with two micro-batch groups or more): the second group's
first forward (wrap_s), the last group's laps (again_s), every group's between (between_s), each
for the first or the last middle stage, and the last middle stage's wait at each group boundary
for a chain relayed down the stages below it (descent_s), in Megatron's order (schedules.py
get_schedule_table; pipeline_order.stage_order); and sums over the stages below one (below_s).
Vectorized over candidates; `stages`: the first, middle and last stage's
cost.pipeline_path.StageBlocks. The middle stage a path rides is the last one, or where the
middle stages differ (Llama-4-Maverick's) the one `ridden` names (Ridden).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Ridden(NamedTuple):
    """The middle stage whose blocks the middle path rides (cost.pipeline_path.critical_path_s):
    its rank, the middle stages below it (rank - 1) and above it (pp - 2 - rank), and the blocks
    of those above (cost.pipeline_path.StageBlocks); the last middle one (last_middle) or, where
    the middle stages differ, the heaviest (cost.stage_params.dp_ridden_middle_stage)."""

    rank: Any  # np.ndarray | float
    under: Any  # middle stages below it
    over: Any  # middle stages above it
    above: Any  # their blocks: StageBlocks


def ridden_at(rank, middles, above) -> Ridden:
    """Middle rank `rank` of `middles` middle stages ridden, those above it of blocks `above`."""
    return Ridden(rank, np.maximum(rank - 1, 0), np.maximum(middles - rank, 0), above)


def last_middle(middles, middle) -> Ridden:
    """The last middle stage (rank pp - 2 = middles): every middle stage below it, none above."""
    return ridden_at(middles, middles, middle)


def wrap_s(p: int, stages, f, b, lap, share, ran, middles, pp, vpp, m, *, f_last0, chunk0_fwd, ridden: Ridden,
           group=None):
    """The wait of stage p (the first or the last middle one) for the second group's first
    forward through its chunk 1, which the last stage sends only after its first group's
    last-chunk backwards (Megatron's order: the last stage's warm-up ends with the first group's
    last chunk, the next group's chunk-0 forwards follow its backwards; schedules.py
    get_schedule_table): micro-batch 0's forward up from p (the last stage's W + 1-th), the last
    stage's J = pp laps of its last chunk and its next group's first forward, that forward down
    to p, less p's own forwards and backwards before that one (its forward number pp vpp + pp,
    paired with its backward number pp vpp + pp - W_p). Those forwards are the first group's
    last-chunk ones but micro-batch 0's and the second group's pp chunk-0 ones, the first pp
    backwards the first group's last-chunk ones: the first stage's embedding, which runs with its
    chunk 0 (compute_blocks), is in the chunk-0 forwards only and in none of those backwards.
    Interleaved pipelines of two groups or more; 0 elsewhere. `f_last0`: the last stage's
    chunk-0 forward; `chunk0_fwd`: p's; `ridden`: the middle stage p = 1 stands for (Ridden).
    `group`: the micro-batch group N (pipeline_order.micro_batch_group; None: pp), which stands for pp
    above wherever it counts a group's micro-batches: N laps, forward number N vpp + g2 (g2 the
    second group's, N or the last group's m - N), N - 1 and g2 forwards, the first N backwards
    the last chunk's (schedules.py get_schedule_table at d98e8a6, lines 989-1016)."""
    first, middle, _ = stages
    n = pp if group is None else group
    second = n if group is None else np.minimum(m - n, n)  # the second group's micro-batches
    later_fwd = (first.last_fwd_s, middle.last_fwd_s)
    above = ridden.above
    up = (middles * (f[1] + share[1]), ridden.over * (above.forward_s + above.gather_s) / vpp)[p]
    down = (0.0, later_fwd[0] + ridden.under * later_fwd[1])[p]
    target = n * vpp + second  # the second group's first chunk-1 forward
    fwds = (n - 1) * later_fwd[p] + second * chunk0_fwd
    bwds = np.maximum(0.0, target - ran[p] + 1)  # the first N the last chunk's
    passed = fwds + np.minimum(bwds, n) * stages[p].last_bwd_s + np.maximum(bwds - n, 0.0) * b[p]
    gain = up + n * lap[2] + share[2] + f_last0 + down - passed
    return np.where((vpp > 1) & (m > n), np.maximum(0.0, gain), 0.0)


def again_s(p: int, stages, lap, f, middles, pp, vpp, m, *, ridden: Ridden, group=None, last=None):
    """What stage p (the first or the last middle one) waits for the last stage's laps of the last
    group's last chunk, with two groups or more: the last stage runs them (forward and backward,
    back to back: its W = (vpp - 1) pp warm-up pairs backward k with forward W + k) after its
    chunk-0 backward of the group before's last micro-batch, which waits for p's chunk-1 backward
    of it (backward number k = (G - 1) vpp pp - pp - 1 on every rank; G = m/pp groups), relayed
    down to the first stage; their backwards come down to p. Meanwhile p runs its next 2pp
    backwards (the group before's chunk 0, the last group's last chunk: p's last-chunk backward of
    the last micro-batch closes them) and the 2r + 2 forwards it has left (rank r; the total m vpp
    less W_r + k + 1, W_r = 2(pp - r - 1) + (vpp - 1) pp): the path's gain over p's own blocks.
    Megatron's order (schedules.py get_schedule_table, lines 989-1016; pipeline_order.
    stage_order). A heavy last chunk (the output layer's forward and backward) paces these laps
    where the first stage paces the step: Llama-3-8B on H100, pp 8, vpp 2, 6/4/2 layers.
    `ridden`: the middle stage p = 1 stands for (Ridden). Groups of N (`group`,
    pipeline_order.micro_batch_group; None: pp) with a last group of r (`last`, pipeline_order.last_group):
    k = (G - 1) vpp N - N - 1, the laps r, the backwards the group before's N chunk-0 ones and r,
    the forwards left m vpp - W_r - k - 1 = r vpp - (vpp - 2) N - 2 pp + 2r' + 2 (rank r'), none
    below 0; N = r = pp gives the counts above."""
    first, middle, last_stage = stages
    rank = (0.0, ridden.rank)[p]
    s = stages[p]
    back = (middles * middle.last_bwd_s, ridden.over * ridden.above.last_bwd_s)[p]  # the laps' last backward down to p
    if group is None:
        laps = laps_s(p, stages, lap, middles, pp, under=ridden.under) + back + s.last_bwd_s
        passed = (2 * rank + 2) * f[p] + pp * (s.first_bwd_s + s.last_bwd_s)
        return np.where((vpp > 1) & (m >= 2 * pp), laps - passed, 0.0)
    laps = laps_s(p, stages, lap, middles, last, under=ridden.under) + back + s.last_bwd_s
    left = np.maximum(last * vpp - (vpp - 2) * group - 2 * pp + 2 * rank + 2, 0.0)
    passed = left * f[p] + group * s.first_bwd_s + last * s.last_bwd_s
    return np.where((vpp > 1) & (m > group), laps - passed, 0.0)


def laps_s(p: int, stages, lap, middles, jobs, *, under):
    """From the end of stage p's chunk-1 backward of a group's last micro-batch to the end of the
    last stage's laps of the next group's last chunk (again_s): that backward relayed down to
    stage 0, the last stage's chunk-0 backward it feeds, then its laps, one per micro-batch of
    that group (`jobs`: pp, or the group's N or r); `under`: the middle stages below p = 1
    (Ridden)."""
    first, middle, last = stages
    down = below_s(middles, first.last_bwd_s, middle.last_bwd_s, under=under)[p]  # p's chunk 1 to stage 0
    return down + last.first_bwd_s + jobs * lap[2]


def between_s(p: int, stages, lap, middles, pp, vpp, m, *, f_last0, chunk0_fwd, ridden: Ridden, group=None,
              last=None):
    """What stage p (the first or the last middle one, rank r) waits, over the step, for the laps
    of every group's last chunk on the last stage but the first group's (wrap_s) and the last's
    (again_s), with three groups or more: group h's first chunk-1 forward on p (its forward
    number h pp vpp + pp) follows the last stage's first chunk-0 forward of group h, which
    follows its laps of group h - 1's last chunk (laps_s, from p's chunk-1 backward of group
    h - 2's last micro-batch, backward number k = (h - 1) vpp pp - pp - 1 on every rank: the
    last stage's W = (vpp - 1) pp warm-up pairs its forward W + j with backward j), then relayed
    up to p. Meanwhile p runs backwards k + 1 to j* - 1 and forwards W_r + k + 1 to W_r + j* - 1,
    j* = h pp vpp + pp - W_r, W_r = 2(pp - r - 1) + (vpp - 1) pp: pp + 2r + 2 of each, the
    backwards group h - 2's pp chunk-0 ones and the forwards group h's pp chunk-0 ones, the rest
    of later chunks. Megatron's order (schedules.py get_pp_rank_microbatches lines 955-965,
    get_schedule_table lines 989-1016, at d98e8a6; pipeline_order.stage_order). The G - 2
    waits (G = m/pp groups) follow each other on p's path where p's next wait starts at or after
    its return, k + pp vpp >= j*: W_r >= 2 pp + 1 (the first stage but at pp 2 vpp 2, a middle
    one from vpp 3); elsewhere none is counted. Llama-3-8B on H100, tp 1, pp 8, vpp 2, 6/4/2
    layers, 4096 tokens, 32 micro-batches: the first stage waits 26 ms at groups 3 and 4 (as
    sim.pipeline times it), which the path had missed (2.7% short of the simulator's). `ridden`:
    the middle stage p = 1 stands for (Ridden). Groups of N (`group`, pipeline_order.micro_batch_group;
    None: pp), the last of r (`last`, pipeline_order.last_group): G = ceil(m / N), group h's g
    micro-batches (N, r for h = G - 1), forward number h N vpp + g; p runs g + 2N - 2pp + 2r' + 2
    backwards (the N chunk-0 ones, the rest the last chunk's) and as many forwards (g chunk-0
    ones, the rest later chunks'), waits where W_r' >= g + N + 1: G - 3 waits with g = N, one
    with g = r."""
    first, middle, _ = stages
    if group is not None:
        return _between_groups_s(p, stages, lap, middles, pp, vpp, m, f_last0=f_last0, chunk0_fwd=chunk0_fwd,
                                 ridden=ridden, group=group, last=last)
    rank = (0.0, ridden.rank)[p]
    s = stages[p]
    warmup = 2 * (pp - rank - 1) + (vpp - 1) * pp
    # A later chunk's forward; `chunk0_fwd` p's chunk 0's (the first stage's with its embedding).
    later_fwd = s.last_fwd_s
    up = (0.0, first.last_fwd_s + ridden.under * middle.last_fwd_s)[p]  # chunk 1 up to p
    chain = laps_s(p, stages, lap, middles, pp, under=ridden.under) + f_last0 + up
    passed = pp * (chunk0_fwd + s.first_bwd_s) + (2 * rank + 2) * (later_fwd + s.last_bwd_s)
    groups = np.floor(m / pp)
    return np.where((vpp > 1) & (groups >= 3) & (warmup >= 2 * pp + 1),
                    (groups - 2) * np.maximum(0.0, chain - passed), 0.0)


def _between_groups_s(p: int, stages, lap, middles, pp, vpp, m, *, f_last0, chunk0_fwd, ridden: Ridden, group,
                      last):
    """between_s over groups of N with a last group of r (its docstring)."""
    first, middle, _ = stages
    rank = (0.0, ridden.rank)[p]
    s = stages[p]
    warmup = 2 * (pp - rank - 1) + (vpp - 1) * group
    up = (0.0, first.last_fwd_s + ridden.under * middle.last_fwd_s)[p]  # chunk 1 up to p
    chain = laps_s(p, stages, lap, middles, group, under=ridden.under) + f_last0 + up
    extra = 2 * group - 2 * pp + 2 * rank + 2  # p's later-chunk forwards beyond the g chunk-0 ones

    def wait(g):
        passed = (g * chunk0_fwd + group * s.first_bwd_s + extra * s.last_fwd_s
                  + (g + group - 2 * pp + 2 * rank + 2) * s.last_bwd_s)
        return np.where(warmup >= g + group + 1, np.maximum(0.0, chain - passed), 0.0)
    groups = np.ceil(m / group)
    partial = (last != group).astype(np.float64)  # the last group's own wait
    full = np.maximum(groups - 2 - partial, 0.0)
    return np.where((vpp > 1) & (groups >= 3), full * wait(group) + partial * wait(last), 0.0)


def descent_s(stages, middles, pp, vpp, m, *, mid, over=0.0, group=None, last=None):
    """What the last middle stage p (rank pp - 2) waits, over the step, at each of the G - 1
    boundaries between micro-batch groups (G = m/pp) for its first backward of the next group's
    chunk vpp - 2 (backward number j* = j0 + pp, j0 = g vpp pp the group's first). A backward's
    number is the same on every rank and each waits for the stage above's (Megatron's order:
    schedules.py get_schedule_table lines 989-1016 at d98e8a6, backward chunks reversed by
    get_model_chunk_id lines 1244-1249; pipeline_order.stage_order), so j* waits for the last
    stage's (its chunk vpp - 2, a full one as its chunk 0: last.first_bwd_s), which waits for the
    first stage's chunk vpp - 1 backward j0. The chain leaves p after a chunk-0 backward k of the
    group before, runs down the stages to some q (their chunk-0 blocks), runs q's own backwards
    to j0 (as p's own, which cancel), then j0 down from q to the first stage (their last-chunk
    blocks) and the last stage's; p meanwhile runs its own to j0, then pp last-chunk backwards
    and pp forwards more (the next group's last-chunk ones). Linear in q over equal middle stages
    (`mid`: the relayed ones' mean where they differ), so the longer of q = 1 and q = pp - 2;
    positive only where a chunk 0 outweighs the last chunk (a middle stage the layout does not
    divide by vpp, 3 / 3 / 2: DeepSeek-V3 over pp 8 x vpp 3 at 7 / 6, whose ZeRO-2 traffic waits
    0.51 s there in sim.pipeline) or the first stage's last chunk a middle stage's. Interleaved
    pipelines of two groups or more; 0 elsewhere, and where the path rides a middle stage below
    the last (`over`: the middle stages above it, Ridden; no such chain is derived there). Groups
    of N (`group`, pipeline_order.micro_batch_group; None: pp), the last of r (`last`,
    pipeline_order.last_group): G = ceil(m / N), j* = j0 + g and g last-chunk backwards and forwards
    more, g the next group's micro-batches (N, r at the last boundary)."""
    first, middle, last_stage = stages
    down = np.maximum(pp - 3, 0) * mid.first_bwd_s + mid.last_bwd_s  # q = 1
    own = middle.last_bwd_s + np.maximum(pp - 3, 0) * mid.last_bwd_s  # q = pp - 2

    def gain(g):  # summed as before groups of N: (the ends' blocks less g laps) after the longer way down
        below = first.last_bwd_s + last_stage.first_bwd_s - g * (middle.last_bwd_s + middle.last_fwd_s)
        return np.maximum(down, own) + below
    ok = (vpp > 1) & (middles >= 1) & (np.asarray(over) == 0)
    if group is None:
        groups = np.floor(m / pp)
        return np.where(ok & (groups >= 2), (groups - 1) * np.maximum(0.0, gain(pp)), 0.0)
    groups = np.ceil(m / group)
    partial = (last != group).astype(np.float64)  # the last boundary's own wait
    return np.where(ok & (groups >= 2), (groups - 1 - partial) * np.maximum(0.0, gain(group))
                    + partial * np.maximum(0.0, gain(last)), 0.0)


def below_s(middles, first_s, middle_s, *, under):
    """A sum over the stages below the first, the ridden middle one (`under` middle stages below
    it: Ridden) and the last stage (of the first stage's `first_s` and each middle one's
    `middle_s`)."""
    return (0.0, first_s + under * middle_s, first_s + middles * middle_s)
