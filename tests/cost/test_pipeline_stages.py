"""cost.pipeline_stages: the kinds of pipeline stage and what each holds beyond its layers."""

import numpy as np

from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.pipeline_stages import StageDP, layout_chunk, picked_stages, stage_edges


def _stage(layers, num_stages=1.0):
    times = DPTimes(**{name: np.array([0.0]) for name in DPTimes._fields})
    return StageDP(times, np.asarray(layers, dtype=np.float64), np.array([0.0]), 0.0, num_stages)


def test_the_embedding_edges_run_on_the_first_stage_only():
    edges = Edges(0.1, 0.2, 0.3, bwd_tail_s=0.05, fwd_head_s=0.01)
    assert stage_edges(edges, 0) == edges
    assert stage_edges(edges, 1) == edges._replace(bwd_tail_s=0.0, fwd_head_s=0.0)
    assert stage_edges(edges, 2) == edges._replace(bwd_tail_s=0.0, fwd_head_s=0.0)
    assert stage_edges(None, 1) is None


def test_layout_chunk_is_a_middle_stages_chunk():
    # pp 4 (two middle stages of 8 layers), vpp 2: a full chunk is 4 layers; at vpp 1 none.
    stages = (_stage([7]), _stage([8], np.array([2.0])), _stage([9]))
    assert layout_chunk(stages, np.array([2]))[0] == 4.0
    assert layout_chunk(stages, np.array([1]))[0] == 0.0


def test_picked_stages():
    stages = (_stage([1]), _stage([1]), _stage([1]))
    assert list(picked_stages(stages, None)) == [0, 1, 2]
    assert list(picked_stages(stages, 1)) == [1]
