"""cost.pipeline_tails: ZeRO-0/1's once-a-step sync of every pipeline stage, by hand and against
the simulator on a pinned uneven split; when each stage's last backward ends, by hand and against
a walk of the simulator's schedule order."""

from types import SimpleNamespace

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.dp_times import StageTimes
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.pipeline_path import StageBlocks
from sp_planner.cost.pipeline_lags import finish_lags_s
from sp_planner.cost.pipeline_tails import stage_tails_dp_s, synced_syncs_s
from sp_planner.pipeline import StageLayers
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.sim.pipeline import schedule_step
from sp_planner.pipeline_order import stage_order, upstream_stage
from sp_planner.sim.simulate import build_cluster
from sp_planner.sim.step_work import step_work
from sp_planner.specs import Workload


def _times(**seconds) -> StageTimes:
    return StageTimes(DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields}), 1,
                      np.zeros(1, dtype=np.int64))


def _tails(zero, times, *, pp=4, layers=(4.0, 8.0, 12.0), slowdown=0.0, fwd_layer_s=0.01, bwd_layer_s=0.02,
           tied_s=0.0, embedding_bwd_s=0.0):
    # Layers of 0.01 s forward and 0.02 s backward unless given (one for every stage or each
    # stage's own), nothing beyond them (no embedding, loss or TP edges): a stage's chunk-0 forward
    # is its layers x 0.01 s, its backward block x 0.02 s; `embedding_bwd_s` the first stage's
    # embedding backward after its layers' (Edges.bwd_tail_s, and its first_s).
    c = SimpleNamespace(pp=np.array([pp]), zero=np.array([zero]), vpp=np.array([1]), vpp_group=np.array([0]))
    per_layer_s = (tuple(f + b for f, b in zip(fwd_layer_s, bwd_layer_s)) if isinstance(fwd_layer_s, tuple)
                   else fwd_layer_s + bwd_layer_s)
    exposed, hidden = stage_tails_dp_s(MEGATRON_OVERLAP, c, stages=StageLayers(*(np.array([n]) for n in layers)),
                                       times=times, per_layer_s=per_layer_s, logits_s=0.0, ahead_s=0.0,
                                       first_s=embedding_bwd_s, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s,
                                       edges=Edges(0.0, 0.0, 0.0, bwd_tail_s=embedding_bwd_s),
                                       micro_batches=np.array([4]), slowdown=slowdown, tied_s=tied_s)
    return float(exposed[0]), float(hidden[0])


def _zero0(first_s=0.5, middle_s=0.6, last_s=0.9):
    # The first stage's buckets hide behind its last backward (4 x 0.02 s) but 0.1 s; the later
    # stages' one bucket hides behind nothing (cost.buckets._chunked).
    return (_times(grad_all_reduce_s=first_s, last_all_reduce_s=0.1),
            _times(grad_all_reduce_s=middle_s, last_all_reduce_s=middle_s),
            _times(grad_all_reduce_s=last_s, last_all_reduce_s=last_s))


def test_the_stage_whose_sync_ends_last_sets_the_step():
    # Past the first stage's compute end: the first stage's own 0.5 - (0.08 - 0.02) = 0.44 s (its
    # first bucket, its last layer's, leaves after that layer's 0.02 s backward); the first
    # middle stage ends its compute the first stage's last backward (0.08 s) earlier: 0.6 - 0.08;
    # the last one 0.08 + 2 x 8 x 0.02 = 0.40 s earlier: 0.9 - 0.40.
    assert _tails(0, _zero0()) == pytest.approx((0.52, 0.0))
    assert _tails(0, _zero0(last_s=1.0)) == pytest.approx((0.60, 0.0))
    # A first stage syncing longest keeps its own exposure, 0.8 - (0.08 - 0.02), and what its
    # backward hid after its first bucket left (0.06 s).
    assert _tails(0, _zero0(first_s=0.8)) == pytest.approx((0.74, 0.06))


