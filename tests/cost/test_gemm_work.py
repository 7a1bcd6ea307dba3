"""A layer's GEMM-side work against a hand derivation on the toy specs (cost.gemm_work)."""

import numpy as np
import pytest

from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT, elementwise_bytes_per_token, gemm_work
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.plan import PRECISIONS

BF16 = PRECISIONS.index("bf16")


def _work(model, hardware, *, tp=2, extra=0.0):
    return gemm_work(model, hardware, seq_len=4096, tp=np.array([tp]), micro_batch=np.array([1]),
                     cp=np.array([1]), ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                     fp8_current=np.array([False]), gpus_per_node=4, extra_fwd_s=extra)


def test_elementwise_bytes_of_the_toy_layer(toy_model):
    # h 64, q 64, kv 32, ffn 128, SwiGLU: norms 4h, residual adds 6h, RoPE 2(q + kv), SwiGLU reads
    # gate and up and writes one: 3 ffn; 2 bytes each: 2 x (256 + 384 + 192 + 384) = 2432.
    assert elementwise_bytes_per_token(toy_model) == 2432.0


def test_bf16_layer_by_hand(toy_model, hardware):
    # 4096 tokens over tp 2. GEMM parameters a layer: q 64x64, k and v 64x32, o 64x64, gate, up and
    # down 64x128 each: 36,864, so 73,728 FLOPs a token; at 100 TFLOPS x 0.5 (no contraction table
    # for the toy profile, factor 1). Backward twice the forward (no FP8 casts).
    work = _work(toy_model, hardware)
    gemm = 73728 * 2048 / 50e12
    elementwise = float(memory_pass_time_s(hardware, 2432 * 2048))
    assert work.gemm_only_s[0] == pytest.approx(gemm)
    assert work.fwd_s[0] == pytest.approx(gemm + elementwise)
    assert work.bwd_s[0] == pytest.approx(2 * (gemm + elementwise))
    # logits: 2 x 64 x 100 FLOPs a token forward, x 3 with backward; the loss's 60 bytes a logit.
    logits = 3 * 2 * 64 * 100 * 2048 / 50e12 + float(memory_pass_time_s(hardware, LOSS_BYTES_PER_LOGIT * 2048 * 100))
    assert work.logits_s[0] == pytest.approx(logits)


def test_kv_heads_replicated_beyond_tp_are_computed_on_every_rank(toy_model, hardware):
    # The toy's 2 KV heads of 16 over tp 4: Megatron copies one head to each rank, whose QKV GEMM
    # computes K and V for that whole head (2 x 64 x 2 x 16 = 4096 FLOPs a token), not half of
    # one (2048): 73,728 / 4 + 2048 FLOPs a token on each of the 4096 tokens.
    work = _work(toy_model, hardware, tp=4)
    assert work.gemm_only_s[0] == pytest.approx((73728 / 4 + 2048) * 4096 / 50e12)
    # At tp 2 each rank holds one of the two heads: nothing replicated (test_bf16_layer_by_hand).


def test_te_fused_cross_entropy_moves_ten_bytes_a_logit(toy_model, hardware):
    # cost.loss_memory: TE's fused loss reads the bf16 logits, reads them again and writes the
    # gradient in place, then scales it in place: 10 bytes a logit instead of the unfused 60.
    plain = _work(toy_model, hardware).logits_s[0]
    fused = gemm_work(toy_model, hardware, seq_len=4096, tp=np.array([2]), micro_batch=np.array([1]),
                      cp=np.array([1]), ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                      fp8_current=np.array([False]), gpus_per_node=4,
                      loss_bytes_per_logit=10).logits_s[0]
    assert plain - fused == pytest.approx(float(memory_pass_time_s(hardware, 50 * 2048 * 100)))


def test_extra_forward_gemm_time_doubles_in_backward(toy_model, hardware):
    base, more = _work(toy_model, hardware), _work(toy_model, hardware, extra=1e-3)
    assert more.fwd_s[0] - base.fwd_s[0] == pytest.approx(1e-3)
    assert more.bwd_s[0] - base.bwd_s[0] == pytest.approx(2e-3)
    assert more.gemm_only_s[0] == base.gemm_only_s[0]


