"""cost.memory.states_floor_bytes is a lower bound of memory_columns' peak on every row, bit for
bit, so a row over the capacity by it is out of memory (search_pruned_scan prices no memory for
it), on MoE and dense searches under every framework's runtime; and searches with the floor
answer as searches that price every row's memory."""

import numpy as np
import pandas as pd
import pytest

import sp_planner.search as search_module
import sp_planner.search_pruned_scan as pruned_scan
from sp_planner.catalog import load_hardware, load_model
from sp_planner.columns import take_rows
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.search import search
from sp_planner.cost.memory import states_floor_bytes
from sp_planner.search_columns import candidate_memory, candidate_stage_states, search_axes
from sp_planner.space import Pins, degree_tuples, expand_candidates, search_order, with_expert_degrees
from sp_planner.specs import Workload
from tests.cost.candidate_variants import with_fixed_choices_flipped

WORKLOAD = Workload(seq_len=32768, global_batch=64, causal=True)
RUNTIMES = {**FRAMEWORK_RUNTIME, "torchtitan-0.2": TORCHTITAN_V02_RUNTIME}


@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "deepseek-v3", "llama3-8b"])
def question(request):
    """A model, H100s and the first degree tuples of its 64-GPU search with every choice the
    search varies (and those one search holds fixed, flipped: tests/cost/candidate_variants)."""
    model, hardware = load_model(request.param), load_hardware("h100-sxm")
    axes = search_axes(model, hardware)
    degrees = search_order(with_expert_degrees(degree_tuples(64, Pins()), axes.num_experts, Pins()))
    c = expand_candidates(WORKLOAD, degrees[:60], Pins(), 8, axes=axes)
    return model, hardware, with_fixed_choices_flipped(c)


@pytest.mark.parametrize("framework", sorted(RUNTIMES))
def test_floor_is_at_most_the_peak(question, framework):
    model, hardware, c = question
    floor = states_floor_bytes(candidate_stage_states(model, hardware, WORKLOAD, c, 8, RUNTIMES[framework]))
    peak = candidate_memory(model, hardware, WORKLOAD, c, 8, RUNTIMES[framework]).peak_bytes
    assert not np.isnan(floor).any() and (floor > 0).all()
    assert (floor <= peak).all()
    over = floor > hardware.hbm_bytes
    assert over.any() and (peak[over] > hardware.hbm_bytes).all()


@pytest.mark.parametrize("framework", ["megatron", "torchtitan"])
def test_memory_with_the_states_taken_is_the_memory(question, framework):
    # The states priced on every row, taken at some rows and handed to candidate_memory, give those
    # rows the memory pricing them alone gives, bit for bit (search_pruned_scan._fitting_rows).
    model, hardware, c = question
    runtime = RUNTIMES[framework]
    states = candidate_stage_states(model, hardware, WORKLOAD, c, 8, runtime)
    at = np.flatnonzero(np.arange(len(c)) % 3 != 1)
    taken = candidate_memory(model, hardware, WORKLOAD, c.take(at), 8, runtime, take_rows(states, at, len(c)))
    alone = candidate_memory(model, hardware, WORKLOAD, c.take(at), 8, runtime)
    for name, a, b in zip(taken._fields, taken, alone):
        np.testing.assert_array_equal(a, b, err_msg=name)


QUESTIONS = [  # (model, nodes, seq_len, runtime, head_rows): 2 rows kept come to all fit, 4000 never do
    ("GLM-4.5-Air", 2, 65536, "megatron", 40),
    ("Qwen3-30B-A3B", 2, 32768, "torchtitan", 40),
    ("Llama-3-70B", 1, 131072, "megatron", 4000),
]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: f"{q[0]}-{q[1]}x8-{q[2]}-{q[3]}-{q[4]}")
def test_searches_with_the_floor_answer_as_without(question, monkeypatch):
    name, nodes, seq_len, framework, head_rows = question
    monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
    monkeypatch.setattr(pruned_scan, "PRUNE_ROUND_ROWS", 512)
    monkeypatch.setattr(pruned_scan, "PRUNE_BATCH_ROWS", 4096)
    monkeypatch.setattr(pruned_scan, "BOUND_BATCH_ROWS", 4096)
    monkeypatch.setattr(pruned_scan, "FLOOR_SPLIT_SHARE", 0.0)  # every row over by the floor left unpriced
    model, hardware = load_model(name), load_hardware("h100-sxm")
    workload = Workload(seq_len=seq_len, global_batch=8 * nodes, causal=True)
    unpriced: list[int] = []
    real = pruned_scan._fitting_rows

    def counted(*args):
        out = real(*args)
        unpriced.append(len(out[3].place))
        return out

    monkeypatch.setattr(pruned_scan, "_fitting_rows", counted)

    def answer():
        return search(model, hardware, workload, num_nodes=nodes, gpus_per_node=8, top_k=10,
                      runtime=FRAMEWORK_RUNTIME[framework])

    floored = answer()
    assert sum(unpriced) > 0  # rows out of memory by their states alone
    real_floor = pruned_scan.states_floor_bytes
    monkeypatch.setattr(pruned_scan, "states_floor_bytes", lambda states: np.zeros_like(real_floor(states)))
    unpriced.clear()
    whole = answer()
    assert sum(unpriced) == 0
    assert floored.candidates_evaluated == whole.candidates_evaluated
    assert floored.prune_counts == whole.prune_counts
    assert floored.ranked == whole.ranked
    pd.testing.assert_frame_equal(floored.head(head_rows), whole.head(head_rows))
