"""cost.pipeline_dp: ZeRO-2/3's per-micro-batch exposure in a pipeline, by hand, and beyond cost.step's
compute path."""

import numpy as np
import pytest

import sp_planner.cost.dp_passes as dp_passes_module
import sp_planner.cost.pipeline_dp as pipeline_dp_module
import sp_planner.cost.step as step_module
import sp_planner.cost.step_layers as step_layers_module
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import DPTimes, Edges
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.pipeline_stages import StageDP
from sp_planner.cost.dp_passes import dp_over_passes
from sp_planner.cost.chunk_path import kinds_path_s
from sp_planner.cost.pipeline_dp import pipelined_exposed_s
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.space import Axes, Pins, degree_tuples, expand_candidates, search_order
from sp_planner.specs.workload import Workload
from tests.cost.agreement import deepseek_v3_uncapped, uncapped_steps


def _zero2(last_s, tail_s=0.0):
    """A stage whose gradient traffic hides behind its backward but its last calls."""
    seconds = dict(grad_reduce_scatter_s=0.5, last_reduce_scatter_s=last_s, tail_reduce_scatter_s=tail_s)
    return DPTimes(**{name: np.array([seconds.get(name, 0.0)]) for name in DPTimes._fields})


def _exposed(first_compute_s, m=8):
    # First stage: 0.3 s of last calls (the embedding's 0.2 s among them); two middle stages and
    # the last one 0.1 s each; the last stage computes 0.2 s longer (the loss).
    stages = (
        StageDP(_zero2(0.3, 0.2), np.array([20.0]), np.array([first_compute_s]), 0.0, 1.0),
        StageDP(_zero2(0.1), np.array([20.0]), np.array([1.0]), 0.0, np.array([2])),
        StageDP(_zero2(0.1), np.array([20.0]), np.array([1.2]), 0.0, 1.0),
    )
    return float(pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([2]), micro_batches=m, vpp=np.array([1]),
                                     stages=stages, fwd_layer_s=0.02, bwd_layer_s=0.04,
                                     reshard=np.array([False]))[0])


def test_the_pacing_stage_repeats_its_exposure_the_others_pay_once():
    # Cycles: first 0.9 + 0.3, middle 1.0 + 0.1, last 1.2 + 0.1: the last stage paces, 0.1 s
    # longer than without DP, for m - 1 = 7 micro-batches; every stage's exposure once more on the
    # fill and drain: 0.3 + 2 x 0.1 + 0.1. (The first stage's larger exposure, 0.3, is absorbed
    # by its slack.)
    assert _exposed(0.9) == pytest.approx(7 * 0.1 + 0.6)
    # A first stage with less slack (1.15 + 0.3 = 1.45) paces instead. Its blocks: 0.35 s forward
    # (1.15 less 20 x 0.04 s of backward), 1.1 s backward; the middle ones' 0.2 + 0.9, the last's
    # 0.4 + 0.9. Its 8 cycles and the waits for micro-batch 0's round trip (3.85 s against its own 4
    # forwards, 2.45 s) and micro-batch 7's (3.5 s against its 3 backwards, 0.2 s): 14.25 s
    # (cost.pipeline_path), of which cost.step charges 8 x 1.2 + 1.15 + 2 x 1.0 = 12.75 s.
    assert _exposed(1.15) == pytest.approx(14.25 - 12.75)


def test_a_single_stage_exposes_every_micro_batch():
    stage = StageDP(_zero2(0.3, 0.2), np.array([80.0]), np.array([4.0]), 0.0, 1.0)
    empty = StageDP(_zero2(0.0), np.array([80.0]), np.array([0.0]), 0.0, 0.0)
    exposed = pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([2]), micro_batches=8, vpp=np.array([1]),
                                  stages=(stage, empty, empty), fwd_layer_s=0.02, bwd_layer_s=0.04,
                                  reshard=np.array([False]))
    assert exposed[0] == pytest.approx(8 * 0.3)


