"""The kinds of pipeline stage (first, middle, last) of the pipelined candidates, and what each
holds beyond its layers: the pieces cost.pipeline_blocks and cost.zero3_forwards read per stage.
Vectorized over candidates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.pipeline import stage_chunk


class StageDP(NamedTuple):
    """One kind of pipeline stage (first, middle, last) of the pipelined candidates."""

    times: DPTimes  # its data-parallel calls (cost.dp_times)
    layers: np.ndarray
    compute_s: np.ndarray  # one micro-batch's forward and backward, without data-parallel traffic
    ahead_s: np.ndarray | float  # compute before its first layer's backward (the loss and output layer)
    num_stages: np.ndarray | float  # stages of this kind


def picked_stages(stages: tuple[StageDP, ...], only: int | None):
    """The stages to price: all, or stage `only` alone (cost.pipeline_dp's lightest middle stage,
    whose end stages are the heaviest's); the others' places hold None."""
    return range(len(stages)) if only is None else (only,)


def layout_chunk(stages: tuple[StageDP, ...], vpp):
    """pipeline.stage_chunk of the (first, middle, last) stages: the full model chunk's layers of
    an end stage that does not divide by vpp (the middle kind counts pp - 2 stages)."""
    return stage_chunk(stages[0].layers, stages[1].layers, stages[2].layers, np.asarray(stages[1].num_stages) + 2,
                       vpp)


def stage_edges(edges: Edges | None, i: int) -> Edges | None:
    """Stage i's edges: the embedding's backward and forward (Edges.bwd_tail_s, fwd_head_s) run on
    the first only, with its chunk 0 (beside that chunk's last calls, and in its backward block on
    the drain; beside its first layer's parameter calls)."""
    return edges if edges is None or i == 0 else edges._replace(bwd_tail_s=0.0, fwd_head_s=0.0)