def test_each_stage_finishes_on_its_own_layers():
    # A first stage of a lighter kind (0.005 s forward, 0.01 s backward a layer; DeepSeek-V3's
    # dense layers before its MoE ones) ends its last backward 4 x 0.01 = 0.04 s after the middle
    # stage's: the middle stage's sync ends 0.6 - 0.04 past it, the last one's 0.04 + 2 x 8 x 0.02
    # = 0.36 s earlier, 0.9 - 0.36 (with 1.0 s: 1.0 - 0.36). Timed with the others' layer the
    # first stage's 0.08 s hid 0.04 s of each (test_the_stage_whose_sync_ends_last_sets_the_step).
    own = dict(fwd_layer_s=(0.005, 0.01, 0.01), bwd_layer_s=(0.01, 0.02, 0.02))
    assert _tails(0, _zero0(), **own) == pytest.approx((0.56, 0.0))
    assert _tails(0, _zero0(last_s=1.0), **own) == pytest.approx((0.64, 0.0))
    # One layer for every stage as a triple is the same as one value.
    alike = dict(fwd_layer_s=(0.01,) * 3, bwd_layer_s=(0.02,) * 3)
    assert _tails(0, _zero0(), **alike) == _tails(0, _zero0())


def test_a_middle_stages_sync_runs_beside_the_ends_tied_all_reduce():
    # The ends' syncs end 0.42 and 0.50 s past the first stage's compute end, the middle one's
    # 0.52 s (test_the_stage_whose_sync_ends_last_sets_the_step). The two ends all-reduce a tied
    # table (MTP's copy) after the later of theirs, which cost.step charges whole: of 0.05 s the
    # step ends 0.50 + 0.05 = 0.55 s past, 0.50 here; of 0.01 s on the middle stage's 0.52, 0.51 here.
    assert _tails(0, _zero0(), tied_s=0.05) == pytest.approx((0.50, 0.0))
    assert _tails(0, _zero0(), tied_s=0.01) == pytest.approx((0.51, 0.0))


def test_the_stage_ending_last_counts_its_own_slowdown():
    # The first stage's sync ends 0.56 - (0.08 - 0.02) = 0.50 s past its compute end, having
    # hidden 0.06 s behind its last backward after its first bucket (its last layer's) left; the
    # first middle stage's 0.52 s, hiding nothing. At 0.5 s of compute lost per hidden second (a
    # rate for the hand count; cost.overlap's is 16/132) the first stage ends 0.50 + 0.03 = 0.53 s
    # past: it sets the step, with its hidden 0.06 s, which cost.step charges (sim.pipeline runs
    # each stage's slowdown after its own sync). Without the slowdown the middle stage's 0.52 s
    # sets it, hiding nothing.
    assert _tails(0, _zero0(first_s=0.56), slowdown=0.5) == pytest.approx((0.50, 0.06))
    assert _tails(0, _zero0(first_s=0.56)) == pytest.approx((0.52, 0.0))


def test_two_stages_have_no_middle_one():
    # pp 2: the middle stage's calls (priced on max(first, last) layers) are not a stage's; the
    # last ends its compute 4 x 0.02 s before the first, whose own 0.5 - (0.08 - 0.02) sets it.
    exposed, _ = _tails(0, _zero0(middle_s=5.0, last_s=0.3), pp=2, layers=(4.0, 4.0, 12.0))
    assert exposed == pytest.approx(0.44)
    assert _tails(0, _zero0(middle_s=5.0, last_s=0.9), pp=2, layers=(4.0, 4.0, 12.0))[0] == pytest.approx(0.82)


def test_an_embedding_backward_longer_than_a_layers_hides_the_first_stages_sync_longer():
    # pp 2, the first stage's embedding backward 0.05 s after its 4 layers' 0.02 s each (a large
    # vocabulary on a thin layer): its first bucket, its last layer's, leaves after that layer's
    # 0.02 s, and its queue runs beside the other 3 layers' backward and the embedding's, to the
    # stage's compute end: 0.5 - (3 x 0.02 + 0.05) = 0.39 s exposed (the lead, 0.02 - 0.05, is
    # negative: the window is 0.03 s longer than the layers' 0.08; clipped at 0 it would be 0.42,
    # the embedding's backward beyond a layer's hiding nothing, which the simulator's program does
    # not do: sim.layer_program.stage_backward issues each layer's buckets as its gradients land and
    # runs the embedding's backward after layer 0's on the compute stream). Its last 0.1 s of calls,
    # less the 0.05 s issued beside the embedding's backward, never hide; the last stage ends its
    # compute 4 x 0.02 + 0.05 s before the first: 0.3 - 0.13 s.
    first = _times(grad_all_reduce_s=0.5, last_all_reduce_s=0.1)
    later = _times(grad_all_reduce_s=0.3, last_all_reduce_s=0.3)
    exposed, _ = _tails(0, (first, later, later), pp=2, layers=(4.0, 4.0, 4.0), embedding_bwd_s=0.05)
    assert exposed == pytest.approx(0.39)


