from types import SimpleNamespace

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.tp_calls import (
    TP_BACKWARD_REDUCE_SCATTERS,
    TP_FORWARD_ALL_GATHERS,
    TP_FORWARD_REDUCE_SCATTERS,
    tp_backward_all_gathers,
)
from sp_planner.plan import ParallelPlan
from sp_planner.sim import simulate
from sp_planner.sim.layer_program import chunk_layers, stage_backward, stage_forward
from sp_planner.sim.pipeline import schedule_step
from sp_planner.sim.work import DPCalls, LayerWork, StepWork
from sp_planner.specs.workload import Workload

# A layer: forward 3 s of compute, backward 6 s, no communication.
PLAIN = LayerWork(gemm_attn_fwd_s=1.0, gemm_mlp_fwd_s=2.0, gemm_attn_bwd_s=2.0, gemm_mlp_bwd_s=4.0)


@pytest.mark.parametrize("pp,m", [(2, 4), (4, 8), (4, 4), (8, 16), (3, 1)])
def test_pipeline_bubble_is_pp_minus_one_over_m(pp, m):
    work = StepWork(pp=pp, num_micro_batches=m, layers_per_stage=2, kind_layers=(PLAIN,))
    sched = schedule_step(work)
    per_micro_batch = 2 * (3.0 + 6.0)  # two layers, forward + backward
    ideal = m * per_micro_batch
    assert sched.step_time_s == pytest.approx((m + pp - 1) * per_micro_batch)
    assert (sched.step_time_s - ideal) / ideal == pytest.approx((pp - 1) / m)


def test_1f1b_order_and_dependencies():
    work = StepWork(pp=3, num_micro_batches=4, layers_per_stage=1, kind_layers=(PLAIN,), pp_transfer_s=0.5)
    sched = schedule_step(work)
    order = {s: [(b.kind[0], b.micro_batch) for b in sched.blocks if b.stage == s and b.micro_batch >= 0]
             for s in range(3)}
    assert order[0] == [("f", 0), ("f", 1), ("f", 2), ("b", 0), ("f", 3), ("b", 1), ("b", 2), ("b", 3)]
    assert order[2] == [("f", 0), ("b", 0), ("f", 1), ("b", 1), ("f", 2), ("b", 2), ("f", 3), ("b", 3)]
    first = {(b.stage, b.kind, b.micro_batch): b for b in sched.blocks}
    # Stage 1's first forward starts when stage 0's forward and its 0.5 s send are done.
    assert first[(1, "forward", 0)].start_s == pytest.approx(3.0 + 0.5)
    # Critical path: 3 forwards with 2 sends, then the last stage alternates, then 2 backwards back.
    assert first[(2, "forward", 0)].start_s == pytest.approx(2 * 3.5)


def test_ring_steps_take_the_slower_of_compute_and_transfer():
    ring = LayerWork(attn_fwd_steps_s=(1.0, 1.0, 1.0, 1.0), attn_bwd_steps_s=(2.0,) * 4,
                     ring_kv_step_s=1.5, ring_dkv_step_s=0.5)
    work = StepWork(pp=1, num_micro_batches=1, layers_per_stage=1, kind_layers=(ring,))
    # Forward: 3 steps of max(1, 1.5) and a last step of compute only.
    assert stage_forward(work, 0).end_s == pytest.approx(3 * 1.5 + 1.0)
    # Backward: max(2, kv) + 2 x max(2, kv + dkv) + max(2, dkv) + the final dK/dV hop home.
    assert stage_backward(work, 0, last_micro_batch=False).end_s == pytest.approx(2 + 2 * 2 + 2 + 0.5)


def test_ulysses_all_to_all_blocks_attention_and_dp_buckets_overlap_backward():
    layer = LayerWork(gemm_attn_bwd_s=1.0, gemm_mlp_bwd_s=1.0, attn_fwd_steps_s=(2.0,), attn_bwd_steps_s=(4.0,),
                      ulysses_qkv_s=0.25, ulysses_out_s=0.25)
    work = StepWork(pp=1, num_micro_batches=2, layers_per_stage=3, kind_layers=(layer,),
                    dp_reduce=(DPCalls(layers=((1.5,),) * 3),))
    assert stage_forward(work, 0).end_s == pytest.approx(3 * (0.25 + 2.0 + 0.25))
    plain = stage_backward(work, 0, last_micro_batch=False)
    last = stage_backward(work, 0, last_micro_batch=True)
    per_layer = 1.0 + 0.25 + 4.0 + 0.25 + 1.0
    assert plain.end_s == pytest.approx(3 * per_layer)
    # Buckets of the first two layers hide behind the next layers; the last one is exposed.
    assert last.end_s == pytest.approx(3 * per_layer + 1.5)


