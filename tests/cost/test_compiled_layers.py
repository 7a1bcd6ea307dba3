"""The activations a torch.compile'd torchtitan layer does not keep (cost.compiled_layers), by hand
on Llama-3-8B (h 4096, q 4096, ffn 14336, 32 layers), 8192 tokens a micro-batch, nothing recomputed:
the QKV and FC1 inputs (tp 1) and FC2's input go, the out-projection's low-precision input joins
the attention's bf16 output; in the memory model the search and the simulator's rerank read."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import saved_activation_bytes_per_layer
from sp_planner.cost.compiled_layers import TORCHTITAN_V02_COMPILED, TORCHTITAN_V03_COMPILED, compiles
from sp_planner.cost.runtime import TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.flags import torchtitan_v02
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.search import evaluate
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
MODEL, H100 = load_model("llama3-8b"), load_hardware("h100")
WORKLOAD = Workload(seq_len=8192, global_batch=2)


def test_which_plans_compile():
    # 0.2.x TOML: float8 always, MXFP8 without TP only; 0.3.0's configs: both low precisions; bf16 never.
    precision, tp = np.array([BF16, FP8, MXFP8, BF16, FP8, MXFP8]), np.array([1, 1, 1, 4, 4, 4])
    assert compiles(TORCHTITAN_V02_COMPILED, precision, tp).tolist() == [False, True, True, False, True, False]
    assert compiles(TORCHTITAN_V03_COMPILED, precision, tp).tolist() == [False, True, True, False, True, True]
    # The flags ask the same predicate.
    assert [torchtitan_v02.compiles(p, t) for p, t in [("fp8", 4), ("mxfp8", 1), ("mxfp8", 2), ("bf16", 1)]] == [
        True, True, False, False]


def _delta(runtime, tp, precision, recompute="none"):
    c = Candidates.of_plan(ParallelPlan(tp=tp, precision=precision, recompute=recompute,
                                        fp8_recipe="tensorwise" if precision == "fp8" else "delayed"))
    run = dict(sequence_parallel=runtime.sequence_parallel, gathers=runtime.tp_gathers)
    compiled, _ = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, c, **run, compiled=runtime.compiled_layers)
    eager, _ = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, c, **run)
    return float(compiled[0] - eager[0])


@pytest.mark.parametrize("runtime, tp, precision, delta", [
    # tp 1: the inputs are saved bf16 (cost.saved_inputs): 2 B x 8192 x (4096 + 4096 + 14336) go,
    # the out-projection's FP8 cast comes, 1 B x 8192 x 4096: -369,098,752 + 33,554,432.
    (TORCHTITAN_V02_RUNTIME, 1, "fp8", -335_544_320),
    (TORCHTITAN_RUNTIME, 1, "fp8", -335_544_320),
    # MXFP8's cast carries an E8M0 byte per 32: 8192 x 4096 x 33/32 = 34,603,008.
    (TORCHTITAN_V02_RUNTIME, 1, "mxfp8", -369_098_752 + 34_603_008),
    # tp 2, 0.2.x: the inputs are FP8 (float8 TP styles); the gathered QKV and FC1 inputs stay, FC2's
    # goes, 1 B x 8192 x 7168; the projection's cast was counted already; the forward's FP8 weight
    # shards are kept, 1 B x 218,103,808 / 2 (cost.tp_gathers).
    (TORCHTITAN_V02_RUNTIME, 2, "fp8", -58_720_256 + 109_051_904),
    # tp 2, 0.3.0 (bf16 inputs): FC2's, 2 B x 8192 x 7168, less the cast, 1 B x 8192 x 2048.
    (TORCHTITAN_RUNTIME, 2, "fp8", -117_440_512 + 16_777_216),
    # Eager: 0.2.x's MXFP8 with TP, every bf16 plan.
    (TORCHTITAN_V02_RUNTIME, 2, "mxfp8", 0.0),
    (TORCHTITAN_RUNTIME, 1, "bf16", 0.0),
])
def test_compiled_layer_saves_by_hand(runtime, tp, precision, delta):
    assert _delta(runtime, tp, precision) == delta


@pytest.mark.parametrize("recompute", ["selective", "full"])
@pytest.mark.parametrize("tp", [1, 2])
def test_recomputed_layers_keep_the_eager_count(recompute, tp):
    # Their weights' FP8 casts too: the checkpointed block casts the saved bf16 weight again (traced).
    assert _delta(TORCHTITAN_V02_RUNTIME, tp, "fp8", recompute) == 0.0


@pytest.mark.parametrize("model, tp, ep, per_layer", [
    # Llama-3-8B: 218,103,808 GEMM weights a layer over tp 4.
    ("llama3-8b", 4, 1, 54_525_952),
    # Qwen3-30B-A3B, no shared expert: the attention's 18,874,368 over tp 2 and the router's 262,144
    # (an nn.Linear, replicated); its bf16 routed experts keep nothing.
    ("Qwen3-30B-A3B", 2, 8, 9_437_184 + 262_144),
    # Llama-4-Scout (h 5120, 40 heads and 8 KV heads of 128, one shared expert of 8192, 16 routed):
    # attention 2 x 5120 x (5120 + 1024) = 62,914,560, shared expert 3 x 5120 x 8192 = 125,829,120,
    # both over tp 2, and the router 5120 x 16 = 81,920.
    ("Llama-4-Scout-17B-16E", 2, 8, (62_914_560 + 125_829_120) // 2 + 81_920),
])
def test_tp_sharded_fp8_weights_are_kept_a_byte_each(model, tp, ep, per_layer):
    from sp_planner.cost.compiled_layers import kept_fp8_weight_bytes

    spec = load_model(model)
    kept = dict(tp=np.array([tp, tp, 1, tp, tp]), ep=ep, etp=1, precision=np.array([FP8, FP8, FP8, MXFP8, FP8]),
                recompute=np.array([0, 2, 0, 0, 0]), fp8_blockwise=np.array([False, False, False, False, True]))
    got = kept_fp8_weight_bytes(spec, TORCHTITAN_V02_COMPILED, TORCHTITAN_V02_RUNTIME.tp_gathers, **kept)
    # Kept at tp > 1 with nothing recomputed in tensorwise FP8 alone; none under 0.3.x's rowwise.
    assert got.tolist() == [per_layer, 0, 0, 0, 0]
    assert kept_fp8_weight_bytes(spec, TORCHTITAN_V03_COMPILED, TORCHTITAN_RUNTIME.tp_gathers,
                                 **kept).tolist() == [0] * 5


def test_memory_model_follows_the_runtime():
    # 32 layers, one micro-batch in flight (pp 1): 32 x 335,544,320 B = 10 GiB less at tp 1.
    plan = ParallelPlan(tp=1, precision="fp8", fp8_recipe="tensorwise")
    eager = TORCHTITAN_V02_RUNTIME.model_copy(update={"compiled_layers": TORCHTITAN_V02_RUNTIME.compiled_layers.
                                                      model_copy(update={"precisions": frozenset()})})
    act = [evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=1, runtime=r).memory.activations_bytes
           for r in (TORCHTITAN_V02_RUNTIME, eager)]
    assert act[1] - act[0] == 32 * 335_544_320 == 10 * 2**30


def test_kept_fp8_weights_ride_with_every_micro_batch_in_flight():
    # tp 2, pp 2 (16 layers a stage), 1F1B with 4 micro-batches: the first stage holds 2 in flight,
    # each with its 16 layers' FP8 weight shards, 16 x 109,051,904 B; against the same runtime whose
    # linears keep none, 2 x 16 x 109,051,904 = 3,489,660,928 B more at its peak (a 1024-token
    # vocabulary keeps the last stage's logits from being the peak).
    model = MODEL.model_copy(update={"vocab_size": 1024})
    plan = ParallelPlan(tp=2, pp=2, precision="fp8", fp8_recipe="tensorwise")
    workload = Workload(seq_len=8192, global_batch=4)
    gathers = TORCHTITAN_V02_RUNTIME.tp_gathers.model_copy(update={"fp8_weight_cast_bytes_kept": None})
    keeps_none = TORCHTITAN_V02_RUNTIME.model_copy(update={"tp_gathers": gathers})
    act = [evaluate(model, H100, workload, plan, num_nodes=1, gpus_per_node=4, runtime=r).memory.activations_bytes
           for r in (TORCHTITAN_V02_RUNTIME, keeps_none)]
    assert act[0] - act[1] == 2 * 16 * 109_051_904
