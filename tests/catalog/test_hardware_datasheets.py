"""Built-in profiles' peaks, memory bandwidths and link rates against the spec-sheet numbers they
cite (hardware_profiles/*.yaml `sources`; the stop 56 audit). Peaks are dense: where a datasheet
prints the with-sparsity figure (NVIDIA's footnote "Shown with sparsity. Specifications 1/2 lower
without sparsity"), the test halves the printed number rather than restating the profile's."""

import pytest

from sp_planner.catalog import load_hardware

T = 1e12
GB = 1e9

# (profile, BF16 dense, FP8 dense or None, HBM B/s, intra-node link B/s per direction, NIC B/s).
# Sparse sheet figures appear as `x / 2`; link rates as the sheet's bidirectional figure / 2 or
# the NIC's Gb/s / 8.
SHEETS = [
    # A100 datasheet (glennklockwood.com/garden/processors/A100): BF16 624 sparse, 1.555 TB/s
    # (40GB) / 2.039 TB/s (80GB), NVLink3 600 GB/s bidirectional; DGX A100 8x HDR 200 Gb/s.
    ("a100-40gb", 624 * T / 2, None, 1.555e12, 600 * GB / 2, 200 * GB / 8),
    ("a100-80gb", 624 * T / 2, None, 2.039e12, 600 * GB / 2, 200 * GB / 8),
    # A800: the A100 80GB with NVLink cut to 400 GB/s (tweakers.net/nieuws/203182); USP testbed
    # 1.6 Tb/s RDMA per 8 GPUs.
    ("a800", 624 * T / 2, None, 2.039e12, 400 * GB / 2, 1600 * GB / 8 / 8),
    # H100 SXM5 datasheet (archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html): BF16 1,979 and FP8
    # 3,958 with sparsity, 3,350 GB/s, NVLink 900 GB/s; DGX H100 ConnectX-7 400 Gb/s per GPU.
    ("h100-sxm", 1979 * T / 2, 3958 * T / 2, 3.35e12, 900 * GB / 2, 400 * GB / 8),
    # H200 (stas00 accelerator table; MLPerf H200-SXM-141GBx8 system file): as H100, 4.8 TB/s.
    ("h200", 1979 * T / 2, 3958 * T / 2, 4.8e12, 900 * GB / 2, 400 * GB / 8),
    # H800: H100 die ('1979 TFLOPS for sparse mma', deepseek-ai/FlashMLA#75), NVLink 400 GB/s.
    ("h800", 1979 * T / 2, 3958 * T / 2, 3.35e12, 400 * GB / 2, 400 * GB / 8),
    # NVIDIA's HGX B200 / GB200 NVL72 table (zdszero.github.io ... Hardware.html), per GPU with
    # sparsity: BF16 4.5 / 5 PF, FP8 9 / 10 PF; 7.7 / 8 TB/s; NVLink5 1.8 TB/s; CX-7 400 Gb/s.
    ("b200", 4500 * T / 2, 9000 * T / 2, 7.7e12, 1800 * GB / 2, 400 * GB / 8),
    ("gb200-nvl72", 5000 * T / 2, 10000 * T / 2, 8.0e12, 1800 * GB / 2, 400 * GB / 8),
    # HGX B300: 36 PF BF16 and 72 PF FP8 with sparsity for 8 GPUs (glennklockwood.com/garden/
    # processors/B300: 4500 / 9000 sparse per GPU); 8 TB/s (NVIDIA 'Inside NVIDIA Blackwell Ultra';
    # reference moe_fp8_pipeline_frameworks.md section 6); ConnectX-8 800 Gb/s per GPU.
    ("b300", 36000 * T / 8 / 2, 72000 * T / 8 / 2, 8.0e12, 1800 * GB / 2, 800 * GB / 8),
    # GB300 NVL72: BF16 2500 dense per GPU (stas00 TFLOPS table, note 24: NVIDIA's GB300 NVL72
    # specifications); the rack's '360 PF FP8 for training' and '20 TB HBM at 576 TB/s' over 72 GPUs
    # (glennklockwood.com/garden/processors/B300, from GTC25); 72 ConnectX-8 at 800 Gb/s.
    ("gb300-nvl72", 2500 * T, 360000 * T / 72, 576e12 / 72, 1800 * GB / 2, 800 * GB / 8),
    # L40S datasheet (mullet.se product 355414, '* With Sparsity'): BF16 362.05 | 733*, FP8 733 |
    # 1,466*, 864 GB/s, 'PCIe Gen4 x16: 64GB/s bidirectional' (the profile takes the 31.5 GB/s line
    # rate of 16 GT/s x 16 lanes x 128/130).
    ("l40s", 362.05 * T, 1466 * T / 2, 864 * GB, 16e9 * 16 * 128 / 130 / 8, 200 * GB / 8),
    # L20: BF16 119.5 dense (feifeibear/LLMRoofline hardware_dict.py; citsjtu2020/LLM-Prof), no FP8
    # figure found; 864 GB/s; PCIe Gen4 x16.
    ("l20", 119.5 * T, None, 864 * GB, 16e9 * 16 * 128 / 130 / 8, 200 * GB / 8),
    # AMD Instinct MI300X: BF16 1307.4 / FP8 2614.9 dense (5229.8 with structured sparsity;
    # reference hardware_and_models.md A.1), 5.3 TB/s, xGMI 64 GB/s per peer x 7 peers, Azure ND
    # MI300X v5 8x 400 Gb/s NDR.
    ("mi300x", 1307.4 * T, 5229.8 * T / 2, 5.3e12, 64 * GB * 7, 400 * GB / 8),
    # Ascend 910B2: cube BF16 353.8944 TFLOPS (torchtitan-npu metrics.py), no FP8; HBM 1.2 TB/s and
    # HCCS '392 GB/s' (xullnn/llm_computing_resource_est, low confidence), one 200 Gb/s RoCE port.
    ("ascend-910b", 353.8944 * T, None, 1.2e12, 392 * GB / 2, 200 * GB / 8),
]