@pytest.mark.parametrize("sequence_parallel", [True, False])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_layer_program_runs_the_tp_collectives_the_cost_model_counts(recompute, sequence_parallel):
    # Without sequence parallelism the saved inputs are whole: no input all-gathers backward.
    work = StepWork(pp=1, num_micro_batches=1, layers_per_stage=1, recompute=recompute,
                    kind_layers=(LayerWork(tp_all_gather_s=1.0, tp_reduce_scatter_s=1.0,
                                           tp_input_all_gather_s=1.0 if sequence_parallel else 0.0),))

    def count(program, word):
        return sum(op.kind == "tp_comm" and word in op.name for op in program.ops)

    fwd, bwd = stage_forward(work, 0), stage_backward(work, 0, last_micro_batch=True)
    again = recompute == "full"  # full recompute re-runs the forward's collectives
    assert (count(fwd, "all-gather"), count(fwd, "reduce-scatter")) == (
        TP_FORWARD_ALL_GATHERS, TP_FORWARD_REDUCE_SCATTERS)
    assert (count(bwd, "all-gather"), count(bwd, "reduce-scatter")) == (
        tp_backward_all_gathers(sequence_parallel) + again * TP_FORWARD_ALL_GATHERS,
        TP_BACKWARD_REDUCE_SCATTERS + again * TP_FORWARD_REDUCE_SCATTERS)


def test_model_chunks_hold_every_layer_of_their_stage():
    # Megatron's split counting the embedding and the loss as layers (first = last = (layers + 2) /
    # pp - 1, here 30 layers over pp 4 x vpp 2: 7, 8, 8, 7): the chunk holding the embedding (the
    # first on the first stage) or the loss (the last on the last) runs one layer fewer.
    stages = (7, 8, 8, 7)
    work = SimpleNamespace(pp=4, vpp=2, layers_per_stage=8, layers_of=lambda stage: stages[stage])
    chunks = {stage: [list(chunk_layers(work, stage, c)) for c in range(2)] for stage in range(4)}
    assert chunks[0] == [[0, 1, 2], [3, 4, 5, 6]]
    assert chunks[1] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert chunks[3] == [[0, 1, 2, 3], [4, 5, 6]]
    # 94 layers over pp 48 x vpp 2: the first and the last stage hold one layer, in one chunk.
    work = SimpleNamespace(pp=48, vpp=2, layers_per_stage=2, layers_of=lambda stage: 1 if stage in (0, 47) else 2)
    assert [list(chunk_layers(work, 0, c)) for c in range(2)] == [[], [0]]
    assert [list(chunk_layers(work, 47, c)) for c in range(2)] == [[0], []]


def test_uneven_interleaved_stages_simulate_as_the_analytic_model():
    model = load_model("llama3-8b").model_copy(update={"num_layers": 30})
    plan = ParallelPlan(dp=2, tp=2, pp=4, vpp=2, first_stage_layers=7, last_stage_layers=7)
    result = simulate(model, load_hardware("a800"), Workload(seq_len=8192, global_batch=16), plan, num_nodes=2,
                      gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.02)


