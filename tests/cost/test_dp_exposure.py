"""cost.dp_exposure: one micro-batch's data-parallel exposure on a stage, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import DPTimes, Edges, micro_batch_dp_s, root_chunk_layers
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


def test_the_roots_chunk_holds_a_layer_fewer_under_the_counted_split():
    # pipeline_chunks.chunk_layer_counts: 9 layers over 2 chunks (4, 5), 1 over 2 (0, 1), 13 over 7
    # (1, 2, 2, 2, 2, 2, 2): the root's chunk the floor, the others the rest's mean; even 5 and 5.
    root, other = root_chunk_layers(np.array([9.0, 1.0, 13.0, 10.0]), np.array([2, 2, 7, 2]))
    assert root.tolist() == [4.0, 0.0, 1.0, 5.0]
    assert other.tolist() == [5.0, 1.0, 2.0, 5.0]
    assert root_chunk_layers(12.0, 4) == (3.0, 3.0)


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


def test_a_zero2_queue_opened_by_a_short_head_idles_until_the_first_layers_buckets():
    # A last stage of 4 layers, 1 ms of backward each, 1.5 ms of gradient calls a layer, its output
    # layer's calls (head_s) issued at the backward's start. A 0.5 ms head leaves at 0.5 ms; the
    # top layer's buckets are issued at 1 ms (its backward's end, as sim.layer_program issues them),
    # and the queue runs 6 ms to 7 ms: 3 ms past the compute (it had run on from the head: 2.5 ms).
    # A 2 ms head outlasts that layer: the queue runs back to back to 8 ms, 4 ms past either way.
    kw = dict(zero=np.array([2]), layers=np.array([4.0]), fwd_window_s=0.002, bwd_window_s=0.004,
              reshard=np.array([False]), edges=Edges(0.0, 0.0, 0.0))
    for head_s, exposed_s in ((0.0005, 0.003), (0.002, 0.004)):
        times = _times(grad_reduce_scatter_s=0.006 + head_s, root_reduce_s=head_s, last_reduce_scatter_s=0.0015)
        exposed, busy = micro_batch_dp_s(MEGATRON_OVERLAP, times=times, head_s=head_s, **kw)
        assert exposed[0] == pytest.approx(exposed_s) and busy[0] == pytest.approx(0.006 + head_s)


def test_a_later_zero2_chunks_first_layer_exposes_its_own_buckets():
    # A first stage of 2 chunks of 2 layers, 2 ms of backward a layer, 1.5 ms of gradient calls a
    # layer, the embedding's 2 ms alone. Chunk 0's layer 0 leaves 0.5 ms of its calls to the
    # embedding's bucket (tail 2.5 ms, its own 1 ms); chunk 1's layer 2, bucketed on its own, keeps
    # its 1.5 ms (later_first_reduce_scatter_s). Chunk 1: layer 3's calls issued at 2 ms end at
    # 3.5, layer 2's issued at 4 ms at 5.5: 1.5 ms past its 4 ms backward. Chunk 0: layer 1's at
    # 2 -> 3.5, layer 0's 1 ms at 4 -> 5, the tail's after it to 7.5: 3.5 ms past. 5 ms in all;
    # with chunk 0's first layer's 1 ms for chunk 1's (as before), 4.5 ms.
    kw = dict(zero=np.array([2]), layers=np.array([4.0]), fwd_window_s=0.004, bwd_window_s=0.008,
              reshard=np.array([False]), edges=Edges(0.0, 0.0, 0.0), chunks=np.array([2]))
    times = _times(grad_reduce_scatter_s=0.008, root_reduce_s=0.002, last_reduce_scatter_s=0.0035,
                   tail_reduce_scatter_s=0.0025, later_first_reduce_scatter_s=0.0015)
    exposed, busy = micro_batch_dp_s(MEGATRON_OVERLAP, times=times, **kw)
    assert exposed[0] == pytest.approx(0.005) and busy[0] == pytest.approx(0.008)
    before, _ = micro_batch_dp_s(MEGATRON_OVERLAP, times=times._replace(later_first_reduce_scatter_s=0.0), **kw)
    assert before[0] == pytest.approx(0.0045)
