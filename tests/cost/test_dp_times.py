"""cost.dp_times: pricing each distinct shape once gives, on every candidate, exactly what pricing
every candidate row by row gives."""

import numpy as np

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_times import _dp_times, dp_times
from sp_planner.cost.memory import candidate_stage_layers
from sp_planner.space import Axes, Pins, degree_tuples, expand_candidates, search_order
from sp_planner.specs.workload import Workload


def _candidates(model, world):
    axes = Axes(num_layers=model.num_layers, num_experts=model.moe.num_experts if model.moe else 0)
    degrees = search_order(degree_tuples(world, Pins()))
    return expand_candidates(Workload(seq_len=32768, global_batch=256), degrees, Pins(), 8, axes=axes)


def test_shapes_priced_once_equal_every_row_priced():
    h100 = load_hardware("h100-sxm")
    for name, world in (("llama3-70b", 64), ("Qwen3-30B-A3B", 32)):
        model = load_model(name)
        c = _candidates(model, world)
        stages = candidate_stage_layers(model, c)
        shared = dp_times(model, h100, c, stages=stages, gpus_per_node=8)
        rows = _dp_times(model, h100, c, stages=stages, gpus_per_node=8)
        assert len(c) > 1000  # many candidates, far fewer shapes: the dedupe does something
        for field, a, b in zip(shared._fields, shared, rows):
            np.testing.assert_array_equal(np.broadcast_to(a, (len(c),)), np.broadcast_to(b, (len(c),)), err_msg=field)
