"""cost.kernel_benchmarks: Blackwell kernel curves and causal ratios against the cited TFLOPS.

Figures: NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training at 0b1577c8 (B200, causal, BF16,
B 1, Hq 128, Hkv 8, d 128) and results/h200_919_only_cudnn at df73764a (H200 cuDNN 9.19.1); PyTorch
SDPA's flash backend measured on an H200 by make gpu-check (hardware_profiles/measured/)."""

import json
from pathlib import Path

import pytest
import yaml

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.framework_kernels import default_kernel
from sp_planner.cost.kernel_benchmarks import SDPA_H200_BWD, SDPA_H200_FWD, SDPA_H200_TOKENS, blackwell_curves
from sp_planner.cost.kernels import curve_efficiency, flash_flops, flash_time_s

GPU_CHECK = Path(__file__).resolve().parents[2] / "docs" / "gpu-check" / "2026-12-04-h200"
B200, GB200, H200 = load_hardware("b200"), load_hardware("gb200-nvl72"), load_hardware("h200")
# One call of the benchmark's shape at L tokens (B 1, 128 query heads, d 128).
SHAPE = dict(batch=1, heads=128, head_dim=128)


def timed_tflops(hardware, tokens, *, causal, backward):
    """TFLOPS of one call as the model times it in training, counted as the benchmark counts (half
    the square if causal)."""
    t = flash_time_s(hardware, **SHAPE, q_tokens=tokens, kv_tokens=tokens, causal_diagonal=causal, backward=backward)
    flops = flash_flops(1, 128, 128, tokens, tokens) * (0.5 if causal else 1.0) * (2.5 if backward else 1.0)
    return flops / t / 1e12


def tflops(hardware, tokens, *, causal, backward):
    """The same call at the benchmark's short-run rate: the timed rate over the share of it the chip
    sustains (efficiency.sustained_fraction, cost.kernels.sustained_fraction)."""
    return timed_tflops(hardware, tokens, causal=causal, backward=backward) / hardware.efficiency.sustained_fraction


def test_b200_die_sustains_0804_of_the_short_run_attention_rate():
    # GB200's sustained cuBLASLt FP8 rate over its short-run MAMF, 2906.9 / 3615.6, taken for every
    # short-run compute figure of the die; the benchmark's own causal 8K forward is 1384.231.
    for hardware in (B200, GB200):
        assert hardware.efficiency.sustained_fraction == pytest.approx(2906.9 / 3615.6, abs=5e-4)
    hardware = with_attention_kernel(B200, default_kernel("megatron", B200))
    assert timed_tflops(hardware, 8192, causal=True, backward=False) == pytest.approx(1384.231 * 0.804, rel=4e-3)
    assert H200.efficiency.sustained_fraction == 1.0


@pytest.mark.parametrize("tokens,fwd,bwd", [(2048, 907.547, 545.088), (8192, 1384.231, 994.850),
                                            (32768, 1514.764, 1180.250), (131072, 1421.873, 1127.667)])
def test_b200_cudnn_causal_block_gives_the_measured_tflops(tokens, fwd, bwd):
    # Megatron's default on B200 is cuDNN, the profile's own curve: a causal L x L call runs at the
    # direct-cuDNN bf16 figure (sdpa_fp8_benchmark_results_NVIDIA_B200.csv), i.e. that / 2250 of
    # peak, up to the 3-decimal rounding of the curve and of the ratio.
    hardware = with_attention_kernel(B200, default_kernel("megatron", B200))
    assert tflops(hardware, tokens, causal=True, backward=False) == pytest.approx(fwd, rel=4e-3)
    assert tflops(hardware, tokens, causal=True, backward=True) == pytest.approx(bwd, rel=4e-3)


def test_b200_non_causal_is_causal_over_the_h200_cudnn_ratio():
    # 8K: causal 1384.231 TFLOPS; H200 cuDNN 9.19.1 causal/non-causal forward at 8K = 644 / 691.
    eff = curve_efficiency(B200.efficiency.attention_fwd, 8192)
    assert eff == pytest.approx(1384.231 / (644 / 691) / 2250, abs=6e-4)
    assert tflops(B200, 8192, causal=False, backward=False) == pytest.approx(eff * 2250, rel=1e-9)


def test_b200_profile_file_holds_the_derived_cudnn_curve():
    fwd, bwd = blackwell_curves("cudnn", 2250)
    assert B200.efficiency.attention_fwd == fwd
    assert B200.efficiency.attention_bwd == bwd


def test_torchtitan_on_b200_runs_sdpas_flash_backend():
    # pyt_flash_attention at 16K: 394.495 fwd / 319.979 bwd TFLOPS causal; the profile's cuDNN
    # curve would give 1475 / 1152.
    kernel = default_kernel("torchtitan", B200)
    assert kernel == "sdpa"
    hardware = with_attention_kernel(B200, kernel)
    assert tflops(hardware, 16384, causal=True, backward=False) == pytest.approx(394.495, rel=4e-3)
    assert tflops(hardware, 16384, causal=True, backward=True) == pytest.approx(319.979, rel=4e-3)
    # Non-causal: over SDPA's causal ratio at 16K, read a third of the way (in log tokens) from
    # its 8K to its 64K point measured on an H200 (318.7 / 355.3 and 343.3 / 354.3 forward).
    ratio_16k = 318.7 / 355.3 + (343.3 / 354.3 - 318.7 / 355.3) / 3
    eff = curve_efficiency(hardware.efficiency.attention_fwd, 16384)
    assert eff == pytest.approx(394.495 / ratio_16k / 2250, abs=6e-4)


