"""The data-parallel passes a stage runs once a step (ZeRO-0's gradient all-reduce, ZeRO-1's
reduce-scatter, ZeRO-1/2's parameter gather) against the compute they hide behind: chunk by chunk
on an interleaved stage (chunked_exposed_s), ZeRO-2's gathers behind the first forwards
(chunks_gather_s). cost.dp_exposure holds the per-micro-batch passes and the pieces both share
(DPTimes, Edges, hidden_behind, last_calls_s). Vectorized over candidates."""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dp_exposure import DPTimes, Edges, hidden_behind, last_calls_s
from sp_planner.cost.overlap import Overlap, chunk_gathers_ahead


def chunked_exposed_s(total_s, chunk_s, unhideable_s, window_s, *, pp, vpp, overlapped: bool,
                      launched_whole: bool = False, chunk0_extra_s=0.0, rank=0):
    """Exposed seconds of a once-a-step data-parallel pass (ZeRO-0/1's gradient sync, ZeRO-1's
    parameter gather) on a stage of an interleaved pipeline. Each later model chunk is one call of
    chunk_s (cost.buckets._chunked), chunk 0 the rest (its buckets and the embedding's); window_s
    is one micro-batch's backward (forward) of the stage, a chunk's being 1/vpp of it. Gradients:
    Megatron syncs chunk c after its last micro-batch's backward (schedules.py
    forward_backward_pipelining_with_interleaving, backward_step_helper_postprocess ->
    grad_sync_func[chunk]), and the cooldown then runs c x pp more chunk backwards (the last
    group's chunks in reverse, pp micro-batches each). Parameters: chunk c >= 2 is gathered when
    chunk c - 1 starts, pp chunk forwards before its use, chunks 0 and 1 at the step's start
    (chunk_gathers_ahead). One stream holds them all, so a chunk's call queues behind the earlier
    ones: exposed is chunk 0's own pass behind its chunk's window (hidden_behind) or, worse, the
    queue of chunk 0 and chunks 1..c, first + c (chunk_s - pp x window_s / vpp), worst at c = 1
    or c = vpp - 1. `launched_whole` (Overlap.aligned_grad_reduce): the schedule runs every
    backward with the bucket hooks' sync disabled and launches a chunk's buckets together after
    its last micro-batch (enable_grad_sync(), grad_sync_func[chunk], disable_grad_sync();
    Megatron-LM d98e8a6), on pipeline rank `rank` r backwards after it (lines 1445-1456), so chunk
    0's, issued after the stage's last backward, hides behind nothing: its own pass is exposed
    whole. Without virtual stages (or overlap) it is hidden_behind of the whole pass.
    `chunk0_extra_s`: a chunk-0 backward's work beyond its layers (the first stage's embedding
    backward, which runs with chunk 0 only: Megatron builds the embedding into chunk 0,
    megatron/training/training.py lines 2390-2399 at d98e8a6), so the pp chunk-0 backwards between
    chunk 1's call and chunk 0's hide pp x chunk0_extra_s more of the queue; the last rank's last
    chunk holds the output layer's calls (cost.buckets._chunked)."""
    vpp = np.asarray(vpp)
    whole = hidden_behind(total_s, window_s, unhideable_s, overlapped)
    if not overlapped:
        return whole
    head = np.where((rank == pp - 1) & (pp > 1), np.maximum(0.0, total_s - vpp * chunk_s), 0.0)
    first = np.maximum(0.0, total_s - (vpp - 1) * chunk_s - head)
    chunk_window = window_s / vpp
    own = first if launched_whole else hidden_behind(first, chunk_window, unhideable_s, True)
    behind = chunk_s - pp * chunk_window  # a later chunk's call beyond the chunk backwards after it
    # Chunk c's call (c >= 1) leaves c - 1 chunks' pp backwards and chunk 0's before chunk 0's.
    lag = rank * chunk_window if launched_whole else 0.0
    queued = first + np.maximum(behind, (vpp - 1) * behind + head) + lag - pp * chunk0_extra_s
    return np.where(vpp > 1, np.maximum(own, queued), whole)


