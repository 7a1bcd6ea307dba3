"""The pipeline transfers the interleaved schedule waits for on its fill and drain, which the 1/vpp
bubble (Narayanan et al. 2021, arXiv 2104.04473, section 2.2.2) leaves out and cost.step adds to
the sends (cost.overlap: with overlap_p2p_comm a steady send hides behind a chunk's forward).

Each receive is waited for before its block (megatron/core/pipeline_parallel/schedules.py,
forward_backward_pipelining_with_interleaving, recv_prev_wait_handle.wait(); d98e8a6). Micro-batch
0's forward reaches the last stage through pp - 1 hops and the last micro-batch's backward leaves
it through pp - 1. With micro-batch groups of pp (get_schedule_table) a stage p needs micro-batch 0
of chunk c + 1 on the fill after it went round the other pp - 1 stages, each running its block of
that micro-batch, and pp hops, while p runs its own pp - 1 other micro-batches of chunk c; on the
drain it needs the last micro-batch of chunk c - 1 after it went round, while p runs the last
group's pp - 1 others of chunk c - 1 (the time-reversed fill: the chunk p runs meanwhile is the
one the wrap enters). A wrap waits its pp hops less the slack

    (pp - 1) x p's block of that chunk - the other stages' blocks on the way round,

the stages the micro-batch has still to pass in the chunk it leaves, those it passes after the
wrap in the chunk it enters (c + 1 forward, c - 1 backward). The path rides the stage with the
most slack, as the critical path over the blocks moves (cost.pipeline_path): with equal stages
only the wraps beside the first stage's chunk 0 (its embedding's forward and backward) have any,
and every other wrap waits whole (the last stage's loss backward, in the chunk the drain's first
wrap leaves, hides none); where one stage holds more layers (a pinned uneven split) its own chunks
hide the others' wraps, as sim.pipeline times them. A stage's chunks are its full ones but one
end chunk (pipeline_chunks.end_chunk_layers: the first stage's chunk 0, another's last). Llama-3-8B
on L40S, pp 4 x vpp 4, 3/13/13/3 layers (a middle stage 4/4/4/1): 15.5 ms of sends against 4.2
ms simulated, 1.18% over the step, when a middle stage's chunks were read as its end chunk's; pp 8
x vpp 2 at 3/5 on H100, a heavier last stage: 22 hops against 30 (-0.80%) when the drain's wraps
hid behind its loss. Where the model mixes layer kinds (cost.layer_kinds) each chunk's blocks are
its own layers' kinds' (kinds_edge_sends_s, as cost.chunk_path walks them): DeepSeek-V3's first
stage's chunk 0 holds its 3 dense layers, which the stage's average layer read as MoE ones (pp 4
x vpp 4, 16/13 on 16 x 8 H100s: 9.0 ms of sends against 32.8 ms simulated). Vectorized over
candidates.
"""

from __future__ import annotations

import numpy as np

from sp_planner.columns import take_rows
from sp_planner.cost.chunk_path import kind_chunk_blocks_s
from sp_planner.cost.pipeline_path import StageBlocks, compute_blocks, middle_chunk_forwards_s
from sp_planner.cost.stage_layer_times import KindTimes
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline_order import last_group, micro_batch_group
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec

# Model chunk classes of a stage's vpp chunks: chunk 0 (the embedding's on the first stage), one
# between (as the last on the first and middle stages, as chunk 0 on the last), the last (the
# output layer's and loss's on the last stage).
CHUNK0, BETWEEN, LAST = 0, 1, 2


