"""Exposed seconds of the data-parallel traffic on one rank: gradient syncs, parameter gathers and
ZeRO-3's per-layer traffic against the compute they hide behind, with the limits cost.overlap's
module docstring lists (buckets that cannot hide, the first layer never hidden, reshard after
forward gathering twice, the interleaved schedule's per-chunk syncs; ZeRO-3's pass layer by layer
is cost.layerwise's, a single stage's of mixed kinds cost.layer_walk's), per micro-batch or once a
step; a step's sum of them is cost.dp_passes'. Vectorized over candidates."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.cost.chunk_walk import ChunkWalks, walked_chunks_s
from sp_planner.cost.layer_walk import walked_zero3_s
from sp_planner.cost.layerwise import layerwise_exposed_s, rooted_forward_s

if TYPE_CHECKING:
    from sp_planner.cost.kind_passes import KindPasses
from sp_planner.cost.overlap import Overlap
from sp_planner.pipeline_chunks import end_chunk_layers


class DPTimes(NamedTuple):
    """Seconds of one pass of the data-parallel collectives over a stage's parameters on one rank
    (vectorized), each call paying its latency (cost.buckets, cost.links.ring_latency_s)."""

    grad_all_reduce_s: np.ndarray  # ZeRO-0: every bucket's all-reduce
    grad_reduce_scatter_s: np.ndarray  # ZeRO-1/2: every bucket's reduce-scatter (+ HSDP's replica all-reduce)
    param_all_gather_s: np.ndarray  # ZeRO-1/2: every bucket's parameter all-gather
    last_all_reduce_s: np.ndarray  # the buckets that cannot hide (cost.buckets BucketLayout.unhideable)
    last_reduce_scatter_s: np.ndarray
    first_all_gather_s: np.ndarray
    tail_all_reduce_s: np.ndarray  # of the last ones, those issued after the embedding's backward
    tail_reduce_scatter_s: np.ndarray
    layer_gather_s: np.ndarray  # ZeRO-3: one layer's all-gather ...
    layer_reduce_s: np.ndarray  # ... and reduce-scatter (+ HSDP's replica all-reduce)
    root_gather_s: np.ndarray  # ZeRO-3: the root unit's (embedding, final norm, output layer)
    root_reduce_s: np.ndarray
    # ZeRO-1/2: the output layer's calls (output layer, final norm, MTP's depths), gathered after
    # the last layer's in the forward: the root's less the embedding's on a single stage, the
    # root's on a pipeline's last stage, 0 elsewhere (cost.rank_tensors.stage_extras).
    head_gather_s: np.ndarray | float = 0.0
    # ZeRO-1/2: of the first calls, the embedding's bucket(s) (the tail's), which the embedding's
    # forward waits for (its last layer's tensors in them, cost.buckets); 0 without the embedding.
    tail_gather_s: np.ndarray | float = 0.0
    # ZeRO-0/1 with virtual stages: one later model chunk's single bucket (cost.buckets._chunked),
    # its all-reduce, reduce-scatter and parameter all-gather (0 without virtual stages).
    chunk_all_reduce_s: np.ndarray | float = 0.0
    chunk_reduce_scatter_s: np.ndarray | float = 0.0
    chunk_all_gather_s: np.ndarray | float = 0.0
    # ZeRO-2 with virtual stages (cost.bucket_counts._chunk_summary; 0 elsewhere): the reduce-scatters
    # of chunk 0's layers' buckets and of the last chunk's (on a model whose layers differ, else
    # 0), of the last chunk's first layer's and of chunk 1's first layer's, each chunk its own
    # layers' (cost.pipeline_blocks._chunk_traffic, _zero2_exposed_s).
    chunk0_reduce_scatter_s: np.ndarray | float = 0.0
    end_reduce_scatter_s: np.ndarray | float = 0.0
    end_first_reduce_scatter_s: np.ndarray | float = 0.0
    later_first_reduce_scatter_s: np.ndarray | float = 0.0
    # ZeRO-2 with virtual stages: the parameter all-gathers of chunk 1's first layer's buckets
    # (later_first's), which each later chunk's first forward waits for (cost.dp_once.
    # chunks_gather_s; 0 elsewhere: a layer's share stands for them).
    later_first_gather_s: np.ndarray | float = 0.0


class Edges(NamedTuple):
    """The work beside a layer chunk's data-parallel edges, one micro-batch (cost.step): before
    its first forward GEMM (the TP all-gather of its input), before its first backward GEMM (the
    TP all-gathers of the gradient and the saved input; under full recompute the recomputed
    forward's, under selective also the recomputed attention) and after its last backward GEMM
    (the TP reduce-scatter), all off the data-parallel stream (sim.layer_program orders them so)."""

    fwd_lead_s: np.ndarray | float
    bwd_lead_s: np.ndarray | float
    bwd_trail_s: np.ndarray | float
    # The embedding's backward after the first layer's (its TP all-gather and gradient passes,
    # cost.embedding_grad; the first stage's chunk 0): the last calls issued at that layer run
    # beside it, the embedding's own (the tail, the root unit's) only after it; the first stage's
    # chunk-0 block on the interleaved drain lasts it too (cost.pipeline_blocks._chunk_backward_s).
    bwd_tail_s: np.ndarray | float = 0.0
    # The embedding's forward before the first layer's (its TP collectives and lookup; the first
    # stage's chunk 0): it waits for the embedding's parameter calls only, the first layer's
    # queue on beside it (cost.dp_once.chunks_gather_s).
    fwd_head_s: np.ndarray | float = 0.0


def hidden_behind(total_s, window_s, unhideable_s, overlapped: bool):
    """Exposed seconds of `total_s` overlapped with `window_s`, of which `unhideable_s` (the last
    or first buckets) can never hide."""
    if not overlapped:
        return np.asarray(total_s, dtype=np.float64)
    return np.maximum(np.minimum(unhideable_s, total_s), total_s - window_s)


def zero3_forward_s(overlap: Overlap, times: DPTimes, fwd_layer_s, layers, *, before_s=0.0, edges: Edges):
    """ZeRO-3: exposed seconds of one forward pass of `layers` layers (a chunk's), each gathered
    ahead of use (layerwise_exposed_s), `before_s` the root unit's gather before the first."""
    return layerwise_exposed_s(times.layer_gather_s, 0.0, fwd_layer_s, layers, before_s=before_s,
                               prefetch=overlap.zero3_prefetch, ahead_s=edges.fwd_lead_s)


def micro_batch_dp_s(overlap: Overlap, *, zero, layers, times: DPTimes, fwd_window_s, bwd_window_s, reshard,
                     ahead_s=0.0, chunks=1, edges: Edges | None = None, head_s=0.0, root_gathers=1.0,
                     fwd_gathers=1.0, kinds: KindPasses | None = None, chunk=0, walks: ChunkWalks | None = None):
    """(exposed, busy) seconds of one micro-batch's data-parallel traffic on one pipeline stage
    under ZeRO-2/3, which reduce-scatter every micro-batch's gradients (ZeRO-3 also gathers its
    parameters every micro-batch); 0 under ZeRO-0/1, whose traffic goes once a step. A stage's
    backward ends only when that traffic has left: Megatron-FSDP reduces gradients "on every
    backward propagation" with optim_grads / optim_grads_params, and its root post-backward
    callback, queued at the end of each micro-batch's backward, makes the compute stream wait for
    the queued reduce-scatters (megatron_fsdp.py _root_post_backward, GradReducePipeline.reset ->
    wait_for_previous_grad_reduce(0); Megatron-LM d98e8a6). `ahead_s`: the compute before the
    stage's first layer in backward (the output layer's and the loss's on the last stage);
    `edges`: the TP collectives around a chunk's first and last GEMMs, which the first gather and
    the last reduce-scatter overlap (layerwise_exposed_s).
    `chunks`: the stage's model chunks (interleaved 1F1B, vpp), each wrapped on its own and run as
    its own forward and backward (Megatron's get_model builds one DDP/FSDP module a chunk), so each
    exposes its own first gather and last reduce-scatter; a ZeRO-2 chunk's (its first layer's
    buckets) its own, each chunk bucketed on its own (cost.bucket_counts._chunk_summary, DPTimes.
    later_first_*). ZeRO-2's calls hide chunk by chunk, each behind its own backward (its
    module's root post-backward waits for them), and a chunk's cannot start before its first
    layer's last GEMM is done: saturated, its queue starts a layer late less that layer's TP
    reduce-scatter (Edges.bwd_trail_s) and hides behind as much less; where the output layer's calls
    (`head_s`: the last stage's, issued after the loss's backward) open it, the last chunk, only as
    much as that layer outlasts them (sim.layer_program issues each layer's buckets after its
    backward: Llama-4-Maverick's 10 ms output-layer reduce ends 12 ms before its first, MoE,
    layer's buckets at pp 8 x vpp 2).
    `root_gathers`: ZeRO-3's root-unit gathers per micro-batch on average, 1 or 1/m where only the
    step's first forward gathers it (cost.fsdp.root_gathers_per_micro_batch): a forward with it
    and m - 1 without, averaged; `fwd_gathers` the same of the layers' forward gathers (1/m where a
    pipeline stage keeps them from the first forward on, cost.fsdp.stage_synced; 0 and 1 too).
    `kinds`: the layer kinds of the candidates whose ZeRO-3 passes are walked layer by layer
    (cost.kind_passes; None: none); `walks`: their chunks' walks where the caller has them
    (cost.chunk_walk.chunk_walks of the same arguments)."""
    t = times
    e = edges or Edges(0.0, 0.0, 0.0)
    # Each ZeRO stage's branch only where a candidate takes it (0 on the others; both at none).
    reduce2, zero3, busy3 = 0.0, 0.0, 0.0
    is2, is3 = zero == 2, zero == 3
    two, three = np.any(is2), np.any(is3)
    if two or not three:
        reduce2 = _zero2_exposed_s(overlap, t, e, layers=layers, bwd_window_s=bwd_window_s, chunks=chunks,
                                   head_s=head_s)
    if three or not two:
        zero3, busy3 = _zero3_exposed_s(overlap, t, e, layers=layers, fwd_window_s=fwd_window_s,
                                        bwd_window_s=bwd_window_s, reshard=reshard, ahead_s=ahead_s, chunks=chunks,
                                        root_gathers=root_gathers, fwd_gathers=fwd_gathers, chunk=chunk)
        if kinds is not None and np.any((kinds.order >= 0) & (zero == 3)):
            zero3, busy3 = walked_zero3_s(overlap, t, e, kinds, zero=zero, exposed=zero3, busy=busy3,
                                          fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s, reshard=reshard,
                                          ahead_s=ahead_s, root_gathers=root_gathers, fwd_gathers=fwd_gathers)
        # An interleaved stage's chunks, each walked on its own (cost.chunk_walk).
        zero3, busy3 = walked_chunks_s(overlap, t, e, kinds, zero=zero, exposed=zero3, busy=busy3,
                                       fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s, reshard=reshard,
                                       ahead_s=ahead_s, root_gathers=root_gathers, fwd_gathers=fwd_gathers,
                                       walks=walks)
    # np.select's answer by np.where (np.select broadcasts and copies every choice: slower on a chunk).
    exposed = np.where(is2, reduce2, np.where(is3, zero3, 0.0))
    busy = np.where(is2, t.grad_reduce_scatter_s, np.where(is3, busy3, 0.0))
    return exposed, busy


def _zero2_exposed_s(overlap: Overlap, t: DPTimes, e: Edges, *, layers, bwd_window_s, chunks, head_s):
    """micro_batch_dp_s's ZeRO-2 seconds: the gradients' reduce-scatters chunk by chunk."""
    # A layer's share of the stage's buckets (latency included).
    some = np.where(np.asarray(layers) > 0, layers, 1.0)  # a chunk without layers (counted split) has no share
    chunk_first = (t.grad_reduce_scatter_s - t.root_reduce_s) / some
    first_calls = last_calls_s(t.last_reduce_scatter_s, t.tail_reduce_scatter_s, e)
    # A later chunk's first layer's buckets: its own (each chunk bucketed on its own, cost.buckets.
    # _bucketed_chunks: the rest its walk leaves with them, which the first stage's chunk 0 leaves
    # to the embedding's bucket), the middle chunks' chunk 1's, the last chunk's its own; chunk 0's
    # but the embedding's where not priced (ZeRO-3, one chunk).
    first_layer = t.last_reduce_scatter_s - t.tail_reduce_scatter_s
    middle_first = np.where(np.asarray(t.later_first_reduce_scatter_s) > 0, t.later_first_reduce_scatter_s,
                            first_layer)
    end_first = np.where(np.asarray(t.end_first_reduce_scatter_s) > 0, t.end_first_reduce_scatter_s, middle_first)
    later_calls = np.maximum(0.0, middle_first - e.bwd_trail_s)
    end_calls = np.maximum(0.0, end_first - e.bwd_trail_s)
    single = np.asarray(chunks) == 1
    chunk_rs = chunk_first * layers / chunks  # a later chunk's layers' calls
    chunk_w, layer_w = bwd_window_s / chunks, bwd_window_s / some
    # A chunk's queue opens with its last layer's buckets, issued once that layer's last GEMM
    # ends, before its TP reduce-scatter (Edges.bwd_trail_s; cost.buckets' granularity, as
    # sim.layer_program issues them): a layer's backward less that late. Those buckets lack what
    # the next ones carry on (a later chunk's first layer's excess over a share, `middle_first`;
    # chunk 0's, on the first stage, leaves its rest to the embedding's bucket): where they
    # leave before the next layer's are issued the queue idles that long (the queue ends at the
    # latest issue plus the calls from it on; a layer's calls at least a layer's backward after).
    top_s = np.maximum(0.0, 2 * chunk_first - middle_first)
    idle_s = np.where(layers / np.asarray(chunks) >= 2, np.maximum(0.0, layer_w - top_s), 0.0)
    lag_s = np.maximum(0.0, layer_w - e.bwd_trail_s) + idle_s
    # The output layer's calls open the last chunk's queue: it idles from their end to the lag.
    head_lag_s = np.maximum(0.0, lag_s - head_s)
    # Chunk 0 (the stage's first layers, the first stage's embedding; the whole stage at vpp 1).
    # Chunk 0's queue runs on beside the embedding's backward (Edges.bwd_tail_s, the first stage's),
    # which follows its first layer's on the compute stream: that window hides it too.
    chunk0 = hidden_behind(t.grad_reduce_scatter_s - np.where(single, 0.0, head_s + (chunks - 1) * chunk_rs),
                           chunk_w - np.where(single, head_lag_s, lag_s) + e.bwd_tail_s, first_calls,
                           overlap.grad_reduce)
    middle2 = hidden_behind(chunk_rs, chunk_w - lag_s, later_calls, overlap.grad_reduce)
    last2 = hidden_behind(chunk_rs + head_s, chunk_w - head_lag_s, end_calls, overlap.grad_reduce)
    return chunk0 + np.where(single, 0.0, np.maximum(chunks - 2, 0) * middle2 + last2)


def _zero3_exposed_s(overlap: Overlap, t: DPTimes, e: Edges, *, layers, fwd_window_s, bwd_window_s, reshard, ahead_s,
                     chunks, root_gathers=1.0, fwd_gathers=1.0, chunk=0):
    """micro_batch_dp_s's ZeRO-3 (exposed, busy) seconds: every layer's gathers and reduce-scatters
    (`chunk`: the stage's full model chunk, pipeline.stage_chunk; 0 for its own ceiling)."""
    prefetch = overlap.zero3_prefetch
    # Parameters kept after forward (reshard_after_forward false) are not gathered in backward.
    bwd_gather = np.where(np.asarray(reshard, dtype=bool), t.layer_gather_s, 0.0)
    root_n, per_chunk = root_chunk_layers(layers, chunks, chunk)
    some = np.where(np.asarray(layers) > 0, layers, 1.0)  # a chunk without layers has no window to share
    fwd_w, bwd_w = fwd_window_s / some, bwd_window_s / some

    def forward(n, before_s=0.0):
        return zero3_forward_s(overlap, t, fwd_w, n, before_s=before_s, edges=e)

    def backward(n, after_s=0.0, loss_s=0.0, tail_s=0.0):
        return layerwise_exposed_s(bwd_gather, t.layer_reduce_s, bwd_w, n, after_s=after_s,
                                   prefetch=prefetch, ahead_s=loss_s + e.bwd_lead_s, behind_s=e.bwd_trail_s,
                                   lead_s=e.bwd_lead_s, tail_s=tail_s)

    # The root unit is gathered before the chunk holding it and leaves after its backward: the
    # first stage's chunk 0, the last stage's last chunk, whose backward the loss's opens
    # (cost.zero3_forwards.chunk_zero3_forwards_s), the chunk with a layer fewer under the counted split.
    # A chunk's forward without the root's gather, priced once for each layer-count array (the
    # root's chunk and the others share one where they hold as many layers, root_chunk_layers)
    # and only where read: rooted_forward_s reads the root's chunk's only where some forward
    # skips a gather, and the later chunks' is 0 x theirs on a single chunk.
    plain: dict[int, np.ndarray] = {}

    def bare(n):
        if id(n) not in plain:
            plain[id(n)] = forward(n)
        return plain[id(n)]

    rooted = forward(root_n, t.root_gather_s)
    every = np.all(np.asarray(root_gathers) == 1) and np.all(np.asarray(fwd_gathers) == 1)
    zero3 = ((rooted if every else rooted_forward_s(rooted, bare(root_n), root_gathers, fwd_gathers))
             + backward(root_n, t.root_reduce_s, ahead_s, e.bwd_tail_s))
    busy = _zero3_busy_s(t, layers, bwd_gather, root_gathers, fwd_gathers)
    if np.all(np.asarray(chunks) == 1) and _finite(t.layer_gather_s, bwd_gather, t.layer_reduce_s, fwd_w, bwd_w,
                                                    per_chunk, *e):
        # No later chunk: 0 x their exposure, finite and not negative on finite inputs, adds +0.
        return zero3 + 0.0, busy
    return zero3 + (chunks - 1) * (fwd_gathers * bare(per_chunk) + backward(per_chunk)), busy


def root_chunk_layers(layers, chunks, chunk=0):
    """(the root unit's chunk's, each other chunk's) decoder layers of a stage of `layers` over
    `chunks` model chunks: layers / chunks each, but under Megatron's counted split, where the
    chunk with the embedding (the first stage's chunk 0) or the loss (the last stage's last chunk)
    holds a layer fewer (pipeline_chunks.chunk_layer_counts), that chunk the floor (pipeline_chunks.end_chunk_layers)
    and the others their mean of the rest (the ceiling where one chunk is short); under the layout
    (`chunk`: pipeline.stage_chunk, 0 for the stage's own ceiling) the rest and `chunk`."""
    even = layers / chunks
    root, fuller = end_chunk_layers(layers, chunks, first_stage=True, chunk=chunk)
    short = fuller != root
    if not np.any(short):
        return even, even
    return np.where(short, root, even), np.where(short, (layers - root) / np.maximum(chunks - 1, 1), even)


def middle_end_layers(end_n, full_n):
    """The layers a middle stage's last chunk is priced at: its own (the rest, `end_n`, where the
    layout leaves it short: DeepSeek-V3's 8 layers over vpp 3 run 3 / 3 / 2, as sim.layer_program
    places them), but a full chunk's (`full_n`) where it holds none (6 layers over vpp 4 run
    2 / 2 / 2 / 0): cost.pipeline_path reads the last chunk's blocks as the relay of the first
    group's backwards, which an empty chunk's virtual stage passes on at once to the chunk before."""
    return np.where(np.asarray(end_n) > 0, end_n, full_n)


def _zero3_busy_s(t: DPTimes, layers, bwd_gather, root_gathers=1.0, fwd_gathers=1.0):
    return (root_gathers * t.root_gather_s + layers * (fwd_gathers * t.layer_gather_s + bwd_gather + t.layer_reduce_s)
            + t.root_reduce_s)


def _finite(*values) -> bool:
    return all(np.all(np.isfinite(v)) for v in values)


def last_calls_s(last_s, tail_s, edges: Edges | None):
    """The unhideable gradient calls' exposed seconds: those issued at the first layer run beside
    its TP reduce-scatter (Edges.bwd_trail_s), those after the embedding's backward (tail_s, of
    last_s) only after it."""
    trail = 0.0 if edges is None else edges.bwd_trail_s + edges.bwd_tail_s
    return np.maximum(0.0, last_s - tail_s - trail) + tail_s