def chunks_gather_s(times: DPTimes, fwd_window_s, layers, chunks, overlapped: bool, *, lead_s=0.0, after_s=0.0):
    """Exposed seconds of ZeRO-2's once-a-step parameter gather over a stage's `chunks` model
    chunks (fwd_window_s: one micro-batch's forward of its `layers` layers): each chunk is its own
    FSDP module (micro_batch_dp_s), its calls issued when its forward starts, and a layer computes
    only once its own calls have landed (Megatron-FSDP's pre-forward hook, MegatronFSDP.
    all_gather_and_wait_parameters_ready -> AllGatherPipeline.wait_bucket_ready; DDP's
    _make_forward_pre_hook -> finish_param_sync; Megatron-LM d98e8a6). So a chunk's calls hide
    behind its forward less what its last layer computes after them: its forward less the TP
    all-gather before its first GEMM (`lead_s`, Edges.fwd_lead_s, which waits for none), on each
    chunk but the last, whose is `after_s` (cost.pipeline_dp: that on a stage without the output
    layer, on the last stage what of it the output layer's calls, queued after it, do not cover;
    0 where not given, as a single stage and ZeRO-1's first stage are priced). The floor: each
    chunk's first layer's calls (a layer's share) past the first. hidden_behind of the whole pass
    for one chunk."""
    t = times
    chunk_first = (t.param_all_gather_s - t.root_gather_s) / layers
    lag = (chunks - 1) * np.maximum(0.0, fwd_window_s / layers - lead_s) + after_s
    return hidden_behind(t.param_all_gather_s, fwd_window_s - lag, t.first_all_gather_s + (chunks - 1) * chunk_first,
                         overlapped)


def once_a_step_s(overlap: Overlap, *, zero, layers, times: DPTimes, fwd_window_s, bwd_window_s, chunks=1, pp=1,
                  edges: Edges | None = None, rank=0):
    """(ZeRO-0's all-reduce, ZeRO-1's reduce-scatter, ZeRO-1/2's parameter gather): the exposed
    seconds of a stage's once-a-step passes (cost.dp_passes.dp_exposed_s's arguments), each on every row."""
    t = times
    # Interleaved (chunks > 1): each model chunk's sync and gather on its own (chunked_exposed_s).
    chunk = dict(pp=pp, vpp=chunks)
    # The first stage's chunk-0 backwards carry the embedding's (Edges.bwd_tail_s; 0 on the others).
    grads = dict(chunk, launched_whole=overlap.aligned_grad_reduce, rank=rank,
                 chunk0_extra_s=0.0 if edges is None else edges.bwd_tail_s)
    reduce0 = chunked_exposed_s(t.grad_all_reduce_s, t.chunk_all_reduce_s,
                                last_calls_s(t.last_all_reduce_s, t.tail_all_reduce_s, edges), bwd_window_s,
                                overlapped=overlap.grad_all_reduce, **grads)
    reduce1 = chunked_exposed_s(t.grad_reduce_scatter_s, t.chunk_reduce_scatter_s,
                                last_calls_s(t.last_reduce_scatter_s, t.tail_reduce_scatter_s, edges), bwd_window_s,
                                overlapped=overlap.grad_reduce, **grads)
    # ZeRO-2's gather (FSDP, no chunk alignment) behind the step's first forward, chunk by chunk.
    gather12 = np.where(chunk_gathers_ahead(overlap, zero, chunks),
                        chunked_exposed_s(t.param_all_gather_s, t.chunk_all_gather_s, t.first_all_gather_s,
                                          fwd_window_s, overlapped=True, **chunk),
                        chunks_gather_s(t, fwd_window_s, layers, chunks, overlap.param_gather))
    return reduce0, reduce1, gather12