@pytest.mark.parametrize(("name", "bf16", "fp8", "hbm", "intra", "nic"), SHEETS, ids=[s[0] for s in SHEETS])
def test_profile_figures_match_their_spec_sheets(name, bf16, fp8, hbm, intra, nic):
    profile = load_hardware(name)
    assert profile.peak_bf16_flops == pytest.approx(bf16, rel=2e-3)
    if fp8 is None:
        assert profile.peak_fp8_flops is None
    else:
        assert profile.peak_fp8_flops == pytest.approx(fp8, rel=2e-3)
    assert profile.hbm_bandwidth_bytes_per_s == pytest.approx(hbm, rel=1e-9)
    assert profile.intra_node.bandwidth_bytes_per_s == pytest.approx(intra, rel=1e-3)
    assert profile.inter_node.bandwidth_bytes_per_s == pytest.approx(nic, rel=1e-9)


def test_every_builtin_profile_is_audited():
    from sp_planner.catalog import builtin_hardware_names, builtin_profile_name

    assert sorted(builtin_profile_name(n) for n in builtin_hardware_names()) == sorted(
        builtin_profile_name(s[0]) for s in SHEETS)


def test_fp8_is_never_a_with_sparsity_figure():
    # FP8 tensor cores run at twice the BF16 rate (dense to dense); a with-sparsity FP8 figure
    # would sit at four times the dense BF16 peak. L40S's sheet prints 733 against BF16 362.05
    # (the BF16 rate at 2490 MHz, the FP8 one at 2520 MHz), hence the tolerance.
    for name, *_ in SHEETS:
        profile = load_hardware(name)
        if profile.peak_fp8_flops is not None:
            assert profile.peak_fp8_flops / profile.peak_bf16_flops == pytest.approx(2.0, rel=0.015), name
