"""The simulator with uneven stages, FP8 GEMMs and interleaved pipelines follows the analytic model."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.sim.simulate import analytic_step_time_s, simulate
from sp_planner.specs import Workload

MODEL = load_model("llama3-8b")
H100 = load_hardware("h100")
WORKLOAD = Workload(seq_len=8192, global_batch=16)


def _both(plan: ParallelPlan) -> tuple[float, float]:
    sim = simulate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
    return sim, analytic_step_time_s(MODEL, H100, WORKLOAD, plan, gpus_per_node=8)


def test_fp8_speeds_up_the_simulated_step_like_the_analytic_one():
    sim_bf16, ana_bf16 = _both(ParallelPlan(tp=2, dp=4, zero=1))
    sim_fp8, ana_fp8 = _both(ParallelPlan(tp=2, dp=4, zero=1, precision="fp8"))
    assert sim_fp8 < sim_bf16
    assert sim_bf16 / sim_fp8 == pytest.approx(ana_bf16 / ana_fp8, rel=0.1)


def test_current_scaling_slows_both_models_by_its_amax_pass():
    # The amax pass (2 B per quantized element, cost.precision) costs the same extra time in the
    # simulator and the analytic model, within the two models' 10% agreement.
    sim_d, ana_d = _both(ParallelPlan(tp=2, dp=4, zero=1, precision="fp8"))
    sim_c, ana_c = _both(ParallelPlan(tp=2, dp=4, zero=1, precision="fp8", fp8_recipe="tensorwise"))
    assert ana_c > ana_d and sim_c > sim_d
    assert sim_c - sim_d == pytest.approx(ana_c - ana_d, rel=0.1)


def test_uneven_split_moves_the_pace_in_both_models():
    # The last stage also runs the 128K-vocabulary logits: taking a layer off it (9/8/8/7) balances
    # the pipeline, adding three (5/8/8/11) makes it the bottleneck; simulator and analytic agree.
    sim_even, ana_even = _both(ParallelPlan(tp=2, pp=4, zero=1))
    sim_light, ana_light = _both(ParallelPlan(tp=2, pp=4, zero=1, first_stage_layers=9, last_stage_layers=7))
    sim_heavy, ana_heavy = _both(ParallelPlan(tp=2, pp=4, zero=1, first_stage_layers=5, last_stage_layers=11))
    assert sim_light < sim_even < sim_heavy
    assert ana_light < ana_even < ana_heavy


@pytest.mark.parametrize("plan,batch", [
    (ParallelPlan(tp=2, pp=4, zero=1), 16),
    (ParallelPlan(tp=2, pp=4, vpp=2, zero=1), 16),
    (ParallelPlan(tp=2, pp=4, vpp=4, zero=1), 16),
    (ParallelPlan(tp=1, pp=8, vpp=2, zero=1), 16),
    (ParallelPlan(tp=2, pp=4, vpp=2, zero=1, recompute="full"), 64),
])
def test_interleaved_pipelines_agree_with_the_analytic_model(plan, batch):
    # One node, no contention: the simulated interleaved schedule (Megatron's order) and the
    # analytic bubble (pp-1)/(vpp m) of the other stages' work agree.
    workload = Workload(seq_len=8192, global_batch=batch)
    sim = simulate(MODEL, H100, workload, plan, num_nodes=1, gpus_per_node=8, detail=False)
    assert sim.step_time_s == pytest.approx(sim.analytic_step_time_s, rel=0.005)


def test_interleaving_shrinks_the_bubble_by_vpp():
    # Doubling the chunks halves the fill and drain: the step saves half the plain bubble, in the
    # simulator as in the model, and sends twice the activations.
    plain = simulate(MODEL, H100, WORKLOAD, ParallelPlan(tp=2, pp=4, zero=1), num_nodes=1, gpus_per_node=8,
                     detail=False)
    interleaved = simulate(MODEL, H100, WORKLOAD, ParallelPlan(tp=2, pp=4, vpp=2, zero=1), num_nodes=1,
                           gpus_per_node=8, detail=False)
    assert interleaved.step_time_s < plain.step_time_s
    sends = [sum(e.kind == "pp_comm" for e in r.events) for r in (plain, interleaved)]
    # Per stage 2m transfers less the first stage's backward and the last's forward sends, each chunk.
    m, pp = plain.num_micro_batches, 4
    assert sends == [2 * m * (pp - 1), 2 * m * (2 * pp - 1)]
    blocks = [e for e in interleaved.events if e.kind in ("forward", "backward")]
    assert len(blocks) == 2 * 2 * m * pp and any("chunk 1" in e.name for e in blocks)


def test_tp_without_sequence_parallelism_simulates_as_the_analytic_model():
    # A run without sequence parallelism (the Megatron 2021-22 rows): its all-reduces and whole
    # inputs in both models, which agree.
    from sp_planner.cost.runtime import MEGATRON_RUNTIME
    from sp_planner.search import evaluate

    runtime = MEGATRON_RUNTIME.model_copy(update={"sequence_parallel": False})
    plan = ParallelPlan(tp=4, pp=2, zero=1)
    sim = simulate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, detail=False, runtime=runtime)
    est = evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, runtime=runtime)
    with_sp = evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    assert est.comm_bytes.tp_all_gather < with_sp.comm_bytes.tp_all_gather


@pytest.mark.parametrize("tied,plan", [
    (False, ParallelPlan(tp=2, pp=4, zero=1)),
    (True, ParallelPlan(tp=2, pp=4, zero=1)),
    (False, ParallelPlan(tp=2, pp=4, vpp=2, zero=1)),
    (True, ParallelPlan(tp=2, pp=4, vpp=4, zero=1)),
    (False, ParallelPlan(tp=1, pp=8, vpp=2, zero=1)),
])
def test_the_first_stage_embedding_passes_agree_with_the_analytic_model(tied, plan):
    # A pipeline's first stage runs the embedding's gradient passes each micro-batch after its
    # chunk 0's backward (cost.embedding_grad): with Megatron's DDP counted (its main_grad add) and
    # without, both models step alike, and move alike: in the bubble at vpp 1, on the interleaved
    # drain's last chunk-0 backwards, J = min(pp, m) of them (cost.pipeline_path's pile-up).
    # Tied or not: the first stage's table takes no output gradient with pp > 1.
    model = MODEL.model_copy(update={"tie_word_embeddings": tied})
    workload = Workload(seq_len=8192, global_batch=16)
    plain = MEGATRON_RUNTIME.model_copy(update={"grad_sync": None})
    ddp = simulate(model, H100, workload, plan, num_nodes=1, gpus_per_node=8, detail=False)
    none = simulate(model, H100, workload, plan, num_nodes=1, gpus_per_node=8, detail=False, runtime=plain)
    assert ddp.step_time_s == pytest.approx(ddp.analytic_step_time_s, rel=0.001)
    assert ddp.step_time_s - none.step_time_s == pytest.approx(ddp.analytic_step_time_s - none.analytic_step_time_s,
                                                               rel=1e-6)


def test_the_simulated_first_stage_runs_the_embedding_passes_by_hand():
    # tp 1 (no TP all-gather beside them), pp 8, vpp 2: stage 0's chunk 0 ends its backward with
    # the passes over the whole 128,256 x 4096 table, Megatron's zero-fill 2 B and main_grad add
    # 10 B an element at 3.35 TB/s x 0.76: 2.4761 ms; no other stage holds the embedding.
    result = simulate(MODEL, H100, Workload(seq_len=8192, global_batch=16), ParallelPlan(tp=1, pp=8, vpp=2, zero=1),
                      num_nodes=1, gpus_per_node=8)
    events = [e for e in result.detail_events if e.name.endswith("embedding bwd")]
    assert [e.stage for e in events] == [0]
    assert events[0].end_s - events[0].start_s == pytest.approx(12 * 128256 * 4096 / (3.35e12 * 0.76))
    assert events[0].end_s - events[0].start_s == pytest.approx(2.4761e-3, rel=1e-4)


def test_the_tied_all_reduce_crosses_nodes_in_both_models_by_hand():
    # A tied Llama-3-8B at tp 4, pp 4, dp 2 on 4 nodes: the pipeline's ends, 3 x 8 ranks apart, sum
    # their fp32 main_grad of 128,256 x 4096 / 4 elements, 525,336,576 B, each end through its own
    # 400G NIC (50 GB/s x 0.94) with 2 network steps of 14 us: 11.205 ms, after the gradient sync and
    # before the optimizer, on the critical path (cost.tied_embedding). Both models add it whole.
    plan, workload = ParallelPlan(tp=4, pp=4, dp=2, zero=1), Workload(seq_len=8192, global_batch=16)
    tied = MODEL.model_copy(update={"tie_word_embeddings": True})
    with_it, without = (simulate(m, H100, workload, plan, num_nodes=4, gpus_per_node=8, detail=False)
                        for m in (tied, MODEL))
    by_hand = 525_336_576 / (50e9 * 0.94) + 2 * 14e-6
    assert by_hand == pytest.approx(11.205e-3, rel=1e-4)
    (phase,) = [p for p in with_it.phases if p.name == "embedding grad all-reduce (pipeline ends)"]
    assert phase.crosses_nodes and phase.num_groups == 8
    assert phase.duration_s == pytest.approx(by_hand, rel=1e-9)
    assert with_it.step_time_s - without.step_time_s == pytest.approx(by_hand, rel=1e-6)
    assert with_it.analytic_step_time_s - without.analytic_step_time_s == pytest.approx(by_hand, rel=1e-6)
    assert with_it.critical_path_by_kind_s["pp_comm"] - without.critical_path_by_kind_s["pp_comm"] == pytest.approx(
        by_hand, rel=1e-6)