def _interleaved(first_s, x, *, times=_zero2, zero=2):
    # Four stages of 20 layers at vpp 2 (chunk-0 backward blocks of 10 x 0.04 = 0.4 s), 8
    # micro-batches; the first stage's backward beyond its layers (x, the embedding's) comes in
    # its Edges.bwd_tail_s, as cost.step passes it.
    stages = (
        StageDP(times(0.3, 0.2), np.array([20.0]), np.array([first_s + x]), 0.0, 1.0),
        StageDP(times(0.1), np.array([20.0]), np.array([1.0]), 0.0, np.array([2])),
        StageDP(times(0.1), np.array([20.0]), np.array([1.2]), 0.0, 1.0),
    )
    return float(pipelined_exposed_s(MEGATRON_OVERLAP, zero=np.array([zero]), micro_batches=8, vpp=np.array([2]),
                                     stages=stages, fwd_layer_s=0.02, bwd_layer_s=0.04, reshard=np.array([False]),
                                     edges=Edges(0.0, 0.0, 0.0, bwd_tail_s=x))[0])


def test_the_first_stage_chunk0_exposure_piles_up_on_the_interleaved_drain():
    # Chunk-0 blocks with their exposure: the first stage's 0.4 + x + 0.25 (its chunk's 0.25 s of
    # calls hide behind nothing but 0.32 s, its 0.3 s of last calls at most 0.25 of them), the
    # others' 0.5; each later chunk, bucketed on its own, exposes its first layer's 0.1 s as chunk
    # 0 does (cost.buckets._bucketed_chunks), so the last stage paces (1.2 + 0.2 against the
    # first's 0.9 + x + 0.35). Beyond the same path without traffic (cost.step's compute and
    # bubble): the last stage's 8 x 0.2,
    # the chunk-0 exposure of the stages below it, 0.25 + 2 x 0.1, and the drain's 4 jobs piling
    # up behind the first stage's block 3 times (cost.pipeline_path), 3 x 0.15 of traffic.
    assert _interleaved(0.9, 0.0) == pytest.approx(8 * 0.2 + 0.45 + 3 * 0.15)
    # The embedding's backward lengthens that block with or without traffic: the bubble's.
    assert _interleaved(0.9, 0.05) == pytest.approx(_interleaved(0.9, 0.0))
    # 0.1 s of it: the 0.1 s of last calls that are not the embedding's own run beside it
    # (cost.dp_exposure.last_calls_s), the chunk's exposure 0.25 -> 0.2: 0.05 s less on the way
    # in and 3 times on the drain.
    assert _interleaved(0.9, 0.1) == pytest.approx(_interleaved(0.9, 0.0) - 4 * 0.05)


def test_without_traffic_nothing_is_exposed():
    # No data-parallel traffic: the path is the compute's, which cost.step charges (its bubble).
    def idle(*_):
        return DPTimes(**{name: np.array([0.0]) for name in DPTimes._fields})

    for zero in (2, 3):
        assert _interleaved(0.9, 0.05, times=idle, zero=zero) == pytest.approx(0.0)


def _step_passes(monkeypatch, model, workload, gpus):
    """The one dp_over_passes call (args, kwargs) cost.step.time_columns makes over every candidate
    of `model` on `gpus` H100s (8 a node), its host-bound rows again after them (cost.dp_passes.
    dp_with_host_beside_s: their compute path NaN, priced in the call), and those candidates."""
    seen = []

    def keep(*args, **kw):
        seen.append((args, kw))
        return dp_over_passes(*args, **kw)

    monkeypatch.setattr(dp_passes_module, "dp_over_passes", keep)
    c = expand_candidates(workload, search_order(degree_tuples(gpus, Pins())), Pins(), 8,
                          axes=Axes(num_layers=model.num_layers))
    step_module.time_columns(model, load_hardware("h100-sxm"), workload, c, gpus_per_node=8)
    (args, kw), = seen
    return args, kw, c