def edge_sends_s(beside, stages, pp, vpp, transfer_s, *, compute_s, bwd_extra_s, fwd_layer_s, bwd_layer_s,
                 micro_batches=None, vpp_group=None):
    """interleaved_edge_sends_s over the compute blocks of `stages`' layers (cost.pipeline_path.
    compute_blocks' arguments) where the sends run `beside` the compute (cost.overlap.
    pp_sends_beside_compute), 0 elsewhere; priced on those rows alone (columns.take_rows).
    `micro_batches`: m, whose micro-batch groups (pipeline_order.micro_batch_group) the wraps' slack
    counts; None: groups of pp. `vpp_group`: the plans' own groups (micro_batch_group's `pinned`)."""
    n = np.size(pp)
    rows = np.flatnonzero(np.broadcast_to(beside, (n,)) & (np.asarray(pp) > 1))
    out = np.zeros(n)
    if not len(rows):
        return out
    r = take_rows(dict(layers=tuple(stages), compute_s=compute_s, bwd_extra_s=bwd_extra_s, fwd_s=fwd_layer_s,
                       bwd_s=bwd_layer_s, pp=np.asarray(pp), vpp=np.broadcast_to(vpp, (n,)),
                       hop_s=np.broadcast_to(transfer_s, (n,)),
                       m=np.broadcast_to(np.nan if micro_batches is None else micro_batches, (n,)),
                       group=np.broadcast_to(0 if vpp_group is None else vpp_group, (n,))), rows, n)
    blocks = compute_blocks(r["layers"], r["compute_s"], (1.0, np.maximum(r["pp"] - 2, 0), 1.0), r["bwd_extra_s"],
                            fwd_layer_s=r["fwd_s"], bwd_layer_s=r["bwd_s"], vpp=r["vpp"])
    out[rows] = interleaved_edge_sends_s(blocks, r["pp"], r["vpp"], r["hop_s"],
                                         None if micro_batches is None else r["m"], r["group"])
    return out


def interleaved_edge_sends_s(blocks: tuple[StageBlocks, StageBlocks, StageBlocks], pp, vpp, transfer_s,
                             micro_batches=None, vpp_group=None):
    """Seconds of pipeline transfers the interleaved schedule waits for on its fill and drain
    (module docstring), over the first, middle and last stages' compute `blocks`
    (cost.pipeline_path.compute_blocks); `transfer_s` one hop. 2 (pp - 1) hops without virtual
    stages; 0 without a pipeline. `micro_batches`, `vpp_group`: wrap_sends_s'."""
    fwd, bwd = _chunk_blocks(blocks, np.asarray(vpp))
    return wrap_sends_s(fwd, bwd, pp, vpp, transfer_s, micro_batches, vpp_group)


def kinds_edge_sends_s(model: ModelSpec, seq_len: int, c: Candidates, kinds: KindTimes, beside, transfer_s, *,
                       first_s, first_bwd_s, head_s, head_bwd_s, micro_batches=None) -> np.ndarray:
    """interleaved_edge_sends_s of the interleaved candidates among `kinds.rows` whose sends run
    `beside` the compute (NaN elsewhere), each chunk's blocks its own layers' kinds' with the ends'
    work (cost.chunk_path.kinds_path_s' arguments): the first stage, the slowest middle one (as
    cost.stage_layer_times picks it) and the last, each one's chunk 0, chunk 1 and last chunk.
    `micro_batches`: wrap_sends_s'."""
    n = len(c.pp)
    out = np.full(n, np.nan)
    picked = (np.broadcast_to(beside, (n,)) & (c.pp > 1) & (c.vpp > 1))[kinds.rows]
    rows, at_kinds = kinds.rows[picked], np.flatnonzero(picked)

    def at_rows(values) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))[rows]

    hop, first, first_bwd, head, head_bwd = (at_rows(v) for v in (transfer_s, first_s, first_bwd_s, head_s,
                                                                   head_bwd_s))
    m = None if micro_batches is None else at_rows(micro_batches)
    columns = [c.pp[rows], c.vpp[rows], c.first_stage_layers[rows], c.last_stage_layers[rows]]
    for row, at in distinct_groups(columns):
        pp, vpp, first_n, last_n = (int(column[row]) for column in columns)
        fwd, bwd = kind_chunk_blocks_s(model, seq_len, kinds, at_kinds[at], pp, vpp, first_n, last_n,
                                       first_s=first[at], first_bwd_s=first_bwd[at], head_s=head[at],
                                       head_bwd_s=head_bwd[at])  # (pp, vpp, rows)
        mid = 1 + np.argmax((fwd + bwd)[1:-1].sum(axis=1), axis=0) if pp > 2 else np.zeros(len(at), np.int64)
        by_stage = [np.take_along_axis(x, mid[None, None, :], axis=0)[0] if pp > 2 else x[0] for x in (fwd, bwd)]
        chunks = (0, 1, vpp - 1)

        def classes(x, middle):  # (first, middle, last) stage's (chunk 0, chunk 1, last chunk) blocks
            return [tuple(x[0, j] for j in chunks), tuple(middle[j] for j in chunks), tuple(x[-1, j] for j in chunks)]

        out[rows[at]] = wrap_sends_s(classes(fwd, by_stage[0]), classes(bwd, by_stage[1]), np.full(len(at), pp),
                                     np.full(len(at), vpp), hop[at], None if m is None else m[at],
                                     c.vpp_group[rows[at]])
    return out


