"""The recipes a framework's TP all-gathers move in low precision (cost.tp_gathers), by hand:
torchtitan gathers per-tensor FP8 only through torchao's tensorwise float8 TP styles (0.2.x)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.gathered_transpose import gathered_transpose_s, layer_gather_bytes
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.runtime import TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.sim.simulate import analytic_step_time_s, simulate
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
H100_MEMORY_BOUND_BYTES_PER_S = 3.35e12 * 0.76  # h100-sxm.yaml: HBM x efficiency.memory_bound


@pytest.mark.parametrize("precision, gathers, elem_bytes", [
    (FP8, TORCHAO_TENSORWISE_TP_GATHERS, 1.0),  # Float8ColwiseParallel & co. gather the float8 _data
    (FP8, BF16_TP_GATHERS, 2.0),  # 0.3.x rowwise: plain TP styles, the cast after the gather
    (MXFP8, TORCHAO_TENSORWISE_TP_GATHERS, 2.0),  # the mx converter never takes the float8 styles
    (MXFP8, BF16_TP_GATHERS, 2.0),
    (FP8, TE_TP_GATHERS, 1.0),  # Transformer Engine: every gather of the layer quantized
])
def test_a_dense_layers_gathers_by_framework_at_tp_2_to_4(precision, gathers, elem_bytes):
    # Input (QKV, FC1), output gradient and saved-input gathers alike at every tp > 1; at tp 1 none.
    got = layer_gather_bytes(load_model("llama3-8b"), tp=np.array([2, 3, 4, 1]), precision=np.full(4, precision),
                             gathers=gathers)
    assert [v.tolist() for v in got] == [[elem_bytes] * 3 + [2.0]] * 3


@pytest.mark.parametrize("tp", [2, 4])
def test_torchtitan_gather_bytes_by_release(tp):
    # One gather sends (tp-1)/tp of 8192 x 4096 elements: 33,554,432 B in bf16 at tp 2, 50,331,648 at
    # tp 4. Per micro-batch the 32 layers gather 4 times each (the QKV and FC1 inputs forward, the two
    # output gradients backward: torchtitan keeps the gathered inputs, cost.saved_inputs), the
    # embedding once and the output layer once (its forward; pp 1), x 2 micro-batches. 0.2.x
    # (tensorwise): the 128 layer gathers at 1 byte, the ends' 2 in bf16; 0.3.x (rowwise): all 130 in
    # bf16, as the plan in bf16.
    model, workload = load_model("llama3-8b"), Workload(seq_len=8192, global_batch=4)
    plan = ParallelPlan(tp=tp, dp=2, zero=1, precision="fp8", fp8_recipe="tensorwise")
    one_bf16 = 8192 * 4096 * 2 * (tp - 1) // tp
    sent = {name: comm_columns(model, workload, Candidates.of_plan(plan), gpus_per_node=8,
                               tp_gathers=runtime.tp_gathers).sent_bytes.tp_all_gather[0]
            for name, runtime in (("0.2", TORCHTITAN_V02_RUNTIME), ("0.3", TORCHTITAN_RUNTIME))}
    assert sent["0.2"] == 2 * (32 * 4 * one_bf16 // 2 + 2 * one_bf16)
    assert sent["0.3"] == 2 * 130 * one_bf16
    assert {2: sent["0.2"], 4: sent["0.3"]}[tp] == {2: 4_429_185_024, 4: 13_086_228_480}[tp]


def test_only_gathered_fp8_is_transposed():
    # 0.3.x gathers bf16: no gathered FP8 tensor for Hopper's weight gradients to transpose.
    model, h100 = load_model("llama3-8b"), load_hardware("h100")
    one = dict(tokens=8192, tp=np.array([4]), precision=np.array([FP8]))
    assert gathered_transpose_s(model, h100, gathers=BF16_TP_GATHERS, **one)[0] == 0.0
    assert gathered_transpose_s(model, h100, gathers=TORCHAO_TENSORWISE_TP_GATHERS, **one)[0] == pytest.approx(
        4 * 8192 * 4096 * (2 - 1 / 4) / H100_MEMORY_BOUND_BYTES_PER_S)


def test_torchtitan_releases_step_apart_by_gathers_casts_and_transposes_in_both_models():
    # Llama-3-8B at 8K, tp 4 alone on a 4-GPU H100 node (dp 1: no data-parallel overlap hangs on the
    # backward's length), 2 micro-batches, no TP overlap, tensorwise current scaling. 0.3.x's 32 x 2 x 4
    # layer gathers (no saved input gathered again in either) take the ring time of 50.3 MB sent where
    # 0.2.x's take 25.2 MB's; 0.3.x casts the 4 gathered tensors of a layer whole after the gather,
    # 8192 x 4096 x 3/4 elements more each at 6 bytes (read 2, write FP8 data and transpose, the amax
    # pass's 2: cost.precision), while 0.2.x pays the 32 x 2 gathered transposes of those 4 tensors
    # (2 - 1/4 bytes an element) and torchao's 11 + 7 amax all-reduces a layer over the 4 GPUs (its
    # 7 weight shards, 2 gathered and 2 row-parallel inputs forward, 7 output gradients backward;
    # NCCL ring LL: 6.6 + 6 x 0.6 = 10.2 us each, cost.amax_reduce), where 0.3.x's rowwise casts
    # all-reduce 14 amax vectors a layer (float64, 7 of the 8192 tokens and 7 of h = 4096: the
    # column-parallel weights' and output gradients', the row-parallel inputs' and weights';
    # cost.axiswise_amax) at the ring all-reduce time of their size. Otherwise both cast as
    # cost.precision counts (sp-plan's 0.2.x TOML compiles torchao's Float8Linear, fusing its casts).
    # Each micro-batch's weight casts: 0.3.x's rowwise 10 bytes a GEMM weight, 0.2.x's tensorwise 5
    # at tp > 1 with nothing recomputed (the forward's FP8 shard kept for backward, cost.tp_gathers):
    # 2 x 5 bytes x 32 x 218,103,808 / 4 weights.
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=2)
    plan = ParallelPlan(tp=4, precision="fp8", fp8_recipe="tensorwise")
    one_bf16 = 8192 * 4096 * 2 * 3 / 4
    ring = lambda sent: ring_collective_time_s(hardware, "all_gather", sent, 4, 1, 4)  # noqa: E731
    gathers_s = 32 * 2 * 4 * (ring(one_bf16) - ring(one_bf16 / 2))
    casts_s = 32 * 2 * 4 * 8192 * 4096 * 3 / 4 * 6 / H100_MEMORY_BOUND_BYTES_PER_S
    transposes_s = 32 * 2 * 4 * 8192 * 4096 * (2 - 1 / 4) / H100_MEMORY_BOUND_BYTES_PER_S
    amax_s = 32 * 2 * (11 + 7) * 10.2e-6
    vector = lambda elems: ring_collective_time_s(hardware, "all_reduce", 2 * 3 / 4 * 8 * elems, 4, 1, 4)  # noqa: E731
    vectors_s = 32 * 2 * 7 * (vector(8192) + vector(4096))
    weights_s = 2 * 5 * 32 * 218_103_808 / 4 / H100_MEMORY_BOUND_BYTES_PER_S
    releases = (("0.2", TORCHTITAN_V02_RUNTIME), ("0.3", TORCHTITAN_RUNTIME))
    ana = {name: analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=4, runtime=runtime)
           for name, runtime in releases}
    sim = {name: simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=4, detail=False,
                          runtime=runtime).step_time_s
           for name, runtime in releases}
    apart_s = gathers_s + casts_s - transposes_s - amax_s + vectors_s + weights_s
    assert ana["0.3"] - ana["0.2"] == pytest.approx(apart_s, rel=1e-6)
    assert sim["0.3"] - sim["0.2"] == pytest.approx(apart_s, rel=0.05)
    # A tokens vector over the 4 GPUs in NCCL's LL protocol (cost.nccl_protocols): 6.6 + 6 x 0.6 us
    # and 98,304 B sent at Hopper's LL cap of 141 GB/s (below half the busbw): 10.9 us, where the
    # Simple ring with the measured small-message factor took 35.1 us.
    assert vector(8192) == pytest.approx(10.2e-6 + 98304 / 141e9, rel=1e-9)
    assert apart_s == pytest.approx(32.99e-3, rel=1e-3)


def test_torchtitans_linears_leave_the_routed_experts_bf16_and_cache_no_weight():
    # torchao's linears (both torchtitan runtimes): no once-a-step weight cast, and the routed
    # experts at bf16 whatever the plan's precision; Transformer Engine's: cached, in the plan's.
    from sp_planner.cost.tp_gathers import expert_precision

    precision = np.array([BF16, FP8, MXFP8])
    for runtime in (TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME):
        gathers = runtime.tp_gathers
        assert not gathers.caches_weight_casts and not gathers.low_precision_experts
        assert expert_precision(precision, gathers).tolist() == [BF16, BF16, BF16]
    assert TE_TP_GATHERS.caches_weight_casts
    assert expert_precision(precision, TE_TP_GATHERS).tolist() == [BF16, FP8, MXFP8]


def _cached(runtime, **update):
    """The runtime with its linears' behaviour replaced (cost.tp_gathers)."""
    return runtime.model_copy(update={"tp_gathers": runtime.tp_gathers.model_copy(update=update)})


