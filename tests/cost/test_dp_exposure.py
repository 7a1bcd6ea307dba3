"""cost.dp_exposure: one micro-batch's data-parallel exposure on a stage, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import (DPTimes, Edges, chunked_exposed_s, chunks_gather_s, micro_batch_dp_s,
                                        root_chunk_layers)
from sp_planner.cost.overlap import MEGATRON_OVERLAP


def _times(**seconds):
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def test_zero2_calls_hide_behind_the_embeddings_backward_too():
    # A first stage of 4 layers, 1 ms of backward each, then the embedding's backward (2 ms); each
    # layer's gradient reduce-scatters take 3 ms, the embedding's 5 ms (issued after its backward).
    # The queue opens after the last layer's backward (1 ms in) and runs back to back to 18 ms while
    # the compute stream runs to 6 ms: 12 ms exposed (14 ms if the embedding's backward hid none).
    times = _times(grad_reduce_scatter_s=0.017, last_reduce_scatter_s=0.008, tail_reduce_scatter_s=0.005)
    exposed, busy = micro_batch_dp_s(MEGATRON_OVERLAP, zero=np.array([2]), layers=np.array([4.0]), times=times,
                                     fwd_window_s=0.002, bwd_window_s=0.004, reshard=np.array([False]),
                                     edges=Edges(0.0, 0.0, 0.0, bwd_tail_s=0.002))
    assert exposed.tolist() == pytest.approx([0.012]) and busy.tolist() == pytest.approx([0.017])


def test_interleaved_sync_queue_drains_behind_the_embeddings_backward():
    # pp 4, vpp 4, Megatron's aligned sync: chunks 3, 2, 1 one 0.5 s call each, chunk 0 the other
    # 0.4 s; a chunk's backward 0.1 s, chunk 0's 0.05 s more on the first stage (the embedding's).
    # Chunk 3's call leaves at 0 and runs to 0.5; chunk 2's (at 0.4) to 1.0; chunk 1's (at 0.8) to
    # 1.5; chunk 0's four backwards end at 0.8 + 4 x 0.15 = 1.4, its call queues to 1.9: 0.5 s
    # exposed (0.7 s with the embedding's backward left out, 1.9 - 1.2).
    kw = dict(pp=4, vpp=4, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, chunk0_extra_s=0.05, **kw) == pytest.approx(0.5)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, **kw) == pytest.approx(0.7)
    # 0.1 s more: chunk 0's backwards end at 1.6, after chunk 1's call: its own 0.4 s alone.
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, chunk0_extra_s=0.1, **kw) == pytest.approx(0.4)


def test_a_later_ranks_sync_queues_from_rank_backwards_later_and_the_output_layer_with_its_last_chunk():
    # pp 4, vpp 2, launched whole, a chunk's backward 0.2 s, 2.0 s of calls, chunk 1's 0.6 s.
    # Rank 0: chunk 1's call leaves 4 chunk backwards (0.8 s) before the end and is done by then,
    # chunk 0 the other 1.4 s after it: 1.4 s. Rank 2: chunk 1 two backwards later (schedules.py
    # d98e8a6 lines 1445-1456), over [end - 0.4, end + 0.2], chunk 0's 1.4 s behind it: 1.6 s.
    # The last rank (3): its last chunk holds the 0.8 s output layer (cost.buckets._chunked), 1.4 s
    # from end - 0.2 to end + 1.2, chunk 0's 0.6 s after it: 1.8 s.
    kw = dict(pp=4, vpp=2, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=0, **kw) == pytest.approx(1.4)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=2, **kw) == pytest.approx(1.6)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=3, **kw) == pytest.approx(1.8)
    # Launched by the hooks instead (no offset), the last chunk's call leaves at end - 0.8.
    assert chunked_exposed_s(2.0, 0.6, 0.0, 0.4, rank=3, pp=4, vpp=2, overlapped=True) == pytest.approx(1.2)


def test_the_roots_chunk_holds_a_layer_fewer_under_the_counted_split():
    # pipeline_chunks.chunk_layer_counts: 9 layers over 2 chunks (4, 5), 1 over 2 (0, 1), 13 over 7
    # (1, 2, 2, 2, 2, 2, 2): the root's chunk the floor, the others the rest's mean; even 5 and 5.
    root, other = root_chunk_layers(np.array([9.0, 1.0, 13.0, 10.0]), np.array([2, 2, 7, 2]))
    assert root.tolist() == [4.0, 0.0, 1.0, 5.0]
    assert other.tolist() == [5.0, 1.0, 2.0, 5.0]
    assert root_chunk_layers(12.0, 4) == (3.0, 3.0)


def test_a_stages_last_layer_computes_after_its_own_gather():
    # ZeRO-2's gather in the step's first forward: 4 layers of 1 ms, each waiting for its own
    # 1.5 ms of calls (the first 1.5 ms can never hide), all queued at the forward's start. Layer k
    # starts at 1.5 (k + 1) ms: the last at 6 ms, done at 7 ms against 4 ms bare, 3 ms exposed
    # (G - (F - f)); hidden behind the whole forward it was 2 ms.
    times = _times(param_all_gather_s=0.006, first_all_gather_s=0.0015)
    one = dict(fwd_window_s=0.004, layers=4.0, overlapped=True)
    assert chunks_gather_s(times, chunks=1, after_s=0.001, **one).tolist() == pytest.approx([0.003])
    assert chunks_gather_s(times, chunks=1, **one).tolist() == pytest.approx([0.002])
    # The last stage: the output layer's 0.4 ms of calls queue after the last layer's and its
    # head waits for them: that layer runs 6-7 ms, the head from 7 ms as bare from 4 ms: 3 ms of
    # the 6.4 ms, the head's calls covering 0.4 ms of the layer's 1 ms (after_s 0.6 ms).
    last = _times(param_all_gather_s=0.0064, first_all_gather_s=0.0015, root_gather_s=0.0004)
    assert chunks_gather_s(last, chunks=1, after_s=0.0006, **one).tolist() == pytest.approx([0.003])
    # Two chunks of 2 layers (vpp 2), 3 ms of calls each at its first forward: each chunk's last
    # layer starts at 3 ms and ends at 4 ms against 2 ms bare, 2 ms a chunk, 4 ms in all.
    assert chunks_gather_s(times, chunks=2, after_s=0.001, **one).tolist() == pytest.approx([0.004])
    # With a 0.2 ms TP all-gather before each layer's first GEMM, which waits for no call: a chunk's
    # first layer's GEMM runs 1.5-2.3 ms, the second's all-gather 2.3-2.5 ms, its GEMM 3.0-3.8 ms
    # against 2 ms bare: 1.8 ms a chunk, 3.6 ms in all.
    assert chunks_gather_s(times, chunks=2, lead_s=0.0002, after_s=0.0008, **one).tolist() == pytest.approx([0.0036])


def test_a_saturated_zero2_queue_opens_before_its_first_layers_tp_reduce_scatter():
    # 4 layers of 1 ms backward, each ending in a 0.1 ms TP reduce-scatter (Edges.bwd_trail_s),
    # 1.5 ms of calls a layer: the queue opens at 0.9 ms (the top layer's buckets leave once its
    # last GEMM ends) and runs 6 ms to 6.9 ms: 2.9 ms past the compute, not 3.
    e = Edges(0.0, 0.0, 0.0001)
    kw = dict(zero=np.array([2]), layers=np.array([4.0]), fwd_window_s=0.002, bwd_window_s=0.004,
              reshard=np.array([False]), edges=e)
    exposed, _ = micro_batch_dp_s(MEGATRON_OVERLAP, times=_times(grad_reduce_scatter_s=0.006,
                                                                 last_reduce_scatter_s=0.0015), **kw)
    assert exposed[0] == pytest.approx(0.0029)
    # The first layer's buckets carry 1 ms beyond a share (the rest of the last bucket), the top
    # layer's then 0.5 ms: they leave at 1.4 ms, the next layer's are issued at 1.9 ms and the
    # queue runs on to 1.9 + 1.5 + 1.5 + 2.5 = 7.4 ms: 3.4 ms past the compute.
    exposed, _ = micro_batch_dp_s(MEGATRON_OVERLAP, times=_times(grad_reduce_scatter_s=0.006,
                                                                 last_reduce_scatter_s=0.0025), **kw)
    assert exposed[0] == pytest.approx(0.0034)
