"""Where the attention curves that replace a profile's own come from, in the profile's `sources`
form, so that a report (report.assumptions) and a plan file cite the curve that times the plans,
not the profile's own curve's benchmark beside another kernel's numbers."""

from __future__ import annotations

from sp_planner.cost.families import BLACKWELL_PROFILES, HOPPER_PROFILES, profile_key
from sp_planner.specs.hardware import HardwareProfile

KERNEL_NAMES: dict[str, str] = {"fa2": "flash-attn 2", "fa3": "FlashAttention-3", "cudnn": "cuDNN's fused attention",
                                "sdpa": "PyTorch SDPA's flash backend", "npu": "the NPU's fused attention"}
FIELDS = ("efficiency.attention_fwd", "efficiency.attention_bwd")
UNFUSED_LEAD = "not what times attention here: Transformer Engine's unfused attention does (sp_planner.cost.kernels); "

# Each restates the comment beside the figures it names (cost.attention_kernels, cost.kernel_benchmarks).
_HOPPER = ("FlashAttention-3 paper arXiv:2407.08608 (H100 SXM5), {name} non-causal head_dim 128 at 512..16K "
           "tokens over 989 TFLOPS (sp_planner.cost.attention_kernels._HOPPER_TFLOPS)")
_HOPPER_SDPA = ("PyTorch SDPA's flash backend measured on an H200 (sp_planner.cost.kernel_benchmarks.SDPA_H200_FWD "
                "and SDPA_H200_BWD)")
_BLACKWELL = ("NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts at 0b1577c8, B200 causal BF16 "
              "(sdpa_bf16_benchmark_results_NVIDIA_B200.csv, backend {backend}), over the kernel's causal ratio, "
              "over the profile's peak (sp_planner.cost.kernel_benchmarks.B200_CAUSAL_TFLOPS)")
_BLACKWELL_BACKEND = {"fa2": "flash_attention (flash-attn 2.7.4)", "sdpa": "pyt_flash_attention"}


def replaced_curve_sources(hardware: HardwareProfile, kernel: str, own_kernel: str | None) -> dict[str, str]:
    """The `sources` entries of the attention curves once `kernel`'s published ones replace the
    profile's own (`own_kernel`'s, None where unnamed); {} where no published set is known here."""
    name = profile_key(hardware)
    if name in HOPPER_PROFILES:
        origin = _HOPPER_SDPA if kernel == "sdpa" else _HOPPER.format(name=KERNEL_NAMES.get(kernel, kernel))
    elif name in BLACKWELL_PROFILES and kernel in _BLACKWELL_BACKEND:
        origin = _BLACKWELL.format(backend=_BLACKWELL_BACKEND[kernel])
    else:
        return {}
    instead = "" if own_kernel is None else f" ({KERNEL_NAMES.get(own_kernel, own_kernel)}'s)"
    line = f"{KERNEL_NAMES.get(kernel, kernel)}'s curve, which times the plans in place of the profile's own{instead}: "
    return {field: line + origin for field in FIELDS}


def unfused_sources(hardware: HardwareProfile) -> dict[str, str]:
    """Under Transformer Engine's unfused attention (cost.kernels) the curves time no attention: say so
    before their own source."""
    own = {field: hardware.sources.get(field, "no source given in the profile") for field in FIELDS}
    # A plan file's profile holds the line already (load_plan_file sets the kernel again).
    return {field: text if text.startswith(UNFUSED_LEAD) else UNFUSED_LEAD + text for field, text in own.items()}
