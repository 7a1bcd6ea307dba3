"""cost.memory's terms priced once per distinct row of the columns each reads (STATE_COLUMNS,
ACTIVATION_COLUMNS, RUNTIME_COLUMNS, distinct.per_distinct_rows; the activations of every layer
kind on one ACTIVATION_COLUMNS key, distinct.per_key) give every row of a MoE search what pricing
every row gives it, bit for bit, under every framework's runtime."""


import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost import memory as memory_module
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.search_columns import candidate_memory, search_axes
from sp_planner.space import Pins, degree_tuples, expand_candidates, search_order, with_expert_degrees
from sp_planner.specs import Workload
from tests.cost.candidate_variants import with_fixed_choices_flipped

WORKLOAD = Workload(seq_len=32768, global_batch=64, causal=True)
RUNTIMES = {**FRAMEWORK_RUNTIME, "torchtitan-0.2": TORCHTITAN_V02_RUNTIME}


@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "deepseek-v3"])
def question(request):
    """A model, H100s and the first degree tuples of its 64-GPU search with every choice the
    search varies, twice: as enumerated and with the choices one search holds fixed (Adam's
    moments, FP8 attention, the ring layout, CPU offloading at pp 1) flipped."""
    model, hardware = load_model(request.param), load_hardware("h100-sxm")
    axes = search_axes(model, hardware)
    degrees = search_order(with_expert_degrees(degree_tuples(64, Pins()), axes.num_experts, Pins()))
    c = expand_candidates(WORKLOAD, degrees[:60], Pins(), 8, axes=axes)
    return model, hardware, with_fixed_choices_flipped(c)


def _every_row(monkeypatch) -> None:
    monkeypatch.setattr(memory_module, "per_distinct_rows", lambda fn, rows, names: fn(rows))
    monkeypatch.setattr(memory_module, "distinct_key", lambda rows, names: None)  # per_key: every row


@pytest.mark.parametrize("framework", sorted(RUNTIMES))
def test_distinct_rows_price_as_every_row(question, framework, monkeypatch):
    model, hardware, c = question
    assert len(c) > 10_000 and len(np.unique(c.recompute)) > 1 and len(np.unique(c.zero)) > 1
    once = candidate_memory(model, hardware, WORKLOAD, c, 8, RUNTIMES[framework])
    _every_row(monkeypatch)
    every = candidate_memory(model, hardware, WORKLOAD, c, 8, RUNTIMES[framework])
    for name, a, b in zip(once._fields, once, every):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("names, read", [("ACTIVATION_COLUMNS", "micro_batch"), ("STATE_COLUMNS", "zero"),
                                         ("RUNTIME_COLUMNS", "allgather")])
def test_a_column_left_out_of_a_key_is_caught(question, names, read, monkeypatch):
    """The comparison above sees a column a term reads left out of its key."""
    model, hardware, c = question
    every = candidate_memory(model, hardware, WORKLOAD, c, 8)
    monkeypatch.setattr(memory_module, names, tuple(n for n in getattr(memory_module, names) if n != read))
    once = candidate_memory(model, hardware, WORKLOAD, c, 8)
    assert not np.array_equal(once.peak_bytes, every.peak_bytes)