def test_overlapped_sends_run_beside_the_senders_next_blocks():
    """Interleaved 1F1B, pp 2 x vpp 2, one layer a chunk (3 s forward, 6 s backward), 0.5 s sends.
    Blocking, stage 0's first forward holds the stage 3.5 s; overlapped (Megatron's
    overlap_p2p_comm) it ends at 3 s and stage 0's next forward starts then, while stage 1 still
    waits for the arrival at 3.5 s, and that 0.5 s wait is pipeline communication."""
    base = dict(pp=2, vpp=2, num_micro_batches=4, layers_per_stage=2, kind_layers=(PLAIN,), pp_transfer_s=0.5)
    blocking = schedule_step(StepWork(**base))
    beside = schedule_step(StepWork(**base, pp_overlap=True))
    first = {(b.stage, b.kind, b.micro_batch, b.chunk): b for b in beside.blocks}
    f0 = first[(0, "forward", 0, 0)]
    assert (f0.end_s, f0.transfer_s, f0.send_s) == (pytest.approx(3.0), 0.5, 0.0)
    assert first[(0, "forward", 1, 0)].start_s == pytest.approx(3.0)
    f1 = first[(1, "forward", 0, 0)]
    assert (f1.start_s, f1.waited_s) == (pytest.approx(3.5), pytest.approx(0.5))
    # The sends hide behind compute in the steady state: the overlapped step is shorter, by at
    # most every send of the blocking one.
    sends = sum(b.send_s for b in blocking.blocks)
    assert blocking.step_time_s - sends <= beside.step_time_s < blocking.step_time_s


def test_overlapped_sends_on_the_critical_path_are_pipeline_communication():
    model = load_model("llama3-8b")
    plan = ParallelPlan(dp=1, tp=2, pp=4, vpp=2)
    result = simulate(model, load_hardware("h100"), Workload(seq_len=8192, global_batch=8), plan, num_nodes=1,
                      gpus_per_node=8, detail=False)
    # The critical path's parts add up to the step, and the sends, beside the compute (Megatron's
    # default on the interleaved schedule), cost what the analytic model says within 2%.
    assert sum(result.critical_path_by_kind_s.values()) == pytest.approx(result.step_time_s, rel=1e-9)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.02)


def test_the_tied_all_reduce_joins_the_pipeline_ends_before_their_optimizers():
    """pp 3, m 2, one layer a stage (3 s forward, 6 s backward), 1 s optimizer, a 0.5 s tied
    all-reduce (cost.tied_embedding). Stage 0 ends its last backward last, at (m + pp - 1) x 9 =
    36 s, stage 2 at 36 - 2 x 6 = 24 s: both run the all-reduce from 36 s, and every stage, the
    middle one too (synced at 30 s), steps at 36.5 s, after the gradient norm's all-reduce (at
    36 s without the tied one). A 20 s gradient tail on stage 2 (synced at 44 s) makes it the
    one the all-reduce waits for instead."""
    base = dict(pp=3, num_micro_batches=2, layers_per_stage=1, kind_layers=(PLAIN,), optimizer_s=(1.0,) * 3,
                dp_overlap_slowdown=0.0)
    plain = schedule_step(StepWork(**base))
    tied = schedule_step(StepWork(**base, tied_all_reduce_s=0.5))
    assert plain.step_time_s == pytest.approx(37.0)
    assert tied.step_time_s == pytest.approx(37.5)
    joined = {b.stage: (b.start_s, b.end_s) for b in tied.blocks if b.kind == "tied_all_reduce"}
    assert joined == {0: (pytest.approx(36.0), pytest.approx(36.5)), 2: (pytest.approx(36.0), pytest.approx(36.5))}
    steps = {b.stage: b.start_s for b in tied.blocks if b.kind == "optimizer"}
    assert steps == {0: pytest.approx(36.5), 1: pytest.approx(36.5), 2: pytest.approx(36.5)}
    assert {b.stage: b.start_s for b in plain.blocks if b.kind == "optimizer"} == dict.fromkeys(range(3), 36.0)
    late = (DPCalls(), DPCalls(), DPCalls(tail=(20.0,)))
    waited = schedule_step(StepWork(**base, tied_all_reduce_s=0.5, dp_reduce=late))
    joined = {b.stage: b.start_s for b in waited.blocks if b.kind == "tied_all_reduce"}
    assert joined == {0: pytest.approx(44.0), 2: pytest.approx(44.0)}
    assert waited.step_time_s == pytest.approx(45.5)


