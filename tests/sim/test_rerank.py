"""`sp-plan --simulate K`: the best K analytic plans re-ranked by simulated step time."""

from __future__ import annotations

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search import search
from sp_planner.sim import simulate
from sp_planner.sim.rerank import rerank_by_simulation
from sp_planner.specs.workload import Workload

QUESTION = dict(num_nodes=2, gpus_per_node=8)


def _result(top_k: int = 6):
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=64 * 1024, global_batch=16)
    return model, hardware, workload, search(model, hardware, workload, top_k=top_k, **QUESTION)


def test_rerank_orders_the_first_k_by_simulated_time_and_keeps_the_rest():
    model, hardware, workload, result = _result()
    reranked = rerank_by_simulation(result, model, hardware, workload, top_k=4, **QUESTION)
    head, tail = reranked.ranked[:4], reranked.ranked[4:]
    assert {est.plan for est in head} == {est.plan for est in result.ranked[:4]}
    assert [est.plan for est in tail] == [est.plan for est in result.ranked[4:]]
    sim_times = [est.simulated_step_time_s for est in head]
    assert sim_times == sorted(sim_times)
    assert all(est.simulated_step_time_s is None for est in tail)
    for est in head:  # each number is the simulator's, and the analytic one is kept beside it
        expected = simulate(model, hardware, workload, est.plan, detail=False, **QUESTION).step_time_s
        assert est.simulated_step_time_s == expected
        original = next(e for e in result.ranked if e.plan == est.plan)
        assert est.step_time_s == original.step_time_s