def test_the_steps_compute_path_is_the_one_the_traffic_is_reckoned_beyond(monkeypatch):
    # cost.step hands its bubble's path to the DP passes instead of pricing it again: on every
    # pipelined ZeRO-2/3 candidate of Llama-3-8B on 64 H100s (pp 2..8, vpp 1..8) it is the path
    # over the compute blocks pipeline_dp would build, so the exposure is what it prices alone.
    args, kw, c = _step_passes(monkeypatch, load_model("llama3-8b"), Workload(seq_len=8192, global_batch=256), 64)
    assert kw["compute_path_s"] is not None
    priced_here = dp_over_passes(*args)
    pipelined = (c.pp > 1) & (c.zero >= 2)
    assert np.any(pipelined & (c.vpp > 1)) and np.any(pipelined & (c.vpp == 1))
    for given, alone in zip(dp_over_passes(*args, **kw), priced_here):
        np.testing.assert_array_equal(given, alone)


# DeepSeek-V3 over pp 8 at default_split's 7 / 8 x 6 / 6 on 128 H100s, ep 8, 4K tokens, 4 micro-batches.
DSV3_PP8 = dict(dp=16, pp=8, ep=8, first_stage_layers=7, last_stage_layers=6)


def _dsv3(zero):
    model, hardware = load_model("DeepSeek-V3"), load_hardware("H100")
    plan, workload = ParallelPlan(zero=zero, **DSV3_PP8), Workload(seq_len=4096, global_batch=64)
    return (evaluate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8),
            simulate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8, detail=False))


def test_a_mixed_kind_models_stage_blocks_are_its_own_layers_as_simulated(monkeypatch):
    # ZeRO-2: each stage's blocks from its own layers (cost.stage_layer_times), as the simulator
    # places each layer of its kind (sim.layer_program): the first stage's 3 dense + 4 MoE layers
    # forward in 80 ms (timed with the pacing middle stage's MoE layer: 98 ms, +22%), its backward
    # block with the traffic it exposes 0.303 s; a middle stage's 8 MoE layers 112 ms and 0.525 s.
    # Blocks of micro-batch 1 (micro-batch 0's forwards wait for their gathers).
    paths = []

    def keep(blocks, *args, **kw):
        paths.append(blocks)
        return critical_path_s(blocks, *args, **kw)

    critical_path_s = pipeline_dp_module.critical_path_s
    monkeypatch.setattr(pipeline_dp_module, "critical_path_s", keep)
    _, sim = _dsv3(2)
    first, middle, _ = paths[-1]  # the blocks with their traffic (the bare path's come first)

    def simulated(stage, kind):
        return next(e.end_s - e.start_s for e in sim.events
                    if e.stage == stage and e.kind == kind and e.micro_batch == 1 and e.stream == "compute")

    for blocks, stage in ((first, 0), (middle, 1)):
        assert float(blocks.forward_s[0]) == pytest.approx(simulated(stage, "forward"), rel=0.005)
        assert float(blocks.first_bwd_s[0]) == pytest.approx(simulated(stage, "backward"), rel=0.012)


def test_a_mixed_kind_models_zero3_pipeline_agrees_with_the_simulator():
    # ZeRO-3, the same plan: -0.27% with every stage's blocks the pacing stage's layer, now -0.12%.
    est, sim = _dsv3(3)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.002)


@pytest.mark.parametrize("pp", [2, 4])
def test_an_alternating_models_zero2_pipeline_agrees_with_the_simulator(pp):
    # Llama-4-Maverick (dense and MoE layers in turn: every stage the same blend) 8K on 128 H100s,
    # tp 2, ep 8, 4 and 8 micro-batches: -0.11% (pp 2), -0.37% (pp 4), unchanged.
    model, hardware = load_model("Llama-4-Maverick-17B-128E"), load_hardware("H100")
    plan = ParallelPlan(dp=64 // pp, pp=pp, tp=2, ep=8, zero=2)
    workload = Workload(seq_len=8192, global_batch=128)
    sim = simulate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8, detail=False)
    est = evaluate(model, hardware, workload, plan, num_nodes=16, gpus_per_node=8)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)