def test_each_stage_steps_its_own_optimizer_and_the_step_ends_on_the_largest():
    """The same pipeline (every stage synced by 36 s, stage 1 from 30 s) with updates of 1, 5 and
    2 s and a 0.5 s FP8 weight cast per stage: each stage's update runs after the gradient norm's
    all-reduce, 36 s -> 37, 41, 38 s, and nothing follows before the largest is done (train_step's
    model-parallel all-reduces, cost.grad_buffer.slowest_stage_step_bytes): every stage casts
    from 41 s, the middle stage's 5 s charged whole, the next step's fill hiding none of it (step
    41.5 s)."""
    work = StepWork(pp=3, num_micro_batches=2, layers_per_stage=1, kind_layers=(PLAIN,), optimizer_s=(1.0, 5.0, 2.0),
                    weight_cast_s=(0.5,) * 3, dp_overlap_slowdown=0.0)
    sched = schedule_step(work)
    updates = {b.stage: (b.start_s, b.end_s) for b in sched.blocks if b.kind == "optimizer"}
    assert updates == {0: (36.0, 37.0), 1: (36.0, 41.0), 2: (36.0, 38.0)}
    after = {b.stage: b.start_s for b in sched.blocks if b.kind == "weight_cast"}
    assert after == dict.fromkeys(range(3), 41.0)
    assert sched.step_time_s == pytest.approx(41.5)
    # The critical path runs through the middle stage's update.
    assert any(sched.blocks[i].kind == "optimizer" and sched.blocks[i].stage == 1 for i in sched.critical_blocks())


@pytest.mark.parametrize("chunk1_s,charged_s", [(1.5, 0.0), (4.0, 2.0), (10.0, 6.0)])
def test_a_later_stages_chunk_gather_slows_only_the_compute_it_runs_beside(chunk1_s, charged_s):
    """pp 2, vpp 2, m 2, one layer a chunk (3 s forward): Megatron's aligned gathers (ZeRO-1,
    --overlap-param-gather) put stage 1's chunk 0 (1 s) and chunk 1 on its stream at the step's
    start (schedules.py d98e8a6 lines 1218-1221), chunk 1 over [1, 1 + g]. Stage 1 idles until
    micro-batch 0 arrives at 3 s, runs chunk 0's two forwards over [3, 9], and chunk 1's first
    forward, ready at 9 s, waits for the gather's end. Only the gather's seconds beside [3, 9]
    slow compute (cost.overlap: SM/HBM sharing): g 1.5 none, 4 s 2 s, 10 s 6 s (the 2 s wait
    exposed, [1, 3] idle); the stage's slowdown block is 0.5 x that."""
    gather = (DPCalls(), DPCalls(layers=((1.0,), (chunk1_s,))))
    work = StepWork(pp=2, vpp=2, num_micro_batches=2, layers_per_stage=2, kind_layers=(PLAIN,), dp_gather=gather,
                    dp_gather_by_chunk=True, dp_overlap_slowdown=0.5)
    sched = schedule_step(work)
    first = {(b.kind, b.chunk): (b.start_s, b.end_s) for b in sched.blocks if b.stage == 1 and b.micro_batch == 0
             and b.kind == "forward"}
    assert first == {("forward", 0): (3.0, 6.0), ("forward", 1): (max(9.0, 1.0 + chunk1_s), max(12.0, 4.0 + chunk1_s))}
    slowed = [b.end_s - b.start_s for b in sched.blocks if b.stage == 1 and b.kind == "dp_overlap_slowdown"]
    assert slowed == [pytest.approx(0.5 * charged_s)]


def test_aligned_grad_syncs_leave_rank_backwards_after_the_chunks_last():
    """pp 2, vpp 2, m 2, one layer a chunk (3 s forward, 6 s backward), Megatron's aligned grad
    reduce: stage 1 runs B1.0 [12, 18], B1.1 [21, 27], B0.0 [27, 33], B0.1 [33, 39]; it launches
    chunk 1's 20 s sync one backward after the chunk's last (schedules.py d98e8a6 lines
    1445-1456), at 33 s, not 27, and chunk 0's 1 s after its last backward, behind it: synced at
    54 s (48 without the offset). Stage 0 (rank 0) launches chunk 1's at its B1.1's end, 33 s,
    chunk 0's at 45 s: synced at 46 s."""
    calls = (DPCalls(layers=((1.0,), (1.0,))), DPCalls(layers=((1.0,), (20.0,))))
    work = StepWork(pp=2, vpp=2, num_micro_batches=2, layers_per_stage=2, kind_layers=(PLAIN,), dp_reduce=calls,
                    dp_reduce_whole_chunk=True, dp_overlap_slowdown=0.0)
    sched = schedule_step(work)
    tails = {b.stage: (b.start_s, b.end_s) for b in sched.blocks if b.kind == "dp_grad_tail"}
    assert tails == {0: (45.0, 46.0), 1: (39.0, 54.0)}
    assert sched.step_time_s == pytest.approx(54.0)


