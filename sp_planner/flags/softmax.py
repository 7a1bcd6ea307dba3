"""Which frameworks and context-parallel paths run a model whose attention softmax is not vanilla
(ModelSpec.softmax_type: gpt-oss's learnable sinks), and the flag Megatron-LM needs for it.

Megatron-LM runs it (--softmax-type, Megatron-LM dbc4129d18 "Sink Attention [gpt-oss 3/5]"; from
TransformerConfig.softmax_type at d98e8a64dd) in Transformer Engine's DotProductAttention, which
megatron-core 0.16.1 asserts is >= 2.8 for it (extensions/transformer_engine.py line 1283). TE
(d0067d0 dot_product_attention/utils.py get_attention_backend, "Filter: Softmax type") runs a
non-vanilla softmax in FusedAttention (cuDNN >= 9.13.1: common/fused_attn/fused_attn.cpp at v2.8,
"9.13.1+: vanilla, off-by-one, learnable") or its unfused path, never FlashAttention, and with
context parallelism only in FusedAttention as cp_comm_type a2a (context_parallel.py
attn_forward_func_with_cp: "Context parallelism only supports softmax_type=... with cp_comm_type =
'a2a'!"; TE 5e4e0b2c3, PR #2148). torchtitan runs it in its gpt_oss model (FlexAttention with
sinks) without context or pipeline parallelism; the other frameworks are refused for such a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sp_planner.specs.attention import LEARNABLE, VANILLA

if TYPE_CHECKING:  # flags.base reads softmax_failures
    from sp_planner.flags.base import FlagRequest
    from sp_planner.specs.model import ModelSpec

# Why each framework but Megatron-LM cannot run a sink softmax.
_CANNOT = {
    "mindspeed": "its attention is the NPU's fused kernel (torch_npu npu_fusion_attention), which sp-plan has found no "
                 "sink input for",
    "deepspeed": "it runs the model's own attention, which sp-plan times as flash-attn 2's, a kernel without a "
                 "sink logit (and under DeepSpeed-Ulysses the sinks would split with the heads); sp-plan has "
                 "verified no sink-aware kernel under it",
    "yunchang": "LongContextAttention calls flash-attn, SageAttention, FlashInfer or torch SDPA kernels (yunchang "
                "kernels.AttnType at 56118e0), none of which takes a sink logit",
}


def softmax_shape_flags(request: FlagRequest) -> list[str]:
    """Megatron-LM's --softmax-type for a model whose softmax is not vanilla."""
    kind = request.model.softmax_type
    return [] if kind == VANILLA else [f"--softmax-type {kind}"]


def softmax_failures(framework: str, request: FlagRequest) -> list[str]:
    """Where `framework` cannot run the model's softmax under the plan, one line each."""
    m, p = request.model, request.plan
    if m.softmax_type == VANILLA:
        return []
    what = f"{m.name}'s {m.softmax_type} softmax" + (" (attention sinks)" if m.softmax_type == LEARNABLE else "")
    if framework in _CANNOT:
        return [f"{what} cannot be run by {framework}: {_CANNOT[framework]}; use --framework megatron"]
    if framework == "torchtitan":
        # torchtitan's gpt_oss model (FlexAttention with sinks) raises NotImplementedError("CP support for
        # gpt-oss model is still in progress.") for context_parallel_degree > 1 (update_from_config), and
        # registers no pipelining_fn (models/gpt_oss/__init__.py model_registry at 5a3bc91, as every
        # release's TrainSpec), on which the trainer raises "Pipeline Parallel is enabled but gpt_oss
        # does not support pipelining".
        cp = [] if p.cp == 1 else [f"{what} with context parallelism (cp {p.cp}) cannot be run by torchtitan: its "
                                   "gpt_oss model refuses context_parallel_degree > 1; use --framework megatron "
                                   "with ulysses"]
        pp = [] if p.pp == 1 else [f"{what} with pipeline parallelism (pp {p.pp}) cannot be run by torchtitan: its "
                                   "gpt_oss model has no pipelining_fn; use pp 1 or --framework megatron"]
        return cp + pp
    if p.ring > 1:
        return [f"ring {p.ring} cannot run {what}: Transformer Engine runs it with context parallelism only as "
                "cp_comm_type a2a; move the degree to ulysses"]
    return []


def softmax_kernel_problem(model: ModelSpec, kernel: str | None, stack: str) -> str | None:
    """An --attention-kernel that cannot run the model's softmax: a non-vanilla one runs in TE's
    FusedAttention (cuDNN) alone; flash-attn's and SDPA's kernels take no sink logit (TE disables
    FlashAttention for it) and sp-plan has found no sink input to the NPU's fused kernel. Under
    torchtitan (`stack`, the framework that times the plans) no kernel is refused: its gpt_oss runs
    FlexAttention, which none of the curves is (softmax_timing_note says so)."""
    if model.softmax_type == VANILLA or kernel in (None, "cudnn") or stack == "torchtitan":
        return None
    return (f"--attention-kernel {kernel}: {model.name}'s {model.softmax_type} softmax runs in Transformer Engine's "
            "FusedAttention (cuDNN) only, and the other kernels take no sink logit; use "
            "--attention-kernel cudnn or leave it out")


def softmax_timing_note(model: ModelSpec, timed_kernel: str | None, hardware_name: str, stack: str) -> str | None:
    """Where a Megatron plan's attention is timed with another kernel's curve than the cuDNN one TE
    runs a non-vanilla softmax in (FusedAttention; on Ampere from cuDNN 8.9.3 with the sink softmax
    from 9.13.1: TE common/fused_attn/fused_attn.cpp at d0067d0): no cuDNN curve is published for
    the GPU (reference attention_kernels_and_cp_costs.md, Gaps: A100 / A800), so the profile's own
    stands in, said here rather than silently. Under torchtitan every curve stands in: its gpt_oss
    model runs FlexAttention only (torchtitan models/gpt_oss/README.md at cfb9326, attn_type
    "flex"). `timed_kernel` None: a measured profile's own curves (the user's kernel); `stack`: the
    framework that times the plans."""
    if model.softmax_type == VANILLA or timed_kernel is None:
        return None
    if stack == "torchtitan":
        return (f"torchtitan runs {model.name}'s {model.softmax_type} softmax in its gpt_oss model's FlexAttention, "
                f"which has no published attention curve: its attention is timed with the {timed_kernel} curve, "
                "a stand-in")
    if stack != "megatron" or timed_kernel == "cudnn":
        return None
    return (f"{model.name}'s {model.softmax_type} softmax runs in Transformer Engine's FusedAttention (cuDNN), whose "
            f"attention curve on {hardware_name} is not published: its attention is timed with the {timed_kernel} "
            "curve, a stand-in")


def softmax_notes(request: FlagRequest) -> list[str]:
    """What the Megatron-LM run needs installed for the softmax."""
    if request.model.softmax_type == VANILLA:
        return []
    return [f"--softmax-type {request.model.softmax_type} needs Transformer Engine >= 2.8 with cuDNN >= 9.13.1: TE "
            "runs it in FusedAttention (or its unfused path), never FlashAttention, and with context parallelism "
            "only as a2a."]