def test_zero1_later_stages_gather_their_bucket_beside_the_fill():
    # ZeRO-1: the same syncs as reduce-scatters; the first stage gathers 0.2 s, 0.05 s of it
    # before its first layer, behind its 0.04 s first forward: 0.16 s exposed. The first middle
    # stage's 0.3 s bucket from the step's start, micro-batch 0 arriving after 4 x 0.01 s: 0.26 s
    # late; the last's 0.5 s, micro-batch 0 after (4 + 2 x 8) x 0.01 s: 0.30 s, which delays every
    # block after it.
    first, middle, last = (_times(grad_reduce_scatter_s=0.5, last_reduce_scatter_s=0.1, param_all_gather_s=0.2,
                                  first_all_gather_s=0.05),
                           _times(grad_reduce_scatter_s=0.6, last_reduce_scatter_s=0.6, param_all_gather_s=0.3,
                                  first_all_gather_s=0.3),
                           _times(grad_reduce_scatter_s=0.9, last_reduce_scatter_s=0.9, param_all_gather_s=0.5,
                                  first_all_gather_s=0.5))
    assert _tails(1, (first, middle, last)) == pytest.approx((0.30 + 0.52, 0.0))


def _blocks(vpp, first, middle, last):
    # Each stage's (chunk forward, chunk-0 backward, later chunks' backward) in seconds.
    return tuple(StageBlocks(1.0, None, None, np.array([f * vpp]), np.array([b0]), np.array([b1]), 0.0, np.array([f]))
                 for f, b0, b1 in (first, middle, last))


def _walk_lags(pp, vpp, m, first, middle, last):
    """Each stage's last backward end before the first stage's, walking the simulator's order of
    Megatron's schedule (pipeline_order) with these blocks and free sends."""
    kinds = [first] + [middle] * (pp - 2) + [last]
    orders = [stage_order(pp, m, s, vpp) for s in range(pp)]
    cursor, free, done = [0] * pp, [0.0] * pp, {}
    while any(c < len(o) for c, o in zip(cursor, orders)):
        for s in range(pp):
            if cursor[s] == len(orders[s]):
                continue
            kind, chunk, mb = orders[s][cursor[s]]
            up = upstream_stage(kind, s, chunk, pp, vpp)
            if up is not None and (*up, kind, mb) not in done:
                continue
            f, b0, b1 = kinds[s]
            start = max(free[s], done.get((*up, kind, mb), 0.0) if up else 0.0)
            free[s] = start + (f if kind == "forward" else b0 if chunk == 0 else b1)
            done[(s, chunk, kind, mb)] = free[s]
            cursor[s] += 1
    return free[0] - free[1], free[0] - free[pp - 1]


@pytest.mark.parametrize("pp, vpp, m, first, middle, last, lags", [
    # Interleaved, the first stage's chunk-0 backward (0.05 s, the embedding's in it) the slowest:
    # it runs its 4 after its last chunk-1 backward, 0.20 s, while the last micro-batch's chunk-0
    # backward leaves the last stage 0.01 s and the first middle 0.03 s after that (the drain
    # alone: 0.05 and 0.07 s).
    (4, 2, 4, (0.005, 0.05, 0.01), (0.005, 0.01, 0.01), (0.005, 0.01, 0.01), (0.17, 0.19)),
    # The last stage's chunk blocks (0.04 s) the slowest: its 4 chunk-0 backwards run back to back
    # from its chunk-1 one of the last micro-batch, which reached the first stage 2 x 0.01 + 0.02 s
    # later: it ends 0.16 - 0.04 = 0.12 s after the first stage's last chunk-1 backward, and the
    # others drain behind it (0.03, 0.03 + 2 x 0.01 s), the first stage's backwards piling up
    # nowhere.
    (4, 2, 4, (0.005, 0.03, 0.02), (0.005, 0.01, 0.01), (0.02, 0.04, 0.04), (0.03, 0.05)),
    # 1F1B, the last stage the slowest (laps of 0.04 s from 0.03 s: ends at 0.19 s), the first
    # stage's backward (0.06 s) longer than its lap: the 4 last backwards reach the first stage
    # 0.04 s apart and pile up 3 x 0.02 s beyond the drain (0.06, 0.06 + 2 x 0.02 s).
    (4, 1, 4, (0.01, 0.06, 0.06), (0.01, 0.02, 0.02), (0.01, 0.03, 0.03), (0.12, 0.16)),
    # 1F1B, the first stage pacing: busy throughout, it ends at 8 x 0.08 = 0.64 s; its last
    # forward at 8 x 0.02 + 4 x 0.06 = 0.40 s, micro-batch 7 then ends on the last stage
    # 2 x 0.01 + 0.01 + 0.02 s later (0.45 s), on the first middle one 2 x 0.02 s after that.
    (4, 1, 8, (0.02, 0.06, 0.06), (0.01, 0.02, 0.02), (0.01, 0.02, 0.02), (0.15, 0.19)),
])
def test_stages_finish_behind_the_first_by_hand(pp, vpp, m, first, middle, last, lags):
    bare = _blocks(vpp, first, middle, last)
    got = finish_lags_s(bare, np.array([pp - 2.0]), np.array([m]), np.array([vpp]))
    assert (float(got[1][0]), float(got[2][0])) == pytest.approx(lags)
    assert _walk_lags(pp, vpp, m, first, middle, last) == pytest.approx(lags)


