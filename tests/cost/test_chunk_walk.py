"""cost.chunk_walk: an interleaved stage's ZeRO-3 passes walked chunk by chunk are the closed
forms' chunks (cost.dp_exposure.micro_batch_dp_s) on identical layers, and each chunk's window is
its own layers' with the stage's stall beyond them shared by layer (hand derivations)."""

import numpy as np
import pytest

from sp_planner.cost.chunk_walk import chunk_forwards_s, chunk_walk_s, chunk_walks, chunk_windows_s, walked_chunks_s
from sp_planner.cost.dp_exposure import DPTimes, Edges, micro_batch_dp_s
from sp_planner.cost.kind_passes import KindPasses
from sp_planner.cost.overlap import MEGATRON_OVERLAP


def _passes(sequences, chunks, *, root_chunk=0, fwd=(1.0,), bwd=(2.0,), gather=(0.3,), reduce=(0.5,), lead=(0.0,)):
    """A stage view (KindPasses.stage) of one row whose model chunks walk `chunks` of `sequences`."""
    row = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    return KindPasses(np.array([-1]), row(gather), row(reduce), row(fwd), row(bwd), row(lead), row(lead), row(lead),
                      stage_orders=(), sequences=tuple(sequences), chunk_orders=np.array([chunks]),
                      root_chunk=root_chunk)


def test_a_chunks_window_is_its_own_layers_and_its_share_of_the_stall():
    # Kinds of 1 s and 3 s forwards; chunks (0, 1) and (1, 1): their own 4 s and 6 s. A stage
    # window of 14 s stalls 4 s beyond its layers' 10 s, 1 s a layer: 6 s and 8 s.
    kinds = _passes([(0, 1, 0, 1), (0, 1), (1, 1)], [1, 2], fwd=(1.0, 3.0), gather=(0.3, 0.6), reduce=(0.5, 1.0),
                    bwd=(2.0, 6.0), lead=(0.0, 0.0))
    rows = np.array([True])
    np.testing.assert_allclose(chunk_windows_s(kinds, rows, "fwd_s", 10.0)[:, 0], [4.0, 6.0])
    np.testing.assert_allclose(chunk_windows_s(kinds, rows, "fwd_s", 14.0)[:, 0], [6.0, 8.0])
    assert kinds.chunk(1).lengths()[0] == 2 and kinds.chunk(1).sums("bwd_s")[0] == pytest.approx(12.0)
    assert kinds.chunk(2).order[0] == -1  # beyond the row's chunks


@pytest.mark.parametrize("vpp", [2, 3, 4])
@pytest.mark.parametrize("reshard", [True, False])
def test_identical_chunks_walk_to_the_closed_forms(vpp, reshard):
    # A stage of 4 x vpp alike layers over vpp chunks, the root unit (0.4 s gather, 0.7 s reduce)
    # and the loss's backward ahead (0.9 s) with chunk 0: the sum of the chunks' walks is
    # micro_batch_dp_s's root chunk and vpp - 1 later chunks.
    layers, g, r, fwd, bwd, lead = 4 * vpp, 0.3, 0.5, 1.0, 2.0, 0.05
    one = np.array([1.0])
    t = DPTimes(*(0 * one for _ in range(8)), layer_gather_s=g * one, layer_reduce_s=r * one,
                root_gather_s=0.4 * one, root_reduce_s=0.7 * one)
    e = Edges(lead, lead, lead, 0.0)
    kinds = _passes([(0,) * layers, (0,) * 4], [1] * vpp, gather=(g,), reduce=(r,), fwd=(fwd,), bwd=(bwd,),
                    lead=(lead,))
    kw = dict(zero=np.array([3]), layers=layers, times=t, fwd_window_s=layers * fwd, bwd_window_s=layers * bwd,
              reshard=np.array([reshard]), ahead_s=0.9, chunks=vpp, edges=e)
    closed, busy = micro_batch_dp_s(MEGATRON_OVERLAP, **kw)
    walked, held = walked_chunks_s(MEGATRON_OVERLAP, t, e, kinds, zero=np.array([3]), exposed=np.nan, busy=np.nan,
                                   fwd_window_s=layers * fwd, bwd_window_s=layers * bwd, reshard=np.array([reshard]),
                                   ahead_s=0.9, root_gathers=1.0, fwd_gathers=1.0)
    np.testing.assert_allclose(walked, closed, rtol=1e-9)
    np.testing.assert_allclose(held, busy, rtol=1e-9)


