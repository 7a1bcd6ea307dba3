"""The MoE router's gating GEMM, forward and backward (vectorized).

Every MoE layer scores its tokens with one GEMM of the rank's tokens (n/tp, the sequence-parallel
shard) by the replicated h x E router weight before it routes them: Megatron-Core's TopKRouter.gating
(router_gating_linear, megatron/core/transformer/moe/moe_utils.py RouterGatingLinearFunction, lines
1324-1397 at 9c5258f1, te_general_gemm forward, data and weight gradient), torchtitan's
TokenChoiceTopKRouter gate (an nn.Linear). It runs whatever the routing (force-balanced routing
replaces the logits after the GEMM, router.py TopKRouter.forward) and outside FP8 (bf16 operands).
Three GEMMs a layer and micro-batch, each at cost.gemm_shapes' K and output-size ratios for its
shape (layer_gemm_factors): forward tokens x E outputs over K = h; data gradient tokens x h over
K = E; weight gradient h x E over K = tokens. Dense layers have no router: the times are the
MoE-average layer's (x the share of MoE layers).

Megatron's --moe-router-dtype fp32 (TransformerConfig.moe_router_dtype; Megatron-LM's
examples/moe_recipes set it, e.g. qwen3_30b/h100/bf16_32GPU_TP1PP1EP8.yaml line 138 at b1c2006cf;
Megatron-Core's default None keeps the input's bf16, as Megatron-Bridge's Qwen3 MoE recipes do),
`router_dtype` "fp32" (TopKRouter.gating, router.py lines 119-124 at 9c5258f1, 106-111 at d98e8a64;
RouterGatingLinearFunction, moe_utils.py lines 1324-1397 at 9c5258f1, 1357-1433 at d98e8a64, which
adds only a cast of the bias to the forward): the forward is the same bf16 GEMM (te_general_gemm on
the bf16 input and weight) with an fp32 output; the backward casts the weight and the saved input to
fp32 and runs both gradient GEMMs on fp32 operands into fp32, which Transformer Engine sends to TF32
tensor cores (common/gemm/cublaslt_gemm.cu lines 444-448 at v2.14: CUBLAS_COMPUTE_32F_FAST_TF32 when
A, B and D are all fp32), at the GPU's TF32 peak (TF32_DENSE_FLOPS: half the bf16 dense peak on the
datasheets) x efficiency.gemm; then casts the data gradient back to the input's bf16 and the weight
gradient to the weight's bf16, memory passes (fp32_router_cast_bytes). The TF32 GEMMs keep bf16's K
and output-size ratios (layer_gemm_factors), an assumption that OpenXLA's matmul table
(cost.gemm_shapes; its "f32xf32->f32" entries run on TF32 tensor cores: 336-346 TFLOPS on H100 at k
4096, five times FP32's 67 without them) bounds: TF32 loses less to a short K than bf16 (H100, the
three shapes' mean over k 4096: 0.68 at k 256 against bf16's 0.60, 0.95 at k 1024 against 0.88) but
reaches a smaller share of its peak at k 4096 (0.69 against bf16's 0.81), so on H100 this times a
TF32 GEMM within 3% at k 256 (0.80 x 0.60 = 0.48 of the TF32 peak against 0.47 measured) and 15%
short at k 4096 and above (0.80 against 0.69); not fitted. The fp32 logits the forward writes (4
bytes a token and expert instead of 2) and the fp32 output gradient the backward reads are not
counted (E elements a token against the input's h). Nor the small kernels after the GEMM (top-k,
softmax, aux loss: kilobytes a token; cost.host counts their launches).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.gemm_shapes import layer_gemm_factors
from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.cost.families import profile_key
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s, sustained_fraction
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def router_gemm_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of the router's gating GEMM for one token, averaged over the layers."""
    if model.moe is None:
        return 0.0
    return moe_layer_fraction(model) * 2.0 * model.hidden_size * model.moe.num_experts


