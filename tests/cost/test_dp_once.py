"""cost.dp_once: a stage's once-a-step data-parallel passes, chunk by chunk, by hand."""

import numpy as np
import pytest

import sp_planner.cost.dp_passes as dp_passes_module
import sp_planner.cost.pipeline_dp as pipeline_dp_module
import sp_planner.cost.pipeline_tails as pipeline_tails_module
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.dp_once import (after_last_gather_s, chunked_exposed_s, chunks_gather_s, first_chunk_gather_s,
                                     later_first_s, once_a_step_s)
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload


def _times(**seconds):
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def test_interleaved_sync_queue_drains_behind_the_embeddings_backward():
    # pp 4, vpp 4, Megatron's aligned sync: chunks 3, 2, 1 one 0.5 s call each, chunk 0 the other
    # 0.4 s; a chunk's backward 0.1 s, chunk 0's 0.05 s more on the first stage (the embedding's).
    # Chunk 3's call leaves at 0 and runs to 0.5; chunk 2's (at 0.4) to 1.0; chunk 1's (at 0.8) to
    # 1.5; chunk 0's four backwards end at 0.8 + 4 x 0.15 = 1.4, its call queues to 1.9: 0.5 s
    # exposed (0.7 s with the embedding's backward left out, 1.9 - 1.2).
    kw = dict(pp=4, vpp=4, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, chunk0_extra_s=0.05, **kw) == pytest.approx(0.5)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, **kw) == pytest.approx(0.7)
    # 0.1 s more: chunk 0's backwards end at 1.6, after chunk 1's call: its own 0.4 s alone.
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, chunk0_extra_s=0.1, **kw) == pytest.approx(0.4)


