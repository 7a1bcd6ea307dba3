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


def test_the_simulator_replays_the_step_end_tp_all_reduces():
    # cost.replicated_grads: two step-end all-reduces over each TP group, exposed, the
    # sequence-parallel parameters' main_grad (SUM) then the indexer's (AVG): the simulator's phases
    # time them as the analytic model's tp_comm does, call by call.
    from sp_planner.candidates import Candidates
    from sp_planner.cost.links import ring_collective_time_s
    from sp_planner.cost.replicated_grads import replicated_sent_bytes
    from sp_planner.cost.states import MEGATRON_STATES

    plan = ParallelPlan(tp=8, ring=1, dp=8, ep=8, zero=1, recompute="full")
    one = Candidates.of_plan(plan)
    calls = replicated_sent_bytes(V32, one, MEGATRON_STATES, seq_len=WORKLOAD.seq_len, sums_sequence_parallel=True,
                                  sequence_parallel=True)
    # 61 layers x 13,959,424 indexer parameters; 3 dense and 58 MoE layers' norms, MLA down
    # projections and latent norms, routers, and the final norm: 1,030,904,832 (tests/cost/
    # test_replicated_grads.py); 4 B of main_grad each, each rank sending 2 x 7/8 of it.
    assert float(calls.averaged[0]) == 61 * 13_959_424 * 4 * 2 * 7 / 8
    assert float(calls.summed[0]) == 1_030_904_832 * 4 * 2 * 7 / 8
    sim = simulate(V32, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    for name, sent in (("sequence-parallel grad all-reduce (tp)", calls.summed),
                       ("indexer grad all-reduce (tp)", calls.averaged)):
        [phase] = [p for p in sim.phases if p.name == name]
        analytic = float(ring_collective_time_s(H800, "all_reduce", float(sent[0]), 8, 1, 8))
        assert phase.duration_s == pytest.approx(analytic, rel=0.02) and analytic > 0.02
    tp1 = ParallelPlan(tp=1, ring=8, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full")
    phases = simulate(V32, H800, WORKLOAD, tp1, num_nodes=8, gpus_per_node=8, detail=False).phases
    assert not {"sequence-parallel grad all-reduce (tp)", "indexer grad all-reduce (tp)"} & {p.name for p in phases}


@pytest.mark.parametrize("plan", [ParallelPlan(tp=8, dp=8, zero=1), ParallelPlan(tp=4, pp=2, dp=8, zero=1)])
def test_a_dense_models_norms_all_reduce_agrees_and_slows_the_step(plan):
    # Llama 3 8B: its norms' call alone (no indexer), in both models' steps alike, which the
    # framework without the call (sums_sequence_parallel_grads False) runs faster by about its time.
    from sp_planner.cost.runtime import MEGATRON_RUNTIME

    llama = load_model("llama3-8b")
    est = evaluate(llama, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8)
    sim = simulate(llama, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)
    names = {p.name for p in sim.phases}
    assert "sequence-parallel grad all-reduce (tp)" in names and "indexer grad all-reduce (tp)" not in names
    without = MEGATRON_RUNTIME.model_copy(update={"sums_sequence_parallel_grads": False})
    faster = simulate(llama, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False, runtime=without)
    [phase] = [p for p in sim.phases if p.name == "sequence-parallel grad all-reduce (tp)"]
    assert sim.step_time_s - faster.step_time_s == pytest.approx(phase.duration_s, rel=0.05)


@pytest.mark.parametrize("plan", [ParallelPlan(tp=8, dp=8, zero=3), ParallelPlan(tp=4, pp=2, dp=8, zero=3)])
def test_torchtitans_per_parameter_all_reduces_agree(plan):
    # cost.partial_tp_grads: FSDP2's per-parameter all-reduces of the norms' Partial gradients, the
    # same seconds in both models' steps (Llama 3 8B: 2 micro-batches x 65 calls at pp 1; one
    # synced round of 16 x 2 at pp 2).
    from sp_planner.cost.runtime import TORCHTITAN_RUNTIME

    llama = load_model("llama3-8b")
    off = TORCHTITAN_RUNTIME.model_copy(update={"partial_tp_grads": False})
    est, est_off = (evaluate(llama, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, runtime=rt)
                    for rt in (TORCHTITAN_RUNTIME, off))
    sim, sim_off = (simulate(llama, H800, WORKLOAD, plan, num_nodes=8, gpus_per_node=8, detail=False, runtime=rt)
                    for rt in (TORCHTITAN_RUNTIME, off))
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)
    [phase] = [p for p in sim.phases if p.name == "norm grad all-reduce (tp, per parameter)"]
    calls = 2 * 65 if plan.pp == 1 else 32
    assert sim.step_time_s - sim_off.step_time_s == pytest.approx(calls * phase.duration_s, rel=1e-6)
    assert est.step_time_s - est_off.step_time_s == pytest.approx(calls * phase.duration_s, rel=1e-6)
