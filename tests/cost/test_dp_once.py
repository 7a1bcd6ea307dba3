"""cost.dp_once: a stage's once-a-step data-parallel passes, chunk by chunk, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.dp_once import chunked_exposed_s, chunks_gather_s


def _times(**seconds):
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


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