MODEL, NODES, GPUS = load_model("Llama-3-8B"), 8, 8


def _repro(zero):
    # L40S, tp 2 dp 8 pp 4, 4 layers on the first stage and 12 on the last (8 on each middle one),
    # 512 tokens, 4 micro-batches.
    plan = ParallelPlan(dp=8, pp=4, tp=2, zero=zero, first_stage_layers=4, last_stage_layers=12)
    return load_hardware("L40S"), Workload(seq_len=512, global_batch=32), plan


def test_repro_stage_finishes_by_hand():
    # ZeRO-0: a later stage's one bucket leaves after its last backward and nothing hides it
    # (Megatron DDP, bucket_size None when pp_rank > 0), so stage k is synced at its compute end
    # plus its bucket; the compute ends step down the drain, each stage's last backward one block
    # after the one above. The last stage (12 layers and the output layer) ends its sync last;
    # the analytic step's DP column is that beyond the first stage's compute end.
    hardware, workload, plan = _repro(0)
    cluster = build_cluster(hardware.model_copy(update={"gpus_per_node": GPUS, "nvlink_domain_gpus": None}), NODES)
    work, _ = step_work(cluster, MODEL, workload, plan)
    blocks = schedule_step(work).blocks
    compute = [max(b.end_s for b in blocks if b.stage == s and b.kind == "backward") for s in range(4)]
    last_bwd = [next(b for b in blocks if b.stage == s and b.kind == "backward" and b.micro_batch == 3)
                for s in range(4)]
    for s in range(3):  # the drain: stage s's last backward starts when stage s + 1's ends
        assert last_bwd[s].start_s == pytest.approx(compute[s + 1])
    synced = [max(b.end_s for b in blocks if b.stage == s and b.kind == "dp_grad_tail") for s in range(4)]
    for s in range(1, 4):  # the bucket leaves before the first layer's TP reduce-scatter and the send
        released = compute[s] - last_bwd[s].send_s - work.layer_at(s, 0).tp_reduce_scatter_s
        assert synced[s] == pytest.approx(released + work.reduce_calls(s).total_s)
    assert max(synced) == synced[3]
    analytic = evaluate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS)
    assert analytic.time.dp_comm_exposed_s == pytest.approx(synced[3] - compute[0], rel=0.03)


@pytest.mark.parametrize("zero", [0, 1])
def test_repro_agrees_with_the_simulator(zero):
    # Before the later stages' syncs were priced: 0.611 s against 1.029 s (ZeRO-0), 0.485 against
    # 0.782 (ZeRO-1).
    hardware, workload, plan = _repro(zero)
    sim = simulate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS, detail=False).step_time_s
    analytic = evaluate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS).step_time_s
    assert analytic == pytest.approx(sim, rel=0.02)