def test_a_stage_synced_once_a_step_reduces_after_its_last_backward():
    # torch.distributed.pipelining (StepWork.dp_stage_sync, cost.fsdp.stage_synced): no reduce in
    # a backward but the last micro-batch's, whose calls the stage then waits for. pp 2, m 2, a
    # layer a stage (forward 3 s, backward 6 s): stage 0 runs F0 F1 B0 B1, stage 1 F0 B0 F1 B1;
    # stage 1's last backward ends at 3 x 3 + 2 x 6 = 21 s, stage 0's at 3 x 3 + 3 x 6 = 27 s.
    # Their syncs (3 s and 4 s) end at 30 s and 25 s: the step ends at 30 s.
    work = StepWork(pp=2, num_micro_batches=2, layers_per_stage=1, kind_layers=(PLAIN,), dp_stage_sync=True,
                    dp_reduce=(DPCalls(layers=((3.0,),)), DPCalls(layers=((4.0,),))))
    sched = schedule_step(work)
    assert stage_backward(work, 0, last_micro_batch=False).busy_s("dp_comm") == 0.0
    assert sched.step_time_s == pytest.approx(30.0)


def test_a_stage_synced_once_a_step_gathers_in_its_first_forward():
    # Kept after forward: the first forward gathers (1 s ahead of the layer's 3 s), later ones
    # and the backwards do not; resharded after forward, every backward gathers again.
    gathers = (DPCalls(layers=((1.0,),)),)
    work = StepWork(pp=1, num_micro_batches=2, layers_per_stage=1, kind_layers=(PLAIN,), dp_stage_sync=True,
                    dp_gather=gathers, dp_backward_gather=False)
    assert stage_forward(work, 0, first_micro_batch=True).end_s == pytest.approx(4.0)
    assert stage_forward(work, 0).end_s == pytest.approx(3.0)
    assert stage_backward(work, 0, last_micro_batch=False).busy_s("dp_comm") == 0.0
    resharded = work.model_copy(update={"dp_backward_gather": True})
    assert stage_backward(resharded, 0, last_micro_batch=False).busy_s("dp_comm") == 1.0


def test_a_synced_interleaved_stage_waits_for_each_chunks_sync_with_no_rank_offset():
    """The plan of test_aligned_grad_syncs_leave_rank_backwards_after_the_chunks_last under
    torch.distributed.pipelining instead (StepWork.dp_stage_sync): stage 1 launches chunk 1's 20 s
    sync right after B1.1 [21, 27], not a backward later, and waits for it (REDUCE_GRAD after the
    virtual stage's last backward): [27, 47]; B0.0 [47, 53], B0.1 [53, 59], chunk 0's 1 s at the
    end, [59, 60]. Stage 0 waits for stage 1's B0.x: B0.0 [53, 59], B0.1 [59, 65], synced at 66 s."""
    calls = (DPCalls(layers=((1.0,), (1.0,))), DPCalls(layers=((1.0,), (20.0,))))
    work = StepWork(pp=2, vpp=2, num_micro_batches=2, layers_per_stage=2, kind_layers=(PLAIN,), dp_reduce=calls,
                    dp_stage_sync=True, dp_overlap_slowdown=0.0)
    sched = schedule_step(work)
    waits = {b.stage: (b.start_s, b.end_s) for b in sched.blocks if b.kind == "dp_grad_sync" and b.stage == 1}
    tails = {b.stage: (b.start_s, b.end_s) for b in sched.blocks if b.kind == "dp_grad_tail"}
    assert waits == {1: (27.0, 47.0)}
    assert tails == {0: (65.0, 66.0), 1: (59.0, 60.0)}
    assert sched.step_time_s == pytest.approx(66.0)
    # Megatron's schedule and torch's are two frameworks': a StepWork takes one.
    with pytest.raises(ValueError, match="set one"):
        StepWork(pp=2, num_micro_batches=2, layers_per_stage=1, kind_layers=(PLAIN,), dp_stage_sync=True,
                 dp_reduce_whole_chunk=True)
