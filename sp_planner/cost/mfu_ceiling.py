"""The best MFU ever published for a GPU family and precision, as a ceiling on predictions.

A plan predicted to use more of the peak than any published training run has is missing a cost
the model does not see (kernel shapes, clocks under sustained load, stragglers). Its step is
stretched to the ceiling (the extra seconds are a named part of the step, `mfu_ceiling_s`); the
search still orders such plans by their uncapped time. The ceiling bounds hardware-executed FLOPs
(causal attention as run, recompute included) by a published model-FLOPs MFU, which counts at
least as much work per step, so it is a lenient bound.
"""

from __future__ import annotations

import numpy as np

from sp_planner.specs.hardware import HardwareProfile

# (family, precision) -> (best published MFU, source).
BEST_PUBLISHED_MFU: dict[tuple[str, str], tuple[float, str]] = {
    ("ampere", "bf16"): (0.72, "FlashAttention-2 paper (arXiv 2307.08691) Table 1: GPT3-2.7B at 8K tokens on "
                               "8 x A100 80GB, 225 TFLOPS/GPU, '72% model FLOPs utilization' (full-square FLOPs)"),
    ("hopper", "bf16"): (0.47, "Megatron-LM README: 'up to 47% Model FLOP Utilization (MFU) on H100 clusters' "
                               "(2B-462B models, sequence 4096; NVIDIA's performance summary)"),
}
# Built-in profiles (lower-cased names) by GPU family; a family without an entry above (or a
# profile not listed) has no ceiling.
PROFILE_FAMILY: dict[str, str] = {
    "a100-40gb": "ampere", "a100-80gb": "ampere", "a800": "ampere",
    "h100-sxm": "hopper", "h200": "hopper", "h800": "hopper", "b200": "blackwell",
}


def best_published_mfu(hardware: HardwareProfile, precision: str = "bf16") -> float | None:
    family = PROFILE_FAMILY.get(hardware.name.lower())
    entry = BEST_PUBLISHED_MFU.get((family, precision)) if family else None
    return entry[0] if entry else None


def mfu_ceiling_s(hardware: HardwareProfile, hardware_flops_per_gpu, step_s, precision: str = "bf16"):
    """Seconds to add so that hardware FLOPs / (step x peak) stays at or below the ceiling."""
    ceiling = best_published_mfu(hardware, precision)
    if ceiling is None:
        return np.zeros(np.shape(step_s))
    floor_s = np.asarray(hardware_flops_per_gpu, dtype=np.float64) / (hardware.peak_bf16_flops * ceiling)
    return np.maximum(0.0, floor_s - step_s)
