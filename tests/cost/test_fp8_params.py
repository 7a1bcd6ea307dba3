"""FP8 primary weights (Megatron --fp8-param-gather, cost.fp8_params): bytes derived by hand for
Llama-3-8B (h 4096, 32 layers, 8 KV heads of 128, SwiGLU ffn 14336, vocab 128256, untied)."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.dp_times import dp_stage_times
from sp_planner.cost.fp8_params import (
    dense_gemm_params,
    fp8_params_active,
    fp8_weights_modelled,
    gather_bytes_per_gemm_param,
    gathered_bytes,
    sharded_fp8_params,
    torch_fsdp2_cast_bytes_per_param,
    torch_fsdp2_casts,
    weight_cast_bytes_per_param,
    weight_cast_s,
)
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.links import ring_alpha_beta_s, ring_latency_s
from sp_planner.cost.memory import memory_columns
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import DEEPSPEED_STATES, MEGATRON_STATES, MINDSPEED_STATES, TORCH_FSDP_STATES
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

MODEL = load_model("llama3-8b")
WORKLOAD = Workload(seq_len=8192, global_batch=64)
BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
# One layer's GEMM weights at tp 1: Q and O 2 x 4096 x 4096 = 33,554,432; K and V 2 x 4096 x 1024
# = 8,388,608; gate, up and down 3 x 4096 x 14336 = 176,160,768 -> 218,103,808; x 32 layers.
GEMM_PARAMS = 32 * 218_103_808  # 6,979,321,856
# The rest on a single stage: embedding and output 2 x 128256 x 4096 = 1,050,673,152, 65 RMSNorms
# of 4096 = 266,240 (two a layer and the final one): 8,030,261,248 parameters in all.
ALL_PARAMS = GEMM_PARAMS + 1_050_673_152 + 65 * 4096


def test_active_with_the_distributed_optimizer_and_megatron_fsdp_shards():
    # ZeRO-1 (the distributed optimizer): FP8 and MXFP8; ZeRO-3 (Megatron-FSDP's sharded
    # parameters): per-tensor FP8 only; ZeRO-0 and ZeRO-2 (parameters not sharded): none; ZeRO-3
    # keeping the parameters (torch FSDP2, which turns --fp8-param-gather off): none.
    precision = np.array([BF16, FP8, MXFP8, FP8, FP8, FP8, MXFP8, BF16, FP8])
    zero = np.array([1, 1, 1, 0, 2, 3, 3, 3, 3])
    reshard = np.array([True] * 8 + [False])
    assert fp8_weights_modelled(precision, zero, reshard).tolist() == [
        False, True, True, False, False, True, False, False, False]
    assert fp8_params_active(MEGATRON_STATES, precision, zero, reshard).tolist() == [
        False, True, True, False, False, True, False, False, False]
    assert sharded_fp8_params(MEGATRON_STATES, precision, zero, reshard).tolist() == [
        False, False, False, False, False, True, False, False, False]
    assert not fp8_params_active(MINDSPEED_STATES, precision, zero, reshard).any()
    assert not fp8_params_active(DEEPSPEED_STATES, precision, zero, reshard).any()
    # TE's linears under torch FSDP2: Megatron's (and MindSpeed's, its DDP) ZeRO-3 keeping the
    # parameters in a low precision; not DeepSpeed's ZeRO-3 nor torchtitan's (torchao's linears).
    assert torch_fsdp2_casts(MEGATRON_STATES, precision, zero, reshard).tolist() == [False] * 8 + [True]
    assert torch_fsdp2_casts(MEGATRON_STATES, np.array([MXFP8, BF16]), 3, False).tolist() == [True, False]
    assert not torch_fsdp2_casts(DEEPSPEED_STATES, precision, zero, reshard).any()
    assert not torch_fsdp2_casts(TORCH_FSDP_STATES, precision, zero, reshard).any()


def test_gathered_width():
    # per-tensor FP8 weights in their uint8 buffer; MXFP8 weights in bf16 through the gradient buffer
    precision = np.array([BF16, FP8, MXFP8, FP8])
    zero = np.array([1, 1, 1, 0])
    assert gather_bytes_per_gemm_param(MEGATRON_STATES, precision, zero, True).tolist() == [2, 1, 2, 2]
    assert gather_bytes_per_gemm_param(MINDSPEED_STATES, precision, zero, True).tolist() == [2, 2, 2, 2]
    # 1,000 parameters, 900 of them GEMM weights: 100 x 2 + 900 x 1.
    assert gathered_bytes(MEGATRON_STATES, FP8, 1, True, 1000, 900) == 1100
    # ZeRO-3: Megatron-FSDP (reshard) gathers FP8, torch FSDP2 (no reshard) bf16: 1,000 x 2.
    assert gathered_bytes(MEGATRON_STATES, FP8, 3, True, 1000, 900) == 1100
    assert gathered_bytes(MEGATRON_STATES, FP8, 3, False, 1000, 900) == 2000


def test_dense_gemm_params_of_llama3_8b():
    assert dense_gemm_params(MODEL, 1, 1, 1, 32) == GEMM_PARAMS
    assert MODEL.num_params == ALL_PARAMS


def test_weight_cast_bytes():
    precision = np.array([BF16, FP8, FP8, MXFP8])
    zero = np.array([1, 1, 0, 1])
    # Hopper: FP8 weights rebuild their transpose (read 1, write 1); without them a cast-transpose
    # (read 2, write 1 + 1); MXFP8 weights quantize the gathered bf16 (read 2, write 2 + 2/32).
    assert weight_cast_bytes_per_param(MEGATRON_STATES, precision, zero, True, False).tolist() == [0, 2, 4, 4.0625]
    # Blackwell keeps no FP8 transpose: per-tensor FP8 weights need nothing after the gather, bf16
    # weights a cast without the transpose (read 2, write 1).
    assert weight_cast_bytes_per_param(MEGATRON_STATES, precision, zero, True, True).tolist() == [0, 0, 3, 4.0625]
    # Current scaling: the bf16 weights' cast reads them once more for the amax (2 B); FP8 primary
    # weights are cast in the optimizer, as with delayed scaling.
    assert weight_cast_bytes_per_param(MEGATRON_STATES, precision, zero, True, False, True).tolist() == [
        0, 2, 6, 4.0625]


def _memory(hardware, precision, states, zero=1):
    c = Candidates.of_plan(ParallelPlan(dp=8, zero=zero, precision=precision))
    return memory_columns(MODEL, load_hardware(hardware), WORKLOAD, c, states=states, domain_gpus=8)


@pytest.mark.parametrize("hardware, precision, fp8_bytes", [
    ("h100", "fp8", 2.0),  # data + transpose
    ("b200", "fp8", 1.0),  # data only (any-layout FP8 GEMMs)
    ("b200", "mxfp8", 2 * (1 + 1 / 32)),  # row- and column-wise data, one E8M0 scale per 32 each
])
def test_fp8_weights_replace_the_bf16_ones(hardware, precision, fp8_bytes):
    with_flag = _memory(hardware, precision, MEGATRON_STATES).params_bytes[0]
    without = _memory(hardware, precision, MINDSPEED_STATES).params_bytes[0]
    bf16 = _memory(hardware, "bf16", MEGATRON_STATES).params_bytes[0]
    # Without the flag: bf16 weights (2 B, ZeRO-1 keeps them whole) + TE's FP8 weight copies +
    # 144 B of scaling state a layer; with it the bf16 GEMM weights are gone.
    assert without - bf16 == pytest.approx(fp8_bytes * GEMM_PARAMS + 144 * 32, rel=1e-12)
    assert without - with_flag == pytest.approx(2 * GEMM_PARAMS, rel=1e-12)
    # The optimizer's fp32 main parameters and moments, and the gradients, are unchanged.
    for name in ("grads_bytes", "optimizer_bytes"):
        assert getattr(_memory(hardware, precision, MEGATRON_STATES), name)[0] == pytest.approx(
            getattr(_memory(hardware, precision, MINDSPEED_STATES), name)[0])


def test_other_zero_stages_keep_bf16_weights():
    for zero in (0, 2):
        assert _memory("h100", "fp8", MEGATRON_STATES, zero).params_bytes[0] == pytest.approx(
            _memory("h100", "fp8", MINDSPEED_STATES, zero).params_bytes[0])


@pytest.mark.parametrize("hardware, gathered_fp8", [("h100", 2.0), ("b200", 1.0)])
def test_megatron_fsdp_keeps_fp8_shards_and_no_whole_copy(hardware, gathered_fp8):
    # ZeRO-3 over 8 ranks. Without --fp8-param-gather (MindSpeed's states): the bf16 shard, 2 B /
    # 8 a parameter, and TE's FP8 copies of every layer's GEMM weights, whole (2 B on Hopper: data
    # and transpose; 1 B on Blackwell). With it (Megatron-FSDP's FP8 parameters): the GEMM
    # weights' shard at 1 B / 8 and no whole copy; the 144 B of scaling state a layer stay.
    with_flag = _memory(hardware, "fp8", MEGATRON_STATES, 3)
    without = _memory(hardware, "fp8", MINDSPEED_STATES, 3)
    whole_copies = gathered_fp8 * GEMM_PARAMS
    shard_saving = (2 - 1) * GEMM_PARAMS / 8
    assert without.params_bytes[0] - with_flag.params_bytes[0] == pytest.approx(whole_copies + shard_saving,
                                                                                rel=1e-12)
    # The two gathered layers (ZeRO-3's prefetch) hold FP8 bytes, with the transpose on Hopper
    # (built for the backward): Hopper's 2 B match bf16's, Blackwell saves 1 B a GEMM weight of
    # the two largest layers (Llama-3-8B's layers are alike: 2 x 218,103,808 + their 4 norms).
    pair = 2 * (218_103_808 + 2 * 4096)
    buffers = without.comm_buffers_bytes[0] - with_flag.comm_buffers_bytes[0]
    assert buffers == pytest.approx((2 - gathered_fp8) * pair, rel=1e-12)
    for name in ("grads_bytes", "optimizer_bytes"):
        assert getattr(with_flag, name)[0] == pytest.approx(getattr(without, name)[0])


def test_megatron_fsdp_gathers_fp8_weights_in_fp8_every_micro_batch():
    # ZeRO-3 over 8 ranks, 8 micro-batches, reshard after forward: 16 gathers of the stage a step,
    # 7/8 of each sent; FP8 GEMM weights at 1 B, the embedding, output layer and norms at 2 B.
    c = Candidates.of_plan(ParallelPlan(dp=8, zero=3, precision="fp8"))
    fp8 = comm_columns(MODEL, WORKLOAD, c, gpus_per_node=8, states=MEGATRON_STATES).sent_bytes
    bf16 = comm_columns(MODEL, WORKLOAD, c, gpus_per_node=8, states=MINDSPEED_STATES).sent_bytes
    assert bf16.dp_all_gather[0] == 16 * (2 * ALL_PARAMS * 7 // 8)
    assert fp8.dp_all_gather[0] == 16 * ((2 * ALL_PARAMS - GEMM_PARAMS) * 7 // 8)


def test_distributed_optimizer_gathers_fp8_weights_in_fp8():
    c = Candidates.of_plan(ParallelPlan(dp=8, zero=1, precision="fp8"))
    fp8 = comm_columns(MODEL, WORKLOAD, c, gpus_per_node=8, states=MEGATRON_STATES).sent_bytes
    bf16 = comm_columns(MODEL, WORKLOAD, c, gpus_per_node=8, states=MINDSPEED_STATES).sent_bytes
    # 7/8 of the gathered buffer: bf16 2 x 8,030,261,248; FP8 weights 1 B each instead.
    assert bf16.dp_all_gather[0] == 2 * ALL_PARAMS * 7 // 8
    assert fp8.dp_all_gather[0] == (2 * ALL_PARAMS - GEMM_PARAMS) * 7 // 8
    assert fp8.dp_reduce_scatter[0] == bf16.dp_reduce_scatter[0]  # fp32 gradients unchanged
    mx = Candidates.of_plan(ParallelPlan(dp=8, zero=1, precision="mxfp8"))
    assert comm_columns(MODEL, WORKLOAD, mx, gpus_per_node=8).sent_bytes.dp_all_gather[0] == bf16.dp_all_gather[0]


def test_gather_time_saves_the_bandwidth_of_a_byte_per_gemm_weight():
    # L40S: no collective curve by message size (cost.collective_sizes), so a call's time is
    # linear in its bytes and the saving is exactly the bytes' share.
    l40s = load_hardware("l40s")
    c = Candidates.of_plan(ParallelPlan(dp=8, zero=1, precision="fp8"))
    stages = candidate_stage_layers(MODEL, c)
    fp8, = dp_stage_times(MODEL, l40s, c, stages=stages, gpus_per_node=8, seq_len=4096, states=MEGATRON_STATES)
    bf16, = dp_stage_times(MODEL, l40s, c, stages=stages, gpus_per_node=8, seq_len=4096, states=MINDSPEED_STATES)
    # Same calls, same latencies: only the bytes differ, 7/8 of GEMM_PARAMS x 1 B (dp 8 in a node),
    # at the Simple protocol's busbw (the calls' megabytes run Simple, cost.nccl_protocols).
    per_byte = (ring_alpha_beta_s(l40s, "all_gather", 1.0, 8, 1, 8)
                - ring_latency_s(l40s, "all_gather", 8, 1, 8))
    saved = bf16.param_all_gather_s[0] - fp8.param_all_gather_s[0]
    assert saved == pytest.approx(GEMM_PARAMS * 7 / 8 * float(per_byte), rel=1e-9)
    assert fp8.grad_reduce_scatter_s[0] == pytest.approx(bf16.grad_reduce_scatter_s[0])


@pytest.mark.parametrize("name, any_layout", [("h100", False), ("h200", False), ("l40s", False), ("b200", True),
                                              ("gb200-nvl72", True), ("gb300-nvl72", True),
                                              ("b300", True)])
def test_blackwell_profiles_take_fp8_gemms_in_any_layout(name, any_layout):
    # TE is_non_tn_fp8_gemm_supported: SM 10.x (B200, GB200, GB300); Hopper SM 9.0 and Ada 8.9 are TN only.
    assert load_hardware(name).fp8_gemm_any_layout is any_layout


def test_megatron_fsdp_rebuilds_the_fp8_transpose_twice_every_micro_batch():
    # Megatron-FSDP's gathered FP8 weights get their transpose from TE's forward (quantize_weight's
    # update_usage), drop it with the unit after forward, and build it again after the backward's
    # gather (fp8_create_transpose_cache; keep_fp8_transpose_cache False): on Hopper 2 B a GEMM
    # weight (read 1, write 1) twice a micro-batch, 8 micro-batches -> 16 rebuilds, where the
    # distributed optimizer's FP8 weights rebuild it once a step; Blackwell keeps no transpose.
    h100, b200 = load_hardware("h100"), load_hardware("b200")
    zero3 = Candidates.of_plan(ParallelPlan(dp=8, zero=3, precision="fp8"))
    zero1 = Candidates.of_plan(ParallelPlan(dp=8, zero=1, precision="fp8"))
    once = float(memory_pass_time_s(h100, 2 * GEMM_PARAMS))
    assert float(weight_cast_s(h100, MODEL, MEGATRON_STATES, zero3, 32, 8)[0]) == pytest.approx(16 * once)
    assert float(weight_cast_s(h100, MODEL, MEGATRON_STATES, zero1, 32, 8)[0]) == pytest.approx(once)
    assert float(weight_cast_s(b200, MODEL, MEGATRON_STATES, zero3, 32, 8)[0]) == 0.0


def test_torchao_linears_cast_their_weights_every_micro_batch():
    # torchtitan's float8 linears (torchao Float8Linear) keep no FP8 weight across micro-batches
    # (cost.tp_gathers): 8 micro-batches cast the weights 8 times, where TE casts once a step (6
    # bytes a GEMM weight on Hopper under current scaling: amax 2, read 2, FP8 data and transpose 2).
    # Compiled torchao a micro-batch: forward amax 2 + cast 2 + 1, backward cast again 2 + 1 = 8
    # (tensorwise, 0.2.x); rowwise (0.3.x) a second amax pass, 2, in backward: 10; on B200 alike.
    from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS

    plan = Candidates.of_plan(ParallelPlan(dp=8, zero=3, precision="fp8", fp8_recipe="tensorwise"))
    for hw in (load_hardware("h100"), load_hardware("b200")):
        for gathers, per_param in ((TORCHAO_TENSORWISE_TP_GATHERS, 8), (BF16_TP_GATHERS, 10)):
            one = float(memory_pass_time_s(hw, per_param * GEMM_PARAMS))
            assert float(weight_cast_s(hw, MODEL, TORCH_FSDP_STATES, plan, 32, 8, gathers)[0]) == pytest.approx(8 * one)
    h100 = load_hardware("h100")
    once = float(memory_pass_time_s(h100, 6 * GEMM_PARAMS))
    assert float(weight_cast_s(h100, MODEL, TORCH_FSDP_STATES, plan, 32, 8)[0]) == pytest.approx(once)


@pytest.mark.parametrize("tp, recompute, per_param", [
    (1, "none", 8),  # the bf16 weight saved, cast again in backward (stop 47)
    (2, "none", 5),  # the forward's FP8 shard kept for backward: amax 2 + cast 2 + 1 alone
    (2, "selective", 8),  # recomputed: the saved amax (op SAC keeps aten.max), the cast again
    (1, "full", 10),  # the recomputed forward's amax pass and cast, the backward's merged with it
    (4, "full", 10),
])
def test_torchao_tensorwise_weight_casts_by_tp_and_recompute(tp, recompute, per_param):
    # Compiled tensorwise torchao (0.2.x), traced with FSDP2 (cost.tp_gathers): a micro-batch's bytes
    # a GEMM weight over 32 layers of 218,103,808 / tp, 8 micro-batches; rowwise (0.3.x) 10 throughout.
    from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS

    h100 = load_hardware("h100")
    plan = Candidates.of_plan(ParallelPlan(tp=tp, dp=8 // tp, zero=3, precision="fp8", fp8_recipe="tensorwise",
                                           recompute=recompute))
    for gathers, bytes_ in ((TORCHAO_TENSORWISE_TP_GATHERS, per_param), (BF16_TP_GATHERS, 10)):
        one = float(memory_pass_time_s(h100, bytes_ * GEMM_PARAMS / tp))
        assert float(weight_cast_s(h100, MODEL, TORCH_FSDP_STATES, plan, 32, 8, gathers)[0]) == pytest.approx(8 * one)


def test_torchao_mx_linears_cast_each_layout_apart_every_micro_batch():
    # torchao's MX linears (both torchtitan runtimes) cast the bf16 weight once a layout, forward to
    # blocks along K and backward to blocks along N, each reading 2 bytes and writing FP8 (1) with an
    # E8M0 scale per 32: 2 x (3 + 1/32) = 6.0625 bytes a GEMM weight a micro-batch, where TE's one
    # cast writing both layouts, once a step, is 2 + 2 x (1 + 1/32) = 4.0625 (cost.precision).
    from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS

    b200 = load_hardware("b200")
    plan = Candidates.of_plan(ParallelPlan(dp=8, zero=3, precision="mxfp8"))
    for gathers in (TORCHAO_TENSORWISE_TP_GATHERS, BF16_TP_GATHERS):
        one = float(memory_pass_time_s(b200, 6.0625 * GEMM_PARAMS))
        assert float(weight_cast_s(b200, MODEL, TORCH_FSDP_STATES, plan, 32, 8, gathers)[0]) == pytest.approx(8 * one)
    once = float(memory_pass_time_s(b200, 4.0625 * GEMM_PARAMS))
    assert float(weight_cast_s(b200, MODEL, TORCH_FSDP_STATES, plan, 32, 8)[0]) == pytest.approx(once)


def test_torchao_casts_no_routed_expert_weight():
    # Qwen3-30B-A3B at ep 8: a layer's GEMM weights a rank are Q 2048 x 4096, K and V 2048 x 512
    # each, O 4096 x 2048 (18,874,368) and the router 2048 x 128 (262,144, an nn.Linear torchtitan
    # converts) beside 128 / 8 experts of 3 x 2048 x 768 (75,497,472), which stay bf16 (cost.tp_gathers).
    from sp_planner.cost.tp_gathers import TORCHAO_TENSORWISE_TP_GATHERS

    h100, qwen = load_hardware("h100"), load_model("Qwen3-30B-A3B")
    plan = Candidates.of_plan(ParallelPlan(dp=8, ep=8, zero=3, precision="fp8", fp8_recipe="tensorwise"))
    torchao = weight_cast_s(h100, qwen, TORCH_FSDP_STATES, plan, 48, 4, TORCHAO_TENSORWISE_TP_GATHERS)
    assert float(torchao[0]) == pytest.approx(4 * float(memory_pass_time_s(h100, 8 * 48 * 19_136_512)))
    te = weight_cast_s(h100, qwen, TORCH_FSDP_STATES, plan, 48, 4)
    assert float(te[0]) == pytest.approx(float(memory_pass_time_s(h100, 6 * 48 * (19_136_512 + 75_497_472))))


def test_megatron_fsdp_block_scaled_fp8_weights_move_and_hold_what_per_tensor_ones_do():
    # --fp8-recipe blockwise on Hopper, ZeRO-3 over 8 ranks, 8 micro-batches: Megatron-FSDP's uint8
    # weight buffer gathers the row-wise data only (1 B a GEMM weight; no column-wise buffer, which
    # only MXFP8 gets; the fp32 128x128-block scales are whole on every rank, not gathered), and a
    # gathered unit holds the row-wise data and, on Hopper, the column-wise copy TE transposes from
    # it (2 B), rebuilt in forward and in backward (read 1, write 1, twice a micro-batch).
    h100 = load_hardware("h100")
    block = Candidates.of_plan(ParallelPlan(dp=8, zero=3, precision="fp8", fp8_recipe="blockwise"))
    sent = comm_columns(MODEL, WORKLOAD, block, gpus_per_node=8, states=MEGATRON_STATES).sent_bytes
    assert sent.dp_all_gather[0] == 16 * ((2 * ALL_PARAMS - GEMM_PARAMS) * 7 // 8)
    with_flag = memory_columns(MODEL, h100, WORKLOAD, block, states=MEGATRON_STATES, domain_gpus=8)
    without = memory_columns(MODEL, h100, WORKLOAD, block, states=MINDSPEED_STATES, domain_gpus=8)
    # TE's whole FP8 copies (data and column-wise, 2 B) and the bf16 shard's extra byte / 8 go; the
    # two gathered layers hold 2 B a GEMM weight either way.
    assert without.params_bytes[0] - with_flag.params_bytes[0] == pytest.approx(
        2 * GEMM_PARAMS + GEMM_PARAMS / 8, rel=1e-12)
    assert with_flag.comm_buffers_bytes[0] == pytest.approx(without.comm_buffers_bytes[0], rel=1e-12)
    assert float(weight_cast_s(h100, MODEL, MEGATRON_STATES, block, 32, 8)[0]) == pytest.approx(
        16 * float(memory_pass_time_s(h100, 2 * GEMM_PARAMS)))


def test_torch_fsdp2_gathers_bf16_weights_in_every_forward():
    # ZeRO-3 over 8 ranks, 8 micro-batches, no reshard after forward (Megatron --use-torch-fsdp2,
    # which turns --fp8-param-gather off from TE 2.0, arguments.py at d98e8a6 lines 1051-1056): one
    # gather of the stage a micro-batch, in its forward, 7/8 sent, every parameter at 2 B whatever
    # the precision: 8 x 2 x 8,030,261,248 x 7/8 = 112,423,657,472 B a step, where the FP8 weights
    # it was priced with moved 8 x (2 x ALL_PARAMS - GEMM_PARAMS) x 7/8 = 63,568,404,480 B.
    plan = ParallelPlan(dp=8, zero=3, reshard_after_forward=False, precision="fp8")
    fp8 = comm_columns(MODEL, WORKLOAD, Candidates.of_plan(plan), gpus_per_node=8, states=MEGATRON_STATES)
    bf16 = comm_columns(MODEL, WORKLOAD, Candidates.of_plan(plan.model_copy(update={"precision": "bf16"})),
                        gpus_per_node=8, states=MEGATRON_STATES)
    assert fp8.sent_bytes.dp_all_gather[0] == 8 * (2 * ALL_PARAMS * 7 // 8) == 112_423_657_472
    assert bf16.sent_bytes.dp_all_gather[0] == fp8.sent_bytes.dp_all_gather[0]
    # Megatron-FSDP (reshard after forward) keeps its FP8 weights: 16 gathers at 1 B a GEMM weight.
    fsdp = Candidates.of_plan(plan.model_copy(update={"reshard_after_forward": True}))
    assert comm_columns(MODEL, WORKLOAD, fsdp, gpus_per_node=8, states=MEGATRON_STATES).sent_bytes.dp_all_gather[0] \
        == 16 * ((2 * ALL_PARAMS - GEMM_PARAMS) * 7 // 8)


@pytest.mark.parametrize("precision, recipe, recompute, any_layout, per_param", [
    # Forward row-wise (read 2, write 1) + backward both layouts (read 2, write 1 + transpose 1).
    ("fp8", "delayed", "none", False, 3 + 4),
    ("fp8", "delayed", "none", True, 3 + 3),  # Blackwell: one layout either way
    ("fp8", "tensorwise", "none", False, (2 + 3) + (2 + 4)),  # each cast's amax pass, 2
    ("fp8", "blockwise", "none", False, (2 + 1 + 4 / 128) + (2 + 2 * (1 + 4 / 128))),
    ("mxfp8", "delayed", "none", True, (2 + 1 + 1 / 32) + (2 + 2 * (1 + 1 / 32))),
    # Full recompute (te_checkpoint): the first forward both layouts, the recomputed one row-wise.
    ("fp8", "delayed", "full", False, 4 + 3 + 4),
    ("fp8", "delayed", "selective", False, 3 + 4),
])
def test_torch_fsdp2_cast_bytes_a_micro_batch(precision, recipe, recompute, any_layout, per_param):
    plan = ParallelPlan(dp=8, zero=3, reshard_after_forward=False, precision=precision, fp8_recipe=recipe,
                        recompute=recompute)
    c = Candidates.of_plan(plan)
    got = torch_fsdp2_cast_bytes_per_param(c.precision, c.recompute, any_layout, c.fp8_current, c.fp8_blockwise)
    assert float(got[0]) == pytest.approx(per_param, rel=1e-12)


def test_torch_fsdp2_casts_every_micro_batch_and_keeps_no_fp8_copy():
    # TE >= 2.16 under FSDP2 caches no FP8 weight (module/linear.py cache_name None when is_fsdp2):
    # 8 micro-batches x 7 B a GEMM weight on Hopper (6 on Blackwell), where Megatron-FSDP's FP8
    # weights rebuilt their transpose twice a micro-batch (16 x 2 B) and a bf16 plan casts nothing.
    h100, b200 = load_hardware("h100"), load_hardware("b200")
    plan = ParallelPlan(dp=8, zero=3, reshard_after_forward=False, precision="fp8")
    c = Candidates.of_plan(plan)
    assert float(weight_cast_s(h100, MODEL, MEGATRON_STATES, c, 32, 8)[0]) == pytest.approx(
        8 * float(memory_pass_time_s(h100, 7 * GEMM_PARAMS)))
    assert float(weight_cast_s(b200, MODEL, MEGATRON_STATES, c, 32, 8)[0]) == pytest.approx(
        8 * float(memory_pass_time_s(b200, 6 * GEMM_PARAMS)))
    # Memory: the bf16 shard (2 B / 8) and the whole bf16 copy kept from forward to backward, as the
    # bf16 plan's, plus the 144 B of scaling state a layer; no FP8 weight copy. The two gathered
    # layers' buffers hold bf16 as the bf16 plan's.
    fp8 = memory_columns(MODEL, h100, WORKLOAD, c, states=MEGATRON_STATES, domain_gpus=8)
    bf16 = memory_columns(MODEL, h100, WORKLOAD, Candidates.of_plan(plan.model_copy(update={"precision": "bf16"})),
                          states=MEGATRON_STATES, domain_gpus=8)
    assert fp8.params_bytes[0] - bf16.params_bytes[0] == pytest.approx(144 * 32, abs=1e-3)
    assert fp8.params_bytes[0] == pytest.approx(2 * ALL_PARAMS / 8 + 2 * ALL_PARAMS + 144 * 32, rel=1e-12)
    assert fp8.comm_buffers_bytes[0] == pytest.approx(bf16.comm_buffers_bytes[0], rel=1e-12)
