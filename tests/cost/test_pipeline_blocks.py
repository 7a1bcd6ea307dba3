"""cost.pipeline_blocks: each kind of stage's blocks of one micro-batch, by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.pipeline_blocks import stage_blocks
from sp_planner.cost.pipeline_stages import StageDP
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs.workload import Workload
from tests.cost.agreement import deepseek_v3_uncapped


def _times(**seconds):
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def _blocks(times, zero=2, overlap=MEGATRON_OVERLAP, middle_times=None, only=None):
    # pp 4, vpp 2, 20 layers a stage of 0.02 s forward and 0.04 s backward; the first stage's
    # embedding backward 0.05 s (its forward 0.01 s), the last stage's loss and output layer 0.3 s
    # (0.2 s of it backward, before its layers').
    stages = (
        StageDP(times, np.array([20.0]), np.array([1.2 + 0.06]), 0.0, 1.0),
        StageDP(times if middle_times is None else middle_times, np.array([20.0]), np.array([1.2]), 0.0,
                np.array([2.0])),
        StageDP(times, np.array([20.0]), np.array([1.2 + 0.3]), np.array([0.2]), 1.0),
    )
    blocks, _ = stage_blocks(overlap, zero=np.array([zero]), interleaved=True, vpp=np.array([2]),
                             stages=stages, fwd_layer_s=0.02, bwd_layer_s=0.04, reshard=np.array([False]),
                             edges=Edges(0.0, 0.0, 0.0, bwd_tail_s=0.05), only=only)
    return blocks


def test_without_traffic_the_blocks_are_the_compute():
    first, middle, last = _blocks(_times())
    # Forwards: 20 x 0.02 s and the ends' forward extras (the embedding's 0.01, the loss's 0.1).
    assert [float(s.forward_s[0]) for s in (first, middle, last)] == pytest.approx([0.41, 0.4, 0.5])
    # Chunk 0's backward holds the embedding's on the first stage, the last chunk's the loss's on the last.
    assert [float(s.first_bwd_s[0]) for s in (first, middle, last)] == pytest.approx([0.45, 0.4, 0.4])
    assert [float(s.last_bwd_s[0]) for s in (first, middle, last)] == pytest.approx([0.4, 0.4, 0.6])
    # Chunk 0 on the fill and drain: half the stage, and the first stage's extra beyond its half.
    assert [float(s.chunk0_s[0]) for s in (first, middle, last)] == pytest.approx([0.63 + 0.025, 0.6, 0.75])
    assert [float(s.cycle_s[0]) for s in (first, middle, last)] == pytest.approx([1.26, 1.2, 1.5])
    # The last chunk's forward: 10 layers (0.2 s), the last stage's with its output layer's and
    # loss's forward (0.1 s); the first stage's embedding forward goes with its chunk 0.
    assert [float(s.last_fwd_s[0]) for s in (first, middle, last)] == pytest.approx([0.2, 0.2, 0.3])


def test_zero2_output_layer_calls_open_the_last_stages_last_chunk():
    # 0.9 s of a stage's reduce-scatters, 0.5 s of them the root's (on the last stage the output
    # layer's): a chunk's layers carry 0.2 s. The last stage's last chunk queues the output
    # layer's after the loss's backward, 0.7 s behind its whole 0.4 s window: 0.3 s out. Another
    # stage's last chunk hides its 0.2 s behind its window a layer late (0.04 s) and idle while
    # its last layer's 0.01 s (a share, 0.02 s, less what its first layer's carry beyond one,
    # 0.03 - 0.02) leave before the next layer's are issued (0.03 s): 0.33 s, but its first
    # layer's calls, chunk 0's (each chunk bucketed on its own): 0.03 s out.
    first, middle, last = _blocks(_times(grad_reduce_scatter_s=0.9, root_reduce_s=0.5, last_reduce_scatter_s=0.03))
    assert float(last.last_bwd_s[0]) == pytest.approx(0.4 + 0.2 + 0.3)
    assert [float(first.last_bwd_s[0]), float(middle.last_bwd_s[0])] == pytest.approx([0.43, 0.43])


def test_zero3_root_units_go_with_the_chunks_that_hold_them():
    # Megatron builds the embedding into the first stage's chunk 0 and the output layer (with the
    # final norm) into the last stage's last chunk, each chunk its own Megatron-FSDP module. A
    # layer gathers in 0.01 s and reduce-scatters in 0.01 s (under its 0.04 s backward), the root
    # unit 0.5 s and 0.3 s; parameters kept after forward, no prefetch: a 10-layer chunk's forward
    # exposes its 10 gathers (0.1 s) and the root's before them (0.6 s), its backward the last
    # layer's reduce-scatter (0.01 s; the first stage's hides behind the 0.05 s embedding
    # backward) and the root's after it (0.3 s).
    times = _times(layer_gather_s=0.01, layer_reduce_s=0.01, root_gather_s=0.5, root_reduce_s=0.3,
                   grad_reduce_scatter_s=0.5)
    middle_times = _times(layer_gather_s=0.01, layer_reduce_s=0.01, grad_reduce_scatter_s=0.2)  # no root
    no_prefetch = MEGATRON_OVERLAP.model_copy(update={"zero3_prefetch": False})
    first, middle, last = _blocks(times, zero=3, overlap=no_prefetch, middle_times=middle_times)
    # The last stage's last chunk: forward 0.3 + 0.6 s, backward 0.6 + 0.31 s; its chunk 0 as a
    # middle stage's (forward 0.2 + 0.1 s, backward 0.4 + 0.01 s).
    assert float(last.last_fwd_s[0]) == pytest.approx(0.3 + 0.6)
    assert float(last.last_bwd_s[0]) == pytest.approx(0.6 + 0.31)
    assert float(last.first_bwd_s[0]) == pytest.approx(0.4 + 0.01)
    assert float(last.chunk0_s[0]) == pytest.approx(0.75 + 0.1 + 0.01)
    assert float(last.forward_s[0]) == pytest.approx(0.5 + 0.6 + 0.1)
    # The first stage's chunk 0: forward 0.6 s more, backward 0.45 + 0.3 s; its last chunk plain.
    assert float(first.first_bwd_s[0]) == pytest.approx(0.45 + 0.3)
    assert float(first.chunk0_s[0]) == pytest.approx(0.655 + 0.6 + 0.3)
    assert [float(first.last_fwd_s[0]), float(first.last_bwd_s[0])] == pytest.approx([0.2 + 0.1, 0.4 + 0.01])
    assert [float(middle.last_fwd_s[0]), float(middle.first_bwd_s[0])] == pytest.approx([0.2 + 0.1, 0.4 + 0.01])
    # A cycle: both chunks, whichever holds the root.
    assert [float(s.cycle_s[0]) for s in (first, middle, last)] == pytest.approx(
        [1.26 + 0.9 + 0.11, 1.2 + 0.22, 1.5 + 0.91 + 0.11])


def test_one_stage_alone_is_priced_as_among_all():
    # cost.pipeline_dp's lightest middle stage: its blocks alone, the end stages' left unpriced.
    # The ZeRO-3 middle stage above: forward 0.2 + 0.1 s and backward 0.4 + 0.01 s a chunk.
    times = _times(layer_gather_s=0.01, layer_reduce_s=0.01, root_gather_s=0.5, root_reduce_s=0.3,
                   grad_reduce_scatter_s=0.5)
    middle_times = _times(layer_gather_s=0.01, layer_reduce_s=0.01, grad_reduce_scatter_s=0.2)
    no_prefetch = MEGATRON_OVERLAP.model_copy(update={"zero3_prefetch": False})
    first, middle, last = _blocks(times, zero=3, overlap=no_prefetch, middle_times=middle_times, only=1)
    assert first is None and last is None
    assert [float(middle.last_fwd_s[0]), float(middle.first_bwd_s[0])] == pytest.approx([0.2 + 0.1, 0.4 + 0.01])
    assert float(middle.cycle_s[0]) == pytest.approx(1.2 + 0.22)
    every = _blocks(times, zero=3, overlap=no_prefetch, middle_times=middle_times)[1]
    assert all(np.array_equal(a, b) for a, b in zip(middle, every))


def test_a_middle_stages_short_end_chunk_is_its_last():
    # Llama-3-8B on 64 H100s, pp 4 x vpp 2 at 9 / 5: each middle stage's 9 layers run 5 / 4 (the
    # layout's end chunk its last, sim.layer_program), its last chunk's ZeRO-3 traffic was 5
    # layers' share: -0.47% off the simulator with one micro-batch group, now 1e-3 (its blocks the
    # simulator's).
    model, hardware = load_model("Llama-3-8B"), load_hardware("H100")
    plan = ParallelPlan(dp=16, pp=4, vpp=2, tp=1, zero=3, first_stage_layers=9, last_stage_layers=5)
    workload = Workload(seq_len=2048, global_batch=64)
    est = evaluate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    sim = simulate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    assert est == pytest.approx(sim, rel=1e-3)


@pytest.mark.parametrize("pp, vpp, split, before", [
    (16, 2, (3, 2), 0.43), (8, 4, (7, 6), 0.69), (8, 3, (7, 6), 0.77), (8, 2, (9, 4), 0.28),
    (4, 4, (16, 13), 0.66)])
def test_zero2_chunks_of_mixed_kinds_are_priced_from_their_own_layers_buckets(pp, vpp, split, before):
    # DeepSeek-V3 4K on 128 x 8 H100s, tp 2, ring 2, ep 8, 1,024 sequences, ZeRO-2: a chunk's
    # gradient calls were its layers' share of its stage's (the first stage's chunk 0, dense layer
    # 0 and the embedding, priced as 1 / 7 of six MoE layers and a dense one's); now its own layers'
    # buckets (cost.bucket_counts._chunk_summary), as sim.dp_work issues each layer's. `before`: the
    # analytic step's % over the simulator's then, before the MFU ceiling; within 0.15% now.
    est, sim, est_s, sim_s = deepseek_v3_uncapped(pp, vpp, split, zero=2)
    assert before > 0.25 and est_s == pytest.approx(sim_s, rel=0.0016)
