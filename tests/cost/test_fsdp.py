"""cost.fsdp: torch FSDP's ZeRO-1/2 is the run ZeRO-3 keeping parameters describes, and is costed so;
Megatron's ZeRO-1/2 keep their own meaning."""

from types import SimpleNamespace

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.fsdp import (
    grad_reduces_per_step,
    param_gathers_per_step,
    root_gathers_per_micro_batch,
    stage_synced,
    torch_fsdp_as_run,
)
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


def test_megatron_fsdp_gathers_the_root_unit_once_a_step():
    # Megatron-FSDP (ZeRO-3, reshard after forward) gathers the non-unit parameters in the step's
    # first forward only: 1/m a micro-batch; every forward elsewhere (torch FSDP2's reshard-false
    # ZeRO-3, a framework that does not keep them, ZeRO-1/2 whose gathers are once a step anyway).
    zero, reshard = np.array([3, 3, 3, 2]), np.array([True, False, True, True])
    assert root_gathers_per_micro_batch(True, zero, reshard, 4).tolist() == [0.25, 1.0, 0.25, 1.0]
    assert root_gathers_per_micro_batch(False, zero, reshard, 4).tolist() == [1.0] * 4
    assert root_gathers_per_micro_batch(True, zero, reshard, np.array([1, 2, 8, 8])).tolist() == [1.0, 1.0, 0.125, 1.0]


def test_a_pipeline_stage_synced_once_a_step_reduces_once_and_gathers_once_or_every_backward():
    # torch.distributed.pipelining (cost.fsdp.stage_synced): ZeRO-3 in a pipeline only. With 4
    # micro-batches: kept after forward, 1 gather (the first forward's); resharded, 1 + 4 (every
    # backward's); 1 reduce. Unsynced ZeRO-3: 4 or 8 gathers, 4 reduces; ZeRO-1: 1 of each.
    c = SimpleNamespace(pp=np.array([2, 2, 1, 2, 2]), zero=np.array([3, 3, 3, 1, 2]),
                        reshard=np.array([False, True, True, True, True]))
    assert stage_synced(True, c.pp, c.zero).tolist() == [True, True, False, False, False]
    assert not stage_synced(False, c.pp, c.zero).any()  # Megatron-FSDP, DeepSpeed: every micro-batch
    assert param_gathers_per_step(c, 4, True).tolist() == [1, 5, 8, 1, 1]
    assert param_gathers_per_step(c, 4).tolist() == [4, 8, 8, 1, 1]
    assert grad_reduces_per_step(c, 4, True).tolist() == [1, 1, 4, 1, 4]
    assert grad_reduces_per_step(c, 4).tolist() == [4, 4, 4, 1, 4]


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