def test_interleaved_sync_queue_drains_behind_the_last_groups_backwards():
    # pp 4, vpp 4, m 11: Megatron's groups of 6 + 5 (pipeline_order.micro_batch_group), so after
    # each chunk's last backward the cooldown runs the last group's 5 backwards of each chunk below,
    # not pp = 4. Chunks 3, 2, 1 one 0.6 s call each, chunk 0 the other 0.4 s; a chunk's backward
    # 0.1 s. Chunk 3's call runs 0 to 0.6; chunk 2's (at 0.5) to 1.2; chunk 1's (at 1.0) to 1.8;
    # chunk 0's five backwards end at 1.5, its call queues to 2.2: 0.7 s exposed. Read with pp
    # backwards a chunk (the sync queue before this change), chunk 0's end at 1.2: 1.0 s.
    kw = dict(pp=4, vpp=4, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(2.2, 0.6, 0.1, 0.4, jobs=5, **kw) == pytest.approx(0.7)
    assert chunked_exposed_s(2.2, 0.6, 0.1, 0.4, jobs=4, **kw) == pytest.approx(1.0)
    assert chunked_exposed_s(2.2, 0.6, 0.1, 0.4, **kw) == pytest.approx(1.0)  # m a multiple of pp


def test_a_pipelines_syncs_follow_the_last_group_and_its_gathers_the_first(monkeypatch):
    # Llama-3-8B pp 2 x vpp 4, 7 micro-batches (groups of 4 + 3), ZeRO-1 over dp 32: each stage's
    # gradient queue reads the last group's 3 backwards a chunk (pipeline_order.last_group), its
    # chunks' parameter gathers the first group's 4 forwards (micro_batch_group).
    seen = []
    real = chunked_exposed_s

    def spy(*args, **kwargs):
        seen.append(("grads" if "launched_whole" in kwargs else "gather", kwargs.get("jobs")))
        return real(*args, **kwargs)

    monkeypatch.setattr("sp_planner.cost.dp_once.chunked_exposed_s", spy)
    plan = ParallelPlan(dp=32, pp=2, vpp=4, tp=1, zero=1)
    evaluate(load_model("Llama-3-8B"), load_hardware("H100"), Workload(seq_len=512, global_batch=7 * 32), plan,
             num_nodes=8, gpus_per_node=8)
    read = [(kind, jobs) for kind, jobs in seen if jobs is not None]
    assert {kind for kind, _ in read} == {"grads", "gather"}
    assert all(np.all(np.asarray(jobs) == (3 if kind == "grads" else 4)) for kind, jobs in read)


@pytest.mark.parametrize(("zero", "step_s"), [(0, 0.21184), (1, 0.15924)])
def test_once_a_step_passes_in_groups_of_n_time_as_the_simulator(zero, step_s):
    # Llama-3-8B at 512 tokens on 8 x 8 H100s, pp 2 x vpp 4 x tp 2, dp 16, 7 micro-batches (groups
    # of 4 + 3). ZeRO-0: the last stage's all-reduce queue binds the step; read with pp backwards a
    # chunk it was 0.21586 s, 1.89% over the simulator's 0.21186 s. ZeRO-1: its reduce-scatter queue
    # and its chunks' gathers (pp forwards ahead, not the first group's 4) were 0.16794 s, 5.46% over.
    plan = ParallelPlan(dp=16, pp=2, vpp=4, tp=2, zero=zero)
    workload = Workload(seq_len=512, global_batch=7 * 16)
    where = dict(num_nodes=8, gpus_per_node=8)
    est = evaluate(load_model("Llama-3-8B"), load_hardware("H100"), workload, plan, **where)
    sim = simulate(load_model("Llama-3-8B"), load_hardware("H100"), workload, plan, **where, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.001)
    assert round(est.step_time_s, 5) == step_s


def test_a_later_ranks_sync_queues_from_rank_backwards_later_and_the_output_layer_with_its_last_chunk():
    # pp 4, vpp 2, launched whole, a chunk's backward 0.2 s, 2.0 s of calls, chunk 1's 0.6 s.
    # Rank 0: chunk 1's call leaves 4 chunk backwards (0.8 s) before the end and is done by then,
    # chunk 0 the other 1.4 s after it: 1.4 s. Rank 2: chunk 1 two backwards later (schedules.py
    # d98e8a6 lines 1445-1456), over [end - 0.4, end + 0.2], chunk 0's 1.4 s behind it: 1.6 s.
    # The last rank (3): its last chunk holds the 0.8 s output layer (cost.buckets._chunked), 1.4 s
    # from end - 0.2 to end + 1.2, chunk 0's 0.6 s after it: 1.8 s.
    kw = dict(pp=4, vpp=2, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=0, **kw) == pytest.approx(1.4)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=2, **kw) == pytest.approx(1.6)
    assert chunked_exposed_s(2.0, 0.6, 0.1, 0.4, rank=3, **kw) == pytest.approx(1.8)
    # Launched by the hooks instead (no offset), the last chunk's call leaves at end - 0.8.
    assert chunked_exposed_s(2.0, 0.6, 0.0, 0.4, rank=3, pp=4, vpp=2, overlapped=True) == pytest.approx(1.2)


def test_a_stages_last_layer_computes_after_its_own_gather():
    # ZeRO-2's gather in the step's first forward: 4 layers of 1 ms, each waiting for its own
    # 1.5 ms of calls (the first 1.5 ms can never hide), all queued at the forward's start. Layer k
    # starts at 1.5 (k + 1) ms: the last at 6 ms, done at 7 ms against 4 ms bare, 3 ms exposed
    # (G - (F - f)); hidden behind the whole forward it was 2 ms.
    times = _times(param_all_gather_s=0.006, first_all_gather_s=0.0015)
    one = dict(fwd_window_s=0.004, layers=4.0, overlapped=True)
    assert chunks_gather_s(times, chunks=1, after_s=0.001, **one).tolist() == pytest.approx([0.003])
    assert chunks_gather_s(times, chunks=1, **one).tolist() == pytest.approx([0.002])
    # The last stage: the output layer's 0.4 ms of calls queue after the last layer's and its
    # head waits for them: that layer runs 6-7 ms, the head from 7 ms as bare from 4 ms: 3 ms of
    # the 6.4 ms, the head's calls covering 0.4 ms of the layer's 1 ms (after_s 0.6 ms).
    last = _times(param_all_gather_s=0.0064, first_all_gather_s=0.0015, root_gather_s=0.0004)
    assert chunks_gather_s(last, chunks=1, after_s=0.0006, **one).tolist() == pytest.approx([0.003])
    # Two chunks of 2 layers (vpp 2), 3 ms of calls each at its first forward: each chunk's last
    # layer starts at 3 ms and ends at 4 ms against 2 ms bare, 2 ms a chunk, 4 ms in all.
    assert chunks_gather_s(times, chunks=2, after_s=0.001, **one).tolist() == pytest.approx([0.004])
    # With a 0.2 ms TP all-gather before each layer's first GEMM, which waits for no call: a chunk's
    # first layer's GEMM runs 1.5-2.3 ms, the second's all-gather 2.3-2.5 ms, its GEMM 3.0-3.8 ms
    # against 2 ms bare: 1.8 ms a chunk, 3.6 ms in all.
    assert chunks_gather_s(times, chunks=2, lead_s=0.0002, after_s=0.0008, **one).tolist() == pytest.approx([0.0036])


