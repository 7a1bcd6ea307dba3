"""DeepSeek Sparse Attention in the simulator (sim.attention_steps._dsa_steps, dsa_phases) and the
analytic model (cost.dsa_times) agree on the step: the indexer, top-k and sparse MLA as one compute
entry each way, the latent and indexer keys' all-gathers and the indexer's TP input gather forward
only, the latent gradient's reduce-scatter backward. DeepSeek-V3.2-Exp at 32K on 8 x 8 H800."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload

H800, V32 = load_hardware("h800"), load_model("deepseek-v3.2-exp")
WORKLOAD = Workload(seq_len=32768, global_batch=16)


@pytest.mark.parametrize("plan", [
    ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full"),
    ParallelPlan(tp=1, ring=8, cp_comm="allgather", pp=4, dp=2, ep=8, zero=1, recompute="full",
                 first_stage_layers=16, last_stage_layers=15),
    ParallelPlan(tp=8, ring=1, dp=8, ep=8, zero=3, recompute="full"),
    ParallelPlan(tp=4, ring=2, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="selective"),
])
def test_the_analytic_step_is_the_simulators(plan):
    est = evaluate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8)
    sim = simulate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)


def test_the_simulator_runs_dsas_gathers_not_k_and_v():
    plan = ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full")
    sim = simulate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    names = {p.name for p in sim.phases}
    assert {"cp latent key all-gather (dsa)", "cp indexer key all-gather (dsa)", "tp indexer input all-gather (dsa)",
            "cp dlatent reduce-scatter (dsa)"} <= names
    assert not {"cp K/V all-gather", "cp dK/dV reduce-scatter"} & names  # dense attention's


@pytest.mark.parametrize("plan", [
    ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full"),
    ParallelPlan(tp=8, ring=1, dp=8, ep=8, zero=3, recompute="full"),
    ParallelPlan(tp=4, ring=2, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="selective"),
])
def test_the_trained_indexer_agrees_too(plan):
    # The indexer's sparse KL loss (cost.dsa_loss): its kernels and TP all-reduce in the compute
    # entries, its key gradient's reduce-scatter a phase of its own.
    trained = V32.model_copy(update={"dsa": V32.dsa.model_copy(update={"indexer_loss": "sparse"})})
    est = evaluate(trained, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8)
    sim = simulate(trained, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)
    assert est.step_time_s > evaluate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8).step_time_s
    assert ("cp dindexer-key reduce-scatter (dsa)" in {p.name for p in sim.phases}) == (plan.ring > 1)


def test_the_simulator_replays_the_indexer_gradients_tp_all_reduce():
    # cost.indexer_grad_sync: one step-end all-reduce of the indexer's fp32 main_grad over each TP
    # group, exposed: the simulator's phase times it as the analytic model's tp_comm does.
    from sp_planner.candidates import Candidates
    from sp_planner.cost.indexer_grad_sync import indexer_all_reduce_s, indexer_sent_bytes
    from sp_planner.cost.states import MEGATRON_STATES

    plan = ParallelPlan(tp=8, ring=1, dp=8, ep=8, zero=1, recompute="full")
    one = Candidates.of_plan(plan)
    # 61 layers x 13,959,424 parameters x 4 B of main_grad, each rank sending 2 x 7/8 of it.
    assert float(indexer_sent_bytes(V32, one, MEGATRON_STATES)[0]) == 61 * 13_959_424 * 4 * 2 * 7 / 8
    sim = simulate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    [phase] = [p for p in sim.phases if p.name == "indexer grad all-reduce (tp)"]
    analytic = float(indexer_all_reduce_s(V32, H800, one, gpus_per_node=8, states=MEGATRON_STATES)[0])
    assert phase.duration_s == pytest.approx(analytic, rel=0.02) and analytic > 0.02
    tp1 = ParallelPlan(tp=1, ring=8, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full")
    phases = simulate(V32, H800, WORKLOAD, tp1, num_nodes=8, gpus_per_node=8, detail=False).phases
    assert "indexer grad all-reduce (tp)" not in {p.name for p in phases}