def test_torchao_weight_casts_every_micro_batch_in_both_models():
    # Llama-3-8B at 8K, tp 4 alone on a 4-GPU H100 node, 2 micro-batches, tensorwise current
    # scaling: torchao casts a rank's 32 x 218,103,808 / 4 GEMM weights again in the second
    # micro-batch, at compiled torchao's bytes each (0.2.x tensorwise at tp > 1 with nothing
    # recomputed: forward amax 2, cast 2 + 1, the FP8 shard kept for backward: 5; 0.3.x rowwise:
    # backward amax pass 2 and cast 2 + 1 again: 10; cost.tp_gathers), where a cache (TE's
    # is_first_microbatch) would cast them once a step.
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=2)
    plan = ParallelPlan(tp=4, precision="fp8", fp8_recipe="tensorwise")
    for runtime, per_param in ((TORCHTITAN_V02_RUNTIME, 5), (TORCHTITAN_RUNTIME, 10)):
        recast_s = 32 * 218_103_808 / 4 * per_param / H100_MEMORY_BOUND_BYTES_PER_S
        cached = _cached(runtime, caches_weight_casts=True)
        ana = [analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=4, runtime=r)
               for r in (runtime, cached)]
        sim = [simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=4, detail=False,
                        runtime=r).step_time_s for r in (runtime, cached)]
        assert ana[0] - ana[1] == pytest.approx(recast_s, rel=1e-6)
        assert sim[0] - sim[1] == pytest.approx(recast_s, rel=0.05)


