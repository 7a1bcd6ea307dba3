"""estimate: whole-byte memory parts that add up to the whole-byte peak."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import MemoryBreakdown, whole_byte_parts
from sp_planner.search import search
from sp_planner.specs.workload import Workload


def test_whole_byte_parts_step_between_the_running_totals():
    # Running totals 0.5, 1.0, 2.6, 5.0, 5.6 round (half to even) to 0, 1, 3, 5, 6: the parts are the
    # steps, each within a byte of its value, and they sum to round(5.6) = 6 where rounding each
    # part alone (0, 0, 2, 2, 1) gives 5.
    parts = [0.5, 0.5, 1.6, 2.4, 0.6]
    assert whole_byte_parts(parts).tolist() == [0, 1, 2, 2, 1]
    assert sum(round(p) for p in parts) == 5
    # Rows at once (plans.csv); a row with a part that is not finite rounds its finite parts alone.
    rows = whole_byte_parts([[0.5, 0.5, 1.6], [1.4, math.inf, 2.5]])
    assert rows[0].tolist() == [0, 1, 2]
    assert rows[1][0] == 1 and rows[1][1] == math.inf and rows[1][2] == 2


@pytest.fixture(scope="module")
def qwen3_8b_plans():
    """Qwen3-8B at 200K on 5 x 8 H100s: its best plans' parts, rounded alone, sum to a byte less
    than the rounded peak."""
    result = search(load_model("qwen3-8b"), load_hardware("h100"), Workload(seq_len=200 * 1024, global_batch=20),
                    num_nodes=5, gpus_per_node=8, top_k=3)
    return result.ranked


def test_plan_file_memory_parts_sum_to_its_peak(qwen3_8b_plans):
    for est in qwen3_8b_plans:
        assert sum(round(v) for v in est.memory.model_dump().values()) != round(est.memory_peak_bytes)
        written = est.model_dump(mode="json")
        assert sum(written["memory"].values()) == written["memory_peak_bytes"] == round(est.memory_peak_bytes)
        for name, value in written["memory"].items():
            assert type(value) is int and abs(value - getattr(est.memory, name)) < 1
        # The parts read back as the floats they round (a plan file round-trips).
        assert MemoryBreakdown.model_validate(written["memory"]).whole_bytes() == written["memory"]


def test_whole_byte_parts_of_a_breakdown_keep_the_field_order(qwen3_8b_plans):
    memory = qwen3_8b_plans[0].memory
    values = [getattr(memory, name) for name in MemoryBreakdown.model_fields]
    assert list(memory.whole_bytes().values()) == whole_byte_parts(np.array(values)).tolist()
    assert list(memory.whole_bytes()) == list(MemoryBreakdown.model_fields)