@pytest.mark.parametrize("vpp", [2, 4])
def test_interleaved_first_stage_sync_agrees_with_the_simulator(vpp):
    # H100, tp 1 dp 16 pp 4, 512 tokens, 4 micro-batches: the first stage's chunk-0 backwards carry
    # the embedding's (2.5 ms each), behind which the queue of the later chunks' syncs drains before
    # chunk 0's call (cost.dp_once.chunked_exposed_s); left out, the model came out 2.9% (vpp 2)
    # and 5.0% (vpp 4) above the simulator.
    plan = ParallelPlan(dp=16, pp=4, vpp=vpp, tp=1, zero=0)
    hardware, workload = load_hardware("H100"), Workload(seq_len=512, global_batch=64)
    sim = simulate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS, detail=False).step_time_s
    analytic = evaluate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS).step_time_s
    assert analytic == pytest.approx(sim, rel=0.002)


def test_interleaved_first_stage_pile_up_agrees_with_the_simulator():
    # L40S, tp 1 dp 8 pp 8 vpp 4, 512 tokens, 8 micro-batches: the first stage's chunk-0 backward
    # carries the embedding's (about 11 ms against a later chunk's 1.9 ms), so the later stages end
    # their compute 73-86 ms before it (the simulator's) and their syncs hide behind it; counting
    # the drain's 11-22 ms alone, the model came out 4.6% above the simulator.
    plan = ParallelPlan(dp=8, pp=8, vpp=4, tp=1, zero=0)
    hardware, workload = load_hardware("L40S"), Workload(seq_len=512, global_batch=64)
    sim = simulate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS, detail=False).step_time_s
    analytic = evaluate(MODEL, hardware, workload, plan, num_nodes=NODES, gpus_per_node=GPUS).step_time_s
    assert analytic == pytest.approx(sim, rel=0.005)


@pytest.mark.parametrize("hardware,name,pp,split,zero,m,rel", [
    ("H100", "Llama-3-8B", 4, (4, 12), 0, 4, 1e-3), ("L40S", "Qwen2.5-14B", 8, (8, 16), 1, 8, 5e-3)])
def test_a_heavy_last_stages_interleaved_sync_agrees_with_the_simulator(hardware, name, pp, split, zero, m, rel):
    # vpp 4, 2048 tokens, 64 GPUs, tp 1: the last stage's sync sets the step. Its output layer's
    # calls leave with its last chunk (cost.buckets._chunked), which Megatron's aligned grad reduce
    # launches pp - 1 backwards after that chunk's last (schedules.py d98e8a6 lines 1445-1456),
    # chunk 0's alone after its last backward; under ZeRO-1 its chunk gathers beside its forwards
    # slow them. Both were off by 1.9% (the output layer in chunk 0's call) and -1.2% (no gather
    # charged) before. (The Llama case ran pp 2 with 12/20 layers until rule `layers` refused an
    # uneven split over two interleaved stages, which Megatron cannot place: pipeline._split_breaks.)
    model, profile = load_model(name), load_hardware(hardware)
    plan = ParallelPlan(dp=64 // pp, pp=pp, vpp=4, tp=1, zero=zero, first_stage_layers=split[0],
                        last_stage_layers=split[1])
    workload = Workload(seq_len=2048, global_batch=m * 64 // pp)
    sim = simulate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8, detail=False)
    est = evaluate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=rel)


def test_a_pipeline_synced_once_a_step_exposes_each_stages_whole_sync_past_its_lag():
    # torch.distributed.pipelining (cost.fsdp.stage_synced): each stage reduce-scatters everything
    # after its last backward, waiting for it. With the lags of
    # test_the_stage_whose_sync_ends_last_sets_the_step (0, 0.08 s, 0.40 s): the first stage's
    # whole 0.5 s, the middle one's 0.6 - 0.08, the last one's 0.9 - 0.40.
    def t(rs, root=0.0):
        return _times(grad_reduce_scatter_s=rs, root_reduce_s=root).at()

    lags = (0.0, np.array([0.08]), np.array([0.40]))
    assert synced_syncs_s((t(0.5), t(0.6), t(0.9)), lags, pp=np.array([4]), vpp=np.array([1])) == pytest.approx(0.52)
    # Interleaved, pp 2: a chunk's sync holds its stage after its last backward. The first stage's
    # 5 s (its embedding's 1 s in chunk 0: chunks of 3 s and 2 s), the last one's 6 s (its output
    # layer's 2 s in chunk 1: 2 s and 4 s): the slower chunk-1 sync, 4 s, then the first stage's
    # chunk 0 at the end, 3 s, the last stage's 2 s ending a lag earlier.
    ends = (t(5.0, 1.0), t(0.0), t(6.0, 2.0))
    lags = (0.0, np.array([0.0]), np.array([0.5]))
    assert synced_syncs_s(ends, lags, pp=np.array([2]), vpp=np.array([2])) == pytest.approx(4.0 + 3.0)