def test_tp_without_sequence_parallelism_runs_the_norms_and_residual_adds_on_every_rank(toy_model, hardware):
    # 4096 tokens over tp 2: the norms (4h) and residual adds (6h), 2 x 640 = 1280 of the 2432
    # bytes a token, run on all 4096 tokens of each TP rank instead of its 2048 (Korthikanti et al.
    # 2022, Table 2); RoPE and SwiGLU stay split. Forward once, backward twice that.
    with_sp = _work(toy_model, hardware)
    without = gemm_work(toy_model, hardware, seq_len=4096, tp=np.array([2]), micro_batch=np.array([1]),
                        cp=np.array([1]), ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                        fp8_current=np.array([False]), gpus_per_node=4, sequence_parallel=False)
    extra = float(memory_pass_time_s(hardware, 1280 * (4096 - 2048)))
    assert without.fwd_s[0] - with_sp.fwd_s[0] == pytest.approx(extra)
    assert without.bwd_s[0] - with_sp.bwd_s[0] == pytest.approx(2 * extra)
    # At tp 1 there is nothing to split.
    one = [gemm_work(toy_model, hardware, seq_len=4096, tp=np.array([1]), micro_batch=np.array([1]),
                     cp=np.array([1]), ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                     fp8_current=np.array([False]), gpus_per_node=4, sequence_parallel=sp).fwd_s[0]
           for sp in (True, False)]
    assert one[0] == one[1]


def test_torchao_leaves_the_routed_experts_bf16(toy_model, hardware):
    # torchtitan's float8 converter swaps nn.Linear only (cost.tp_gathers): a toy MoE (h 64, 4
    # experts of width 32, top 2, no shared expert, both layers MoE) at tp 1 on 4096 tokens, per-tensor
    # FP8 with current scaling on a toy chip of 200 TFLOPS FP8 x 0.5 (bf16 100 x 0.5).
    from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
    from sp_planner.specs.moe import MoESpec

    fp8 = PRECISIONS.index("fp8")
    moe = toy_model.model_copy(update={"moe": MoESpec(num_experts=4, top_k=2, moe_intermediate_size=32)})
    chip = hardware.model_copy(update={"peak_fp8_flops": 200e12,
                                       "efficiency": hardware.efficiency.model_copy(update={"gemm_fp8": 0.5})})

    def work(gathers):
        return gemm_work(moe, chip, seq_len=4096, tp=np.array([1]), micro_batch=np.array([1]), cp=np.array([1]),
                         ep=np.array([1]), etp=np.array([1]), precision=np.array([fp8]),
                         fp8_current=np.array([True]), gpus_per_node=4, tp_gathers=gathers)

    te, ao = work(TE_TP_GATHERS), work(TORCHAO_TENSORWISE_TP_GATHERS)
    # Routed GEMMs: 2 FLOPs x 3 matrices x h 64 x top 2 x 32 = 24,576 a token, 4096 tokens, at 50
    # TFLOPS instead of 100 (no contraction table for the toy chip).
    routed_s = 24576 * 4096 / 50e12 - 24576 * 4096 / 100e12
    assert ao.gemm_only_s[0] - te.gemm_only_s[0] == pytest.approx(routed_s)
    # Their casts dropped, 6 bytes an element (amax 2, read 2, FP8 data and transpose 2): forward
    # top 2 x (h 64 + 32) = 192 elements a token, backward top 2 x (gate and up 2 x 32 + h 64) = 256.
    cast_fwd = float(memory_pass_time_s(chip, 6 * 192 * 4096))
    cast_bwd = float(memory_pass_time_s(chip, 6 * 256 * 4096))
    assert ao.fwd_s[0] - te.fwd_s[0] == pytest.approx(routed_s - cast_fwd)
    # Backward: twice the forward's GEMMs, the gradients' casts.
    assert ao.bwd_s[0] - te.bwd_s[0] == pytest.approx(2 * routed_s - cast_bwd)
    # A dense model's work is the same under either (no routed experts).
    dense = [gemm_work(toy_model, chip, seq_len=4096, tp=np.array([1]), micro_batch=np.array([1]), cp=np.array([1]),
                       ep=np.array([1]), etp=np.array([1]), precision=np.array([fp8]), fp8_current=np.array([True]),
                       gpus_per_node=4, tp_gathers=g).fwd_s[0] for g in (TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS)]
    assert dense[0] == dense[1]


