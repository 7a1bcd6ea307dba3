"""The analytic model and the simulator on an interleaved pipeline of Megatron's counted split
(--account-for-embedding/loss-in-pipeline-split): Qwen2.5-14B (48 layers) at pp 5, vpp 2, so 50 /
5 = 10 layers a stage, 5 a chunk, and the embedding and the loss each stand in for one: the first
stage's chunk 0 holds 4 layers and its chunk 1 5, the last stage's chunk 0 5 and its last chunk 4
(transformer_block.py get_num_layers_to_build lines 191-201, Megatron-LM d98e8a6). 40 L40S, dp 8,
ZeRO-0 and 1, 512 tokens, 5 micro-batches.

Every stage's gradient sync covers all its layers, a chunk's bucket its own (the first stage's
chunk 1 5, the last stage's chunk 0 5, its last chunk 4 and the output layer), in both models.
Before, cost.buckets gave each chunk 9 // 2 = 4 layers, so the simulator's end stages synced a
layer fewer than the analytic model priced (1,506 ms against 1,645 ms of all-reduce on the 9-layer
stages): the analytic step 6.4% (ZeRO-0) and 6.0% (ZeRO-1) above the simulated one.
"""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_times import dp_stage_times
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.sim.simulate import build_cluster
from sp_planner.sim.step_work import step_work
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

MODEL, L40S = load_model("Qwen2.5-14B"), load_hardware("L40S")
NODES, GPUS = 5, 8
WORKLOAD = Workload(seq_len=512, global_batch=40)


def _plan(zero: int) -> ParallelPlan:
    return ParallelPlan(dp=8, pp=5, vpp=2, tp=1, zero=zero, first_stage_layers=9, last_stage_layers=9)


@pytest.mark.parametrize("zero", [0, 1])
def test_every_stage_syncs_its_layers_chunk_by_chunk_in_both_models(zero):
    plan = _plan(zero)
    cluster = build_cluster(L40S, NODES)
    work, _ = step_work(cluster, MODEL, WORKLOAD, plan)
    stages = stage_layers(MODEL.num_layers, 5, 9, 9)
    assert [int(v) for v in stages] == [9, 10, 9]
    times = dp_stage_times(MODEL, L40S, Candidates.of_plan(plan), stages=stages, gpus_per_node=GPUS,
                           seq_len=WORKLOAD.seq_len,  which=("first", "middle", "last"))
    sync = [float((t.grad_all_reduce_s if zero == 0 else t.grad_reduce_scatter_s)[0]) for t in times]
    chunk = [float((t.chunk_all_reduce_s if zero == 0 else t.chunk_reduce_scatter_s)[0]) for t in times]
    simulated = [work.reduce_calls(s).total_s for s in (0, 2, 4)]
    assert simulated == pytest.approx(sync, rel=1e-3)
    # A 5-layer chunk is one call on every stage: the first stage's chunk 1 (after layer 4's
    # backward, chunk 0 holding layers 0-3), a middle stage's chunks, the last stage's chunk 0.
    first, middle, last = (work.reduce_calls(s) for s in (0, 2, 4))
    assert first.at_layer(4) == middle.at_layer(0) == middle.at_layer(5) == last.at_layer(0)
    assert chunk == pytest.approx([first.at_layer(4)[0]] * 3, rel=1e-3)
    assert len(first.at_layer(8)) == 0 and len(last.at_layer(5)) == 1  # the last chunk: layers 5-8
    # A middle stage: its 10 layers in two 5-layer calls.
    assert middle.total_s == pytest.approx(2 * chunk[1], rel=1e-3)


@pytest.mark.parametrize("zero", [0, 1])
def test_the_counted_split_step_agrees_with_the_simulator(zero):
    # Before: +6.4% (ZeRO-0) and +6.0% (ZeRO-1), each end stage's sync a layer short in the simulator.
    plan = _plan(zero)
    sim = simulate(MODEL, L40S, WORKLOAD, plan, num_nodes=NODES, gpus_per_node=GPUS, detail=False)
    est = evaluate(MODEL, L40S, WORKLOAD, plan, num_nodes=NODES, gpus_per_node=GPUS)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.015)

