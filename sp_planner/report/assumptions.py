"""The assumptions behind a report's numbers: the hardware profile's figures with their sources,
its efficiency constants, and the conventions the cost model counts FLOPs and bytes by."""

from __future__ import annotations

from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import CollectiveEfficiency, CurvePoint, HardwareProfile, LinkSpec
from sp_planner.units import format_bytes, format_tflops, format_tokens

NO_SOURCE = "no source given in the profile"

FIELD_LABELS: dict[str, str] = {
    "peak_bf16_flops": "dense bf16 peak per GPU",
    "hbm_bytes": "HBM capacity per GPU",
    "hbm_bandwidth_bytes_per_s": "HBM bandwidth per GPU",
    "gpus_per_node": "GPUs per node",
    "intra_node": "link inside a node (per GPU, per direction)",
    "inter_node": "network link (per GPU, per direction)",
    "memory_reserve_bytes": "HBM held back (CUDA context, NCCL, fragmentation)",
    "fabric": "network fabric",
    "measured_on": "calibrated on",
    "base_profile": "GPU of the built-in profile (its kernel benchmarks and tables apply)",
    "efficiency.gemm": "GEMM efficiency (achieved / peak)",
    "peak_fp8_flops": "dense FP8 peak per GPU",
    "efficiency.gemm_fp8": "FP8 GEMM efficiency (achieved / FP8 peak)",
    "efficiency.gemm_mxfp8": "MXFP8 GEMM efficiency (achieved / FP8 peak)",
    "efficiency.attention_fwd": "attention forward efficiency by block length",
    "efficiency.attention_bwd": "attention backward efficiency by block length",
    "efficiency.intra_node": "collective efficiency inside a node (busbw / line rate)",
    "efficiency.inter_node": "collective efficiency across nodes (busbw / line rate)",
    "efficiency.memory_bound": "memory-bound kernels' share of HBM bandwidth",
    "efficiency.sustained_fraction": "share of short-run GEMM (BF16) and attention rates sustained",
}

# Each entry restates the docstring of the module that implements it (named in the text).
CONVENTIONS: tuple[tuple[str, str], ...] = (
    ("full-square model TFLOPS and MFU",
     "3 x the forward FLOPs of the QKV, output and MLP projections, of attention over the full s x s "
     "square (no causal halving) and of the logits, for every token of the step; no recomputation "
     "counted: Megatron-LM's num_floating_point_operations before 8873b55d (2025-03-06; core_v0.11 "
     "and earlier; from core_v0.12.0 it counts causal attention as half the square), the model FLOPs "
     "of Korthikanti et al. 2022 and PaLM's MFU. Divided by step time and GPU count; MFU is that "
     "over the dense bf16 peak (sp_planner.cost.flops)."),
    ("hardware TFLOPS and hardware MFU",
     "FLOPs actually executed: the causal half of attention when the workload is causal, plus the "
     "recomputed forward (selective: core attention again; full: the whole layer again), in the "
     "same 3 x forward convention (sp_planner.cost.flops)."),
    ("numerics",
     "bf16 parameters (2 bytes), gradients accumulated in fp32 as Megatron-LM does for bf16 (4), "
     "fp32 master weights and Adam moments (12): 18 bytes per parameter before ZeRO sharding "
     "(Rajbhandari et al. 2020, ZeRO, section 3.1; docs/cost-model.md). With --precision fp8 or "
     "mxfp8 the layers' GEMMs run in FP8 through Transformer Engine, with FP8 weight copies (1 to 2 "
     "bytes per GEMM parameter), quantized saved inputs and cast-transpose passes; attention and "
     "the output layer stay bf16. torchtitan's torchao linears keep no FP8 weight copy (they cast "
     "every micro-batch) and leave MoE routed experts bf16 (sp_planner.cost.tp_gathers). "
     "Megatron-LM plans with the distributed optimizer keep the FP8 "
     "copies as the weights, without bf16 ones (--fp8-param-gather), and gather per-tensor FP8 "
     "weights in FP8; under Megatron-FSDP (ZeRO-3) per-tensor FP8 weights are the sharded "
     "parameters, gathered unit by unit in FP8 with no whole copy; other communication stays bf16 "
     "(sp_planner.cost.precision, cost.fp8_params)."),
    ("pipelines",
     "1F1B bubble (pp - 1) micro-batch times, divided by the virtual stages per rank for interleaved "
     "1F1B (Narayanan et al. 2021); the first stage stores the warm-up's micro-batches; uneven first "
     "and last stages hold their own layer counts (sp_planner.pipeline)."),
    ("communication bytes",
     "Bytes one GPU sends per optimizer step, by collective; an all-to-all, all-gather or "
     "reduce-scatter over n ranks sends (n-1)/n of the buffer. Collective time is bytes over bus "
     "bandwidth = line rate x the profile's measured efficiency (nccl-tests busbw convention)."),
    ("MoE expert GEMMs",
     "One GEMM per local expert, as Transformer Engine's GroupedLinear runs them under Megatron-LM's "
     "--moe-grouped-gemm, each timed by its own shape's contraction and output size; torchtitan "
     "plans run one grouped kernel (torch._grouped_mm), timed by DeepGEMM's grouped curve by rows "
     "per expert (sp_planner.cost.grouped_gemm)."),
    ("links",
     "Ranks are laid out as Megatron does (tp fastest, then ulysses, ring, dp, pp). A group is "
     "'inside a node' when every group of its shape fits within one node, else it uses the "
     "network (sp_planner.cost.links)."),
    ("units",
     "GiB = 2^30 bytes; GB/s = 10^9 bytes/s; TFLOPS = 10^12 FLOP/s; token counts with K = 1024."),
)