def test_torchaos_bf16_experts_take_bf16s_shape_ratios():
    # Qwen3-30B-A3B as torchtitan runs it (grouped experts) at tp 1, ep 8, 4096 tokens on an H100,
    # per-tensor FP8 GEMMs (cost.tp_gathers: routed experts bf16). Per token, QKV 2 x 2048 x 5120 =
    # 20,971,520 FLOPs and the projection 2 x 2048 x 4096 = 16,777,216, at the FP8 rate with FP8's
    # K and output-size ratios; the routed experts' FC1 (gate and up) 2 x 2 x 2048 x 8 x 768 =
    # 50,331,648 over K 2048 and FC2 2 x 2048 x 8 x 768 = 25,165,824 over K 768, at the bf16 rate
    # with bf16's K ratios (a grouped kernel: no output-size ratio, cost.gemm_shapes).
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.cost.gemm_outputs import output_ratio
    from sp_planner.cost.gemm_shapes import contraction_ratio
    from sp_planner.cost.grouped_gemm import with_expert_gemm
    from sp_planner.cost.precision import gemm_peak_flops
    from sp_planner.cost.tp_gathers import TORCHAO_TENSORWISE_TP_GATHERS

    h100, qwen = load_hardware("h100"), with_expert_gemm(load_model("Qwen3-30B-A3B"), "grouped")
    fp8 = PRECISIONS.index("fp8")
    rate8, rate16 = (float(gemm_peak_flops(h100, np.array([p]))[0]) for p in (fp8, BF16))

    def at(k, outputs, low):
        return 1 / float(contraction_ratio(h100, k, low) * output_ratio(h100, outputs, k, low))

    attention = (20_971_520 * at(2048, 4096 * 5120, True) + 16_777_216 * at(4096, 4096 * 2048, True)) / rate8
    experts = (50_331_648 / float(contraction_ratio(h100, 2048)) + 25_165_824 / float(contraction_ratio(h100, 768)))
    work = gemm_work(qwen, h100, seq_len=4096, tp=np.array([1]), micro_batch=np.array([1]), cp=np.array([1]),
                     ep=np.array([8]), etp=np.array([1]), precision=np.array([fp8]), fp8_current=np.array([True]),
                     gpus_per_node=8, tp_gathers=TORCHAO_TENSORWISE_TP_GATHERS)
    assert work.gemm_only_s[0] == pytest.approx(4096 * (attention + experts / rate16), rel=1e-12)


def test_torchtitan_runs_mlas_down_projections_on_every_token_of_each_tp_rank():
    # torchtitan gathers MLA's input whole before wq_a and wkv_a (Replicate weights): DeepSeek-V3's
    # 2 x 7168 x (512 + 64 + 1536) = 30,277,632 FLOPs a token, whole on each of tp 8 ranks, so
    # 7/8 of them back on 4096 tokens at the bf16 rate, twice that backward; nothing at tp 1.
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.cost.precision import gemm_peak_flops
    from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS

    h100, v3 = load_hardware("h100"), load_model("deepseek-v3")
    assert TORCHAO_TENSORWISE_TP_GATHERS.whole_mla_down_projections

    def work(tp, gathers):
        return gemm_work(v3, h100, seq_len=4096, tp=np.array([tp]), micro_batch=np.array([1]), cp=np.array([1]),
                         ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                         fp8_current=np.array([False]), gpus_per_node=8, tp_gathers=gathers)

    split = BF16_TP_GATHERS.model_copy(update={"whole_mla_down_projections": False})
    extra = 30_277_632 * 7 / 8 * 4096 / float(gemm_peak_flops(h100, np.array([BF16]))[0])
    whole, halves = work(8, BF16_TP_GATHERS), work(8, split)
    assert whole.gemm_only_s[0] - halves.gemm_only_s[0] == pytest.approx(extra)
    assert whole.bwd_s[0] - halves.bwd_s[0] == pytest.approx(2 * extra)
    assert work(1, BF16_TP_GATHERS).fwd_s[0] == work(1, split).fwd_s[0]
