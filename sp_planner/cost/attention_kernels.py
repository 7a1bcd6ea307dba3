"""Which attention kernel a profile's curves measure, and each kernel's efficiency curves on a GPU.

A hardware profile's attention curves measure one kernel (`PROFILE_KERNEL`: FA3 on the Hopper
profiles, FA2 on Ampere, the NPU fusion kernel on Ascend). Frameworks run other kernels by
default (cost.framework_kernels), whose published curves are read here (kernel_curves).
Hopper curves are the FlashAttention-3 paper's H100 SXM5 measurements (arXiv 2407.08608, Fig. 5/6:
B*S = 16K, H*d = 2048, head_dim 128, non-causal, BF16) for FA2, FA3 and cuDNN, all in one setup, so
their ratios are like for like. They apply to every Hopper profile (H100/H200/H800: same SMs and
clocks; attention is compute-bound). Blackwell curves are NVIDIA's cudnn-frontend B200 benchmarks
(cost.kernel_benchmarks): cuDNN, flash-attn 2 and SDPA's flash backend; FA3 does not run there.
Blackwell Ultra (B300, GB300) profiles carry cuDNN's GB300 curves; FA2 and SDPA take B200's TFLOPS.
Where no curve is published for a kernel on a GPU, only the profile's own kernel can be chosen,
and a framework default falls back to it (docs/cost-model.md). Causal diagonal blocks run at
the kernel's measured causal/non-causal ratio (cost.kernel_benchmarks.CAUSAL_RATIO).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from sp_planner.choices import AttentionKernel
from sp_planner.cost.kernel_benchmarks import (
    B200_CAUSAL_TFLOPS,
    CAUSAL_RATIO,
    DEFAULT_CAUSAL_KERNEL,
    FA_RELEASE_FWD_BWD_D128,
    SDPA_H200_BWD,
    SDPA_H200_FWD,
    SDPA_H200_TOKENS,
    Curve,
    Curves,
    blackwell_curves,
    fa1_over_fa2,
    log_interp,
)
from sp_planner.cost.families import BLACKWELL_PROFILES, HOPPER_PROFILES, PROFILE_FAMILY, profile_key
from sp_planner.cost.kernel_sources import replaced_curve_sources, unfused_sources
from sp_planner.specs.hardware import CurvePoint, HardwareProfile
from sp_planner.specs.model import ModelSpec

ATTENTION_KERNELS: tuple[str, ...] = get_args(AttentionKernel)
H100_PEAK_TFLOPS = 989.0  # the peak the FA3 paper's utilisation figures divide by
_TOKENS = (512, 1024, 2048, 4096, 8192, 16384)


def _curve(tflops: tuple[float, ...], tokens: tuple[int, ...] = _TOKENS) -> tuple[CurvePoint, ...]:
    return tuple(CurvePoint(tokens=t, efficiency=round(v / H100_PEAK_TFLOPS, 3)) for t, v in zip(tokens, tflops))


# (forward, backward) TFLOPS at 512..16K tokens, head_dim 128, non-causal (FA3 paper figures).
_HOPPER_TFLOPS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fa2": ((309, 350, 362, 368, 370, 370), (214, 260, 291, 310, 318, 322)),
    "fa3": ((467, 565, 625, 638, 646, 648), (316, 424, 501, 542, 559, 561)),
    "cudnn": ((497, 574, 617, 609, 600, 595), (305, 408, 465, 499, 518, 516)),
}
_HOPPER_CURVES: dict[str, Curves] = {kernel: (_curve(fwd), _curve(bwd))
                                     for kernel, (fwd, bwd) in _HOPPER_TFLOPS.items()}
# PyTorch SDPA's flash backend: measured on an H200 (cost.kernel_benchmarks.SDPA_H200_FWD; 2-4%
# under the FA3 figure's FA2 forward, 5-8% under its backward at 2-8K; pytorch#142132 has native
# SDPA at 329 TFLOPS at (1, 24, 4608, 128) on H100).
_HOPPER_CURVES["sdpa"] = (_curve(SDPA_H200_FWD[0], SDPA_H200_TOKENS), _curve(SDPA_H200_BWD[0], SDPA_H200_TOKENS))

# Hopper and Blackwell profiles by family (cost.families). Blackwell Ultra (b300, gb300-nvl72) is
# Blackwell with twice the SFU exponent rate: its own cuDNN curves (GB300, cudnn-frontend), B200's
# FA2/SDPA TFLOPS below (none published on Ultra).
# The kernel each built-in profile's own attention curves measure (see each profile's sources).
PROFILE_KERNEL: dict[str, str] = {
    **{name: "fa3" for name in HOPPER_PROFILES},
    **{name: "cudnn" for name in BLACKWELL_PROFILES},
    "a100-40gb": "fa2", "a100-80gb": "fa2", "a800": "fa2", "l20": "fa2", "l40s": "fa2",
    "ascend-910b": "npu",
}

def measured_attention(hardware: HardwareProfile) -> bool:
    """Whether the profile's attention curves are sp-calibrate's measurement (calibration.attention)."""
    return hardware.calibration is not None and bool(hardware.calibration.attention)


def own_attention(hardware: HardwareProfile) -> bool:
    """Whether the profile's attention curves are its own, not its GPU's published ones: sp-calibrate's
    measurement (measured_attention), or curves edited in a copy of a built-in profile (they differ
    from its built-in's: base_profile or the same name). They time the plans unless --attention-kernel
    names a published kernel: a figure from the user's machine outranks a published benchmark."""
    if measured_attention(hardware):
        return True
    builtin = _builtin(hardware).efficiency
    return (builtin.attention_fwd, builtin.attention_bwd) != (hardware.efficiency.attention_fwd,
                                                              hardware.efficiency.attention_bwd)


def _builtin(hardware: HardwareProfile) -> HardwareProfile:
    """The built-in profile of the profile's GPU (base_profile; profile_key found one)."""
    from sp_planner.catalog.hardware import builtin_gpu, builtin_profiles  # the catalog loads YAML: on use

    name = builtin_gpu(hardware)
    return hardware if name is None else builtin_profiles()[name]


def kernel_curves(hardware: HardwareProfile, kernel: str) -> Curves | None:
    """(forward, backward) curves of `kernel` on `hardware`, or None where none is published."""
    name = profile_key(hardware)
    if PROFILE_KERNEL.get(name) == kernel or (kernel == "sdpa" and PROFILE_KERNEL.get(name) == "fa2"):
        # The built-in profile's own curves are that kernel's published ones; a calibrated or edited
        # profile's are its own, so the kernel's are read from the built-in it names (base_profile).
        own = _builtin(hardware) if own_attention(hardware) else hardware
        return own.efficiency.attention_fwd, own.efficiency.attention_bwd
    if name in HOPPER_PROFILES and kernel in _HOPPER_CURVES:
        return _HOPPER_CURVES[kernel]
    if name in BLACKWELL_PROFILES and kernel in B200_CAUSAL_TFLOPS:
        # Measured on B200; on GB200 (the same die at a higher peak) and on Blackwell Ultra
        # (B300, GB300) the B200 TFLOPS are taken as they are, over the profile's own peak (no FA2
        # or SDPA-flash benchmark is published there; Ultra's faster exponent may make it pessimistic).
        return blackwell_curves(kernel, hardware.peak_bf16_flops / 1e12)
    return None


def causal_ratio(hardware: HardwareProfile, *, backward: bool) -> tuple[CurvePoint, ...]:
    """Causal/non-causal throughput ratio of the profile's kernel by block length: the profile's
    own where set (with_attention_kernel), else that of the kernel its curves measure (FA2's for
    a kernel without a published causal curve)."""
    own = hardware.efficiency.attention_causal_bwd if backward else hardware.efficiency.attention_causal_fwd
    if own is not None:
        return own
    kernel = PROFILE_KERNEL.get(profile_key(hardware), DEFAULT_CAUSAL_KERNEL)
    return CAUSAL_RATIO.get(kernel, CAUSAL_RATIO[DEFAULT_CAUSAL_KERNEL])[1 if backward else 0]


def timed_kernel(hardware: HardwareProfile, chosen: str | None) -> str | None:
    """The kernel whose curves time the plans: `chosen` (cost.framework_kernels.default_kernel's or
    the user's), else the one the profile's own curves measure (PROFILE_KERNEL); None for a profile
    whose attention sp-calibrate measured or the user edited (own_attention: the user's kernel,
    unnamed) or a GPU without a named one."""
    if chosen is not None or own_attention(hardware):
        return chosen
    return PROFILE_KERNEL.get(profile_key(hardware))


# Megatron-LM's core attention before FlashAttention (cost.kernels.unfused_attention_time_s): for
# validating runs published before it (Korthikanti et al. 2022), and Transformer Engine's
# UnfusedDotProductAttention where TE runs it for Megatron (flags.flash_head_dim.te_runs_unfused);
# not an sp-plan choice (--attention-kernel), as no ring can run it.
UNFUSED = "unfused"
# A kernel that times plans: a named one, or TE's unfused attention (sp-plan --framework megatron,
# plan files: no profile holds efficiency.attention_unfused).
TimedKernel = Literal["fa2", "fa3", "cudnn", "sdpa", "npu", "unfused"]
# flash-attn's experimental Triton FlashAttention as llm-foundry ran it (attn_impl triton, its copy
# flash_attn_triton.py): for validating those runs; no framework sp-plan emits for runs it. Its
# author rates it "slightly slower" than FlashAttention v1 forward + backward on A100
# (cost.kernel_benchmarks.fa1_over_fa2), so it runs at FA1's measured fraction of FA2 on the
# generation's FA2 curves (the "slightly" is not quantified and not applied; on H100 it ran as
# compiled by llm-foundry's pre-MLIR Triton fork for sm90, which no benchmark measures).
TRITON_PORT = "flash-attn-triton"
CORPUS_ONLY_KERNELS: tuple[str, ...] = (UNFUSED, TRITON_PORT)


def _scaled(curve: Curve, tokens: tuple[int, ...], factor) -> Curve:
    """`curve` times `factor` (given at `tokens`) read at each of its points (linear in log
    tokens, flat beyond the ends, as cost.kernels.curve_efficiency), capped at 1."""
    at = log_interp(tokens, factor, [p.tokens for p in curve])
    return tuple(CurvePoint(tokens=p.tokens, efficiency=round(min(1.0, p.efficiency * float(r)), 3))
                 for p, r in zip(curve, at))


def triton_port_curves(hardware: HardwareProfile) -> tuple[Curves, Curves]:
    """((forward, backward) efficiency, (forward, backward) causal ratio) of TRITON_PORT: FA2's
    curves times FA1's non-causal fraction of FA2 (the figure is forward + backward, so both
    passes take it), and FA2's causal ratio times FA1's causal over non-causal fraction."""
    generation = PROFILE_FAMILY.get(profile_key(hardware))  # FA_RELEASE_FWD_BWD_D128 keys by it
    fa2 = kernel_curves(hardware, "fa2")
    if generation not in FA_RELEASE_FWD_BWD_D128 or fa2 is None:
        raise ValueError(f"no FlashAttention v1 benchmark for hardware {hardware.name!r}: the "
                         f"{TRITON_PORT} kernel is timed on Hopper and Ampere profiles only")
    non_causal, causal = fa1_over_fa2(generation)
    tokens = tuple(p.tokens for p in non_causal)
    fraction = np.array([p.efficiency for p in non_causal])
    causal_gain = np.array([p.efficiency for p in causal]) / fraction
    fwd_ratio, bwd_ratio = CAUSAL_RATIO["fa2"]
    return ((_scaled(fa2[0], tokens, fraction), _scaled(fa2[1], tokens, fraction)),
            (_scaled(fwd_ratio, tokens, causal_gain), _scaled(bwd_ratio, tokens, causal_gain)))


# The head dim each kernel computes a tile at, for a model head dim d (the time scales with it;
# the FLOPs counted stay d's):
# - flash-attn 2 (csrc/flash_attn/flash_api.cpp): head_size_rounded = round_multiple(d, 32) up to
#   192, else 256, and its kernels are instantiated at those dims; PyTorch SDPA's flash backend
#   vendors that file (aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp).
# - flash-attn 3 (hopper/flash_api.cpp round_up_headdim): 64, 96, 128, 192, 256.
# - Triton FlashAttention (flash_attn_triton.py, llm-foundry's copy): BLOCK_HEADDIM =
#   max(triton.next_power_of_2(d), 16).
# - cuDNN and the NPU kernel: d itself (cuDNN takes any multiple of 8 up to 256).
HEAD_DIM_ROUNDING: dict[str, str] = {
    "fa2": "fa2", "sdpa": "fa2", "fa3": "fa3", TRITON_PORT: "pow2", "cudnn": "none", "npu": "none",
}
_FA3_HEAD_DIMS = (64, 96, 128, 192, 256)


def head_dim_rounding(hardware: HardwareProfile) -> str:
    """The profile's head-dim rounding rule: its own where set, else its own kernel's."""
    own = hardware.efficiency.attention_head_dim_rounding
    return own if own is not None else HEAD_DIM_ROUNDING.get(PROFILE_KERNEL.get(profile_key(hardware), "cudnn"), "none")


def padded_head_dim(hardware: HardwareProfile, head_dim: int) -> int:
    """The head dim the profile's attention kernel computes at for a model's `head_dim`
    (HEAD_DIM_ROUNDING): the profile's own rule where set, else its own kernel's."""
    rule, d = head_dim_rounding(hardware), int(head_dim)
    if rule == "fa2":
        return -(-d // 32) * 32 if d <= 192 else max(256, d)
    if rule == "fa3":
        return next((t for t in _FA3_HEAD_DIMS if t >= d), d)
    if rule == "pow2":
        return max(16, 1 << (d - 1).bit_length())
    return d


def kernel_head_dim(hardware: HardwareProfile, model: ModelSpec) -> float:
    """The head dim a model's attention costs on the profile's kernel: its head dim rounded up to
    the kernel's tile; with MLA the mean of the query/key and the value dims, each rounded (the
    model's head_dim is their mean; 192 and 128 are tiles of every kernel here)."""
    if model.mla is None:
        return float(padded_head_dim(hardware, model.head_dim))
    qk = model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim
    return (padded_head_dim(hardware, qk) + padded_head_dim(hardware, model.mla.v_head_dim)) / 2


def with_attention_kernel(hardware: HardwareProfile, kernel: str | None) -> HardwareProfile:
    """The profile with `kernel`'s attention curves (unchanged for None or its own kernel)."""
    if kernel is None:
        return hardware
    if kernel == UNFUSED:
        efficiency = hardware.efficiency.model_copy(update={"attention_unfused": True})
        return hardware.model_copy(update={"efficiency": efficiency,
                                           "sources": hardware.sources | unfused_sources(hardware)})
    if kernel == TRITON_PORT:
        (fwd, bwd), (causal_fwd, causal_bwd) = triton_port_curves(hardware)
        efficiency = hardware.efficiency.model_copy(update={
            "attention_fwd": fwd, "attention_bwd": bwd,
            "attention_causal_fwd": causal_fwd, "attention_causal_bwd": causal_bwd,
            "attention_head_dim_rounding": HEAD_DIM_ROUNDING[TRITON_PORT]})
        return hardware.model_copy(update={"efficiency": efficiency})
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; expected one of {', '.join(ATTENTION_KERNELS)}")
    curves = kernel_curves(hardware, kernel)
    if curves is None:
        known = [k for k in ATTENTION_KERNELS if kernel_curves(hardware, k) is not None]
        choice = ("it has only its profile's own curve: omit --attention-kernel" if not known
                  else f"choose {known[0]}" if len(known) == 1 else f"choose one of {', '.join(known)}")
        raise ValueError(f"no published {kernel} attention curve for hardware {hardware.name!r}; {choice}")
    fwd, bwd = curves
    update: dict[str, object] = {"attention_fwd": fwd, "attention_bwd": bwd}
    if HEAD_DIM_ROUNDING[kernel] != head_dim_rounding(hardware):
        update["attention_head_dim_rounding"] = HEAD_DIM_ROUNDING[kernel]
    ratio = CAUSAL_RATIO.get(kernel, CAUSAL_RATIO[DEFAULT_CAUSAL_KERNEL])
    if ratio != (causal_ratio(hardware, backward=False), causal_ratio(hardware, backward=True)):
        update |= {"attention_causal_fwd": ratio[0], "attention_causal_bwd": ratio[1]}
    efficiency = hardware.efficiency.model_copy(update=update)
    # Another kernel's curves cite their own benchmark (cost.kernel_sources); the profile's own keep theirs.
    sources = {} if (fwd, bwd) == (hardware.efficiency.attention_fwd, hardware.efficiency.attention_bwd) else \
        replaced_curve_sources(hardware, kernel, PROFILE_KERNEL.get(profile_key(hardware)))
    return hardware.model_copy(update={"efficiency": efficiency, "sources": hardware.sources | sources})