class AssumptionRow(FrozenModel):
    field: str
    name: str
    value: str
    # The field's own source first, then those of its parts ('latency_s: ...').
    sources: tuple[str, ...]


def profile_rows(profile: HardwareProfile) -> list[AssumptionRow]:
    """Every number of the profile, formatted, with the source its `sources` entry gives."""
    eff = profile.efficiency
    values: dict[str, str] = {
        "peak_bf16_flops": f"{format_tflops(profile.peak_bf16_flops / 1e12)} TFLOPS",
        "hbm_bytes": f"{format_bytes(profile.hbm_bytes)} ({profile.hbm_bytes / 1e9:,.1f} GB)",
        "hbm_bandwidth_bytes_per_s": f"{profile.hbm_bandwidth_bytes_per_s / 1e9:,.0f} GB/s",
        "gpus_per_node": str(profile.gpus_per_node),
        "intra_node": _link(profile.intra_node),
        "inter_node": _link(profile.inter_node),
        "memory_reserve_bytes": format_bytes(profile.memory_reserve_bytes),
        "fabric": (f"{profile.fabric.topology}, {profile.fabric.nodes_per_pod} nodes per pod, "
                   f"oversubscription {profile.fabric.oversubscription:g}:1"),
        "efficiency.gemm": f"{eff.gemm:.2f}",
        **({"peak_fp8_flops": f"{format_tflops(profile.peak_fp8_flops / 1e12)} TFLOPS"}
           if profile.peak_fp8_flops else {}),
        **({"efficiency.gemm_fp8": f"{eff.gemm_fp8:.3f}"} if eff.gemm_fp8 else {}),
        **({"efficiency.gemm_mxfp8": f"{eff.gemm_mxfp8:.3f}"} if eff.gemm_mxfp8 else {}),
        "efficiency.attention_fwd": _curve(eff.attention_fwd),
        "efficiency.attention_bwd": _curve(eff.attention_bwd),
        "efficiency.intra_node": _collectives(eff.intra_node),
        "efficiency.inter_node": _collectives(eff.inter_node),
        "efficiency.memory_bound": f"{eff.memory_bound:.2f}",
        **({"efficiency.sustained_fraction": f"{eff.sustained_fraction:.3f}"} if eff.sustained_fraction != 1.0 else {}),
    }
    if profile.measured_on:
        values["measured_on"] = profile.measured_on
    if profile.base_profile:
        values["base_profile"] = profile.base_profile
    rows = [
        AssumptionRow(field=field, name=FIELD_LABELS[field], value=value,
                      sources=_sources(profile.sources, field))
        for field, value in values.items()
    ]
    shown = set(values)
    # Sources of fields not listed above (a profile may cite more than the report shows).
    rows += [
        AssumptionRow(field=key, name=key, value="", sources=(text,))
        for key, text in sorted(profile.sources.items())
        if not any(key == field or key.startswith(field + ".") or field.startswith(key + ".")
                   for field in shown)
    ]
    return rows


def _sources(sources: dict[str, str], field: str) -> tuple[str, ...]:
    """The field's own source (else its nearest parent's), then the sources of its sub-fields."""
    own = NO_SOURCE
    parent = field
    while parent:
        if parent in sources:
            own = sources[parent]
            break
        parent = parent.rpartition(".")[0]
    parts = tuple(f"{key[len(field) + 1:]}: {text}" for key, text in sorted(sources.items())
                  if key.startswith(field + "."))
    if own == NO_SOURCE and parts:
        return parts
    return (own, *parts)


def _link(link: LinkSpec) -> str:
    return f"{link.kind}, {link.bandwidth_bytes_per_s / 1e9:,.0f} GB/s, {link.latency_s * 1e6:.1f} µs latency"


def _curve(points: tuple[CurvePoint, ...]) -> str:
    return ", ".join(f"{format_tokens(p.tokens)}: {p.efficiency:.2f}" for p in points)


def _collectives(eff: CollectiveEfficiency) -> str:
    text = ", ".join(f"{name.replace('_', '-')} {getattr(eff, name):.2f}"
                     for name in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"))
    if eff.all_to_all_by_group_size:
        points = ", ".join(f"{p.group_size} ranks {p.efficiency:.2f}" for p in eff.all_to_all_by_group_size)
        text += f"; all-to-all by group size: {points}"
    if eff.ep_kernel_all_to_all is not None:
        text += f"; EP kernels' all-to-all {eff.ep_kernel_all_to_all:.2f}"
    return text