def test_bf16_routed_experts_move_both_models_alike():
    # Qwen3-30B-A3B on 8 H100s (dp 8, ep 8, ZeRO-3, full recompute, 2 micro-batches), per-tensor FP8:
    # torchtitan's routed experts at bf16 (cost.gemm_work, cost.moe, cost.fp8_params; each by hand
    # in their own tests) move the step alike in the analytic model and the simulator. Here they
    # speed it: at bf16's rate and shape ratios their per-expert GEMMs (5120 rows, FC2 over K 768)
    # take about what FP8's took under FP8's steeper ratios (1.233 ms a layer's GEMMs against
    # 1.219, cost.gemm_work), and their inputs and gradients are not cast.
    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=16)
    plan = ParallelPlan(dp=8, ep=8, zero=3, precision="fp8", fp8_recipe="tensorwise", recompute="full")
    runtimes = (TORCHTITAN_V02_RUNTIME, _cached(TORCHTITAN_V02_RUNTIME, low_precision_experts=True))
    ana = [analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8, runtime=r) for r in runtimes]
    sim = [simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False,
                    runtime=r).step_time_s for r in runtimes]
    assert ana[0] - ana[1] < 0
    assert sim[0] - sim[1] == pytest.approx(ana[0] - ana[1], rel=0.05)