def test_a_single_stages_last_layer_computes_after_its_own_gather():
    # pp 1, ZeRO-2 and ZeRO-1 without virtual stages alike: 4 layers of 1 ms, each waiting for
    # its own 1.5 ms of calls (the first 1.5 ms never hide), the output layer's 0.4 ms of calls
    # after them, a 0.2 ms TP all-gather before each layer's first GEMM that waits for none.
    # Layer k's GEMMs start once its calls land at 1.5 (k + 1) ms: layer 3's all-gather runs
    # 5.3-5.5 ms, its GEMMs 6.0-6.8 ms, the head's calls landing at 6.4 ms beside them: 2.8 ms over
    # the bare 4 ms (max(G0, G - F + f - t_ag - g_out)); behind the whole forward it was 2.4 ms.
    times = _times(param_all_gather_s=0.0064, first_all_gather_s=0.0015, head_gather_s=0.0004)
    _, _, gather = once_a_step_s(MEGATRON_RUNTIME.overlap, zero=np.array([2, 1]), layers=4.0, times=times,
                                 fwd_window_s=0.004, bwd_window_s=0.008, edges=Edges(0.0002, 0.0, 0.0))
    assert gather.tolist() == pytest.approx([0.0028, 0.0028])
    # Its calls 0.9 ms, longer than the last layer's GEMMs: the head waits for them, 6.9 - 4 = 2.9 ms.
    long_head = times._replace(param_all_gather_s=np.array([0.0069]), head_gather_s=np.array([0.0009]))
    _, _, gather = once_a_step_s(MEGATRON_RUNTIME.overlap, zero=np.array([2]), layers=4.0, times=long_head,
                                 fwd_window_s=0.004, bwd_window_s=0.008, edges=Edges(0.0002, 0.0, 0.0))
    assert gather.tolist() == pytest.approx([0.0029])


def test_a_short_last_layers_calls_leave_the_layer_below_waiting_longest():
    # A first stage of 4 layers of 1 ms: the embedding's 0.5 ms of calls, then 2.2, 1.5, 1.5 and
    # 0.8 ms for the layers (a bucket spanning two layers is the lower one's: the first layer
    # holds 0.7 ms over a 1.5 ms share, the last lacks it), all queued at the forward's start; the
    # embedding's 0.3 ms forward waits for its own calls only. The embedding computes 0.5-0.8 ms,
    # layer 0 2.7-3.7, layer 1 4.2-5.2, layer 2 5.7-6.7 and layer 3, its calls in at 6.5 ms,
    # 6.7-7.7 after it: 3.4 ms over the bare 4.3 ms. Layer 2 waited longest: its calls land 1.2 ms
    # before the end less two layers (after_s 1.2 ms, not the last layer's 1 ms).
    times = _times(param_all_gather_s=0.0065, first_all_gather_s=0.0027, root_gather_s=0.0005)
    after = after_last_gather_s(times, 0.001, 0.0, layers=4.0)
    assert after.tolist() == pytest.approx([0.0012])
    assert chunks_gather_s(times, 0.004, 4.0, 1, True, after_s=after, before_s=0.0003).tolist() == pytest.approx(
        [0.0034])


