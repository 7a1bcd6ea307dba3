"""cost.pipeline_dp: ZeRO-2/3's per-micro-batch exposure in a pipeline, by hand."""

import numpy as np
import pytest

from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.pipeline_dp import StageDP, pipelined_exposed_s


def _zero2(last_s, tail_s=0.0):
    """A stage whose gradient traffic hides behind its backward but its last calls."""
    seconds = dict(grad_reduce_scatter_s=0.5, last_reduce_scatter_s=last_s, tail_reduce_scatter_s=tail_s)
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def _exposed(first_compute_s, m=8):
    # First stage: 0.3 s of last calls (the embedding's 0.2 s among them); two middle stages and
    # the last one 0.1 s each; the last stage computes 0.2 s longer (the loss).
    stages = (
        StageDP(_zero2(0.3, 0.2), np.array([20.0]), np.array([first_compute_s]), 0.0, 1.0),
        StageDP(_zero2(0.1), np.array([20.0]), np.array([1.0]), 0.0, np.array([2])),
        StageDP(_zero2(0.1), np.array([20.0]), np.array([1.2]), 0.0, 1.0),
    )
    return float(pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([2]), micro_batches=m, vpp=np.array([1]),
                                     stages=stages, fwd_layer_s=0.02, bwd_layer_s=0.04,
                                     reshard=np.array([False]))[0])


def test_the_pacing_stage_repeats_its_exposure_the_others_pay_once():
    # Cycles: first 0.9 + 0.3, middle 1.0 + 0.1, last 1.2 + 0.1: the last stage paces, 0.1 s
    # longer than without DP, for m - 1 = 7 micro-batches; every stage's exposure once more on the
    # fill and drain: 0.3 + 2 x 0.1 + 0.1. (The first stage's larger exposure, 0.3, is absorbed
    # by its slack.)
    assert _exposed(0.9) == pytest.approx(7 * 0.1 + 0.6)
    # A first stage with less slack (1.15 + 0.3 = 1.45) paces instead: 7 x (1.45 - 1.2) + 0.6.
    assert _exposed(1.15) == pytest.approx(7 * 0.25 + 0.6)


def test_a_single_stage_exposes_every_micro_batch():
    stage = StageDP(_zero2(0.3, 0.2), np.array([80.0]), np.array([4.0]), 0.0, 1.0)
    empty = StageDP(_zero2(0.0), np.array([80.0]), np.array([0.0]), 0.0, 0.0)
    exposed = pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([2]), micro_batches=8, vpp=np.array([1]),
                                  stages=(stage, empty, empty), fwd_layer_s=0.02, bwd_layer_s=0.04,
                                  reshard=np.array([False]))
    assert exposed[0] == pytest.approx(8 * 0.3)


def test_the_first_stage_chunk0_extra_piles_up_on_the_interleaved_drain():
    # vpp 2, 20 layers a stage: chunk-0 backward blocks of 10 x 0.04 = 0.4 s, with their exposure
    # the first stage's 0.65 s (0.25 of it) and the others' 0.5; the last stage paces (1.2 +
    # 0.125 against the first's 0.9 + x + 0.275) and the drain's 4 jobs pile up behind the first
    # stage's block 3 times (cost.pipeline_dp._critical_path_s). Its backward beyond its layers
    # (x, the embedding's; StageDP.chunk0_bwd_extra_s) lengthens that block: 3 x more.
    def exposed(x):
        stages = (
            StageDP(_zero2(0.3, 0.2), np.array([20.0]), np.array([0.9 + x]), 0.0, 1.0, x),
            StageDP(_zero2(0.1), np.array([20.0]), np.array([1.0]), 0.0, np.array([2])),
            StageDP(_zero2(0.1), np.array([20.0]), np.array([1.2]), 0.0, 1.0),
        )
        return float(pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([2]), micro_batches=8, vpp=np.array([2]),
                                         stages=stages, fwd_layer_s=0.02, bwd_layer_s=0.04,
                                         reshard=np.array([False]))[0])
    assert exposed(0.05) - exposed(0.0) == pytest.approx(3 * 0.05)
