"""The data-parallel passes a stage runs once a step (ZeRO-0's gradient all-reduce, ZeRO-1's
reduce-scatter, ZeRO-1/2's parameter gather) against the compute they hide behind: chunk by chunk
on an interleaved stage (chunked_exposed_s), ZeRO-2's gathers behind the first forwards
(chunks_gather_s). cost.dp_exposure holds the per-micro-batch passes and the pieces both share
(DPTimes, Edges, hidden_behind, last_calls_s). Vectorized over candidates."""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dp_exposure import DPTimes, Edges, hidden_behind, last_calls_s
from sp_planner.cost.overlap import Overlap, chunk_gathers_ahead
from sp_planner.pipeline_order import last_group, micro_batch_group


def chunked_exposed_s(total_s, chunk_s, unhideable_s, window_s, *, pp, vpp, overlapped: bool,
                      launched_whole: bool = False, chunk0_extra_s=0.0, rank=0, end_share=1.0, phases_s=None,
                      jobs=None, lead_s=0.0):
    """Exposed seconds of a once-a-step data-parallel pass (ZeRO-0/1's gradient sync, ZeRO-1's
    parameter gather) on a stage of an interleaved pipeline. Each later model chunk is one call of
    chunk_s (cost.buckets._chunked), chunk 0 the rest (its buckets and the embedding's); window_s
    is one micro-batch's backward (forward) of the stage, a chunk's being 1/vpp of it. Gradients:
    Megatron syncs chunk c after its last micro-batch's backward (schedules.py
    forward_backward_pipelining_with_interleaving, backward_step_helper_postprocess ->
    grad_sync_func[chunk]), and the cooldown then runs c x J more chunk backwards (the last
    group's chunks in reverse, J micro-batches each: `jobs`, pipeline_order.last_group, m % N or
    N in groups of N, get_schedule_table lines 989-1016; pp where None, as in groups of pp with m
    a multiple of pp). Parameters: chunk c >= 2 is gathered when
    chunk c - 1 starts, J chunk forwards before its use (the first group's: `jobs` N,
    pipeline_order.micro_batch_group), chunks 0 and 1 at the step's start
    (chunk_gathers_ahead). One stream holds them all, so a chunk's call queues behind the earlier
    ones: exposed is chunk 0's own pass behind its chunk's window (hidden_behind) or, worse, the
    queue of chunk 0 and chunks 1..c, first + c (chunk_s - J x window_s / vpp), worst at c = 1
    or c = vpp - 1. `launched_whole` (Overlap.aligned_grad_reduce): the schedule runs every
    backward with the bucket hooks' sync disabled and launches a chunk's buckets together after
    its last micro-batch (enable_grad_sync(), grad_sync_func[chunk], disable_grad_sync();
    Megatron-LM d98e8a6), on pipeline rank `rank` r backwards after it (lines 1445-1456), so chunk
    0's, issued after the stage's last backward, hides behind nothing: its own pass is exposed
    whole. Without virtual stages (or overlap) it is hidden_behind of the whole pass.
    `chunk0_extra_s`: a chunk-0 backward's work beyond its layers (the first stage's embedding
    backward, which runs with chunk 0 only: Megatron builds the embedding into chunk 0,
    megatron/training/training.py lines 2390-2399 at d98e8a6), so the J chunk-0 backwards between
    chunk 1's call and chunk 0's hide J x chunk0_extra_s more of the queue; the last rank's last
    chunk holds the output layer's calls (cost.buckets._chunked). `end_share`: a middle stage's
    last chunk's layers over a full chunk's where a layout split leaves that end chunk short
    (pipeline_chunks.chunk_shape: Llama-3-8B's 6-layer middle stages over vpp 4 hold 2 / 2 / 2 /
    0): its call is the rest of the stage's, whichever chunk 0 and the others are full, each full
    chunk's backward window_s / (vpp - 1 + end_share), the queue read at each chunk's launch (the
    last chunk's first); 1 elsewhere (even chunks, the end stages). `phases_s`: the first stage's
    (D_1, D_full, D_top) of cost.pipeline_tails.first_stage_phases_s, its drain from its last
    backward of chunk k to its last of chunk k - 1 (k = 1, a middle k, vpp - 1), where it waits
    for the stages above beyond its own J chunk backwards: the queue drains that much longer.
    `lead_s`: of window_s, what runs before the pass's first call is issued (Megatron issues a
    bucket's call once all its parameters' gradients are ready, param_and_grad_buffer.py
    register_grad_ready -> start_grad_sync, Megatron-LM d98e8a6), less what runs after window_s in
    the same backward; without virtual stages only (cost.pipeline_tails gives it)."""
    vpp = np.asarray(vpp)
    jobs = pp if jobs is None else jobs
    whole = hidden_behind(total_s, window_s - lead_s, unhideable_s, overlapped)
    if not overlapped:
        return whole
    # The last chunk's call beyond a full chunk's: the last stage's output layer, a short middle
    # end chunk's missing layers (negative; Megatron syncs an empty chunk's none: cost.buckets._chunked).
    short = np.asarray(end_share) < 1
    head = np.where((rank == pp - 1) & (pp > 1), np.maximum(0.0, total_s - vpp * chunk_s),
                    np.where(short, total_s - vpp * chunk_s, 0.0))
    first = np.maximum(0.0, total_s - (vpp - 1) * chunk_s - head)
    chunk_window = window_s / (vpp - 1 + np.asarray(end_share))  # a full chunk's (window_s / vpp: even)
    own = first if launched_whole else hidden_behind(first, chunk_window, unhideable_s, True)
    behind = chunk_s - jobs * chunk_window  # a later chunk's call beyond the chunk backwards after it
    # Chunk c's call (c >= 1) leaves c - 1 chunks' J backwards and chunk 0's before chunk 0's: the
    # queue's longest at c = 1, vpp - 2 (full chunks) or vpp - 1 (the last, with its head; alone at
    # vpp 2). Where head >= 0 the last's reads as max(behind, (vpp - 1) behind + head) did.
    lag = rank * chunk_window if launched_whole else 0.0
    # The first stage's waits in the drain beyond its own backwards (0 where it runs them back to back).
    wait1: np.ndarray | float = 0.0
    wait: np.ndarray | float = 0.0
    wait_top: np.ndarray | float = 0.0
    if phases_s is not None:
        wait1, wait, wait_top = (np.maximum(0.0, phase - jobs * own_s) for phase, own_s in
                                 zip(phases_s, (chunk_window + chunk0_extra_s, chunk_window, chunk_window)))
        wait_top = np.where(vpp > 2, wait_top, 0.0)  # at vpp 2 chunk 1 is the top: its phase is D_1
    middle_waits = np.maximum(vpp - 3, 0) * wait
    full = np.where(vpp > 2, np.maximum(behind - wait1, (vpp - 2) * behind - wait1 - middle_waits), -np.inf)
    top = (vpp - 1) * behind + head - wait1 - middle_waits - wait_top
    queued = first + np.maximum(full, top) + lag - jobs * chunk0_extra_s
    return np.where(vpp > 1, np.maximum(own, queued), whole)