ZERO2_PIPELINES = {
    # name: (model, nodes, global batch, plan); 4K tokens on H100s.
    "DeepSeek-V3 pp8 7/8x6/6 ep8": ("DeepSeek-V3", 16, 64, dict(dp=16, pp=8, ep=8, first_stage_layers=7,
                                                                 last_stage_layers=6)),
    "Llama-3-70B tp8 pp4": ("Llama-3-70B", 8, 8, dict(dp=2, tp=8, pp=4)),
    "Llama-3-70B tp4 pp8 vpp2": ("Llama-3-70B", 16, 64, dict(dp=4, tp=4, pp=8, vpp=2)),
    "Qwen3-235B-A22B pp4 23/24/24/23 ep8": ("Qwen3-235B-A22B", 16, 128, dict(dp=32, pp=4, ep=8, first_stage_layers=23,
                                                                            last_stage_layers=23)),
}


@pytest.mark.parametrize("name", list(ZERO2_PIPELINES))
def test_zero2_pipelines_gathers_agree_with_the_simulator(name):
    # ZeRO-2's gather in each stage's first forward: a layer computes once its own calls land
    # (cost.dp_once.chunks_gather_s), each stage priced from its own layers, the first stage's
    # too. Before the MFU ceiling (both stretch to it alike), 4 micro-batches (16 at vpp 2):
    # DeepSeek-V3 -2.08% -> -0.42%, Llama-3-70B pp 4 -0.50% -> -0.01%, pp 8 vpp 2 -0.52% -> -0.28%
    # (at 8 micro-batches -0.96% -> -0.55%), Qwen3-235B -0.74% -> -0.32% (Stop 55). Stop 56: a
    # chunk's layer below its last waits longest where the last layer's calls are a bucket short,
    # and the first stage's embedding forward hides its first layer's calls (cost.dp_once): every
    # stage's exposure within 0.03 ms of the simulator's on pp 8 vpp 2, -0.30% -> -0.11% (8
    # micro-batches -0.56% -> -0.24%), Llama-3-70B pp 4 -0.05% -> -0.02%, the others unmoved.
    model_name, nodes, batch, plan = ZERO2_PIPELINES[name]
    model, hardware = load_model(model_name), load_hardware("H100")
    plan, workload = ParallelPlan(zero=2, **plan), Workload(seq_len=4096, global_batch=batch)
    est, sim, est_s, sim_s = uncapped_steps(model, hardware, workload, plan, num_nodes=nodes)
    assert est_s == pytest.approx(sim_s, rel=0.005)


@pytest.mark.parametrize("split, before", [((12, 4), 1.45), (None, -0.10), ((4, 12), -0.82)])
def test_interleaved_zero2_reduce_scatters_agree_with_the_simulator(split, before):
    # Llama-3-8B on 64 L40S, tp 4, pp 4 x vpp 2, 2K tokens, 4 micro-batches, every stage's
    # reduce-scatters on the path (dp 4 over the network): each chunk bucketed on its own
    # (cost.buckets._bucketed_chunks; the simulator had let buckets span chunks, so a stage's last
    # chunk synced 4.6 ms less than its chunk 0), each queue opening before its layer's TP
    # reduce-scatter (cost.dp_exposure._zero2_exposed_s). `before`: the analytic step's % over the
    # simulator's before Stop 55's fix.
    model, hardware = load_model("Llama-3-8B"), load_hardware("L40S")
    layers = {} if split is None else dict(first_stage_layers=split[0], last_stage_layers=split[1])
    plan = ParallelPlan(dp=4, pp=4, vpp=2, tp=4, zero=2, **layers)
    workload = Workload(seq_len=2048, global_batch=16)
    est = evaluate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8).step_time_s
    sim = simulate(model, hardware, workload, plan, num_nodes=8, gpus_per_node=8, detail=False).step_time_s
    assert est == pytest.approx(sim, rel=0.005)



