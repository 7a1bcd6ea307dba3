"""cost.fsdp: torch FSDP's ZeRO-1/2 is the run ZeRO-3 keeping parameters describes, and is costed so;
Megatron's ZeRO-1/2 keep their own meaning."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.fsdp import torch_fsdp_as_run
from sp_planner.cost.runtime import MEGATRON_RUNTIME, framework_runtime
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs.workload import Workload


def test_torch_fsdp_zero_1_and_2_run_as_zero_3_keeping_parameters():
    zero, reshard = torch_fsdp_as_run(np.array([0, 1, 2, 3, 3]), np.array([True, True, True, True, False]), 1)
    assert zero.tolist() == [0, 3, 3, 3, 3]
    assert reshard.tolist() == [True, False, False, True, False]
    # Megatron's states shard parameters only from ZeRO-3: nothing changes.
    zero, reshard = torch_fsdp_as_run(np.array([1, 2]), np.array([True, True]), 3)
    assert zero.tolist() == [1, 2] and reshard.tolist() == [True, True]


def test_torchtitan_zero2_costs_as_zero3_keep_and_gathers_every_micro_batch():
    # Llama-3-8B over 16 H100s, 4 micro-batches: FSDP2 without reshard after forward still
    # reshards after backward, so each micro-batch's forward gathers the parameters again.
    model, hw, titan = load_model("llama3-8b"), load_hardware("h100-sxm"), framework_runtime("torchtitan")
    workload = Workload(seq_len=8192, global_batch=64)

    def run(zero, reshard, runtime):
        plan = ParallelPlan(dp=16, zero=zero, micro_batch=1, reshard_after_forward=reshard)
        return evaluate(model, hw, workload, plan, num_nodes=2, gpus_per_node=8, runtime=runtime), plan

    zero2, plan2 = run(2, True, titan)
    kept, _ = run(3, False, titan)
    assert zero2.plan.zero == 2  # the plan as asked, costed as run
    assert zero2.step_time_s == kept.step_time_s
    assert zero2.comm_bytes == kept.comm_bytes and zero2.memory_peak_bytes == kept.memory_peak_bytes
    # 4 micro-batches x one bf16 gather of the 8.03e9 parameters, (n-1)/n of it sent.
    assert zero2.comm_bytes.dp_all_gather == pytest.approx(4 * 2 * model.num_params * 15 / 16, rel=1e-6)
    sim = simulate(model, hw, workload, plan2, num_nodes=2, gpus_per_node=8, runtime=titan)
    assert sim.plan.zero == 2 and sim.step_time_s == pytest.approx(zero2.step_time_s, rel=0.02)
    # Megatron's ZeRO-2 (Megatron-FSDP optim_grads) keeps its parameters whole: one gather a step.
    megatron2, _ = run(2, True, MEGATRON_RUNTIME)
    assert megatron2.comm_bytes.dp_all_gather == pytest.approx(2 * model.num_params * 15 / 16, rel=1e-6)
