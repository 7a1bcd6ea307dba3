"""Explicit splits run as Megatron's --pipeline-model-parallel-layout (sp_planner.pipeline,
SPLIT_LAYOUT): the analytic step (each chunk walked, cost.chunk_path; the end chunks' rest in the
data-parallel buckets and exposure) is the simulator's, which places each chunk's layers by
pipeline_chunks.chunk_layer_counts. DeepSeek-V3 with one MTP depth at 4K over 64 GB200 nodes of 4 as
Megatron-Bridge's "Et*4|(t*4|)*14tmL" (pp 4 x vpp 4, 16 / 2 x 16 / 13 layers) and its
"Et*3|(t*4|)*14ttL"; Llama-3-8B over pp 4 x vpp 2 with 7 / 8 / 8 / 9 layers (chunks 3,4 | 4,4 | 4,5),
ZeRO-1 and ZeRO-3; and pp 2 x vpp 3 with 15 / 17 (chunks 5,5,5 | 5,5,7)."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload

GB200, H100 = load_hardware("GB200-NVL72"), load_hardware("H100-SXM")
DSV3_MTP = load_model("DeepSeek-V3").model_copy(update={"mtp_layers": 1})
DSV3_PLAN = dict(pp=4, vpp=4, dp=64, ep=64, recompute="mla_up_proj")
LLAMA = load_model("Llama-3-8B")


@pytest.mark.parametrize(("model", "hardware", "workload", "plan", "nodes", "gpus_per_node"), [
    (DSV3_MTP, GB200, Workload(seq_len=4096, global_batch=4096),
     ParallelPlan(first_stage_layers=16, last_stage_layers=13, **DSV3_PLAN), 64, 4),
    (load_model("DeepSeek-V3"), GB200, Workload(seq_len=4096, global_batch=4096),
     ParallelPlan(first_stage_layers=15, last_stage_layers=14, **DSV3_PLAN), 64, 4),
    (LLAMA, H100, Workload(seq_len=4096, global_batch=256),
     ParallelPlan(pp=4, vpp=2, dp=2, first_stage_layers=7, last_stage_layers=9), 1, 8),
    (LLAMA, H100, Workload(seq_len=4096, global_batch=256),
     ParallelPlan(pp=4, vpp=2, dp=2, first_stage_layers=7, last_stage_layers=9, zero=3), 1, 8),
    (LLAMA, H100, Workload(seq_len=4096, global_batch=256),
     ParallelPlan(pp=2, vpp=3, dp=4, first_stage_layers=15, last_stage_layers=17), 1, 8),
])
def test_a_layouts_analytic_step_is_the_simulators(model, hardware, workload, plan, nodes, gpus_per_node):
    est = evaluate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=gpus_per_node)
    sim = simulate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=gpus_per_node, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.01)


@pytest.mark.parametrize(("plan", "zero"), [
    # Accepted since Stop 55 (pipeline.split_breaks): pp 2 with vpp 2 (16 / 16: chunks 8,8 | 8,8),
    # middle stages of 9 over vpp 2 (7 / 9 x 2 / 7: chunks 3,4 | 5,4 | 4,3), end stages short of
    # a middle chunk (pp 8 x vpp 4, 5 / 4 x 6 / 3: chunks 2,1,1,1 | 1,1,1,1 | 1,1,1,0).
    (dict(pp=2, vpp=2, dp=4, first_stage_layers=16, last_stage_layers=16), 1),
    (dict(pp=2, vpp=2, dp=4, first_stage_layers=16, last_stage_layers=16), 3),
    (dict(pp=4, vpp=2, dp=2, first_stage_layers=7, last_stage_layers=7), 1),
    (dict(pp=4, vpp=2, dp=2, first_stage_layers=7, last_stage_layers=7), 3),
    (dict(pp=8, vpp=4, dp=1, first_stage_layers=5, last_stage_layers=3), 1),
])
def test_layouts_the_flags_cannot_express_agree_with_the_simulator(plan, zero):
    workload, p = Workload(seq_len=4096, global_batch=256), ParallelPlan(zero=zero, **plan)
    est = evaluate(LLAMA, H100, workload, p, num_nodes=1, gpus_per_node=8)
    sim = simulate(LLAMA, H100, workload, p, num_nodes=1, gpus_per_node=8, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.01)
