"""cli.profile_notes: one-line notes on how the hardware profile, as given, meets the job."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cli.profile_notes import edited_curves_note, generic_gpu_note


@pytest.mark.parametrize("builtin, changes, fix", [
    # A renamed copy: the built-ins of its peak and memory are named (it said only "names no built-in
    # GPU (base_profile)", leaving the field's value to the README).
    ("B200", {}, "its peak and memory are B200's: if that is its GPU, add base_profile: B200"),
    ("A800", {}, "its peak and memory are those of A100-80GB and A800: if its GPU is one, add base_profile: NAME"),
    ("H100-SXM", {"peak_bf16_flops": 900e12}, "if its GPU is a built-in profile's, add base_profile: NAME"),
])
def test_a_profile_of_no_builtin_gpu_says_which_base_profile_to_add(builtin, changes, fix):
    profile = load_hardware(builtin).model_copy(update={"name": "my-cluster", **changes})
    assert generic_gpu_note(profile) == (
        "hardware profile 'my-cluster' names no built-in GPU (base_profile); kernel curves, best published MFU, "
        f"GEMM and host tables fall back to generic values; {fix}")
    assert generic_gpu_note(profile.model_copy(update={"base_profile": builtin})) is None


def test_a_profile_whose_attention_curves_were_edited_says_they_time_the_plans():
    h100 = load_hardware("H100-SXM")
    fwd = tuple(p.model_copy(update={"efficiency": p.efficiency / 2}) for p in h100.efficiency.attention_fwd)
    mine = h100.model_copy(update={"name": "mine", "base_profile": "H100-SXM",
                                   "efficiency": h100.efficiency.model_copy(update={"attention_fwd": fwd})})
    assert edited_curves_note(mine, "cudnn", None) == (
        "hardware profile 'mine' holds attention curves of its own (not H100-SXM's): they time the plans in place "
        "of cudnn's published ones; --attention-kernel cudnn times those")
    # The built-in, a kernel the user named, and a kernel with no published curve say nothing.
    assert edited_curves_note(h100, "cudnn", None) is None
    assert edited_curves_note(mine, "cudnn", "fa3") is None
    assert edited_curves_note(mine.model_copy(update={"base_profile": None, "name": "my-cluster"}), "cudnn",
                              None) is None