def _analytic_over_simulated(model, hardware, workload, plan) -> float:
    """The analytic step over the simulated one on 16 nodes of 8 GPUs."""
    sim = simulate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8, detail=False)
    return evaluate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8).step_time_s / sim.step_time_s


def test_a_middle_heavy_default_split_agrees_with_the_simulator():
    # Qwen3-235B-A22B (94 layers) over pp 4 runs default_split's 23 / 24 / 24 / 23 on 128 H100s, ep
    # 8, ZeRO-1, 4K tokens, 2 micro-batches: the first middle stage's single call ends 5 ms after the
    # first stage's bucketed sync, whose slowdown from the 0.40 s it hid (48 ms) sets the step in
    # the simulator. Picking the stage before its slowdown, the model came out 2.16% under it.
    model, hardware = load_model("Qwen3-235B-A22B"), load_hardware("H100")
    plan = ParallelPlan(dp=32, pp=4, ep=8, zero=1, first_stage_layers=23, last_stage_layers=23)
    workload = Workload(seq_len=4096, global_batch=64)
    assert abs(_analytic_over_simulated(model, hardware, workload, plan) - 1) < 0.006


def test_a_mixed_kind_models_stages_finish_on_their_own_layers_as_simulated():
    # DeepSeek-V3 (3 dense layers, then MoE) over pp 8 at default_split's 7 / 8 x 6 / 6 on 128 H100s,
    # ep 8, ZeRO-1, 4K tokens, 4 micro-batches: the first stage's 3 dense + 4 MoE layers run a
    # 0.155 s backward, as the simulator places each layer (sim.layer_program). Timed with the
    # pacing middle stage's MoE layer (0.178 s) its last backward ended 23 ms late, hiding as much
    # of the later stages' syncs: 3.8985 s against 3.9514 s simulated (-1.34%); now -0.29%.
    model, hardware = load_model("DeepSeek-V3"), load_hardware("H100")
    plan = ParallelPlan(dp=16, pp=8, ep=8, zero=1, first_stage_layers=7, last_stage_layers=6)
    workload = Workload(seq_len=4096, global_batch=64)
    assert abs(_analytic_over_simulated(model, hardware, workload, plan) - 1) < 0.004


def test_a_multi_token_models_middle_stage_sync_hides_the_ends_all_reduce_as_simulated():
    # DeepSeek-V3 with an MTP depth, FP8 blockwise, over pp 8 at 8 / 8 x 6 / 5 on 128 H100s, ep 8,
    # 8 micro-batches: a middle stage's sync ends 0.33 s past the first stage's compute end, after
    # the ends' syncs and their 78 ms all-reduce of the embedding's two copies (cost.mtp), which
    # the simulator runs beside it. Charged whole over every stage's own layers the model came out
    # +1.32% (+0.25% with the pacing stage's layer everywhere, the two errors cancelling); -0.17%.
    model, hardware = load_model("DeepSeek-V3").model_copy(update={"mtp_layers": 1}), load_hardware("H100")
    plan = ParallelPlan(dp=16, pp=8, ep=8, zero=1, first_stage_layers=8, last_stage_layers=5, precision="fp8",
                        fp8_recipe="blockwise")
    workload = Workload(seq_len=4096, global_batch=128)
    assert abs(_analytic_over_simulated(model, hardware, workload, plan) - 1) < 0.003


@pytest.mark.parametrize("pp, vpp, split, zero", [(16, 2, (3, 2), 1), (8, 4, (7, 6), 1), (8, 3, (7, 6), 1),
                                                   (8, 3, (7, 6), 0)])