# The parameter gather after the optimizer, not overlapped (so not in the first forwards).
AFTER_STEP = MEGATRON_RUNTIME.model_copy(
    update={"overlap": MEGATRON_RUNTIME.overlap.model_copy(update={"param_gather": False})})


FIRST_FORWARD_GATHERS = {
    # name: (model, nodes, seq_len, global batch, plan, rel), H100s; the comments: stage 0's exposed
    # gather (ms) as this model priced it before Stop 56, now, and as the simulator runs it.
    # Mixtral: its last layer computes 3.6 ms after its calls land, the output layer's 0.8 ms cover
    # part; its 0.07 ms embedding forward hides the first layer's calls.
    "Mixtral-8x7B pp1 tp2 ep4 ZeRO-2": ("Mixtral-8x7B", 8, 4096, 64, dict(dp=32, tp=2, ep=4, zero=2),
                                        0.005),  # 126.84, 129.51, 129.52
    # Gemma-2's tied table leaves the single stage no output layer's calls, and its last layer's
    # calls (a bucket short) land before the layer below it ends: that one waits longest. The rest
    # is the calls' own price (66.06 ms in all against the simulator's 65.75: cost.dp_times prices
    # equal calls, sim.dp_work each bucket at its size).
    "Gemma-2-9B pp1 ZeRO-2": ("Gemma-2-9B", 8, 2048, 64, dict(dp=64, zero=2), 0.025),  # 12.52, 14.04, 13.72
    "Gemma-2-9B pp1 ZeRO-1": ("Gemma-2-9B", 8, 2048, 64, dict(dp=64, zero=1), 0.025),  # 12.52, 14.04, 13.72
    # ZeRO-1's first stage (Megatron DDP, vpp 1): no output layer, its 0.2 ms embedding forward.
    "Llama-3-70B tp8 pp4 ZeRO-1": ("Llama-3-70B", 8, 4096, 8, dict(dp=2, tp=8, pp=4, zero=1),
                                   0.005),  # 7.48, 9.31, 9.32
}


@pytest.mark.parametrize("name", list(FIRST_FORWARD_GATHERS))
def test_a_single_stage_and_zero1s_first_stage_gather_as_the_simulator(name, monkeypatch):
    # The parameter gather of a single stage (ZeRO-1/2, dense and MoE; Gemma-2's tied output layer
    # has no calls of its own after the last layer's) and of ZeRO-1's first pipeline stage, issued
    # bucket by bucket from the step's start, each layer waiting for its own (Megatron-FSDP's
    # _pre_forward_param_unshard -> wait_bucket_ready, DDP's finish_param_sync): the analytic
    # exposure against how much longer the simulator's first forward of stage 0 runs than with the
    # gather after the optimizer (not overlapped, so not in the forward).
    model_name, nodes, seq_len, batch, plan, rel = FIRST_FORWARD_GATHERS[name]
    model, hardware = load_model(model_name), load_hardware("H100")
    plan, workload = ParallelPlan(**plan), Workload(seq_len=seq_len, global_batch=batch)
    gathers = []
    for module in (dp_passes_module, pipeline_tails_module):
        def spy(*args, _priced=module.once_a_step_s, **kw):
            out = _priced(*args, **kw)
            gathers.append(float(np.ravel(out[2])[0]))
            return out
        monkeypatch.setattr(module, "once_a_step_s", spy)
    evaluate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=8)
    # A pipeline's first stage: the tails' first call (cost.pipeline_tails, stage 0's own layers).
    analytic = gathers[1] if plan.pp > 1 else gathers[0]

    def first_forward_s(runtime):
        sim = simulate(model, hardware, workload, plan, num_nodes=nodes, gpus_per_node=8, detail=False, runtime=runtime)
        return next(e.end_s - e.start_s for e in sim.events if e.stage == 0 and e.name == "F0")

    assert analytic == pytest.approx(first_forward_s(MEGATRON_RUNTIME) - first_forward_s(AFTER_STEP), rel=rel)


