"""ZeRO-2/3 traffic in a pipeline: what each stage's per-micro-batch exposure costs the step.

ZeRO-2/3 reduce-scatter every micro-batch's gradients (ZeRO-3 also gathers its parameters), and
a stage's backward ends only when that traffic has left (cost.overlap.micro_batch_dp_s). Under
1F1B every stage runs one forward and one backward per micro-batch in lock step (Narayanan et al.
2021, section 2.2.1), so the step lasts (m - 1) cycles of the slowest stage, the cycle being a
micro-batch's compute plus the data-parallel exposure of that stage, plus one cycle of every
stage on the way in and out (the bubble). A stage's exposure therefore repeats m - 1 times only
on the pacing stage; a stage with slack (the first one, which lacks the loss and output layer)
absorbs its own and pays it once, on the fill and the drain:

    exposed = (m - 1) (max_k (C_k + e_k) - max_k C_k) + sum_k e_k

(C_k, e_k: stage k's compute and exposure of one micro-batch, each stage counted once; with pp 1
it is m e). Each stage holds its own non-layer parameters (cost.buckets.stage_extras): the first
stage's embedding gradients leave after its last layer (never hidden), the last stage's output
layer's before its layers' backward (hidden behind them) while ZeRO-3's first gather of the last
stage hides behind the loss and output layer's backward (cost.overlap.layerwise_exposed_s). The
interleaved schedule fills and drains in chunks of 1/vpp of a stage, as its bubble
(sp_planner.pipeline.bubble_micro_batches). Vectorized over candidates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dp_times import dp_times
from sp_planner.cost.overlap import DPTimes, Overlap, micro_batch_dp_s
from sp_planner.cost.states import TrainingStates
from sp_planner.pipeline import StageLayers, bubble_micro_batches
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class StageDP(NamedTuple):
    """One kind of pipeline stage (first, middle, last) per candidate."""

    times: DPTimes  # its data-parallel calls (cost.dp_times)
    layers: np.ndarray
    compute_s: np.ndarray  # one micro-batch's forward and backward, without data-parallel traffic
    ahead_s: np.ndarray  # compute before its first layer's backward (the loss and output layer)
    count: np.ndarray  # stages of this kind


def pipeline_stages(model: ModelSpec, hardware: HardwareProfile, c, *, stages: StageLayers, first: DPTimes,
                    per_layer_s, logits_s, gpus_per_node: int, states: TrainingStates) -> tuple[StageDP, ...]:
    """The first, middle and last stage of each candidate; `first` is the first stage's DPTimes,
    per_layer_s a layer's and logits_s the loss and output layer's micro-batch (forward and
    backward, the backward two thirds of it: Narayanan 2021, backward = 2 x forward). The other
    stages' calls are priced only where they matter (pp > 1 and ZeRO-2/3)."""
    pp = np.broadcast_to(np.asarray(c.pp), np.shape(per_layer_s))
    zero = np.broadcast_to(np.asarray(c.zero), pp.shape)
    single = pp == 1
    rows = np.flatnonzero(~single & (zero >= 2))
    n = pp.size

    def priced(stage: str) -> DPTimes:
        if not len(rows):
            return first
        sub = dp_times(model, hardware, c.take(rows),
                       stages=StageLayers(*(np.broadcast_to(np.asarray(v), (n,))[rows] for v in stages)),
                       gpus_per_node=gpus_per_node, states=states, stage=stage)
        out = []
        for mine, theirs in zip(first, sub):
            column = np.broadcast_to(np.asarray(mine, dtype=np.float64), (n,)).copy()
            column[rows] = theirs
            out.append(column)
        return DPTimes(*out)

    ahead = 2 / 3 * np.asarray(logits_s, dtype=np.float64)
    layer_s = np.asarray(per_layer_s, dtype=np.float64)
    # A single stage is the first one, holding every non-layer parameter, with the loss.
    return (
        StageDP(first, stages.first, stages.first * layer_s + np.where(single, logits_s, 0.0),
                np.where(single, ahead, 0.0), np.ones(n)),
        StageDP(priced("middle"), stages.middle, stages.middle * layer_s, np.zeros(n), np.maximum(pp - 2, 0)),
        StageDP(priced("last"), stages.last, stages.last * layer_s + logits_s, ahead, np.where(single, 0, 1)),
    )


def pipelined_exposed_s(overlap: Overlap, *, zero, micro_batches, vpp, stages: tuple[StageDP, ...], fwd_layer_s,
                        bwd_layer_s, reshard):
    """Exposed seconds per step of ZeRO-2/3's per-micro-batch traffic on the critical path (module
    docstring); fwd/bwd_layer_s are one layer's forward / backward window of one micro-batch."""
    exposure = [micro_batch_dp_s(overlap, zero=zero, layers=s.layers, times=s.times,
                                 fwd_window_s=s.layers * fwd_layer_s, bwd_window_s=s.layers * bwd_layer_s,
                                 reshard=reshard, ahead_s=s.ahead_s)[0] for s in stages]
    present = [s.count > 0 for s in stages]
    paced = np.max([np.where(p, s.compute_s + e, 0.0) for s, e, p in zip(stages, exposure, present)], axis=0)
    compute = np.max([np.where(p, s.compute_s, 0.0) for s, p in zip(stages, present)], axis=0)
    stretch = paced - compute
    every_stage = np.sum([s.count * e for s, e in zip(stages, exposure)], axis=0)
    pp = np.sum([s.count for s in stages], axis=0)
    # Fill and drain, as the bubble: (pp - 1) / vpp stage-micro-batches beyond the pacing one.
    fill = bubble_micro_batches(pp, vpp) / np.maximum(pp - 1, 1)
    return micro_batches * stretch + fill * (every_stage - stretch)