@pytest.mark.parametrize("pp, vpp, tp, zero, before", [
    (8, 2, 1, 2, 3.96), (8, 2, 1, 3, 5.70), (8, 2, 2, 2, 3.68), (8, 2, 2, 3, 3.46),
    (4, 4, 1, 2, 3.18), (4, 4, 1, 3, 2.59), (4, 4, 2, 2, 2.45), (4, 4, 2, 3, 1.36)])
def test_a_mixed_kind_models_lighter_middle_stages_relay_as_the_simulator(pp, vpp, tp, zero, before):
    # Llama-4-Maverick 8K on 128 H100s, ep 8, 128 sequences: 3 layers a chunk, stage 1's chunks
    # hold two MoE layers (3-5, ...), stage 2's one (6-8, ...), in turn. The ZeRO-2/3 path priced
    # every middle stage's blocks as stage 1's (`before`: that error in %, before the MFU
    # ceiling); the simulator's path passes each at its own length (ZeRO-2, pp 8 x vpp 2: stage
    # 2's 0.26 s, stage 3's 0.40 s). The middle stages a path passes now take their mean blocks,
    # half stage 1's and half stage 2's (its own calls and chunk walks; cost.pipeline_dp._relay_blocks),
    # and the middle path rides the heaviest middle stage at its own rank, the light ones above it
    # at their own blocks (cost.stage_params.dp_ridden_middle_stage: pp 4 x vpp 4 tp 1 ZeRO-3 had
    # ridden rank 2 with stage 1's blocks, +1.39%, now +0.17%; pp 8 x vpp 2 +1.06% -> +0.11%);
    # a ZeRO-2 last chunk's queue opened by the output layer's calls idles until its first
    # layer's buckets (cost.dp_exposure; pp 8 x vpp 2 tp 1 ZeRO-2 -0.79% -> +0.38%). The fill's
    # hops the traffic's forwards expose (cost.pipeline_sends.path_sends_s, Stop 65) moved ZeRO-3
    # pp 8 +0.11 -> -0.02%, pp 4 +0.17 -> +0.04%, ZeRO-2 pp 4 -0.22 -> -0.13%, and pp 8 tp 1
    # ZeRO-2 +0.38 -> +0.41%: 2.2 ms of the 8.9 ms the simulator's sends add to its traffic's
    # path there, the rest of the gap elsewhere: within 0.45%.
    model, hardware = load_model("Llama-4-Maverick-17B-128E"), load_hardware("H100")
    plan = ParallelPlan(dp=128 // (pp * tp), pp=pp, vpp=vpp, tp=tp, ep=8, zero=zero)
    workload = Workload(seq_len=8192, global_batch=128)
    est, sim, est_s, sim_s = uncapped_steps(model, hardware, workload, plan, num_nodes=16)
    assert before > 1 and est_s == pytest.approx(sim_s, rel=0.0045)


@pytest.mark.parametrize("pp, vpp, split, before", [(16, 2, (3, 2), -29.6), (8, 3, (7, 6), -11.8)])
def test_a_dp_bound_zero3_pipelines_middle_stages_walk_their_own_layers(pp, vpp, split, before):
    # DeepSeek-V3 4K on 128 x 8 H100s, tp 2, ring 2, ep 8, 64 micro-batches, ZeRO-3: the middle
    # stages' data-parallel stream is saturated (Megatron-FSDP gathers every forward and backward,
    # reduce-scatters every backward): 55.2 s busy of the simulator's 61.5 s at pp 16 x vpp 2.
    # Interleaving deals dense layers to stage 1's chunk 0; the middle stages' walk took stage 1's
    # layers with stage 2's (all-MoE) calls, hiding each MoE gather behind a dense layer's
    # (`before`: the analytic step's % off the simulator's, before the MFU ceiling). Now each walks
    # the stage its calls are (cost.kind_passes.stage_sequences): +0.03%, +0.11%.
    est, sim, est_s, sim_s = deepseek_v3_uncapped(pp, vpp, split, zero=3)
    busy = max(s["busy_s"] for s in sim.model_dump()["streams"] if s["stream"] == "dp_comm")
    assert before < -10 and est_s == pytest.approx(sim_s, rel=0.005) and est_s > busy


def test_a_short_middle_chunk_and_the_chain_down_the_stages_agree_with_the_simulator(monkeypatch):
    # DeepSeek-V3 4K on 128 x 8 H100s, tp 2, ring 2, ep 8, 32 micro-batches, ZeRO-2, pp 8 x vpp 3
    # at 7 / 6: each middle stage's 8 layers run 3 / 3 / 2 (the layout's end chunk its last), and
    # its last chunk's backward block, 0.240 s in sim.pipeline, was priced as a full chunk's 0.348 s
    # (cost.pipeline_blocks). At each of the 3 group boundaries the last middle stage waits 0.51 s
    # for its chunk-1 backward, relayed down the lower stages (cost.pipeline_groups.descent_s), which
    # no path held: -3.27% before the MFU ceiling, then +0.77%. The drain passes the first stage's
    # and stage 1's chunk 0 (1 dense layer; 2 dense and 1 MoE), whose ZeRO-2 calls were their
    # stage's share by layer count (118 ms and 274 ms blocks, simulated 22 ms and 138 ms): each
    # chunk's own layers' buckets now (cost.bucket_counts._chunk_summary), -0.15%.
    paths = []

    def keep(blocks, *args, **kw):
        paths.append((blocks, args[3] if len(args) > 3 else kw.get("relay")))
        return critical_path_s(blocks, *args, **kw)

    critical_path_s = pipeline_dp_module.critical_path_s
    monkeypatch.setattr(pipeline_dp_module, "critical_path_s", keep)
    est, sim, est_s, sim_s = deepseek_v3_uncapped(8, 3, (7, 6), zero=2)
    (first, middle, _), relay = paths[-1]

    def simulated(stage, name):
        return next(e.end_s - e.start_s for e in sim.events if e.stage == stage and e.name == name)

    assert float(middle.last_bwd_s[0]) == pytest.approx(simulated(6, "B1 chunk 2"), rel=1e-3)
    # The first stage's last chunk (3 MoE layers) and chunk 0 (layer 0 and the embedding).
    assert float(first.last_bwd_s[0]) == pytest.approx(simulated(0, "B1 chunk 2"), rel=2e-3)
    assert float(first.first_bwd_s[0]) == pytest.approx(simulated(0, "B1"), rel=0.15)
    # The relayed middle stages' mean chunk-0 block: 1/6 of the way from stage 2..6's to stage 1's
    # (6 MoE layers of the middle stages' mean 7 2/3, cost.stage_params.dp_lightest_middle_stage),
    # stage 1's 147 ms against 138 ms simulated (its first layer's buckets the heaviest's, a MoE
    # layer's: cost.bucket_counts._summary `lightest`).
    stage1 = middle.first_bwd_s[0] + 6 * (relay.first_bwd_s[0] - middle.first_bwd_s[0])
    assert float(stage1) == pytest.approx(simulated(1, "B1"), rel=0.07)
    assert est_s == pytest.approx(sim_s, rel=0.003)


def test_the_closed_path_is_handed_over_where_alike_layers_are_walked(monkeypatch):
    # Llama-3-70B's layers are alike, but an explicit split's interleaved rows are walked
    # (cost.chunk_path); cost.step still hands the passes its closed-form path (not the walked
    # one), which is the path over the compute blocks pipeline_dp would build, bit for bit.
    walked = []

    def walk(*args, **kw):
        out = kinds_path_s(*args, **kw)
        walked.append(out)
        return out

    monkeypatch.setattr(step_layers_module, "kinds_path_s", walk)
    args, kw, c = _step_passes(monkeypatch, load_model("Llama-3-70B"), Workload(seq_len=32768, global_batch=64), 128)
    assert kw["compute_path_s"] is not None
    (path,) = walked
    pipelined = (c.pp > 1) & (c.zero >= 2)
    assert np.any(pipelined & ~np.isnan(path))  # walked ZeRO-2/3 rows among them
    for given, alone in zip(dp_over_passes(*args, **kw), dp_over_passes(*args)):
        np.testing.assert_array_equal(given, alone)
