"""flags.kernel_choice: the note that says how a framework's flags run the --attention-kernel that
timed the plans, or that they cannot."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import ATTENTION_KERNELS, framework_kernel
from sp_planner.flags.kernel_choice import kernel_choice_note

H100 = load_hardware("h100-sxm")
A800 = load_hardware("a800")


@pytest.mark.parametrize(("framework", "chosen", "runs", "how"), [
    ("megatron", "fa3", "cudnn", "add --attention-backend flash to them (with flash-attn 3 installed"),
    ("megatron", "fa2", "cudnn", "add --attention-backend flash to them (with flash-attn 2 and not 3 installed)"),
    ("megatron", "cudnn", "fa2", "add --attention-backend fused to them"),
    ("megatron", "sdpa", "cudnn", "Megatron-LM has no SDPA backend"),
    ("yunchang", "fa3", "fa2", "use attn_type=AttnType.FA3 (flash-attn 3) in place of AttnType.FA"),
    ("yunchang", "sdpa", "fa2", "AttnType.TORCH runs the forward pass only"),
    ("deepspeed", "fa3", "fa2", 'attn_implementation="flash_attention_3"'),
    ("torchtitan", "fa3", "sdpa", "torchtitan has no option for it"),
])
def test_a_kernel_the_flags_do_not_run_says_how(framework, chosen, runs, how):
    note = kernel_choice_note(framework, chosen, runs)
    assert note is not None and note.startswith(
        f"the plans are timed with {chosen} attention (--attention-kernel), but {framework}'s flags run {runs}: ")
    assert how in note


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
def test_no_note_without_a_choice_or_for_the_kernel_the_flags_run(kernel):
    assert kernel_choice_note("megatron", None, "cudnn") is None
    assert kernel_choice_note("yunchang", kernel, kernel) is None


@pytest.mark.parametrize(("framework", "hardware", "kernel"), [
    ("megatron", H100, "cudnn"), ("megatron", A800, "fa2"), ("torchtitan", H100, "sdpa"),
    ("yunchang", H100, "fa2"), ("deepspeed", A800, "fa2"), ("mindspeed", H100, "npu"),
])
def test_the_kernel_each_framework_runs(framework, hardware, kernel):
    # cost.attention_kernels FRAMEWORK_KERNEL by GPU generation, whether or not a curve is published
    # (MindSpeed's NPU kernel has none on H100, where default_kernel falls back to the profile's).
    assert framework_kernel(framework, hardware) == kernel
