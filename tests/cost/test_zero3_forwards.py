"""cost.zero3_forwards: ZeRO-3's gathers in each kind of stage's forwards, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.pipeline_stages import StageDP
from sp_planner.cost.zero3_forwards import chunk_zero3_forwards_s, first_forward_fill_s, stage_zero3_gathers_s

NO_PREFETCH = MEGATRON_OVERLAP.model_copy(update={"zero3_prefetch": False})
EDGES = Edges(0.0, 0.0, 0.0, bwd_tail_s=0.05)


def _times(**seconds):
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def _stages():
    # pp 4, vpp 2, 20 layers a stage (10 a chunk) of 0.02 s forward; a layer gathers in 0.01 s,
    # the end stages' root unit in 0.5 s (the middle stages hold none).
    ends = _times(layer_gather_s=0.01, layer_reduce_s=0.01, root_gather_s=0.5, root_reduce_s=0.3,
                  grad_reduce_scatter_s=0.5)
    middle = _times(layer_gather_s=0.01, layer_reduce_s=0.01, grad_reduce_scatter_s=0.2)
    return (StageDP(ends, np.array([20.0]), np.array([1.26]), 0.0, 1.0),
            StageDP(middle, np.array([20.0]), np.array([1.2]), 0.0, np.array([2.0])),
            StageDP(ends, np.array([20.0]), np.array([1.5]), np.array([0.2]), 1.0))


def _gathers(zero=3, only=None):
    return stage_zero3_gathers_s(NO_PREFETCH, _stages(), zero=np.array([zero]), vpp=np.array([2]), fwd_layer_s=0.02,
                                 edges=EDGES, only=only)


def test_the_root_unit_is_gathered_with_the_chunk_that_holds_it():
    # No prefetch: a 10-layer chunk's forward exposes its 10 gathers (0.1 s); the root's chunk the
    # root unit's before them (0.5 s) and its first layer's behind it (0.6 s in all). The first
    # stage's root is its chunk 0, the last stage's its last chunk; the middle stages hold none.
    gathers = _gathers()
    chunks = [[float(np.asarray(x)[0]) for x in chunk_zero3_forwards_s(gathers[i], i, vpp=np.array([2]))]
              for i in range(3)]
    assert chunks == [pytest.approx([0.6, 0.1, 0.1]), pytest.approx([0.1, 0.1, 0.1]),
                      pytest.approx([0.1, 0.1, 0.6])]


def test_shares_scale_what_each_forward_holds():
    # Forwards that gather neither the root nor the layers (shares 0) hold nothing; what micro-batch
    # 0 runs beyond them is each stage's whole forward gathers over its two chunks (0.7, 0.2, 0.7 s).
    gathers = _gathers()
    held = chunk_zero3_forwards_s(gathers[0], 0, vpp=np.array([2]), root_gathers=0.0, fwd_gathers=0.0)
    assert [float(np.asarray(x)[0]) for x in held] == pytest.approx([0.0, 0.0, 0.0])
    fill = first_forward_fill_s(NO_PREFETCH, _stages(), zero=np.array([3]), vpp=np.array([2]), interleaved=True,
                                fwd_layer_s=0.02, edges=EDGES, root_gathers=0.0, fwd_gathers=0.0,
                                zero3_gathers=gathers)
    assert [float(np.asarray(f)[0]) for f in fill] == pytest.approx([0.7, 0.2, 0.7])


def test_one_stage_alone_and_zero2_none():
    # `only`: the middle stage's gathers alone, as among all; ZeRO-2 gathers nothing in forward.
    alone, every = _gathers(only=1), _gathers()
    assert alone[0] is None and alone[2] is None
    assert all(np.array_equal(a, b) for a, b in zip(alone[1][1], every[1][1]))
    assert _gathers(zero=2) == [None, None, None]
    assert chunk_zero3_forwards_s(None, 0, vpp=2) == (0.0, 0.0, 0.0)