def test_alternating_chunks_expose_more_than_their_average_and_walk_backward_last_layer_first():
    # Two chunks of a dense (0.1 s gather) and a MoE layer (1.7 s), 0.5 s forward and 1.0 s
    # backward windows, gathered again in backward, no reduce-scatters.
    one = np.array([1.0])
    t = DPTimes(*(0 * one for _ in range(8)), layer_gather_s=0.9 * one, layer_reduce_s=0 * one,
                root_gather_s=0 * one, root_reduce_s=0 * one)
    e = Edges(0.0, 0.0, 0.0, 0.0)
    kinds = _passes([(0, 1, 0, 1), (0, 1)], [1, 1], gather=(0.1, 1.7), reduce=(0.0, 0.0), fwd=(0.5, 0.5),
                    bwd=(1.0, 1.0), lead=(0.0, 0.0))
    kw = dict(zero=np.array([3]), layers=4, times=t, fwd_window_s=2.0, bwd_window_s=4.0, reshard=np.array([True]),
              ahead_s=0.0, chunks=2, edges=e)
    closed, _ = micro_batch_dp_s(MEGATRON_OVERLAP, **kw)
    walked, _ = walked_chunks_s(MEGATRON_OVERLAP, t, e, kinds, zero=np.array([3]), exposed=closed, busy=0.0,
                                fwd_window_s=2.0, bwd_window_s=4.0, reshard=np.array([True]), ahead_s=0.0,
                                root_gathers=1.0, fwd_gathers=1.0)
    # The average layer (0.9 s gathers): forward 0.9 + (0.9 - 0.5) s, backward 0.9 s a chunk.
    assert closed[0] == pytest.approx(2 * (1.3 + 0.9))
    # Walked: forward's gathers land at 0.1 and 1.8 s, the MoE layer's window 1.8-2.3 s against
    # 1.0 s of compute (1.3 s); backward runs the MoE layer first: its gather lands at 1.7 s, the
    # dense one's at 1.8 s behind it, the two windows 1.7-3.7 s against 2.0 s (1.7 s; in forward
    # order it would be 0.8 s).
    assert walked[0] == pytest.approx(2 * (1.3 + 1.7))


def test_the_chunk_blocks_and_forwards_read_the_cycles_walks():
    # The alternating chunks above, the root unit (a 0.4 s gather) with chunk 0: the cycle walks
    # each chunk once (chunk_walks); the fill's and drain's blocks read chunk 0's and the last
    # one's walk, the forwards each chunk's forward. By hand: a chunk's forward without the root
    # lands its gathers at 0.1 and 1.8 s, its windows end at 2.3 s against 1.0 s of compute (1.3 s);
    # with the root's gather ahead at 0.5 and 2.2 s (1.7 s). Backward as above, 1.7 s a chunk.
    one = np.array([1.0])
    t = DPTimes(*(0 * one for _ in range(8)), layer_gather_s=0.9 * one, layer_reduce_s=0 * one,
                root_gather_s=0.4 * one, root_reduce_s=0 * one)
    kinds = _passes([(0, 1, 0, 1), (0, 1)], [1, 1], gather=(0.1, 1.7), reduce=(0.0, 0.0), fwd=(0.5, 0.5),
                    bwd=(1.0, 1.0), lead=(0.0, 0.0))
    walks = chunk_walks(MEGATRON_OVERLAP, t, Edges(0.0, 0.0, 0.0, 0.0), kinds, zero=np.array([3]), fwd_window_s=2.0,
                        bwd_window_s=4.0, reshard=np.array([True]), ahead_s=0.0, root_gathers=1.0, fwd_gathers=1.0)
    assert walks is not None
    np.testing.assert_allclose(walks.exposed[:, 0], [1.7 + 1.7, 1.3 + 1.7])
    assert walks.total[0] == pytest.approx(1.7 + 1.7 + 1.3 + 1.7)
    assert chunk_walk_s(walks, np.array([9.0]), last=False)[0] == pytest.approx(3.4)
    assert chunk_walk_s(walks, np.array([9.0]), last=True)[0] == pytest.approx(3.0)
    (first, middle, last), rooted = chunk_forwards_s(walks, plain=np.array([9.0]), rooted=(8.0, 7.0))
    assert first[0] == 9.0 and last[0] == pytest.approx(1.3)  # the root's end is read rooted only
    assert rooted[0][0] == pytest.approx(1.7) and rooted[1][0] == pytest.approx(1.3)
