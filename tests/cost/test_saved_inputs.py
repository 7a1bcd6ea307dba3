"""What the linears save for their weight gradients (cost.saved_inputs) by hand: Megatron / Transformer
Engine save the sequence shards and gather them again in backward; torchtitan keeps the gathered
inputs (whole on every TP rank) and gathers none again, in the memory model, the analytic step and
the simulator alike."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import saved_activation_bytes_per_layer
from sp_planner.cost.compiled_layers import EAGER_LAYERS
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.runtime import TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.cost.saved_inputs import kept_gathered_input_bytes, kept_output_input_bytes, saved_input_precision
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim.simulate import simulate
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
MODEL, H100 = load_model("llama3-8b"), load_hardware("h100")  # h 4096, q 4096, ffn 14336, 32 layers
WORKLOAD = Workload(seq_len=8192, global_batch=2)
# torchtitan's runtime with Megatron's saved inputs: the one field apart.
SAVES_SHARDS = TORCHTITAN_RUNTIME.model_copy(update={"tp_gathers": TE_TP_GATHERS})


def test_saved_precision_by_framework():
    # Transformer Engine saves every GEMM input quantized; torchao's linears save what they
    # receive: FP8 only where the tensorwise float8 TP styles cast it before them (tp > 1).
    tp = np.array([4, 1, 4, 4])
    precision = np.array([FP8, FP8, MXFP8, BF16])
    assert saved_input_precision(precision, tp=tp, gathers=TE_TP_GATHERS).tolist() == [FP8, FP8, MXFP8, BF16]
    assert saved_input_precision(precision, tp=tp, gathers=TORCHAO_TENSORWISE_TP_GATHERS).tolist() == [
        FP8, BF16, BF16, BF16]
    assert saved_input_precision(precision, tp=tp, gathers=BF16_TP_GATHERS).tolist() == [BF16] * 4


@pytest.mark.parametrize("tp, kept_bytes", [(2, 67_108_864), (3, 89_478_485.33), (4, 100_663_296)])
def test_kept_gathered_inputs_by_hand(tp, kept_bytes):
    # 2 inputs (QKV, FC1) x 8192 tokens x 4096 x (1 - 1/tp) elements beyond the shards, 2 B in bf16,
    # 1 B where 0.2.x gathered float8; none where the shards are gathered again or the inputs are
    # whole (no sequence parallelism).
    one = dict(tokens=8192, tp=np.array([tp]))
    assert kept_gathered_input_bytes(MODEL, **one, precision=np.array([BF16]), gathers=BF16_TP_GATHERS)[0] == \
        pytest.approx(2 * 2 * 8192 * 4096 * (1 - 1 / tp))
    assert kept_gathered_input_bytes(MODEL, **one, precision=np.array([BF16]), gathers=BF16_TP_GATHERS)[0] == \
        pytest.approx(kept_bytes)
    assert kept_gathered_input_bytes(MODEL, **one, precision=np.array([FP8]),
                                     gathers=TORCHAO_TENSORWISE_TP_GATHERS)[0] == pytest.approx(kept_bytes / 2)
    assert kept_gathered_input_bytes(MODEL, **one, precision=np.array([FP8]), gathers=TE_TP_GATHERS)[0] == 0.0
    assert kept_gathered_input_bytes(MODEL, **one, precision=np.array([BF16]), gathers=BF16_TP_GATHERS,
                                     sequence_parallel=False)[0] == 0.0


@pytest.mark.parametrize("tp, kept_bytes", [(1, 0.0), (2, 67_108_864), (4, 100_663_296)])
def test_kept_output_layer_input_by_hand(tp, kept_bytes):
    # The output layer's input beyond its shard: 16384 tokens (2 x 8192) x 4096 x (1 - 1/tp) x 2 B
    # bf16 (never float8: the output layer is filtered from the converter); none for Megatron,
    # which gathers its shard again, or without sequence parallelism.
    one = dict(tokens=16384, tp=np.array([tp]))
    assert kept_output_input_bytes(MODEL, **one, gathers=BF16_TP_GATHERS)[0] == pytest.approx(kept_bytes)
    assert kept_output_input_bytes(MODEL, **one, gathers=TORCHAO_TENSORWISE_TP_GATHERS)[0] == pytest.approx(kept_bytes)
    assert kept_output_input_bytes(MODEL, **one, gathers=TE_TP_GATHERS)[0] == 0.0
    assert kept_output_input_bytes(MODEL, **one, gathers=BF16_TP_GATHERS, sequence_parallel=False)[0] == 0.0


def _activations(runtime, tp, precision="bf16", recompute="none"):
    plan = ParallelPlan(tp=tp, precision=precision, fp8_recipe="tensorwise" if precision == "fp8" else "delayed",
                        recompute=recompute)
    return evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=tp,
                    runtime=runtime).memory.activations_bytes


@pytest.mark.parametrize("tp", [2, 4])
def test_torchtitan_holds_the_gathered_inputs_in_bf16(tp):
    # 32 layers x 2 x 2 B x 8192 x 4096 x (1 - 1/tp), one micro-batch in flight (pp 1): 2 GiB at
    # tp 2, 3 GiB at tp 4; and at the loss (the peak here) the output layer's input, 1 more: 32 MiB
    # at tp 2, 48 MiB at tp 4.
    delta = _activations(TORCHTITAN_RUNTIME, tp) - _activations(SAVES_SHARDS, tp)
    assert delta == (32 * 2 + 1) * 2 * 8192 * 4096 * (tp - 1) // tp
    assert delta == {2: 2 * 2**30 + 32 * 2**20, 4: 3 * 2**30 + 48 * 2**20}[tp]


def test_torchtitan_fp8_saves_what_its_linears_received():
    # tp 4, tensorwise current scaling. Transformer Engine saves the four GEMM inputs in FP8, 1 B less
    # an element on 8192/4 tokens x (4096 + 4096 + 4096 + 14336): 54,525,952 B a layer, and keeps the
    # attention's bf16 output beside the projection's FP8 cast: 2 x 8192 x 4096/4 = 16,777,216 B.
    # 0.3.x (rowwise: bf16 gathers) saves bf16 inputs, one attention output, and the gathered QKV and
    # FC1 inputs whole: 2 x 2 x 8192 x 4096 x 3/4 = 100,663,296 B more. 0.2.x's float8 TP styles save
    # FP8 as TE does, the gathered inputs whole at 1 B: 50,331,648 B more. Both keep the output
    # layer's input gathered in bf16 (it is not float8): 2 x 8192 x 4096 x 3/4 = 50,331,648 B.
    # Eager layers (the compiled ones' savings: test_compiled_layers).
    eager = {"compiled_layers": EAGER_LAYERS}
    te = _activations(SAVES_SHARDS.model_copy(update=eager), 4, "fp8")
    out = 50_331_648
    assert _activations(TORCHTITAN_RUNTIME.model_copy(update=eager), 4, "fp8") - te == \
        32 * (54_525_952 - 16_777_216 + 100_663_296) + out
    assert _activations(TORCHTITAN_V02_RUNTIME.model_copy(update=eager), 4, "fp8") - te == 32 * 50_331_648 + out


def test_torchtitan_fp8_at_tp_1_saves_bf16_inputs():
    # No TP style casts before the linears: Float8Linear saves its bf16 input (0.2.x and 0.3.x), 1 B
    # more an element on 8192 x 26624 than TE's FP8 (218,103,808 B a layer), less TE's second
    # attention output (2 x 8192 x 4096 = 67,108,864 B).
    saved, _ = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, Candidates.of_plan(
        ParallelPlan(tp=1, precision="fp8", fp8_recipe="tensorwise")), gathers=TORCHAO_TENSORWISE_TP_GATHERS)
    te, _ = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, Candidates.of_plan(
        ParallelPlan(tp=1, precision="fp8", fp8_recipe="tensorwise")), gathers=TE_TP_GATHERS)
    assert saved[0] - te[0] == 218_103_808 - 67_108_864


def test_full_recompute_keeps_the_layer_input_and_rebuilds_one_layer_whole():
    # Full recompute keeps each layer's (sharded) input alike; the layer it rebuilds holds the
    # gathered inputs: 2 x 2 x 8192 x 4096 x 3/4 B more at tp 4.
    c = Candidates.of_plan(ParallelPlan(tp=4, recompute="full"))
    kept, kept_layer = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, c, gathers=BF16_TP_GATHERS)
    shards, shards_layer = saved_activation_bytes_per_layer(MODEL, H100, WORKLOAD, c, gathers=TE_TP_GATHERS)
    assert kept[0] == shards[0]
    assert kept_layer[0] - shards_layer[0] == 100_663_296


@pytest.mark.parametrize("tp", [2, 4])
def test_no_saved_input_is_gathered_again(tp):
    # tp alone on a tp-GPU H100 node, 2 micro-batches of 8192 tokens, no TP overlap: each
    # micro-batch Megatron's saved-input gathers, 2 a layer and the output layer's 1, are exposed,
    # each sending (tp-1)/tp of 8192 x 4096 bf16 elements; torchtitan makes none: 2 x (32 x 2 + 1)
    # gathers' ring time less TP communication.
    plan = ParallelPlan(tp=tp)
    one_bf16 = 8192 * 4096 * 2 * (tp - 1) / tp
    saved_s = 2 * (32 * 2 + 1) * ring_collective_time_s(H100, "all_gather", one_bf16, tp, 1, tp)
    tp_comm = {name: evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=tp,
                              runtime=runtime).time.tp_comm_s
               for name, runtime in (("shards", SAVES_SHARDS), ("kept", TORCHTITAN_RUNTIME))}
    assert tp_comm["shards"] - tp_comm["kept"] == pytest.approx(saved_s, rel=1e-6)
    assert saved_s == pytest.approx({2: 15.75e-3, 4: 23.09e-3}[tp], rel=1e-3)


def test_the_step_and_the_simulator_agree_on_the_gathers_not_made():
    # The tp 4 run above (dp 1: nothing hides behind the backward; below the MFU ceiling, which
    # floors the tp 2 run's step): the step shortens by those 130 gathers, analytic and simulated.
    plan = ParallelPlan(tp=4)
    saved_s = 2 * (32 * 2 + 1) * ring_collective_time_s(H100, "all_gather", 8192 * 4096 * 2 * 3 / 4, 4, 1, 4)
    runs = (("shards", SAVES_SHARDS), ("kept", TORCHTITAN_RUNTIME))
    ana = {name: evaluate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=4, runtime=runtime)
           for name, runtime in runs}
    sim = {name: simulate(MODEL, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=4, detail=False,
                          runtime=runtime).step_time_s for name, runtime in runs}
    assert ana["shards"].time.mfu_ceiling_s == ana["kept"].time.mfu_ceiling_s == 0.0
    assert ana["shards"].step_time_s - ana["kept"].step_time_s == pytest.approx(saved_s, rel=1e-6)
    assert sim["shards"] - sim["kept"] == pytest.approx(saved_s, rel=0.05)


def test_torchtitan_keeps_the_moe_layers_inputs_bf16():
    # Qwen3-30B-A3B (h 2048, every layer MoE, top 8 experts of 768, no shared expert) at tp 2,
    # tensorwise float8 (0.2.x): the routed experts run bf16 (cost.tp_gathers), and the MoE block's
    # input is gathered by the plain PrepareModuleInputOutput, so both stay bf16, 1 B more an
    # element than FP8's. The kept gathered MoE input: 8192 x 2048 x 1/2 = 8,388,608 elements; the
    # routed experts' inputs, 8 x (2048 + 768) = 22,528 a token on 8192 / 2 tokens: 92,274,688.
    qwen = load_model("Qwen3-30B-A3B")
    torchao = TORCHAO_TENSORWISE_TP_GATHERS
    fp8_experts = torchao.model_copy(update={"low_precision_experts": True})
    one = dict(tokens=8192, tp=np.array([2]), precision=np.array([FP8]))
    assert kept_gathered_input_bytes(qwen, **one, gathers=torchao)[0] == 8_388_608 * (1 + 2)
    assert kept_gathered_input_bytes(qwen, **one, gathers=fp8_experts)[0] == 8_388_608 * 2
    plan = Candidates.of_plan(ParallelPlan(tp=2, precision="fp8", fp8_recipe="tensorwise"))
    saved = [saved_activation_bytes_per_layer(qwen, H100, WORKLOAD, plan, gathers=g)[0][0]
             for g in (torchao, fp8_experts)]
    assert saved[0] - saved[1] == 8_388_608 + 92_274_688
    # At tp 1 every input is saved bf16 already (no float8 TP style): nothing moves.
    plan = Candidates.of_plan(ParallelPlan(tp=1, precision="fp8", fp8_recipe="tensorwise"))
    saved = [saved_activation_bytes_per_layer(qwen, H100, WORKLOAD, plan, gathers=g)[0][0]
             for g in (torchao, fp8_experts)]
    assert saved[0] == saved[1]
