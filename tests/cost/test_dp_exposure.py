"""cost.dp_exposure: one micro-batch's data-parallel exposure on a stage, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import DPTimes, Edges, micro_batch_dp_s
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
