"""What a framework's flags need to run the attention kernel sp-plan --attention-kernel timed.

The flags select no attention kernel: each framework runs its own (cost.attention_kernels
FRAMEWORK_KERNEL), so a plan timed with another kernel says how to make the run use it, or that
the framework cannot.
"""

from __future__ import annotations

# How to run each kernel in a framework, where its default is another: framework -> kernel -> how.
# Megatron-LM: --attention-backend {flash, fused, unfused, local, auto} (megatron/training/
# arguments.py, AttnBackend; auto leaves the choice to Transformer Engine, which prefers cuDNN's
# FusedAttention on Hopper and newer and FlashAttention on Ampere: cost.attention_kernels);
# flash is flash-attn, version 3 from Transformer Engine v1.11 where it is installed on Hopper.
# yunchang: LongContextAttention's attn_type (yunchang/kernels AttnType: FA, FA3, TORCH, ...;
# the torch type runs forward only, flags.yunchang). DeepSpeed-Ulysses wraps the model's own
# attention (Hugging Face attn_implementation: flash_attention_2 by default, flash_attention_3,
# sdpa; SDPA picks cuDNN under sdpa_kernel). torchtitan and MindSpeed call one kernel each.
_HOW: dict[str, dict[str, str]] = {
    "megatron": {
        "fa2": "add --attention-backend flash to them (with flash-attn 2 and not 3 installed)",
        "fa3": "add --attention-backend flash to them (with flash-attn 3 installed, Transformer Engine >= 1.11)",
        "cudnn": "add --attention-backend fused to them",
        "sdpa": "Megatron-LM has no SDPA backend (--attention-backend flash, fused, unfused, local or auto), "
                "so no run of them matches the timed kernel",
    },
    "yunchang": {
        "fa3": "use attn_type=AttnType.FA3 (flash-attn 3) in place of AttnType.FA",
        "sdpa": "yunchang's AttnType.TORCH runs the forward pass only, so no training run matches the timed "
                "kernel",
        "cudnn": "yunchang has no cuDNN attention type, so no run of them matches the timed kernel",
    },
    "deepspeed": {
        "fa3": "DeepSpeed-Ulysses runs the model's own attention: load it with "
               'attn_implementation="flash_attention_3"',
        "sdpa": 'DeepSpeed-Ulysses runs the model\'s own attention: load it with attn_implementation="sdpa"',
        "cudnn": "DeepSpeed-Ulysses runs the model's own attention: load it with attn_implementation=\"sdpa\" "
                 "and run it under torch.nn.attention.sdpa_kernel(SDPBackend.CUDNN_ATTENTION)",
    },
}


def kernel_choice_note(framework: str, chosen: str | None, runs: str) -> str | None:
    """A note where the plans are timed with `chosen` (--attention-kernel) but `framework`'s flags
    run `runs` (cost.attention_kernels.framework_kernel); None where they agree or none was
    chosen. `framework` is the one whose flags follow the table (megatron for --framework all)."""
    if chosen is None or chosen == runs:
        return None
    how = _HOW.get(framework, {}).get(chosen, f"{framework} has no option for it, so no run of them matches the "
                                               "timed kernel")
    return (f"the plans are timed with {chosen} attention (--attention-kernel), but {framework}'s flags run "
            f"{runs}: {how}")