# The values Megatron-Core's moe_router_dtype takes that cost.router times (None: the input's dtype).
ROUTER_DTYPES: tuple[str, ...] = ("fp32",)
# Dense TF32 tensor-core peak by GPU (cost.families.profile_key), FLOP/s: the datasheets' figure
# with sparsity halved (their footnote, reference/hardware_and_models.md A.1), half the dense BF16
# peak of the profile (B200 and B300 0.49). Kept here, not in the profiles, so that plan.json
# (which embeds the profile) is unchanged; GPUs without a figure refuse the fp32 router.
TF32_DENSE_FLOPS: dict[str, float] = {
    # A100 datasheet TF32 156 dense / 312 sparse (glennklockwood.com/garden/processors/A100); the
    # A800 differs from the A100 in its NVLink only (reference A.2).
    "a100-40gb": 156e12, "a100-80gb": 156e12, "a800": 156e12,
    # H100 SXM datasheet TF32 989 with sparsity (archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html;
    # glennklockwood.com/garden/processors/h100 989.4 sparse); H200 494.5 dense (stas00/ml-engineering
    # compute/accelerator/README.md). H800's is unconfirmed (reference A.1: low confidence): refused.
    "h100-sxm": 494.5e12, "h200": 494.5e12,
    # NVIDIA's table (zdszero.github.io/Computer/Artificial_Intelligence/Hardware.html): HGX B200
    # TF32 2.2 PF, GB200 NVL72 2.5 PF a GPU, both with sparsity.
    "b200": 1100e12, "gb200-nvl72": 1250e12,
    # verda.com 'NVIDIA GB300 NVL72: GPU Architecture & Performance' (third-party, as the GB300
    # profile's peaks): TF32 without sparsity B300 1.1 PF, GB300 1.25 PF.
    "b300": 1100e12, "gb300-nvl72": 1250e12,
    # L40S datasheet TF32 183 dense / 366 sparse (mullet.se product 355414).
    "l40s": 183e12,
}


def fp32_router_cast_bytes(model: ModelSpec, tokens):
    """HBM bytes of the fp32 router's casts on one rank per MoE layer and micro-batch, backward
    (RouterGatingLinearFunction.backward, module docstring): the bf16 weight (h x E) and saved input
    (tokens x h) to fp32 (read 2, write 4 bytes an element), the fp32 data gradient (tokens x h) and
    weight gradient (h x E) back to bf16 (read 4, write 2): 6 bytes an element each."""
    assert model.moe is not None
    h, e = model.hidden_size, model.moe.num_experts
    cast = BF16_BYTES + FP32_BYTES
    return cast * 2 * (np.asarray(tokens, dtype=np.float64) * h + h * e)


def tf32_gemm_time_s(hardware: HardwareProfile, flops):
    """A GEMM on fp32 operands under Transformer Engine: TF32 tensor cores (module docstring), at the
    GPU's TF32 peak with the bf16 GEMMs' efficiency and sustained share (cost.kernels.gemm_time_s)."""
    peak = TF32_DENSE_FLOPS.get(profile_key(hardware))
    if peak is None:
        raise ValueError(f"hardware {hardware.name} has no TF32 peak in cost.router.TF32_DENSE_FLOPS: the fp32 "
                         "router's TF32 GEMMs (moe_router_dtype fp32) cannot be timed on it")
    return np.asarray(flops, dtype=np.float64) / (peak * hardware.efficiency.gemm * sustained_fraction(hardware))


def router_times_s(hardware: HardwareProfile, model: ModelSpec, tokens_per_tp_rank, router_dtype: str | None = None):
    """(forward, backward) seconds of the router's gating GEMM on one rank per layer and micro-batch,
    averaged over the layers (module docstring); zeros for a dense model. `router_dtype`: Megatron's
    moe_router_dtype, None (the input's bf16) or "fp32" (TF32 gradient GEMMs and their casts)."""
    if router_dtype is not None and router_dtype not in ROUTER_DTYPES:
        raise ValueError(f"router_dtype {router_dtype!r} is not one of None, {', '.join(ROUTER_DTYPES)}")
    tokens = np.asarray(tokens_per_tp_rank, dtype=np.float64)
    if model.moe is None:
        return np.zeros_like(tokens), np.zeros_like(tokens)
    flops = router_gemm_flops_per_token(model) * tokens
    fwd_factor, bwd_factor = layer_gemm_factors(hardware, model.hidden_size, model.moe.num_experts, tokens, False)
    fwd = gemm_time_s(hardware, flops) * fwd_factor
    if router_dtype is None:
        return fwd, gemm_time_s(hardware, 2 * flops) * bwd_factor
    casts = moe_layer_fraction(model) * fp32_router_cast_bytes(model, tokens)
    return fwd, tf32_gemm_time_s(hardware, 2 * flops) * bwd_factor + memory_pass_time_s(hardware, casts)