def test_a_later_middle_stage_with_more_moe_layers_sets_the_zero1_tail(pp, vpp, split, zero):
    # DeepSeek-V3 without MTP on 128 x 8 H100s (tp 2, ring 2, ep 8, ZeRO-1, 4K tokens, 1,024
    # sequences): interleaving deals the dense layers 1-2 to stage 1's chunk 0, so stage 2, whose
    # chunk 0 holds 2 MoE layers (one 0.21 s bucket after its last backward), ends the step; the
    # middle stages' calls had been stage 1's (-4.1% at pp 16 x vpp 2, 3 / 2; -5.3% at pp 8 x vpp
    # 4, 7 / 6). Now the middle stage with the most MoE layers (cost.stage_params.dp_middle_stage),
    # its last backward stage 1's chunk-0 backward (2 dense layers) before stage 1's
    # (cost.stage_layer_times.middle_drain_s; it had taken stage 1's lag). At pp 8 x vpp 3 its 8
    # layers place 3 / 3 / 2: the short chunk syncs first, the full chunk 0 last, after the stage's
    # last backward (dp_once.chunked_exposed_s end_share), and chunk 0's gather is a full chunk's
    # (cost.pipeline_fill); priced as even chunks it was +1.49% (ZeRO-1), +0.96% (ZeRO-0), now
    # -0.28% and -0.03% (the rest: the gathers' slowdown of that stage, sim.pipeline 0.57 s hidden
    # against 0.41 s).
    model, hardware = load_model("DeepSeek-V3"), load_hardware("H100")
    plan = ParallelPlan(tp=2, pp=pp, vpp=vpp, dp=256 // pp, ring=2, ep=8, zero=zero, first_stage_layers=split[0],
                        last_stage_layers=split[1])
    workload = Workload(seq_len=4096, global_batch=1024)
    est = evaluate(model, hardware, workload, plan, num_nodes=128, gpus_per_node=8).step_time_s
    sim = simulate(model, hardware, workload, plan, num_nodes=128, gpus_per_node=8, detail=False).step_time_s
    assert est == pytest.approx(sim, rel=0.005)


@pytest.mark.parametrize("hardware, zero, vpp, split, seq, tp, before, rel", [
    ("L40S", 0, 4, (3, 3), 2048, 4, -5.08, 0.005), ("H100", 1, 4, (3, 3), 512, 4, -3.93, 0.01),
    ("L40S", 1, 4, (2, 2), 2048, 1, 2.44, 0.005), ("L40S", 0, 4, (4, 2), 2048, 4, -2.51, 0.005)])
def test_a_middle_stages_short_end_chunk_syncs_as_simulated(hardware, zero, vpp, split, seq, tp, before, rel):
    # Llama-3-8B on 64 GPUs, pp 4, 4 micro-batches, middle-heavy layouts whose middle stages do not
    # divide by vpp (13 layers over vpp 4: 4 / 4 / 4 / 1; 14: 4 / 4 / 4 / 2; pipeline_chunks.
    # chunk_shape): their ZeRO-0/1 sync, which ends the step, had been priced over even chunks
    # (chunk 0 the short rest, every window the average chunk's); `before` is that error in %.
    # benchmarks/pipeline_middle_chunks_sweep.py's 128 such plans: max 5.08 -> 1.75%, mean 1.14 ->
    # 0.27% (the rest mostly 3/3's sends, +1.2% with one DP rank: cost.pipeline_sends read a middle
    # stage's chunks as its end chunk's). With the sends the simulator's, H100 ZeRO-1's -0.77% is
    # its sync alone (13.3 ms exposed against 13.8 ms), which their excess had offset (+0.14%).
    model, profile = load_model("Llama-3-8B"), load_hardware(hardware)
    dp = 64 // (4 * tp)
    plan = ParallelPlan(dp=dp, pp=4, vpp=vpp, tp=tp, zero=zero, first_stage_layers=split[0], last_stage_layers=split[1])
    workload = Workload(seq_len=seq, global_batch=4 * dp)
    sim = simulate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    est = evaluate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    assert abs(before) > 2 and est == pytest.approx(sim, rel=rel)