def test_an_interleaved_zero2_stages_gathers_as_the_simulator(monkeypatch):
    # Llama-3-70B 4K on 128 H100s, tp 4, pp 8 x vpp 2, ZeRO-2: each stage's chunks' first forwards
    # wait for their calls (cost.pipeline_dp prices them per stage with chunks_gather_s). A chunk's
    # last layer holds 2.85 ms of calls against a 3.46 ms share (its first 4.08 ms), so its layer
    # below waits longest; the first stage's 0.2 ms embedding forward hides its first layer's
    # calls. Before Stop 56 (ms): first 12.76, middle 8.57, last 9.75; simulated 13.29, 9.28, 10.10.
    model, hardware = load_model("Llama-3-70B"), load_hardware("H100")
    plan, workload = ParallelPlan(dp=4, tp=4, pp=8, vpp=2, zero=2), Workload(seq_len=4096, global_batch=64)
    gathers = []

    def spy(*args, _priced=pipeline_dp_module.chunks_gather_s, **kw):
        out = _priced(*args, **kw)
        gathers.append(float(np.ravel(out)[0]))
        return out

    monkeypatch.setattr(pipeline_dp_module, "chunks_gather_s", spy)
    evaluate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8)
    first, middle, last = gathers[:3]
    runs = [simulate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8, detail=False, runtime=runtime)
            for runtime in (MEGATRON_RUNTIME, AFTER_STEP)]

    def first_forwards_s(sim, stage):
        return sum(e.end_s - e.start_s for e in sim.events
                   if e.stage == stage and e.micro_batch == 0 and e.name.startswith("F0"))

    for stage, analytic in ((0, first), (1, middle), (7, last)):
        waits = first_forwards_s(runs[0], stage) - first_forwards_s(runs[1], stage)
        assert analytic == pytest.approx(waits, rel=0.005), stage


def test_a_middle_stages_short_end_chunk_syncs_first_and_its_full_chunks_last():
    # pp 4, rank 1, launched whole. Six layers over vpp 4 place 2 / 2 / 2 / 0 (pipeline_chunks.
    # chunk_shape): full chunks of 1.0 s calls, the empty end chunk none (3.0 s), a full chunk's
    # backward 0.2 s (0.6 s over 3 full chunks). Chunk 2's call leaves 8 chunk backwards (1.6 s)
    # before the end plus the rank's one (0.2 s): -1.4 to -0.4; chunk 1's at -0.6 queues to -0.4
    # and runs to 0.6; chunk 0's, at the end, queues to 0.6 and runs to 1.6: 1.6 s exposed. Priced
    # as even chunks (chunk 0 the 0 s rest, 0.15 s windows) it was 1.35 s.
    kw = dict(pp=4, overlapped=True, launched_whole=True, rank=1)
    assert chunked_exposed_s(3.0, 1.0, 0.1, 0.6, vpp=4, end_share=0.0, **kw) == pytest.approx(1.6)
    assert chunked_exposed_s(3.0, 1.0, 0.1, 0.6, vpp=4, **kw) == pytest.approx(1.35)
    # vpp 2, three layers as 2 / 1: chunk 1's 0.5 s call leaves 4 chunk-0 backwards (0.8 s) and the
    # rank's one (0.2 s) before the end, done at -0.1; chunk 0's 1.0 s after the end, alone: 1.0 s.
    assert chunked_exposed_s(1.5, 1.0, 0.1, 0.3, vpp=2, end_share=0.5, **kw) == pytest.approx(1.0)


def test_the_first_stages_waits_in_the_drain_let_its_sync_queue_drain_longer():
    # test_interleaved_sync_queue_drains_behind_the_embeddings_backward's stage (no embedding:
    # 0.7 s exposed), but between its last chunk-3 and last chunk-2 backwards it waits 0.1 s for
    # the stages above (cost.pipeline_tails.first_stage_phases_s: D_top 0.5 s for its own 4 x
    # 0.1 s): chunk 3's call leaves at -1.3 (to -0.8), chunk 2's at -0.8 (to -0.3), chunk 1's at
    # -0.4 queues to -0.3 (to 0.2), chunk 0's 0.4 s to 0.6: 0.6 s. Phases no longer than its own
    # backwards change nothing.
    kw = dict(pp=4, vpp=4, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, phases_s=(0.4, 0.4, 0.5), **kw) == pytest.approx(0.6)
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, phases_s=(0.3, 0.4, 0.4), **kw) == pytest.approx(0.7)