def wrap_sends_s(fwd, bwd, pp, vpp, transfer_s, micro_batches=None, vpp_group=None, *, fwd_round=None):
    """interleaved_edge_sends_s over each stage kind's (first, middle, last) forward `fwd` and
    backward `bwd` blocks of its (chunk 0, a chunk between, last chunk). In micro-batch groups of
    N (pipeline_order.micro_batch_group of `micro_batches`; None: pp) p runs the first group's N - 1
    others of a chunk beside a fill's wrap and the last group's r - 1 (pipeline_order.last_group)
    beside a drain's, rather than pp - 1 (get_schedule_table, schedules.py lines 989-1016 at
    d98e8a6); N the plans' own where `vpp_group` names them (micro_batch_group's `pinned`). `fwd_round`:
    the other stages' forward blocks a fill's wrap goes round, micro-batch 0's (ZeRO-2's with each
    chunk's parameter gather, path_sends_s); None: `fwd`."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    hops = pp * transfer_s
    middles = np.maximum(pp - 2, 0)
    fill_jobs = drain_jobs = pp
    if micro_batches is not None:
        fill_jobs = micro_batch_group(pp, micro_batches, vpp_group)
        drain_jobs = pp if fill_jobs is pp else last_group(pp, micro_batches, vpp_group)

    def waits(x, own, ahead, past, jobs=fill_jobs, rounds=None):
        """One wrap's exposed hops: p's chunk `own`, the stages above p in chunk `ahead` and
        those below it in chunk `past` (forward: c, c, c + 1; backward: c - 1, c - 1, c), theirs
        of `rounds` (None: x)."""
        return np.clip(hops - _slack_s(x, own, ahead, past, middles, jobs, x if rounds is None else rounds), 0.0,
                       hops)

    between = np.maximum(vpp - 3, 0)  # wraps between two chunks between, each way
    # Forward wraps: chunk 0 -> 1, between -> between, into the last chunk (vpp 2: 0 -> last).
    fwd_wraps = np.where(vpp == 2, waits(fwd, CHUNK0, CHUNK0, LAST, rounds=fwd_round),
                         waits(fwd, CHUNK0, CHUNK0, BETWEEN, rounds=fwd_round)
                         + between * waits(fwd, BETWEEN, BETWEEN, BETWEEN, rounds=fwd_round)
                         + waits(fwd, BETWEEN, BETWEEN, LAST, rounds=fwd_round))
    # Backward wraps: out of the last chunk, between -> between, into chunk 0 (vpp 2: last -> 0),
    # each the last micro-batch's, which goes round while p runs the chunk it enters for the last
    # group's others: p's blocks of chunk c - 1, those below p in chunk c, those above in c - 1.
    bwd_wraps = np.where(vpp == 2, waits(bwd, CHUNK0, CHUNK0, LAST, drain_jobs),
                         waits(bwd, BETWEEN, BETWEEN, LAST, drain_jobs)
                         + between * waits(bwd, BETWEEN, BETWEEN, BETWEEN, drain_jobs)
                         + waits(bwd, CHUNK0, CHUNK0, BETWEEN, drain_jobs))
    wraps = np.where(vpp > 1, fwd_wraps + bwd_wraps, 0.0)
    return np.where(pp > 1, 2 * (pp - 1) * transfer_s + wraps, 0.0)


def path_sends_s(blocks: tuple[StageBlocks, StageBlocks, StageBlocks],
                 bare: tuple[StageBlocks, StageBlocks, StageBlocks], pp, vpp, transfer_s, micro_batches,
                 vpp_group=None):
    """The fill's hops exposed over the blocks ZeRO-2/3's traffic lengthens (cost.pipeline_dp)
    beyond those over the same stages' compute blocks `bare`, which cost.step's sends count
    (interleaved_edge_sends_s); `transfer_s` one hop where the sends run beside the compute (0
    elsewhere). A fill's wrap goes round the other stages' forwards of micro-batch 0, each its
    chunk's first, with its share of ZeRO-2's overlapped parameter gathers (StageBlocks.gather_s,
    as cost.pipeline_path reads them), while p runs its group's N - 1 other forwards of its chunk
    without (ZeRO-3's gathers, in every forward block, both alike): each receive is waited for
    before its block (schedules.py forward_backward_pipelining_with_interleaving,
    recv_prev_wait_handle.wait(), line 1588 at d98e8a6), so the gathers take the slack that hid
    the hops. The drain's wraps are the compute's: every micro-batch's reduce-scatters lengthen
    p's backwards and the others' alike. Llama-3-8B at 4K on 8 x 8 H100, pp 4 x vpp 4 x tp 2,
    ZeRO-2, m 9 (groups of 5 + 4): p's 4 other chunk-c forwards hid a wrap's 4 hops behind 3
    stages' plain forwards, not behind 3 gathering ones; the simulator's path holds all 15 of the
    fill's hops (26 in all against 14 without the traffic). `vpp_group`: wrap_sends_s'."""
    vpp = np.asarray(vpp)
    fwd = _chunk_blocks(blocks, vpp)[0]
    bare_fwd, bare_bwd = _chunk_blocks(bare, vpp)
    share = [np.asarray(s.gather_s) / vpp for s in blocks]  # a chunk's first forward's gathers
    fwd_round = [tuple(x + extra for x in chunks) for chunks, extra in zip(fwd, share)]
    traffic = wrap_sends_s(fwd, bare_bwd, pp, vpp, transfer_s, micro_batches, vpp_group, fwd_round=fwd_round)
    return traffic - wrap_sends_s(bare_fwd, bare_bwd, pp, vpp, transfer_s, micro_batches, vpp_group)


def _chunk_blocks(blocks, vpp):
    """([forward], [backward]) per stage kind (first, middle, last): its (chunk 0's, a chunk
    between's, the last chunk's) block, as cost.pipeline_path.critical_path_s reads them."""
    first, middle, last = blocks
    f_last0 = np.where(vpp > 1, (last.forward_s - last.last_fwd_s) / np.maximum(vpp - 1, 1), last.forward_s)
    # The first stage's end chunk is its chunk 0 (with the embedding), a middle or the last stage's
    # its last (pipeline_chunks.end_chunk_layers): the chunks before those last ones are full.
    fwd = [(first.forward_s - (vpp - 1) * first.last_fwd_s, first.last_fwd_s, first.last_fwd_s),
           (*middle_chunk_forwards_s(middle, vpp), middle.last_fwd_s), (f_last0, f_last0, last.last_fwd_s)]
    bwd = [(first.first_bwd_s, first.last_bwd_s, first.last_bwd_s)]
    bwd += [(s.first_bwd_s, s.first_bwd_s, s.last_bwd_s) for s in (middle, last)]
    return fwd, bwd


def _slack_s(x, own, ahead, past, middles, jobs, rounds):
    """The most slack any one stage p has at a wrap (module docstring): the first (every other
    stage ahead of it), the last (every other one past), or a middle one at rank j (the first,
    j - 1 middle ones past; pp - 2 - j middle ones and the last ahead), linear in j, so at j = 1
    or j = pp - 2; p runs `jobs` - 1 blocks of its own (of `x`) meanwhile (the group's others:
    pp - 1, or N - 1 and r - 1, wrap_sends_s), the others the wrapping micro-batch's (`rounds`)."""
    first, mid, last = rounds
    at_first = (jobs - 1) * x[0][own] - middles * mid[ahead] - last[ahead]
    at_last = (jobs - 1) * x[2][own] - first[past] - middles * mid[past]
    lead = (jobs - 1) * x[1][own] - first[past] - last[ahead]
    at_mid = np.maximum(lead - (middles - 1) * mid[ahead], lead - (middles - 1) * mid[past])
    return np.maximum(np.maximum(at_first, at_last), np.where(middles > 0, at_mid, -np.inf))