@pytest.mark.parametrize("zero, seq, tp, before, rel", [(0, 1024, 4, 1.65, 0.001), (1, 512, 4, 2.65, 0.013)])
def test_the_first_stage_waits_for_the_middle_stages_full_chunks_in_the_drain_as_simulated(zero, seq, tp, before,
                                                                                          rel):
    # Llama-3-8B on 64 L40S, pp 4 x vpp 4 at 12 / 8 (middle chunks 2 / 2 / 2 / 0), 4 micro-batches:
    # the first stage's chunk-3 backwards come down the middle stages' empty chunk 3, its chunk-2
    # ones down their full chunk 2, 11 ms later than its own backwards would run them; its syncs'
    # queue drains meanwhile (first_stage_phases_s). Taken back to back it was `before` % over
    # the simulator; ZeRO-1's rest (+1.19%) is its chunk gathers' (cost.pipeline_fill).
    model, profile = load_model("Llama-3-8B"), load_hardware("L40S")
    dp = 64 // (4 * tp)
    plan = ParallelPlan(dp=dp, pp=4, vpp=4, tp=tp, zero=zero, first_stage_layers=12, last_stage_layers=8)
    workload = Workload(seq_len=seq, global_batch=4 * dp)
    sim = simulate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    est = evaluate(model, profile, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    assert before > 1.5 and est == pytest.approx(sim, rel=rel)


@pytest.mark.parametrize("zero, before, rel", [(0, -0.62, 0.0005), (1, -1.10, 0.005)])
def test_the_first_stages_drain_blocks_are_its_own_layers(zero, before, rel):
    # DeepSeek-V3 without MTP on 128 x 8 H100s (tp 2, ring 2, ep 8, 4K tokens, 1,024 sequences), pp
    # 8 x vpp 2 at 9 / 4: the first stage's chunk 0 holds its 3 dense layers and 2 MoE ones, so
    # its chunk-0 backward (35 ms in sim.pipeline, the embedding's with it) is about stage 1's
    # (34 ms). Its drain blocks had been the stage's mean layer (39 ms, 29 ms), the first stage
    # the slower, its last backwards piled up behind stage 1's: stage 1's lag 77 ms, the
    # simulator's 43 ms, and stage 1's sync (0.68 s after its last backward) ends the step that
    # much early (`before`, %). Now each chunk's own layers (cost.stage_layer_times.
    # first_chunks_bwd_s): +0.01% (ZeRO-0), -0.38% (ZeRO-1; the rest not traced).
    model, hardware = load_model("DeepSeek-V3"), load_hardware("H100")
    plan = ParallelPlan(tp=2, pp=8, vpp=2, dp=32, ring=2, ep=8, zero=zero, first_stage_layers=9, last_stage_layers=4)
    workload = Workload(seq_len=4096, global_batch=1024)
    est = evaluate(model, hardware, workload, plan, num_nodes=128, gpus_per_node=8).step_time_s
    sim = simulate(model, hardware, workload, plan, num_nodes=128, gpus_per_node=8, detail=False).step_time_s
    assert before < -0.5 and est == pytest.approx(sim, rel=rel)


def test_a_thin_layers_large_vocabulary_first_stage_sync_agrees_with_the_simulator():
    # Llama-3-8B's layer at hidden 2048 (16 heads, 4 KV heads, ffn 8192, 16 layers) with a 256,000
    # vocabulary, 2048 tokens on 64 H100s, pp 2, dp 32, ZeRO-0, 2 micro-batches: the first stage's
    # embedding backward is 1.5 ms longer than a layer's, the lead negative; the window to the
    # stage's compute end takes it whole, as the simulator runs it: analytic 111.85 ms, simulated
    # 111.49 (+0.33%); clipped at 0, 113.18 (+1.52%).
    model = load_model("Llama-3-8B").model_copy(update=dict(
        name="thin", hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=16, num_kv_heads=4,
        vocab_size=256000))
    hardware, plan = load_hardware("H100"), ParallelPlan(dp=32, pp=2, tp=1, zero=0)
    workload = Workload(seq_len=2048, global_batch=64)
    sim = simulate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    analytic = evaluate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    assert analytic == pytest.approx(sim, rel=5e-3)


@pytest.mark.parametrize("pp,m", [(4, 4), (4, 5), (2, 2)])
def test_the_first_stages_sync_queue_starts_after_its_last_layers_backward(pp, m):
    # Llama-3-8B at 4096 tokens on 64 H100s, tp 2, ZeRO-0, no virtual stages
    # (benchmarks/pipeline_zero_groups_sweep.py): the first stage's first bucket, its last layer's
    # gradients, leaves once that layer's backward ends (param_and_grad_buffer.py
    # register_grad_ready, Megatron-LM d98e8a6), so its all-reduce queue hides behind the rest of
    # the backward and the embedding's. Counted from the backward's start, the model came out
    # 0.56% (pp 4, m 4), 0.41% (m 5) and 0.40% (pp 2, m 2) below the simulator.
    model, hardware = load_model("Llama-3-8B"), load_hardware("H100")
    plan = ParallelPlan(dp=64 // (pp * 2), pp=pp, tp=2, zero=0)
    workload = Workload(seq_len=4096, global_batch=m * plan.dp)
    sim = simulate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    analytic = evaluate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    assert analytic == pytest.approx(sim, rel=1.5e-3)