def test_first_chunk_gather_is_chunk_0s_share_of_the_floor():
    # 16 layers' calls 20 ms (22 less the root's 2): a layer's 1.25 ms. Chunk 0's calls: the first
    # ones, 4 ms, less the 0.5 ms the embedding's forward hides (not below its own bucket, 3 ms):
    # 3.5 ms. Over 4 chunks the floor is 3.5 + 3 x 1.25 = 7.25 ms, chunk 0's the whole 3.5 of it;
    # a gather the window sets at twice the floor, 7 ms; one chunk, the whole gather.
    times = _times(param_all_gather_s=0.022, root_gather_s=0.002, first_all_gather_s=0.004, tail_gather_s=0.003)
    kw = dict(layers=16.0, before_s=0.0005)
    assert first_chunk_gather_s(0.00725, times, chunks=4, **kw).tolist() == pytest.approx([0.0035])
    assert first_chunk_gather_s(0.0145, times, chunks=4, **kw).tolist() == pytest.approx([0.007])
    assert first_chunk_gather_s(0.0145, times, chunks=1, **kw).tolist() == pytest.approx([0.0145])
    # Its own bucket where the embedding's forward hides more: max(3, 4 - 1.5) = 3 ms of 6.75.
    assert first_chunk_gather_s(0.00675, times, 16.0, 4, before_s=0.0015).tolist() == pytest.approx([0.003])


def test_later_chunks_wait_for_their_first_layers_own_buckets_less_the_lead():
    # A later chunk's first forward waits for its first layer's own buckets, 1.6 ms, less the
    # 0.1 ms TP all-gather before its first GEMM (which waits for none): 1.5 ms; a layer's share
    # (1.25 ms) where no such buckets are given; none where the lead outlasts them.
    times = _times(later_first_gather_s=0.0016)
    assert later_first_s(times, 0.00125, 0.0001).tolist() == pytest.approx([0.0015])
    assert later_first_s(_times(), 0.00125, 0.0001).tolist() == pytest.approx([0.00125])
    assert later_first_s(times, 0.00125, 0.002).tolist() == [0.0]


def test_zero2_gathers_floor_is_each_chunks_own_first_calls_less_the_lead():
    # 16 layers of 2 ms over 4 chunks, 22 ms of calls (root 2 ms, a layer's share 1.25 ms), the
    # first 4 ms (the embedding's 3 ms of them), chunk 1's first layer's 1.6 ms, the TP lead 0.1 ms,
    # the embedding's forward 0.5 ms. Floor: chunk 0's max(3, 4 - 0.5 - 0.1) = 3.4 ms, each later
    # chunk's 1.6 - 0.1 = 1.5 ms: 7.9 ms. The window: 32.5 ms less 3 x (2 - 0.1 + 1.5) ms of the
    # chunks' last layers (_top_wait_s: 2 - max(0, 2.5 - 2)) = 22.3 ms, above the 22 ms: the floor.
    times = _times(param_all_gather_s=0.022, root_gather_s=0.002, first_all_gather_s=0.004, tail_gather_s=0.003,
                   later_first_gather_s=0.0016)
    kw = dict(fwd_window_s=0.032, layers=16.0, chunks=4.0, overlapped=True, before_s=0.0005)
    assert chunks_gather_s(times, lead_s=0.0001, **kw).tolist() == pytest.approx([0.0079])
    # A layer's share per later chunk without their own buckets: 3.4 + 3 x 1.25 = 7.15 ms.
    share = times._replace(later_first_gather_s=np.array([0.0]))
    assert chunks_gather_s(share, lead_s=0.0001, **kw).tolist() == pytest.approx([0.00715])
    # Chunk 0's share of the 7.9 ms: its 3.4 ms.
    assert first_chunk_gather_s(0.0079, times, 16.0, 4, before_s=0.0005, lead_s=0.0001).tolist() == pytest.approx(
        [0.0034])
