"""The best MFU ever published for a GPU family and precision, as a ceiling on predictions.

A plan predicted to use more of the peak than any published training run has is missing a cost
the model does not see (kernel shapes, clocks under sustained load, stragglers). Its step is
stretched to the ceiling (the extra seconds are a named part of the step, `mfu_ceiling_s`); the
search still orders such plans by their uncapped time. The ceiling bounds the model's useful
FLOPs as run (causal attention as executed, recompute left out) by a published model-FLOPs MFU.
MFU leaves rematerialization out (PaLM, arXiv 2204.02311 section 4.1 and appendix B), and the
record runs executed their recompute on top of it: MosaicML's MPT-13B full-recompute row at 2K on
128 H100s (5,080 tokens/s/GPU) runs 42% MFU but 54% of peak in executed FLOPs, above the 47.10%
record, so a bound on executed FLOPs would hold such plans below what was measured. A record
published in Megatron's full-square count is converted to causal attention where its model is
stated (A100 BF16, H100 BF16) or taken from the source's tokens/s in the bounded count (Hopper FP8,
B200 FP8, Grace-Blackwell); B200 MXFP8's (Megatron-Bridge) already counts causal attention.
For MoE models the FLOPs are those a token runs through (top_k routed
plus shared experts, cost.flops._active_ffn_width), not all experts'.
An FP8/MXFP8 ceiling is a fraction of the profile's FP8 peak, as the published FP8 figures are
(model TFLOPS over the dense FP8 peak); the bf16 attention those runs execute counts against it
too, so it binds only where GEMMs dominate (short sequences). Where a source gives tokens/s/GPU,
the MFU is taken in the convention bounded here (bounded_flops_per_step: causal attention,
recompute left out), so the record run itself is never held below its measured rate.
GB200 is its own family: its published FP8/MXFP8 MFU (over its own 5 PF peak) is above B200's,
and a shared Blackwell bound would hold GB200 below its published runs (or be loose for B200).
Blackwell Ultra likewise: GB300's published FP8/MXFP8 405B runs (52.9% / 48.9%) are above GB200's,
and B300 (HGX) is a family of its own with no record.
No ceiling, for want of a credible published figure: B200, GB200 and GB300 BF16 (GB300's one BF16
row is GPT-OSS-120B, an MoE model); B300 at any precision (Megatron-Bridge's performance summaries
publish only MoE rows for DGX-B300: DeepSeek-V3, GPT-OSS-120B, Qwen3, Nemotron 3; no dense run on
B300 was found, and B200's records are not B300's). NVIDIA publishes BF16
only for MoE models (GPT-OSS-120B 16.6% on B200, DeepSeek-V3 31.3% on GB200, Megatron-Bridge
25.11-26.08); the one dense BF16 B200 run found, torchao's Llama3-8B baseline on 8 power-limited
B200s (8307.5 tokens/s/GPU = 19.0%, pytorch/ao mx_formats README at d2087681), is not a record of
the hardware either: B200's FP8 record (1676 model TFLOPS) run in BF16 would take at most twice as
long (the GEMMs at half the rate), so BF16 reaches at least 37% there. L20 and L40S (no training
MFU published; the USP paper's L20 table is attention-only); MI300X (no primary MFU or
model TFLOPS/GPU figure for training was found in the searchable sources; vendor pages and
reports seen give relative speedups; the best figure seen, ~522 TFLOPS/GPU bf16 on a 4-layer
Llama3-70B proxy under FSDP, is inferred from a ratio in a preliminary issue comment, ROCm/
TransformerEngine#78, so it is not used).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY, profile_key
from sp_planner.cost.flops import hardware_flops_per_step
from sp_planner.plan import RECOMPUTE_NONE
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# (family, precision) -> (best published MFU, source).
BEST_PUBLISHED_MFU: dict[tuple[str, str], tuple[float, str]] = {
    # FlashAttention-2 counts model FLOPs with the Megatron-LM paper's formula (Narayanan 2021 s5.1)
    # x 3/4, 72 B s l h^2 (1 + s/6h + V/16lh): the full s x s square (flash-attention training/
    # README.md, 'Training speed'). GPT3-2.7B (l 32, h 2560, V 50257) at s 8192: 1 + 0.5333 + 0.0383
    # = 1.5717 full, 1 + 0.2667 + 0.0383 = 1.3050 with causal attention; 72% x 1.3050 / 1.5717.
    ("ampere", "bf16"): (0.5978, "FlashAttention-2 paper (arXiv 2307.08691) Table 1: GPT3-2.7B at 8K tokens on "
                                 "8 x A100 80GB, 225 TFLOPS/GPU, '72% model FLOPs utilization' in the Megatron-LM "
                                 "paper's full-square count; 59.78% with causal attention"),
    # The README's prose says "up to 47%"; its own table (images/model_table.png, f2e5db402c "New
    # scaling figures on H100 GPUs") has the record, 49.45% in Megatron's count, which counts the
    # full s x s square; in the FLOPs this ceiling bounds (causal attention) it is 47.10%.
    ("hopper", "bf16"): (0.4710, "Megatron-LM README weak-scaling table (images/model_table.png, f2e5db402c; "
                                 "vocabulary 131,072, sequence 4096): 16B (hidden 6144, 32 layers, ffn 4h, MHA) "
                                 "on 192 H100s, 489.1 teraFLOP/s per GPU = 49.45% of 989 in Megatron's formula "
                                 "12lh^2(6 + s/h + V/2lh) per token; with causal attention (s/2h) x (6 + 1/3 + "
                                 "1/3) / (6 + 2/3 + 1/3) = 47.10% MFU"),
    # The highest FP8 model TFLOPS/GPU found in NVIDIA's performance pages (NeMo
    # docs/source/performance/performance_summary.md, Megatron-Bridge docs/performance-summary*.md
    # 25.09-26.08, NeMo performance_long_sequence.md), over the dense FP8 peak.
    # performance_summary.md history: 782 (4c73f77), 895 (3a8081f), 888 (8e3d65d), removed (d31653f).
    # The table gives tokens/s too; its model TFLOPS are 1.0757e12 a token for GPT3-175B at 2048
    # (895 / 832, 802 / 745: attention over the full square, and the padded vocabulary), 1.0619e12
    # in the bounded convention (3 x (96 x (24 h^2 + 2 s h) + 2 h V): h 12288, s 2048, V 50257).
    ("hopper", "fp8"): (0.4464, "NeMo docs performance_summary.md at 3a8081f ('24.07 vboost numbers', NeMo "
                                "24.07, DGX-H100, FP8): GPT3-175B on 512 GPUs at 2048, 832 tokens/s/GPU x 1.0619e12 "
                                "= 883 TFLOPS / 1979 dense FP8 = 44.64% MFU (the table's 895 model TFLOPS count the "
                                "full attention square; revised to 825 tokens/s, 888, at 8e3d65d)"),
    # B200 FP8 in the bounded convention: Megatron-Bridge's tables count causal attention (25.09
    # DGX-B200: 664 tokens/s/GPU x 2.524e12 = 1676, its own model TFLOPS), so their 405B row is the
    # record. NeMo 25.04's long-sequence Llama3-8B at 16K (1717 model TFLOPS, 38.2%) counts the full
    # s x s square (validation/corpus/nemo_long_sequence.yaml): 1717 / 7.080e10 full-square FLOPs a
    # token x 5.791e10 bounded = 1404 TFLOPS, 31.2%.
    ("blackwell", "fp8"): (0.3724, "Megatron-Bridge docs/performance-summary.md at fa0315ae2 ('25.09 NeMo "
                                   "Container', System DGX-B200, FP8): Llama3.1-405B on 128 GPUs at 8192, 664 "
                                   "tokens/s/GPU x 2.524e12 = 1676 TFLOPS / 4500 dense FP8 = 37.24% MFU (NeMo "
                                   "25.04's long-sequence Llama3-8B 16K, 1717 full-square model TFLOPS, is 31.2% "
                                   "with causal attention)"),
    ("blackwell", "mxfp8"): (0.350, "Megatron-Bridge docs/performance-summary.md, 25.11 NeMo container, DGX-B200: "
                                    "Llama3.1-405B FP8-MX 1576 model TFLOPS/GPU / 4500 dense FP8 = 35.0% MFU"),
    # GB200: the best dense pretraining rows of Megatron-Bridge docs/performance-summary*.md
    # (25.09-26.08, all commits); Llama3.1-405B at 8192 runs 2.524e12 bounded FLOPs per token
    # (126 x (6,375,342,080 GEMM + 268,435,456 causal attention) + 4,202,692,608 logits, x 3).
    ("grace-blackwell", "fp8"): (0.436, "Megatron-Bridge (NVIDIA-NeMo/Megatron-Bridge) docs/performance-summary-"
                                        "archive.md at 4ab94dfa, '26.04.01 NeMo Container', Model LLAMA3.1_405B, row "
                                        "DGX-GB200 256 GPUs FP8 (TP4 PP16 VP4): 864 tokens/s/GPU x 2.524e12 = 2181 "
                                        "TFLOPS / 5000 dense FP8 = 43.6% MFU (table: 2144 model TFLOPS, 42.9%)"),
    ("grace-blackwell", "mxfp8"): (0.404, "Megatron-Bridge docs/performance-summary.md at 17a381f9, '26.04.01 NeMo "
                                          "Container', Model LLAMA3.1_405B, row DGX-GB200 256 GPUs MXFP8: 800 "
                                          "tokens/s/GPU x 2.524e12 = 2019 TFLOPS / 5000 dense FP8 = 40.4% MFU (table: "
                                          "2004 model TFLOPS, 40.1%)"),
    # GB300: the best dense pretraining rows of the same tables (Megatron-Bridge docs/performance-summary*.md
    # at 4ab94dfa and 17a381f9, all containers with DGX-GB300 LLAMA3_70B / LLAMA3.1_405B rows, 26.02-26.06);
    # 405B at 8192 runs 2.524e12 bounded FLOPs per token (as above). The 70B rows are lower (FP8 5376
    # tokens/s/GPU x 449.2e9 = 48.3%, MXFP8 4864 = 43.7%).
    ("grace-blackwell-ultra", "fp8"): (0.529, "Megatron-Bridge docs/performance-summary-archive.md at 4ab94dfa, "
                                              "'26.06 NeMo Container', Model LLAMA3.1_405B, row DGX-GB300 256 GPUs "
                                              "FP8 (TP4 PP8 VP4): 1048 tokens/s/GPU x 2.524e12 = 2645 TFLOPS / 5000 "
                                              "dense FP8 = 52.9% MFU (table: 2646 model TFLOPS)"),
    ("grace-blackwell-ultra", "mxfp8"): (0.489, "Megatron-Bridge docs/performance-summary-archive.md at 4ab94dfa, "
                                                "'26.04 NeMo Container', Model LLAMA3.1_405B, row DGX-GB300 256 GPUs "
                                                "MXFP8 (TP2 PP8 CP2 VP4): 968 tokens/s/GPU x 2.524e12 = 2443 TFLOPS / "
                                                "5000 dense FP8 = 48.9% MFU (table: 2443 model TFLOPS)"),
    # Huawei's MindSpeed-LLM (ex-ModelLink) README figure 'linearity&mfu.png' (first at 0a7cbd35,
    # 2024-08-08; docs/en/appendixes.md since): GPT3-175B (TP8 PP16, seq 2048, fp16: same 16-bit cube
    # peak as bf16, examples/gpt3/pretrain_gpt3_175B_ptd.sh); the README's measured tables name Atlas
    # 900 A2 PoDc (910B). Its achieved petaFLOPs imply the profile's own 910B2 peak: 7968 NPUs x
    # 353.9 TFLOPS x 0.505 = 1424 PF, as plotted (~1420; the 910B1's 373.9 would give 1504). The FLOP
    # formula is not stated: with Megatron's 2024 one (full-square attention; MindSpeed is a Megatron
    # fork) the bounded FLOPs of that run are 0.9865 of it (53.1%, the bound 1.4% lenient); with
    # GEMMs only they would be 1.0138 of it (54.5%, 1.4% strict).
    ("ascend", "bf16"): (0.538, "MindSpeed-LLM (Ascend/MindSpeed-LLM) README figure linearity&mfu.png at "
                                "0a7cbd35: GPT3-175B on 128 Ascend 910B NPUs (Atlas 900 A2), 53.8% MFU "
                                "(50.5% at 7968 NPUs), over the 353.9 TFLOPS 910B2 cube peak"),
}
# A family (cost.families) without an entry above, or a profile without a family, has no ceiling.


def best_published_mfu(hardware: HardwareProfile, precision: str = "bf16") -> float | None:
    family = PROFILE_FAMILY.get(profile_key(hardware))
    entry = BEST_PUBLISHED_MFU.get((family, precision)) if family else None
    return entry[0] if entry else None


def ceiling_peak_flops(hardware: HardwareProfile, precision: str) -> float | None:
    """The peak a precision's published MFU divides by: the dense bf16 peak, or the FP8 peak
    (None where the profile has none: it models no FP8, so there is nothing to hold)."""
    return hardware.peak_bf16_flops if precision == "bf16" else hardware.peak_fp8_flops


def bounded_flops_per_step(model: ModelSpec, workload: Workload) -> float:
    """The FLOPs the ceiling bounds: the model's useful work as run (causal attention as executed),
    recompute left out as MFU leaves it out (module docstring)."""
    return float(hardware_flops_per_step(model, seq_len=workload.seq_len, global_batch=workload.global_batch,
                                         causal=workload.causal, recompute=RECOMPUTE_NONE))


def mfu_ceiling_s(hardware: HardwareProfile, hardware_flops_per_gpu, step_s, precision: str = "bf16"):
    """Seconds to add so that hardware FLOPs / (step x peak) stays at or below the ceiling."""
    ceiling = best_published_mfu(hardware, precision)
    peak = ceiling_peak_flops(hardware, precision)
    if ceiling is None or peak is None:
        return np.zeros(np.shape(step_s))
    floor_s = np.asarray(hardware_flops_per_gpu, dtype=np.float64) / (peak * ceiling)
    return np.maximum(0.0, floor_s - step_s)