def test_yunchang_on_b200_runs_flash_attn_2():
    hardware = with_attention_kernel(B200, default_kernel("yunchang", B200))
    assert tflops(hardware, 8192, causal=True, backward=False) == pytest.approx(399.925, rel=4e-3)


def test_gb200_fa2_takes_b200_tflops_over_gb200s_own_peak():
    # The same TFLOPS, so 2250/2500 of B200's fraction of peak.
    gb200 = with_attention_kernel(GB200, "fa2").efficiency.attention_fwd
    b200 = with_attention_kernel(B200, "fa2").efficiency.attention_fwd
    assert curve_efficiency(gb200, 8192) == pytest.approx(curve_efficiency(b200, 8192) * 2250 / 2500, abs=1e-3)
    assert tflops(with_attention_kernel(GB200, "fa2"), 8192, causal=True, backward=False) == pytest.approx(
        399.925, rel=4e-3)


def test_gb200_megatron_keeps_its_measured_cudnn_curve():
    # GB200's own curve is cuDNN 9.22 non-causal (results/llama3.1/gb200): 1771 TFLOPS fwd at 8K / 2500.
    hardware = with_attention_kernel(GB200, default_kernel("megatron", GB200))
    assert hardware.efficiency == GB200.efficiency
    assert tflops(hardware, 8192, causal=False, backward=False) == pytest.approx(1771, rel=1e-3)


def test_fa3_is_refused_on_blackwell():
    with pytest.raises(ValueError, match="no published fa3 attention curve for hardware 'B200'; "
                                         "choose one of fa2, cudnn, sdpa"):
        with_attention_kernel(B200, "fa3")


@pytest.mark.parametrize("tokens,fwd,bwd", [(2048, (633, 484), (504, 370)), (8192, (691, 644), (594, 541))])
def test_h200_cudnn_causal_block_runs_at_the_measured_ratio(tokens, fwd, bwd):
    # A causal diagonal block costs half the square's FLOPs at (causal / non-causal) of the
    # non-causal efficiency: its time over the full block's is 0.5 / ratio.
    hardware = with_attention_kernel(H200, "cudnn")
    for backward, (non_causal, causal) in ((False, fwd), (True, bwd)):
        kw = dict(**SHAPE, q_tokens=tokens, kv_tokens=tokens, backward=backward)
        ratio = flash_time_s(hardware, causal_diagonal=True, **kw) / flash_time_s(hardware, causal_diagonal=False, **kw)
        assert ratio == pytest.approx(0.5 / round(causal / non_causal, 3), rel=1e-12)


def test_fa3_causal_ratio_is_the_fa3_papers():
    # H100/H200's own kernel is FA3: forward at 512 tokens 292 / 467 (FA3 paper, d 128).
    kw = dict(**SHAPE, q_tokens=512, kv_tokens=512, backward=False)
    ratio = flash_time_s(H200, causal_diagonal=True, **kw) / flash_time_s(H200, causal_diagonal=False, **kw)
    assert ratio == pytest.approx(0.5 / round(292 / 467, 3), rel=1e-12)


def test_sdpa_tables_are_the_h200_measurement_in_the_repository():
    # The tables transcribe hardware_profiles/measured/h200-2026-12-04.yaml (make gpu-check).
    path = Path(__file__).resolve().parents[2] / "hardware_profiles" / "measured" / "h200-2026-12-04.yaml"
    measured = yaml.safe_load(path.read_text())["calibration"]["attention"]
    assert measured and {m["heads"] for m in measured} == {16} and {m["head_dim"] for m in measured} == {128}
    tables = {"fwd": SDPA_H200_FWD, "bwd": SDPA_H200_BWD}
    for sample in measured:
        assert tuple(p["tokens"] for p in sample["points"]) == SDPA_H200_TOKENS
        want = tables[sample["direction"]][1 if sample["causal"] else 0]
        got = tuple(p["flops_per_s"] / 1e12 for p in sample["points"])
        assert got == pytest.approx(want, abs=0.051)


def test_torchtitan_on_h100_runs_the_measured_sdpa_curve():
    # 8K non-causal forward 355.3 TFLOPS of H100's 989; causal 64K backward at the non-causal rate
    # (323.6 / 318.6 measured, held at 1).
    h100 = load_hardware("h100-sxm")
    hardware = with_attention_kernel(h100, default_kernel("torchtitan", h100))
    assert curve_efficiency(hardware.efficiency.attention_fwd, 8192) == pytest.approx(355.3 / 989, abs=6e-4)
    assert tflops(hardware, 65536, causal=True, backward=True) == pytest.approx(318.6, rel=2e-3)


def test_one_flash_call_on_the_whole_sequence_as_measured_on_the_h200():
    # make gpu-check's ring-block benchmark (a later run than the calibration the SDPA tables come
    # from): B 1, 16 heads x d 128, forward, 32K and 64K tokens, causal and full.
    rows_path = GPU_CHECK / "run4-ring_blocks_rows.json"
    hardware = with_attention_kernel(H200, "sdpa")
    checked = 0
    for row in json.loads(rows_path.read_text()):
        if row["seq_len"] > 65536:
            continue
        seq = row["seq_len"]
        predicted = flash_time_s(hardware, batch=1, heads=16, head_dim=128, q_tokens=seq, kv_tokens=seq,
                                 causal_diagonal=row["causal"], backward=False)
        assert float(predicted) == pytest.approx(row["full_s"], rel=0.02)
        checked += 1
    assert checked == 6  # full, causal contiguous and causal zigzag at each length (the same call)
