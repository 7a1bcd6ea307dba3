"""cost.overlap and cost.dp_exposure: ZeRO-3 never ahead of the stages that move less data, the
interleaved schedule's syncs, and the simulator's data-parallel stream in step with the model
(ZeRO-3's pass layer by layer: test_layerwise.py)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.cost.dp_exposure import DPTimes
from sp_planner.cost.dp_once import chunked_exposed_s
from sp_planner.cost.dp_passes import dp_exposed_s
from sp_planner.cost.overlap import (
    MEGATRON_OVERLAP,
    OVERLAP_COMPUTE_SLOWDOWN,
    overlap_compute_slowdown,
    slowed_by_overlap,
)
from sp_planner.plan import ParallelPlan
from sp_planner.search import search
from sp_planner.sim import simulate
from sp_planner.specs.workload import Workload


def _times(**seconds):
    names = DPTimes._fields
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in names})


def test_zero3_per_micro_batch_gathers_twice_and_charges_hidden_traffic():
    times = _times(layer_gather_s=0.25, layer_reduce_s=0.5, root_gather_s=0.1, root_reduce_s=0.2)
    kw = dict(micro_batches=2, layers=4, times=times, fwd_window_s=4.0, bwd_window_s=8.0)
    every = MEGATRON_OVERLAP.model_copy(update={"root_gathered_once": False})  # DeepSpeed's, torch FSDP2's
    exposed, hidden = dp_exposed_s(every, zero=np.array([3]), reshard=np.array([True]), **kw)
    # forward: root + first layer's gather; backward: first gather, last reduce-scatter, root's.
    per_micro_batch = (0.1 + 0.25) + (0.25 + 0.5 + 0.2)
    assert exposed[0] == pytest.approx(2 * per_micro_batch)
    busy = 0.1 + 4 * (0.25 + 0.25 + 0.5) + 0.2
    assert hidden[0] == pytest.approx(2 * busy - 2 * per_micro_batch)


def test_megatron_fsdp_gathers_the_root_unit_once_a_step():
    # Megatron-FSDP keeps the root unit gathered after the step's first forward
    # (cost.fsdp.root_gathers_per_micro_batch): micro-batch 0's forward exposes the root's 0.1 and
    # the first layer's 0.25, micro-batch 1's the first layer's alone; each backward 0.25 + 0.5 +
    # 0.2 as above. Busy: the root's 0.1 once, and 4 x (0.25 + 0.25 + 0.5) + 0.2 a micro-batch.
    times = _times(layer_gather_s=0.25, layer_reduce_s=0.5, root_gather_s=0.1, root_reduce_s=0.2)
    kw = dict(micro_batches=2, layers=4, times=times, fwd_window_s=4.0, bwd_window_s=8.0)
    exposed, hidden = dp_exposed_s(MEGATRON_OVERLAP, zero=np.array([3]), reshard=np.array([True]), **kw)
    assert exposed[0] == pytest.approx((0.1 + 0.25) + 0.25 + 2 * (0.25 + 0.5 + 0.2))
    assert hidden[0] == pytest.approx(0.1 + 2 * (4 * 1.0 + 0.2) - exposed[0])


def test_zero3_keeping_parameters_gathers_only_in_forward():
    # reshard_after_forward false: the backward pass only reduce-scatters (the last layer's
    # 0.5 s exposed), so per micro-batch 0.25 (first forward gather) + 0.5, and 1 s less traffic.
    times = _times(layer_gather_s=0.25, layer_reduce_s=0.5)
    kw = dict(micro_batches=2, layers=4, times=times, fwd_window_s=4.0, bwd_window_s=8.0)
    exposed, hidden = dp_exposed_s(MEGATRON_OVERLAP, zero=np.array([3, 3]), reshard=np.array([False, True]),
                                   **{**kw, "times": DPTimes(*(np.repeat(v, 2) for v in times))})
    assert exposed[0] == pytest.approx(2 * (0.25 + 0.5))
    assert hidden[0] == pytest.approx(2 * (1.0 + 2.0) - exposed[0])
    assert exposed[1] == pytest.approx(2 * (0.25 + 0.25 + 0.5))


def test_zero1_exposes_its_unhideable_buckets_or_what_the_window_cannot_hide():
    times = _times(grad_reduce_scatter_s=2.0, last_reduce_scatter_s=0.3, param_all_gather_s=1.0,
                   first_all_gather_s=0.2)
    kw = dict(micro_batches=2, layers=4, times=times, reshard=np.array([False]))
    exposed, _ = dp_exposed_s(MEGATRON_OVERLAP, zero=np.array([1]), fwd_window_s=4.0, bwd_window_s=8.0, **kw)
    assert exposed[0] == pytest.approx(0.3 + 0.2)
    exposed, _ = dp_exposed_s(MEGATRON_OVERLAP, zero=np.array([1]), fwd_window_s=0.5, bwd_window_s=1.0, **kw)
    # The gather: the last of the 4 layers computes after its calls land (cost.dp_once), so they
    # hide behind 3 of the 4 forwards (1.0 - 0.375); the reduce-scatter behind the backward.
    assert exposed[0] == pytest.approx((2.0 - 1.0) + (1.0 - 0.375))


def _comparable(frame, batch):
    """Plans that obey the rules, with two or more micro-batches and no HSDP, and the time before
    the MFU ceiling (cost.mfu_ceiling), by which the search orders held plans."""
    frame = frame[frame.fits | frame.reason.str.startswith("oom")]
    frame = frame[(frame.dp * frame.micro_batch < batch) & (frame.dp_replicate == 1)]
    return frame.assign(uncapped_s=frame.step_time_s - frame.time_mfu_ceiling_s)


def test_interleaved_chunks_sync_one_by_one_into_the_drain():
    # pp 4, vpp 2: 1.0 s of gradient sync, chunk 1 one call of 0.4 s, chunk 0 the other 0.6 s
    # (0.1 s of it never hidden); a micro-batch's backward of the stage 0.4 s, a chunk's 0.2 s.
    # Chunk 1's sync leaves after its last micro-batch with pp x 0.2 = 0.8 s of chunk-0 backwards
    # still to run: hidden; chunk 0's own buckets hide behind its 0.2 s but its last: 0.6 - 0.2.
    kw = dict(pp=4, overlapped=True)
    assert chunked_exposed_s(1.0, 0.4, 0.1, 0.4, vpp=2, **kw) == pytest.approx(0.4)
    # Chunk 1's sync of 1.2 s outlasts the 0.8 s: chunk 0's queue behind it, 0.6 + (1.2 - 0.8).
    assert chunked_exposed_s(1.8, 1.2, 0.1, 0.4, vpp=2, **kw) == pytest.approx(1.0)
    # vpp 4, chunks 1-3 0.3 s each behind 4 x 0.1 s: each hidden, chunk 0 (0.4 s) behind its 0.1 s.
    assert chunked_exposed_s(1.3, 0.3, 0.1, 0.4, vpp=4, **kw) == pytest.approx(0.3)
    # ... 0.5 s each: the queue grows by 0.1 s a chunk, 0.4 + 3 x 0.1.
    assert chunked_exposed_s(1.9, 0.5, 0.1, 0.4, vpp=4, **kw) == pytest.approx(0.7)
    # One chunk: the whole pass behind the whole window; no overlap: all of it.
    assert chunked_exposed_s(1.0, 0.0, 0.1, 0.4, vpp=1, **kw) == pytest.approx(0.6)
    assert chunked_exposed_s(1.0, 0.4, 0.1, 0.4, vpp=2, pp=4, overlapped=False) == pytest.approx(1.0)


def test_aligned_grad_reduce_exposes_chunk_zero_whole():
    # Megatron's --align-grad-reduce (on by default): a chunk's buckets leave together after its
    # last micro-batch's backward, so chunk 0's 0.6 s, after the stage's last backward, hides
    # behind nothing (0.6, not 0.6 - 0.2); chunk 1's queue as before (0.6 + (1.2 - 0.8)).
    kw = dict(pp=4, overlapped=True, launched_whole=True)
    assert chunked_exposed_s(1.0, 0.4, 0.1, 0.4, vpp=2, **kw) == pytest.approx(0.6)
    assert chunked_exposed_s(1.8, 1.2, 0.1, 0.4, vpp=2, **kw) == pytest.approx(1.0)
    # Without virtual stages the first stage's buckets leave from the hooks whatever it says.
    assert chunked_exposed_s(1.0, 0.0, 0.1, 0.4, vpp=1, **kw) == pytest.approx(0.6)
    assert MEGATRON_OVERLAP.aligned_grad_reduce


@pytest.mark.parametrize("model,nodes,seq", [("llama3-8b", 64, 131072), ("llama3.1-70b", 16, 131072),
                                             ("llama3-8b", 512, 8192)])
def test_zero3_never_faster_than_zero1_for_the_same_plan(model, nodes, seq):
    # ZeRO-3 only adds traffic (gathers in every micro-batch); with degrees, recompute and
    # micro-batch fixed it must not be predicted faster than ZeRO-1 (issue 12). With a single
    # micro-batch it moves ZeRO-1's bytes (plus one gather under reshard) in one call a layer
    # where Megatron's 40M buckets make several, each paying the ring latency (cost.buckets):
    # there it may win by that latency, a tie in practice; those plans are left out. So are HSDP
    # plans: their shard group is smaller than ZeRO-1's dp x cp group, so each ring call crosses
    # fewer hops, a real difference and not only more data.
    # Besides traffic, Megatron-FSDP skips the passes Megatron DDP makes over the rank's whole
    # gradient buffer (cost.grad_buffer): the traffic model is checked without them, and with them
    # ZeRO-3 may lead only by the passes it skips.
    m, hw = load_model(model), load_hardware("h100-sxm")
    batch = max(32, 4 * nodes)
    workload = Workload(seq_len=seq, global_batch=batch)
    traffic = MEGATRON_RUNTIME.model_copy(update={"grad_sync": None})
    frame = _comparable(search(m, hw, workload, num_nodes=nodes, gpus_per_node=8, runtime=traffic).frame, batch)
    key = ["dp", "pp", "tp", "ulysses", "ring", "recompute", "micro_batch"]
    # Equal times may differ in the last bit: pivot_table averages each key's rows (vpp, reshard),
    # and the interleaved drain's pile-up is priced with ZeRO-2/3's traffic (cost.pipeline_dp) but
    # beside the bubble under ZeRO-0/1 (cost.step), summed in another order (dp 1: no traffic).
    tie = 1 - 1e-12
    assert (frame.groupby(key + ["zero"]).step_time_s.min().unstack().dropna().pipe(
        lambda t: t[3] >= tie * t[1])).all()
    times = frame.pivot_table(index=key, columns="zero", values="uncapped_s").dropna()
    assert len(times) > 50
    assert (times[3] >= tie * times[1]).all()
    # ZeRO-2 against ZeRO-1 on 1F1B only: interleaved, Megatron's ZeRO-1 launches a chunk's
    # gradient sync whole after its last micro-batch (cost.dp_once.chunked_exposed_s), the
    # first stage's chunk 0 behind nothing, where FSDP's ZeRO-2 reduce-scatters each micro-batch
    # behind its backward: Llama-3.1-70B dp 4 pp 2 vpp 2 tp 8 ring 2 at 128K steps in 155.670 s
    # simulated under ZeRO-2, 155.772 s under ZeRO-1 (the model 155.635 / 155.720 s).
    plain = frame[frame.vpp == 1].pivot_table(index=key, columns="zero", values="uncapped_s").dropna()
    assert len(plain) > 50
    assert (plain[2] >= tie * plain[1]).all()
    # Where the data-parallel group exists ZeRO-3 is strictly slower.
    grouped = times[times.index.get_level_values("dp") > 1]
    assert (grouped[3] > grouped[1]).all()

    passes = _comparable(search(m, hw, workload, num_nodes=nodes, gpus_per_node=8).frame, batch)
    with_passes = passes.pivot_table(index=key, columns="zero", values="uncapped_s").dropna()
    skipped = (passes.pivot_table(index=key, columns="zero", values="time_optimizer_s")
               - frame.pivot_table(index=key, columns="zero", values="time_optimizer_s")).dropna()
    assert (skipped[1] > 0).all()  # ZeRO-1 pays its whole-buffer passes
    lead = with_passes[1] - with_passes[3]
    assert (lead <= (skipped[1] - skipped[3]).clip(lower=0) * (1 + 1e-9) + 1e-12).all()


@pytest.mark.parametrize("plan,seq,batch", [
    (ParallelPlan(dp=4096, zero=3, recompute="full"), 8192, 4096),
    (ParallelPlan(dp=64, tp=8, ring=8, zero=3, recompute="full"), 131072, 64),
    (ParallelPlan(dp=512, ring=8, zero=3, recompute="full"), 131072, 2048),
])
def test_simulator_dp_stream_fits_in_the_step_and_agrees_with_the_model(plan, seq, batch):
    # Before issue 12 a 4096-GPU ZeRO-3 plan kept the simulator's dp stream busy longer than the
    # step (the gathers and reduce-scatters of every micro-batch piled up behind it) while the
    # model counted almost none of it.
    model = load_model("llama3-8b")
    hw = load_hardware("h100-sxm")
    result = simulate(model, hw, Workload(seq_len=seq, global_batch=batch), plan,
                      num_nodes=plan.world_size // 8, gpus_per_node=8, detail=False)
    dp_busy = max(s.busy_s for s in result.streams if s.stream == "dp_comm")
    assert dp_busy <= result.step_time_s
    assert sum(result.critical_path_by_kind_s.values()) == pytest.approx(result.step_time_s, rel=1e-9)
    # Both issue the same calls (cost.buckets); ZeRO-3's layer-by-layer race differs by 2% at most.
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.02)


def test_overlap_slowdown_is_nccl_sms_over_the_gpus_sms():
    assert OVERLAP_COMPUTE_SLOWDOWN == pytest.approx(16 / 132)
    # 16 SMs of a DGX A100's 108 (nccl#689 describes that machine), of H100's 132, of B200's 148
    # (GB200 the same die) and Blackwell Ultra's 160; profiles without a count take H100's.
    assert overlap_compute_slowdown(load_hardware("a800")) == pytest.approx(16 / 108)
    assert overlap_compute_slowdown(load_hardware("a100-80gb")) == pytest.approx(16 / 108)
    assert overlap_compute_slowdown(load_hardware("h200")) == pytest.approx(16 / 132)
    assert overlap_compute_slowdown(load_hardware("b200")) == pytest.approx(16 / 148)
    assert overlap_compute_slowdown(load_hardware("gb200-nvl72")) == pytest.approx(16 / 148)
    assert overlap_compute_slowdown(load_hardware("b300")) == pytest.approx(16 / 160)
    assert overlap_compute_slowdown(load_hardware("gb300-nvl72")) == pytest.approx(16 / 160)
    assert overlap_compute_slowdown(load_hardware("l40s")) == pytest.approx(16 / 132)
    # A ring step of 1 s beside 0.5 s of transfer on A800: the overlapped half at 16/108 more.
    assert slowed_by_overlap(1.0, 0.5, 16 / 108) == pytest.approx(1 + 0.5 * 16 / 108)