def chunks_gather_s(times: DPTimes, fwd_window_s, layers, chunks, overlapped: bool, *, lead_s=0.0, after_s=0.0,
                    before_s=0.0):
    """Exposed seconds of ZeRO-2's once-a-step parameter gather over a stage's `chunks` model
    chunks (fwd_window_s: one micro-batch's forward of its `layers` layers): each chunk is its own
    FSDP module (micro_batch_dp_s), its calls issued when its forward starts, and a layer computes
    only once its own calls have landed (Megatron-FSDP's pre-forward hook, MegatronFSDP.
    all_gather_and_wait_parameters_ready -> AllGatherPipeline.wait_bucket_ready; DDP's
    _make_forward_pre_hook -> finish_param_sync; Megatron-LM d98e8a6). So a chunk's calls hide
    behind its forward less what its last layers compute after them: its last layer's forward
    less the TP all-gather before its first GEMM (`lead_s`, Edges.fwd_lead_s, which waits for
    none), or the two last layers' less that and the last layer's calls (_top_wait_s), on each
    chunk but the last, whose is `after_s` (after_last_gather_s; 0 where not given); and behind
    `before_s`, the first stage's embedding forward (Edges.fwd_head_s), which waits for the
    embedding's bucket only (DPTimes.tail_gather_s). The floor: each chunk's first layer's calls
    past the first (later_first_s), the first's less what of them that forward hides."""
    t = times
    chunk_first = (t.param_all_gather_s - t.root_gather_s) / layers
    fwd_layer = fwd_window_s / layers
    top = _top_wait_s(t, fwd_layer, chunk_first, layers / chunks)
    lag = (chunks - 1) * np.maximum(0.0, fwd_layer - lead_s + top) + after_s
    first = np.maximum(t.tail_gather_s, t.first_all_gather_s - before_s - _chunk0_lead_s(lead_s, chunks))
    floor = first + (chunks - 1) * later_first_s(t, chunk_first, lead_s)
    return hidden_behind(t.param_all_gather_s, fwd_window_s + before_s - lag, floor, overlapped)


