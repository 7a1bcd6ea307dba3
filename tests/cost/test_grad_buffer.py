"""cost.grad_buffer: each wrapper's passes against a count by hand from the code its docstring cites,
and the step time and the simulator charging them."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.grad_buffer import (
    DEEPSPEED_GRAD_SYNC,
    MEGATRON_GRAD_SYNC,
    TORCH_FSDP1_GRAD_SYNC,
    TORCH_FSDP2_GRAD_SYNC,
    GradSync,
    grad_buffer_bytes,
    slowest_stage_step_bytes,
    stage_step_bytes,
)
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.candidates import Candidates
from sp_planner.specs.workload import Workload

P, E = 1_000_000_000, 0  # a rank's stage parameters, none of them routed experts


def _bytes(sync, *, zero, g=4, m=4, dp_cp=8, shard=None, reshard=True, gathers=0):
    return float(grad_buffer_bytes(sync, grad_bytes=g, zero=zero, sharded_from=2, reshard=reshard, params=P,
                                   experts=E, shard=P / dp_cp if shard is None else shard, micro_batches=m,
                                   dp_cp=dp_cp, edp=1, gathers=gathers))


def test_megatron_ddp_zeroes_checks_and_scales_the_whole_buffer_once_a_step():
    # fp32 buffer: zero-fill 4 + NaN norm 4 + scale 4 + 4 = 16 B a parameter, whatever the micro-batches.
    assert _bytes(MEGATRON_GRAD_SYNC, zero=1) == 16 * P
    assert _bytes(MEGATRON_GRAD_SYNC, zero=0, m=1) == 16 * P
    # Megatron-Bridge's perf runs: no NaN check, 1/dp inside the collective: the zero-fill alone.
    bridge = GradSync(check_for_nan_in_grad=False, average_in_collective=True)
    assert _bytes(bridge, zero=1) == 4 * P
    # bf16 gradients halve every pass; one rank in the group: no scaling (the factor is 1).
    assert _bytes(MEGATRON_GRAD_SYNC, zero=1, g=2) == 8 * P
    assert _bytes(MEGATRON_GRAD_SYNC, zero=1, dp_cp=1) == 8 * P


def test_megatron_fsdp_touches_only_the_shard_unless_gradients_are_bf16():
    # fp32: premul-sum scales in NCCL; the shard is zeroed once (4) and accumulated each micro-batch
    # (read 2 x 4, write 4): (4 + 12 x 4) x P / 8 = 6.5 B a parameter at dp 8 and 4 micro-batches.
    assert _bytes(MEGATRON_GRAD_SYNC, zero=3) == pytest.approx((4 + 12 * 4) * P / 8)
    assert _bytes(MEGATRON_GRAD_SYNC, zero=2) == pytest.approx((4 + 12 * 4) * P / 8)
    # bf16: the unsharded bucket is scaled in place every micro-batch (2 + 2), unless averaged.
    assert _bytes(MEGATRON_GRAD_SYNC, zero=3, g=2) == pytest.approx((2 + 6 * 4) * P / 8 + 4 * 4 * P)
    averaged = GradSync(average_in_collective=True)
    assert _bytes(averaged, zero=3, g=2) == pytest.approx((2 + 6 * 4) * P / 8)


def test_torch_fsdp2_copies_in_gradients_and_copies_gathers_in_and_out():
    # Per micro-batch the bf16 gradients into the fp32 reduce-scatter input (2 + 4); from the second
    # micro-batch the shard accumulated (12); per gather the fp32 shard cast (4 + 2) and copied in
    # (2 + 2), the output copied out per unsharded element (2 + 2). 4 micro-batches, 8 gathers.
    shard = P / 8
    expected = 6 * P * 4 + 12 * shard * 3 + 8 * (10 * shard + 4 * P)
    assert _bytes(TORCH_FSDP2_GRAD_SYNC, zero=3, gathers=8) == pytest.approx(expected)
    # Megatron's ZeRO-3 without reshard after forward is torch FSDP2 (--use-torch-fsdp2).
    assert _bytes(MEGATRON_GRAD_SYNC, zero=3, reshard=False, gathers=4) == pytest.approx(
        _bytes(TORCH_FSDP2_GRAD_SYNC, zero=3, gathers=4))


def test_torch_fsdp1_concatenates_casts_and_divides_every_micro_batch():
    # Per micro-batch: the split's backward concatenates the bf16 gradients (2 + 2), the cast to
    # fp32 (2 + 4), the pre-divide in place (4 + 4) = 18 B a parameter; the shard's post-divide
    # (8, from 4 ranks) and, from the second micro-batch, its accumulation (12); per gather the
    # fp32 shard cast to bf16 (4 + 2).
    shard = P / 8
    expected = 18 * P * 4 + 8 * shard * 4 + 12 * shard * 3 + 2 * 6 * shard
    assert _bytes(TORCH_FSDP1_GRAD_SYNC, zero=3, gathers=2) == pytest.approx(expected)
    # Two ranks: a pre-divide (factor 2) but no post-divide (2 / 2 = 1).
    assert _bytes(TORCH_FSDP1_GRAD_SYNC, zero=3, dp_cp=2) == pytest.approx(18 * P * 4 + 12 * P / 2 * 3)
    # bf16 reduction: no cast; the concatenation (4) and the pre-divide (2 + 2) remain.
    assert _bytes(TORCH_FSDP1_GRAD_SYNC, zero=3, g=2, m=1, dp_cp=2) == pytest.approx(8 * P)


def test_fp16_optimizer_copies_and_unscales_its_main_gradients():
    # Megatron's fp16 optimizer: fp16 main gradients copied to fp32 (2 + 4) and unscaled in place
    # (4 + 4) over the rank's parameters at ZeRO-0; over the shard under the distributed optimizer.
    fp16 = GradSync(fp16_grad_scaler=True, check_for_nan_in_grad=False)
    ddp = 2 * P + 4 * P  # zero-fill and 1/dp scaling of the fp16 buffer
    assert _bytes(fp16, zero=0, g=2, m=1) == pytest.approx(ddp + 14 * P)
    assert _bytes(fp16, zero=1, g=2, m=1) == pytest.approx(ddp + 14 * P / 8)
    # fp32 main gradients: no copy, the unscale alone.
    assert _bytes(fp16, zero=0, g=4, m=1) == pytest.approx(4 * P + 8 * P + 8 * P)
    # Under a wrapper whose passes are not counted (torch DDP), only the optimizer's.
    uncounted = fp16.model_copy(update={"wrapper": "uncounted"})
    assert _bytes(uncounted, zero=0, g=2, m=1) == pytest.approx(14 * P)


def test_deepspeed_stages_count_their_bucket_copies_and_partition_passes():
    # 4 micro-batches, 8 ranks, S = P / 8. Stage 2: every micro-batch the IPG copy, division and
    # rank-slice concatenation of the bf16 gradients (12 B/P), the reduced slices copied back and
    # into the partition (8 B/S) and, after the first, added (6 B/S); each step 76 B/S (overflow
    # check 36, fp64 norm 18, flatten 4, fp32 cast 6, unscale 8, write-back read 4).
    s = P / 8
    assert _bytes(DEEPSPEED_GRAD_SYNC, zero=2, g=2) == pytest.approx(12 * P * 4 + 8 * s + 14 * s * 3 + 76 * s)
    # Stage 1 reduces only at the boundary; autograd keeps the other micro-batches' sums (6 B/P).
    assert _bytes(DEEPSPEED_GRAD_SYNC, zero=1, g=2) == pytest.approx(6 * P * 3 + 12 * P + 8 * s + 76 * s)
    # Stage 3: no bf16 overflow check (40 B/S a step); each gather copies shards in and out.
    assert _bytes(DEEPSPEED_GRAD_SYNC, zero=3, g=2, gathers=8) == pytest.approx(
        12 * P * 4 + 4 * s + 6 * s * 3 + 40 * s + 8 * (4 * P + 4 * s))
    # Stage 0: autograd accumulation, the engine's all-reduce copies and the optimizer's 52 B/P.
    assert _bytes(DEEPSPEED_GRAD_SYNC, zero=0, g=2) == pytest.approx(6 * P * 3 + 52 * P)


def test_apex_distributed_adam_zeroes_its_buffer_and_reads_the_shard_for_the_norm():
    # NeMo 1.x: the GEMMs accumulate into the contiguous buffer, the reduce-scatter averages and
    # the all-gather runs in place: a zero-fill of the buffer and the norm's read of the shard.
    apex = GradSync(wrapper="apex")
    assert _bytes(apex, zero=2, g=2) == pytest.approx(2 * P + 2 * P / 8)
    assert _bytes(apex, zero=1, g=4, m=1) == pytest.approx(4 * P + 4 * P / 8)


def test_unsharded_torch_wrappers_are_not_counted():
    # torchtitan's ZeRO-0 is torch DDP (its reducer's passes are not modelled).
    assert float(grad_buffer_bytes(TORCH_FSDP2_GRAD_SYNC, grad_bytes=4, zero=0, sharded_from=1, reshard=True,
                                   params=P, experts=E, shard=P, micro_batches=4, dp_cp=8, edp=1,
                                   gathers=0)) == 0.0


def test_routed_experts_are_scaled_only_where_their_group_has_more_than_one_rank():
    kw = dict(grad_bytes=4, zero=np.array([1]), sharded_from=2, reshard=True, params=3 * P, experts=2 * P,
              shard=3 * P, micro_batches=1, dp_cp=8, gathers=0)
    alone = float(grad_buffer_bytes(MEGATRON_GRAD_SYNC, edp=1, **kw)[0])
    shared = float(grad_buffer_bytes(MEGATRON_GRAD_SYNC, edp=2, **kw)[0])
    assert alone == 8 * 3 * P + 8 * P  # zero + norm of all, scaling of the dense third
    assert shared - alone == 8 * 2 * P


def test_step_and_simulator_charge_the_passes_in_the_optimizer_column():
    model, hw = load_model("llama3-8b"), load_hardware("h100-sxm")
    workload, plan = Workload(seq_len=8192, global_batch=64), ParallelPlan(dp=8, zero=1, micro_batch=1)
    with_passes = evaluate(model, hw, workload, plan, num_nodes=1, gpus_per_node=8)
    without = evaluate(model, hw, workload, plan, num_nodes=1, gpus_per_node=8,
                       runtime=MEGATRON_RUNTIME.model_copy(update={"grad_sync": None}))
    params = model.num_params  # tp 1, pp 1: the whole model on each rank
    assert with_passes.time.optimizer_s - without.time.optimizer_s == pytest.approx(
        float(memory_pass_time_s(hw, 16 * params)), rel=1e-6)
    sim = simulate(model, hw, workload, plan, num_nodes=1, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(with_passes.step_time_s, rel=0.02)


def test_each_pipeline_stage_steps_its_own_parameters_and_the_step_charges_the_largest_whole():
    """Llama-3-70B, tp 2, pp 8 with 4 layers on the first and last stage (12 on each middle one),
    ZeRO-1 at dp 4 under Megatron. A layer holds per rank 2 x 8192 x 4096 (q, o) + 2 x 8192 x 4 x
    128 (k, v: 8 kv heads over tp 2) + 3 x 8192 x 28672 / 2 (MLP) + 2 x 8192 (norms) =
    427,835,392 parameters, the table 128256 x 8192 / 2 = 525,336,576: the first stage 4 layers +
    the table, the last the same + the final norm's 8192, a middle one 12 layers. Each moves 30 B
    per parameter of its dp-4 shard in Adam (cost.states: 4 + 2 x 12 + 2) and 16 B per parameter
    in DDP's buffer (zero-fill 4, NaN norm 4, scaling 4 + 4): 23.5 B a parameter. Megatron-Core
    syncs every stage before the update (the gradient norm) and after it (train_step's
    model-parallel all-reduces, training.py:3198-3201 at d98e8a6), so the analytic step charges
    the middle stages' update whole, and the simulator runs each stage's own update and ends the
    step on the largest, within 1% of the analytic step."""
    model, hw = load_model("Llama-3-70B"), load_hardware("h100-sxm")
    plan = ParallelPlan(dp=4, pp=8, tp=2, zero=1, first_stage_layers=4, last_stage_layers=4)
    layer, table = 427_835_392, 525_336_576
    expected = (23.5 * (4 * layer + table), 23.5 * 12 * layer, 23.5 * (4 * layer + table + 8192))
    one, stages = Candidates.of_plan(plan), stage_layers(80, 8, 4, 4)
    kw = dict(stages=stages, micro_batches=8, edp=4, seq_len=4096)
    got = stage_step_bytes(model, MEGATRON_RUNTIME.states, MEGATRON_GRAD_SYNC, one, **kw)
    assert [float(v[0]) for v in got] == pytest.approx(expected, rel=1e-12)
    slowest = float(slowest_stage_step_bytes(model, MEGATRON_RUNTIME.states, MEGATRON_GRAD_SYNC, one, **kw)[0])
    assert slowest == pytest.approx(expected[1], rel=1e-12)

    workload = Workload(seq_len=2048, global_batch=32)  # 8 micro-batches of one sequence
    est = evaluate(model, hw, workload, plan, num_nodes=8, gpus_per_node=8)
    assert est.time.optimizer_s == pytest.approx(float(memory_pass_time_s(hw, expected[1])), rel=1e-9)
    sim = simulate(model, hw, workload, plan, num_nodes=8, gpus_per_node=8, detail=False)
    updates = {e.stage: e.end_s - e.start_s for e in sim.events if e.kind == "optimizer"}
    by_stage = [expected[0], *[expected[1]] * 6, expected[2]]
    assert [updates[s] for s in range(8)] == pytest.approx([float(memory_pass_time_s(hw, b)) for b in by_stage],
                                                           rel=1e-9)
    assert len({e.start_s for e in sim.events if e.kind == "optimizer"}) == 1  # after the norm's all-reduce
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.01)
