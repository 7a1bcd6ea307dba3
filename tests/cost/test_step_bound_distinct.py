"""cost.step_bound's parts priced once per distinct row of BOUND_COLUMNS, with the weight casts and
the tied all-reduce (cost.zero_read_terms) added row by row, give every row of a search the bound
pricing every row gives it, bit for bit, under every framework's runtime."""


import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost import step_bound
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.distinct import distinct_key, per_key
from sp_planner.search_columns import candidate_step_bound, search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.specs import Workload
from tests.cost.candidate_variants import with_fixed_choices_flipped

WORKLOAD = Workload(seq_len=16384, global_batch=64, causal=True)


@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "deepseek-v3", "gemma-2-9b"])
def question(request):
    """A model (MoE; MLA with layer kinds; a tied table), H100s and its 32-GPU search with every
    precision, twice: as enumerated and with the choices one search holds fixed (Adam's moments,
    FP8 attention, the ring layout, CPU offloading at pp 1) flipped."""
    model, hardware = load_model(request.param), load_hardware("h100-sxm")
    c = enumerate_candidates(WORKLOAD, 32, Pins(precision=None), 8, axes=search_axes(model, hardware))
    return model, hardware, with_fixed_choices_flipped(c)


def _every_row(monkeypatch) -> None:
    monkeypatch.setattr(step_bound, "distinct_key", lambda rows, names: None)


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_RUNTIME))
def test_distinct_rows_bound_as_every_row(question, framework, monkeypatch):
    model, hardware, c = question
    assert len(c) > 10_000 and len(np.unique(c.zero)) > 1 and len(np.unique(c.precision)) > 1
    once = candidate_step_bound(model, hardware, WORKLOAD, c, 8, FRAMEWORK_RUNTIME[framework]).bound_s
    _every_row(monkeypatch)
    every = candidate_step_bound(model, hardware, WORKLOAD, c, 8, FRAMEWORK_RUNTIME[framework]).bound_s
    assert np.isfinite(every).mean() > 0.5
    np.testing.assert_array_equal(once, every)


def test_a_column_read_left_out_is_caught(question, monkeypatch):
    """The comparison above sees a column the parts read left out of the key, and the ZeRO-reading
    terms priced once per distinct row of the others."""
    model, hardware, c = question
    every = candidate_step_bound(model, hardware, WORKLOAD, c, 8).bound_s
    monkeypatch.setattr(step_bound, "BOUND_COLUMNS", tuple(n for n in step_bound.BOUND_COLUMNS if n != "micro_batch"))
    assert not np.array_equal(candidate_step_bound(model, hardware, WORKLOAD, c, 8).bound_s, every)
    monkeypatch.undo()
    terms = step_bound.zero_read_terms

    def zero_unread(model, hardware, rows, layers, micro_batches, **options):
        return per_key(lambda r, lay, m: terms(model, hardware, r, lay, m, **options),
                       distinct_key(rows, step_bound.BOUND_COLUMNS), rows, layers, micro_batches)

    monkeypatch.setattr(step_bound, "zero_read_terms", zero_unread)
    assert not np.array_equal(candidate_step_bound(model, hardware, WORKLOAD, c, 8).bound_s, every)