def later_first_s(times: DPTimes, share_s, lead_s=0.0):
    """What a later model chunk's first forward waits for its ZeRO-2 gather calls: its first
    layer's own buckets (DPTimes.later_first_gather_s: each chunk its own DDP / FSDP module with
    its own buckets, Megatron-LM training.py wrap_model_chunks_with_ddp lines 2300-2331 at
    d98e8a6) less the TP all-gather before its first GEMM (`lead_s`, Edges.fwd_lead_s, which
    waits for none: sim.layer_program._forward_layer); a layer's share (`share_s`) where they are
    not given (one chunk, ZeRO-1)."""
    own = np.asarray(times.later_first_gather_s)
    return np.where(own > 0, np.maximum(0.0, own - lead_s), share_s)


def _chunk0_lead_s(lead_s, chunks):
    """Of chunk 0's first calls, what its first layer's TP all-gather (`lead_s`) runs beside, as
    each later chunk's (later_first_s; sim.layer_program._forward_layer): where the stage has
    later chunks. At one chunk none, as before: ZeRO-1's pipelined gathers (cost.pipeline_tails'
    fill) count no lead on the later stages, and ZeRO-2's must not undercut them
    (tests/cost/test_overlap.py)."""
    return np.where(np.asarray(chunks) > 1, lead_s, 0.0)


def first_chunk_gather_s(gather_s, times: DPTimes, layers, chunks, *, before_s=0.0, lead_s=0.0):
    """Of a stage's `gather_s` (chunks_gather_s's), what its chunk 0's first forward exposes:
    its floor's share, chunk 0's calls (the embedding's bucket with its first layer's, less what
    `before_s` hides) against each later chunk's first layer's (chunks_gather_s's floor, `lead_s`
    its). Exact where the floor sets gather_s, pro rata where the window does; the whole at one
    chunk."""
    t = times
    some = np.where(np.asarray(layers) > 0, layers, 1.0)
    chunk_first = (t.param_all_gather_s - t.root_gather_s) / some
    first = np.maximum(t.tail_gather_s, t.first_all_gather_s - before_s - _chunk0_lead_s(lead_s, chunks))
    floor = first + (np.asarray(chunks) - 1) * later_first_s(t, chunk_first, lead_s)
    return np.where(floor > 0, gather_s * first / np.where(floor > 0, floor, 1.0), gather_s / chunks)


def after_last_gather_s(times: DPTimes, fwd_layer_s, lead_s, *, layers, chunks=1):
    """What a stage's last model chunk (of `chunks` over its `layers` layers) computes after its
    ZeRO-1/2 gather calls land (chunks_gather_s's after_s): its last layer's forward less the TP
    all-gather before its first GEMM (`lead_s`, Edges.fwd_lead_s; sim.layer_program.
    _forward_layer starts it without waiting for the calls) and less what the output layer's
    calls (DPTimes.head_gather_s: a single stage's and the last stage's), queued after that
    layer's, last beside it; the layer below waits longer where the last one's calls are short
    (_top_wait_s)."""
    some = np.where(np.asarray(layers) > 0, layers, 1.0)  # a stage without layers (pp 2's middle) has no share
    share = (times.param_all_gather_s - times.root_gather_s) / some
    top = _top_wait_s(times, fwd_layer_s, share, layers / np.asarray(chunks))
    return np.maximum(0.0, fwd_layer_s - lead_s - times.head_gather_s + top)


