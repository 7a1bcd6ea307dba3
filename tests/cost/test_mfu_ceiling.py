"""cost.mfu_ceiling: no plan is predicted above the best MFU published for its GPU and precision."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.flops import (
    hardware_flops_per_step,
    layer_gemm_flops_per_token,
    logits_gemm_flops_per_token,
    model_flops_per_step,
)
from sp_planner.cost.mfu_ceiling import BEST_PUBLISHED_MFU, best_published_mfu, bounded_flops_per_step
from sp_planner.plan import RECOMPUTE_NONE, ParallelPlan
from sp_planner.search import evaluate, search
from sp_planner.specs.workload import Workload


def _useful_mfu(frame, model, hw, workload, gpus):
    """Model FLOPs as run (causal attention, recompute left out, as MFU leaves it out) over the
    step and the bf16 peak: what the ceiling bounds."""
    useful = hardware_flops_per_step(model, seq_len=workload.seq_len, global_batch=workload.global_batch,
                                     causal=workload.causal, recompute=RECOMPUTE_NONE)
    return useful / (frame.step_time_s * gpus * hw.peak_bf16_flops)


CASES = [(model, nodes, seq) for model in ("llama2-7b", "llama3-8b", "llama3.1-70b", "qwen2.5-32b")
         for nodes, seq in ((1, 4096), (1, 32768), (4, 131072), (16, 8192))]


@pytest.mark.parametrize("hardware", ["a100-80gb", "a800", "h100-sxm", "h200", "h800"])
def test_no_plan_above_the_best_published_mfu(hardware):
    hw = load_hardware(hardware)
    ceiling = best_published_mfu(hw)
    # FA2 paper Table 1 (A100); Megatron-LM README weak-scaling table (H100): 16B, h 6144, 32 layers,
    # V 131072, s 4096 at 489.1 TFLOPS/GPU in Megatron's 12lh^2(6 + s/h + V/2lh), attention made causal
    h100 = 489.1 / 989 * (6 + 4096 / 6144 / 2 + 131072 / (2 * 32 * 6144)) / (6 + 4096 / 6144 + 131072 / (2 * 32 * 6144))
    # FA2's 72% in the Megatron-LM paper's 72Bslh^2(1 + s/6h + V/16lh) for GPT3-2.7B (l 32, h 2560,
    # V 50257) at s 8192, attention made causal.
    logits = 50257 / (16 * 32 * 2560)
    a100 = 0.72 * (1 + 8192 / (12 * 2560) + logits) / (1 + 8192 / (6 * 2560) + logits)
    assert ceiling in (pytest.approx(a100, abs=5e-5), pytest.approx(h100, abs=5e-5))
    capped = 0
    for model, nodes, seq in CASES:
        spec, workload = load_model(model), Workload(seq_len=seq, global_batch=max(64, 32 * nodes))
        frame = search(spec, hw, workload, num_nodes=nodes, gpus_per_node=8, top_k=1).frame
        frame = frame[frame.fits | frame.reason.str.startswith("oom")]
        mfu = _useful_mfu(frame, spec, hw, workload, nodes * 8)
        assert mfu.max() <= ceiling + 1e-9
        # The stretch is exactly what brings a plan down to the ceiling.
        held = frame.time_mfu_ceiling_s > 0
        assert mfu[held].to_numpy() == pytest.approx(ceiling, rel=1e-9)
        # Recompute is work the hardware runs beyond the model FLOPs: such plans may execute more.
        assert (frame.hardware_mfu[held & (frame.recompute != "none")] > ceiling + 1e-6).all()
        capped += int(held.sum())
    assert capped > 0  # the bound binds somewhere, so the test can fail


def test_ranking_keeps_the_uncapped_order():
    # On H100 many plans sit at the ceiling; the search orders them by their time before it.
    frame = search(load_model("llama3-8b"), load_hardware("h100-sxm"), Workload(seq_len=4096, global_batch=64),
                   num_nodes=1, gpus_per_node=8).frame
    fits = frame[frame.fits]
    uncapped = (fits.step_time_s - fits.time_mfu_ceiling_s).to_numpy()
    tied = fits.step_time_s.to_numpy() == fits.step_time_s.to_numpy()[0]
    assert tied.sum() > 1
    assert list(uncapped[tied]) == sorted(uncapped[tied])


def test_every_ceiling_names_its_source():
    for (family, precision), (mfu, source) in BEST_PUBLISHED_MFU.items():
        assert 0 < mfu < 1 and ("MFU" in source or "utilization" in source.lower()), (family, precision)


def test_moe_plans_are_held_by_the_flops_of_their_active_experts():
    qwen235 = load_model("Qwen3-235B-A22B")
    # The GEMM FLOPs the ceiling bounds are those of the experts a token runs through: with the
    # input embedding they are the 22B activated parameters of the Qwen3 technical report
    # (arXiv 2505.09388, "235B total and 22B activated"), not 235B.
    per_token = qwen235.num_layers * layer_gemm_flops_per_token(qwen235) + logits_gemm_flops_per_token(qwen235)
    assert per_token / 2 + qwen235.vocab_size * qwen235.hidden_size == pytest.approx(22e9, rel=0.02)
    h100 = load_hardware("h100-sxm")
    # Mixtral-8x7B at 4K on 16 H100s: its active experts' GEMMs are fast enough to meet the bound
    # (Qwen3-30B-A3B's 3B active parameters are not, once recompute is left out of it).
    mixtral, workload = load_model("mixtral-8x7b"), Workload(seq_len=4096, global_batch=1024)
    frame = search(mixtral, h100, workload, num_nodes=2, gpus_per_node=8, top_k=1).frame
    frame = frame[frame.fits]
    mfu = _useful_mfu(frame, mixtral, h100, workload, 16)
    held = frame.time_mfu_ceiling_s > 0
    assert (held & (frame.ep > 1)).sum() > 0
    assert mfu.max() <= 0.4710 + 1e-9
    assert mfu[held].to_numpy() == pytest.approx(0.4710, rel=1e-9)


@pytest.mark.parametrize("hardware, precision, mfu, fp8_peak, model", [
    ("h100-sxm", "fp8", 0.4464, 1979e12, "llama3.1-70b"),  # NeMo 24.07 GPT3-175B (3a8081f): 832 tokens/s/GPU
    ("b200", "fp8", 0.3724, 4500e12, "llama3-8b"),  # Megatron-Bridge 25.09 405B: 664 tokens/s/GPU
    ("b200", "mxfp8", 0.350, 4500e12, "llama3-8b"),  # Megatron-Bridge 25.11 Llama3.1-405B FP8-MX: 1576 / 4500
    ("gb200-nvl72", "fp8", 0.436, 5000e12, "llama3.1-70b"),  # Megatron-Bridge 26.04.01 405B: 864 tokens/s/GPU
    ("gb200-nvl72", "mxfp8", 0.404, 5000e12, "llama3.1-70b"),  # Megatron-Bridge 26.04.01 405B MXFP8: 800 tokens/s/GPU
    ("gb300-nvl72", "fp8", 0.529, 5000e12, "llama3.1-405b"),  # Megatron-Bridge 26.06 405B: 1048 tokens/s/GPU
    ("gb300-nvl72", "mxfp8", 0.489, 5000e12, "llama3.1-405b"),  # Megatron-Bridge 26.04 405B MXFP8: 968 tokens/s/GPU
])
def test_fp8_plans_are_held_at_the_best_published_fp8_mfu(hardware, precision, mfu, fp8_peak, model):
    hw = load_hardware(hardware)
    assert best_published_mfu(hw, precision) == mfu and hw.peak_fp8_flops == fp8_peak
    # A short-sequence dense plan (GEMM-bound; 64 micro-batches a step, so the per-step optimizer and
    # gradient-buffer passes are a small share) would run above the FP8 record without the ceiling,
    # on the profile with its FP8 GEMMs at 95% of peak (the records bound what the profiles' own
    # sustained figures may not reach: the ceiling is keyed by the chip, not by its figures).
    fast = {"gemm_fp8": 0.95} if precision == "fp8" else {"gemm_mxfp8": 0.95}
    hw = hw.model_copy(update={"efficiency": hw.efficiency.model_copy(update=fast)})
    est = evaluate(load_model(model), hw, Workload(seq_len=4096, global_batch=1024),
                   ParallelPlan(dp=8, zero=1, micro_batch=2, precision=precision), num_nodes=8 // hw.gpus_per_node,
                   gpus_per_node=hw.gpus_per_node)
    assert est.time.mfu_ceiling_s > 0
    hardware_tflops_over_fp8_peak = est.hardware_tflops_per_gpu * 1e12 / fp8_peak
    assert hardware_tflops_over_fp8_peak == pytest.approx(mfu, rel=1e-9)
    # The bf16 record does not bound FP8 plans, nor the FP8 record bf16 ones.
    bf16 = evaluate(load_model(model), hw, Workload(seq_len=4096, global_batch=1024),
                    ParallelPlan(dp=8, zero=1, micro_batch=2), num_nodes=1, gpus_per_node=8)
    assert bf16.hardware_tflops_per_gpu < est.hardware_tflops_per_gpu


def _llama31_405b_bounded_flops_per_token_at_8k() -> float:
    """By hand, from the Llama-3.1-405B config (126 layers, hidden 16384, 128 heads and 8 KV heads
    of 128, FFN 53248 SwiGLU, vocab 128256), per token at 8192, causal, no recompute:
    forward GEMMs per layer 2 x 16384 x (2 x 16384 + 2 x 1024) + 2 x 3 x 16384 x 53248
    = 6,375,342,080; causal attention per layer 4 x 16384 x 8192 / 2 = 268,435,456;
    logits 2 x 16384 x 128256 = 4,202,692,608; forward + backward = 3 x forward."""
    return 3 * (126 * (6_375_342_080 + 268_435_456) + 4_202_692_608)


@pytest.mark.parametrize("precision, tokens_per_s_per_gpu, table_tflops, ceiling", [
    ("fp8", 864, 2144, 0.436),  # Megatron-Bridge performance-summary-archive.md at 4ab94dfa, 26.04.01
    ("mxfp8", 800, 2004, 0.404),  # Megatron-Bridge performance-summary.md at 17a381f9, 26.04.01
])
def test_gb200_ceilings_are_the_published_405b_rows(precision, tokens_per_s_per_gpu, table_tflops, ceiling):
    per_token = _llama31_405b_bounded_flops_per_token_at_8k()
    assert per_token == pytest.approx(2.524e12, rel=1e-3)
    assert bounded_flops_per_step(load_model("llama3.1-405b"), Workload(seq_len=8192, global_batch=1)) == \
        pytest.approx(8192 * per_token, rel=1e-9)
    mfu = tokens_per_s_per_gpu * per_token / 5000e12  # GB200 dense FP8 peak
    assert round(mfu, 3) == ceiling == best_published_mfu(load_hardware("gb200-nvl72"), precision)
    # The table's own model TFLOPS count a little less than the bounded FLOPs: a ceiling set from
    # them would hold this very run below its measured rate.
    assert table_tflops * 1e12 / 5000e12 < mfu


@pytest.mark.parametrize("precision, tokens_per_s_per_gpu, table_tflops, ceiling", [
    ("fp8", 1048, 2646, 0.529),  # Megatron-Bridge performance-summary-archive.md at 4ab94dfa, 26.06
    ("mxfp8", 968, 2443, 0.489),  # same file, 26.04
])
def test_gb300_ceilings_are_the_published_405b_rows(precision, tokens_per_s_per_gpu, table_tflops, ceiling):
    mfu = tokens_per_s_per_gpu * _llama31_405b_bounded_flops_per_token_at_8k() / 5000e12  # GB300 dense FP8
    assert round(mfu, 3) == ceiling == best_published_mfu(load_hardware("gb300-nvl72"), precision)
    # The table's own count agrees within 0.1%.
    assert table_tflops * 1e12 / 5000e12 == pytest.approx(mfu, rel=1e-3)
    # Blackwell Ultra's records are above GB200's: a shared family would hold GB300 below them.
    assert ceiling > best_published_mfu(load_hardware("gb200-nvl72"), precision)


@pytest.mark.parametrize("precision", ["bf16", "fp8", "mxfp8"])
def test_b300_has_no_ceiling_of_its_own_nor_b200s(precision):
    # DGX-B300 rows in Megatron-Bridge's summaries are MoE only; B200's records are not B300's.
    assert best_published_mfu(load_hardware("b300"), precision) is None


def test_b200_fp8_record_is_taken_in_the_bounded_convention():
    # Two published B200 FP8 records. Megatron-Bridge 25.09 (performance-summary.md at fa0315ae2):
    # Llama3.1-405B at 8192, 664 tokens/s/GPU, its table's 1676 model TFLOPS = tokens x the bounded
    # FLOPs (causal attention). NeMo 25.04 long-sequence: Llama3-8B at 16K, 1717 model TFLOPS in the
    # full-square count. By hand: 405B 126 x (6,375,342,080 + 268,435,456) + 4,202,692,608 = 8.4131e11
    # a token forward, x 3 = 2.5240e12; 664 x 2.5240e12 / 4.5e15 = 37.24%. Llama3-8B at 16K: layers
    # 32 x 2 x (4096 x 6144 + 4096 x 4096 + 3 x 4096 x 14336) = 1.3959e10, logits 2 x 4096 x 128256 =
    # 1.0507e9, attention 32 x 4 x 4096 x 16384 = 8.590e9 full (4.295e9 causal); x 3: full 7.0798e10,
    # bounded 5.7913e10; 1717 / 7.0798e10 x 5.7913e10 = 1404.5 TFLOPS = 31.21%.
    llama8, llama405 = load_model("llama3-8b"), load_model("llama3.1-405b")
    per_token_405 = bounded_flops_per_step(llama405, Workload(seq_len=8192, global_batch=1)) / 8192
    assert per_token_405 == pytest.approx(2.5240e12, rel=1e-4)
    full_8 = model_flops_per_step(llama8, seq_len=16384, global_batch=1) / 16384
    bounded_8 = bounded_flops_per_step(llama8, Workload(seq_len=16384, global_batch=1)) / 16384
    assert full_8 == pytest.approx(7.0798e10, rel=1e-4) and bounded_8 == pytest.approx(5.7913e10, rel=1e-4)
    mb_405 = 664 * per_token_405 / 4.5e15
    nemo_8b = 1717e12 / full_8 * bounded_8 / 4.5e15
    assert mb_405 == pytest.approx(0.3724, abs=5e-5) and nemo_8b == pytest.approx(0.3121, abs=5e-5)
    assert best_published_mfu(load_hardware("b200"), "fp8") == pytest.approx(max(mb_405, nemo_8b), abs=5e-5)


def test_hopper_fp8_record_is_taken_in_the_bounded_convention():
    # NeMo 24.07 (performance_summary.md at 3a8081f): GPT3-175B on 512 H100s at 2048, 832 tokens/s/GPU,
    # printed as 895 model TFLOPS (1.0757e12 a token: the full attention square). By hand, causal:
    # 3 x (96 x (24 x 12288^2 + 2 x 2048 x 12288) + 2 x 12288 x 50257) = 1.0619e12 a token;
    # 832 x 1.0619e12 / 1979e12 = 44.64%.
    per_token = bounded_flops_per_step(load_model("gpt3-175b"), Workload(seq_len=2048, global_batch=1)) / 2048
    by_hand = 3 * (96 * (24 * 12288**2 + 2 * 2048 * 12288) + 2 * 12288 * 50257)
    assert per_token == pytest.approx(by_hand, rel=1e-9)
    assert 895e12 / 832 == pytest.approx(1.0757e12, rel=1e-4)
    assert best_published_mfu(load_hardware("h100-sxm"), "fp8") == pytest.approx(832 * by_hand / 1979e12, abs=5e-5)


def test_gb200_is_not_held_by_the_b200_record():
    # B200's best FP8 MFU (37.24%) is below GB200's published 405B run (43.6%): separate families.
    assert best_published_mfu(load_hardware("b200"), "fp8") == 0.3724
    assert best_published_mfu(load_hardware("gb200-nvl72"), "fp8") == 0.436


@pytest.mark.parametrize("hardware", ["b200", "gb200-nvl72", "b300", "gb300-nvl72", "l20", "l40s", "mi300x"])
def test_no_bf16_ceiling_without_a_published_dense_record(hardware):
    # Blackwell BF16: NVIDIA publishes only MoE BF16 rows (GPT-OSS-120B on B200: 373 model TFLOPS
    # = 16.6%; DeepSeek-V3 on GB200: 782 = 31.3%); the one dense run found is on power-limited
    # B200s (19.0%), below the 37% B200's FP8 record implies; L20, L40S, MI300X: no training MFU
    # found (module docstring). Such plans are not held.
    hw = load_hardware(hardware)
    assert best_published_mfu(hw, "bf16") is None
    est = evaluate(load_model("llama3-8b"), hw, Workload(seq_len=4096, global_batch=64),
                   ParallelPlan(dp=8, zero=1, micro_batch=1), num_nodes=8 // hw.gpus_per_node,
                   gpus_per_node=hw.gpus_per_node)
    assert est.time.mfu_ceiling_s == 0


def test_ascend_ceiling_is_mindspeeds_gpt3_175b_run_over_the_910b2_peak():
    hw = load_hardware("ascend-910b")
    assert best_published_mfu(hw) == 0.538  # GPT3-175B on 128 NPUs (MindSpeed-LLM figure)
    # The figure's achieved petaFLOPs fix the peak its MFU divides by: at 7968 NPUs, 50.5% MFU and
    # about 1420 PF plotted. The 910B2 cube peak of the profile gives that; the 910B1's does not.
    assert 7968 * hw.peak_bf16_flops * 0.505 == pytest.approx(1420e15, rel=0.01)
    assert 7968 * 373.88e12 * 0.505 == pytest.approx(1504e15, rel=0.001)
    # A GEMM-bound dense plan (the profile's 0.927 GEMM efficiency) is held to the record.
    spec, workload = load_model("llama3-8b"), Workload(seq_len=4096, global_batch=256)
    est = evaluate(spec, hw, workload, ParallelPlan(dp=8, zero=1, micro_batch=2), num_nodes=1, gpus_per_node=8)
    assert est.time.mfu_ceiling_s > 0
    useful = bounded_flops_per_step(spec, workload) / (est.step_time_s * 8 * hw.peak_bf16_flops)
    assert useful == pytest.approx(0.538, rel=1e-9)
