"""FP8 core attention (Megatron --fp8-dot-product-attention): cuDNN's FP8 SDPA against its BF16
SDPA, measured side by side on Blackwell.

Source: NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts, causal, B 1, Hq 128,
Hkv 8, d 128, cuDNN called directly (as Transformer Engine does), precision fp8 and bf16 rows of
one file per chip: sdpa_fp8_benchmark_results_NVIDIA_B200.csv at 0b1577c8 (cuDNN 9.13.1, its
bf16 rows are the B200 profile's curves, cost.kernel_benchmarks) and
sdpa_fp8_benchmark_results_NVIDIA_GB200.csv at b372d39 (the last commit holding it; removed in
b8c0656). The FP8/BF16 TFLOPS ratio by sequence length scales the profile's cuDNN attention
curves (forward and backward separately): FP8 loses at 512 tokens and gains 3-48% beyond.

Not counted: quantizing Q, K, V (and dO) for the kernel, which TE fuses into the QKV GEMM's
output when the GEMMs run FP8 (the benchmark's inputs are already FP8). Hopper has no published
FP8 SDPA curve: refused there.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import profile_key
from sp_planner.cost.kernel_benchmarks import B200_CAUSAL_TFLOPS, B200_TOKENS, _points, log_interp
from sp_planner.specs.hardware import HardwareProfile

FP8_SDPA_TOKENS = B200_TOKENS  # both files measure these lengths
# (fwd_tflops_per_sec, bwd_tflops_per_sec) of the fp8 rows, then of the bf16 rows, per file.
FP8_SDPA_TFLOPS: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "B200": {
        "fp8": ((196.081, 516.222, 974.247, 1230.650, 1502.114, 1692.390, 1781.408, 1815.241, 1829.603),
                (169.939, 376.804, 555.968, 972.284, 1254.687, 1469.494, 1582.236, 1626.615, 1616.126)),
        "bf16": B200_CAUSAL_TFLOPS["cudnn"],  # the same file's bf16 rows, the B200 profile's curves
    },
    "GB200": {
        "fp8": ((470, 870, 1324, 1663, 1894, 2033, 2124, 2181, 2172),
                (301, 547, 671, 1088, 1263, 1373, 1429, 1450, 1440)),
        "bf16": ((408, 733, 1068, 1378, 1583, 1673, 1687, 1592, 1471),
                 (328, 528, 656, 1054, 1211, 1303, 1311, 1247, 1188)),
    },
}
# Each profile's measured chip: B300 takes B200's file and GB300 GB200's (same generation, the
# same host pairing); no FP8 SDPA run is published for either.
FP8_SDPA_CHIP: dict[str, str] = {"B200": "B200", "B300": "B200", "GB200-NVL72": "GB200", "GB300-NVL72": "GB200"}
_CHIP_BY_KEY: dict[str, str] = {name.lower(): chip for name, chip in FP8_SDPA_CHIP.items()}


def fp8_sdpa_chip(hardware: HardwareProfile) -> str | None:
    """The chip whose FP8 SDPA measurements the profile's GPU takes (cost.families.profile_key);
    None where none is published."""
    return _CHIP_BY_KEY.get(profile_key(hardware))


def fp8_attention_problem(hardware: HardwareProfile) -> str | None:
    """Why FP8 attention cannot be timed on `hardware` (no published FP8 SDPA curve), or None: what
    sp-plan's --fp8-attention and a plan file's plan.fp8_attention are refused with."""
    if fp8_sdpa_chip(hardware) is not None:
        return None
    return f"no published FP8 attention curve for {hardware.name} (modelled on {', '.join(FP8_SDPA_CHIP)})"


def fp8_speedup(chip: str, tokens, *, backward: bool) -> np.ndarray:
    """cuDNN FP8 over BF16 SDPA throughput on `chip` at `tokens` (log-linear, flat past the ends)."""
    fp8, bf16 = FP8_SDPA_TFLOPS[chip]["fp8"], FP8_SDPA_TFLOPS[chip]["bf16"]
    ratio = np.divide(fp8[int(backward)], bf16[int(backward)])
    return log_interp(FP8_SDPA_TOKENS, ratio, np.asarray(tokens, dtype=np.float64))


def with_fp8_attention(hardware: HardwareProfile) -> HardwareProfile:
    """The profile with its attention curves scaled by cuDNN's FP8/BF16 SDPA ratio (once: a
    profile already marked attention_fp8 is returned as it is)."""
    if hardware.efficiency.attention_fp8:
        return hardware
    chip = fp8_sdpa_chip(hardware)
    if chip is None:
        raise ValueError(f"no published FP8 attention (cuDNN FP8 SDPA) curve for {hardware.name}; "
                         f"FP8 attention is modelled on {', '.join(FP8_SDPA_CHIP)}")
    eff = hardware.efficiency
    scaled: dict[str, object] = {"attention_fp8": True}
    for name, backward in (("attention_fwd", False), ("attention_bwd", True)):
        curve = getattr(eff, name)
        tokens = tuple(p.tokens for p in curve)
        values = np.asarray([p.efficiency for p in curve]) * fp8_speedup(chip, tokens, backward=backward)
        scaled[name] = _points(tokens, values)
    return hardware.model_copy(update={"efficiency": eff.model_copy(update=scaled)})