def _top_wait_s(times: DPTimes, fwd_layer_s, share_s, chunk_layers):
    """How much longer than a chunk's last layer the layer below it computes after its own calls
    land: a layer's forward less the last layer's calls, where the chunk has two layers or more. A
    bucket spanning two layers is the lower one's (cost.buckets' granularity, as sim.dp_work
    issues them), so a chunk's first layer carries the excess over a layer's share (`share_s`;
    its calls: DPTimes.first_all_gather_s less the embedding's, root_gather_s less head_gather_s)
    and its last layer lacks as much (as cost.dp_exposure._zero2_exposed_s's top_s)."""
    first_layer = times.first_all_gather_s - (times.root_gather_s - times.head_gather_s)
    last_layer = np.maximum(0.0, 2 * share_s - first_layer)
    return np.where(np.asarray(chunk_layers) >= 2, np.maximum(0.0, fwd_layer_s - last_layer), 0.0)


def once_a_step_s(overlap: Overlap, *, zero, layers, times: DPTimes, fwd_window_s, bwd_window_s, chunks=1, pp=1,
                  edges: Edges | None = None, rank=0, end_share=1.0, phases_s=None, micro_batches=None,
                  vpp_group=None, grad_lead_s=0.0):
    """(ZeRO-0's all-reduce, ZeRO-1's reduce-scatter, ZeRO-1/2's parameter gather): the exposed
    seconds of a stage's once-a-step passes (cost.dp_passes.dp_exposed_s's arguments), each on every
    row; `end_share` a middle stage's short end chunk's, `phases_s` the first stage's drain phases
    (chunked_exposed_s, its gradient syncs); `micro_batches`: m, whose last group's backwards follow
    each chunk's sync and whose first group's forwards each chunk's gather (None: groups of pp);
    `vpp_group` the plans' own groups (pipeline_order.micro_batch_group's `pinned`); `grad_lead_s`
    the gradient syncs' chunked_exposed_s lead_s."""
    t = times
    # Interleaved (chunks > 1): each model chunk's sync and gather on its own (chunked_exposed_s).
    chunk = dict(pp=pp, vpp=chunks)
    # The first stage's chunk-0 backwards carry the embedding's (Edges.bwd_tail_s; 0 on the others).
    grads = dict(chunk, launched_whole=overlap.aligned_grad_reduce, rank=rank, end_share=end_share, phases_s=phases_s,
                 chunk0_extra_s=0.0 if edges is None else edges.bwd_tail_s,
                 jobs=None if micro_batches is None else last_group(pp, micro_batches, vpp_group), lead_s=grad_lead_s)
    reduce0 = chunked_exposed_s(t.grad_all_reduce_s, t.chunk_all_reduce_s,
                                last_calls_s(t.last_all_reduce_s, t.tail_all_reduce_s, edges), bwd_window_s,
                                overlapped=overlap.grad_all_reduce, **grads)
    reduce1 = chunked_exposed_s(t.grad_reduce_scatter_s, t.chunk_reduce_scatter_s,
                                last_calls_s(t.last_reduce_scatter_s, t.tail_reduce_scatter_s, edges), bwd_window_s,
                                overlapped=overlap.grad_reduce, **grads)
    # ZeRO-2's gather (FSDP, no chunk alignment) and ZeRO-1's without it behind the step's first
    # forward, chunk by chunk, a layer computing once its own calls land (Megatron-FSDP's
    # _pre_forward_param_unshard -> wait_bucket_ready; DDP's forward pre-hook -> finish_param_sync).
    lead, before = (0.0, 0.0) if edges is None else (edges.fwd_lead_s, edges.fwd_head_s)
    fwd_layer = fwd_window_s / np.where(np.asarray(layers) > 0, layers, 1.0)
    after = after_last_gather_s(t, fwd_layer, lead, layers=layers, chunks=chunks)
    first_group = None if micro_batches is None else micro_batch_group(pp, micro_batches, vpp_group)
    gather12 = np.where(chunk_gathers_ahead(overlap, zero, chunks),
                        chunked_exposed_s(t.param_all_gather_s, t.chunk_all_gather_s, t.first_all_gather_s,
                                          fwd_window_s, overlapped=True, **chunk, jobs=first_group),
                        chunks_gather_s(t, fwd_window_s, layers, chunks, overlap.param_gather, lead_s=lead,
                                        after_s=after, before_s=before))
    return reduce0, reduce1, gather12
