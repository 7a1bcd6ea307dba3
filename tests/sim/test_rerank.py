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


def test_plans_the_simulator_ties_keep_the_searchs_order(monkeypatch):
    # Both held to the best published MFU, two plans simulate to the same step: they are ordered
    # by the analytic time before that bound, as the search orders them (search_rank), not by
    # memory first (sp-plan --simulate put ZeRO-3 ahead of the ZeRO-2 the search ranked first).
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=256 * 1024, global_batch=16)
    question = dict(num_nodes=4, gpus_per_node=8)
    result = search(model, hardware, workload, top_k=2, **question)
    first, second = result.ranked[:2]
    assert first.step_time_s == second.step_time_s and first.memory_peak_bytes > second.memory_peak_bytes
    monkeypatch.setattr("sp_planner.sim.rerank.simulate", lambda *a, **k: type("S", (), {"step_time_s": 1.0})())
    reranked = rerank_by_simulation(result, model, hardware, workload, top_k=2, **question)
    assert [est.plan for est in reranked.ranked[:2]] == [first.plan, second.plan]


def _reranked_with_a_late_plan(monkeypatch, late_s: float):
    """The search's plans simulated at 10 s + their rank, re-ranked over the first 2 with the 5th
    already simulated at `late_s` by another ranking: (search result, that plan, re-ranked)."""
    model, hardware, workload, result = _result()
    late = result.ranked[4]
    times = {est.plan: 10.0 + i for i, est in enumerate(result.ranked)}
    monkeypatch.setattr("sp_planner.sim.rerank.simulate",
                        lambda m, h, w, plan, **k: type("S", (), {"step_time_s": times[plan]})())
    reranked = rerank_by_simulation(result, model, hardware, workload, top_k=2, known={late.plan: late_s},
                                    **QUESTION)
    return result, late, reranked


def test_plans_another_ranking_simulated_join_the_head(monkeypatch):
    # sp-plan simulates the framework's first K, then every plan's first K, sharing `known`: a plan
    # past the second ranking's first K that simulated faster must lead it too (it was left in its
    # analytic place, and sp-plan said the framework "cannot express" the slower overall best).
    result, late, reranked = _reranked_with_a_late_plan(monkeypatch, 1.0)
    assert [est.plan for est in reranked.ranked[:3]] == [late.plan, result.ranked[0].plan, result.ranked[1].plan]
    assert [est.simulated_step_time_s for est in reranked.ranked[:3]] == [1.0, 10.0, 11.0]
    rest = [est.plan for est in reranked.ranked[3:]]
    assert rest == [est.plan for est in result.ranked[2:] if est.plan != late.plan]


def test_plans_another_ranking_simulated_slower_keep_their_place(monkeypatch):
    # A plan past the first K that another ranking simulated slower than all of them stays behind
    # the faster plans the analytic model ranks before it (lifted, Llama-3-8B at 64K with
    # --framework torchtitan --simulate 3 put the framework's 72.9 s plans ahead of 70.8 s ones).
    result, late, reranked = _reranked_with_a_late_plan(monkeypatch, 99.0)
    assert [est.plan for est in reranked.ranked] == [est.plan for est in result.ranked]
    assert reranked.ranked[4].simulated_step_time_s == 99.0
