"""cost.framework_kernels: the attention kernel each framework runs by default on a GPU."""

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.framework_kernels import default_kernel, framework_kernel

H100, A100, B200 = load_hardware("h100-sxm"), load_hardware("a100-80gb"), load_hardware("b200")
GB200 = load_hardware("gb200-nvl72")
B300, GB300 = load_hardware("b300"), load_hardware("gb300-nvl72")


@pytest.mark.parametrize("framework,hardware,kernel", [
    ("megatron", H100, "cudnn"),  # TE prefers cuDNN fused attention on Hopper+
    ("megatron", A100, "fa2"),  # and flash-attn 2 on Ampere
    ("torchtitan", H100, "sdpa"),  # SDPA's FA2-based flash backend
    ("yunchang", H100, "fa2"),
    ("megatron", B200, "cudnn"),  # the B200 profile's own curves are cuDNN's (cudnn-frontend)
    ("torchtitan", B200, "sdpa"),
    ("yunchang", B200, "fa2"),
    ("megatron", GB200, "cudnn"),
    ("torchtitan", GB200, "sdpa"),
    ("megatron", B300, "cudnn"),  # Blackwell Ultra: the profiles' own curves are cuDNN's (GB300)
    ("megatron", GB300, "cudnn"),
    ("torchtitan", GB300, "sdpa"),
    ("yunchang", B300, "fa2"),
])
def test_framework_defaults(framework, hardware, kernel):
    assert default_kernel(framework, hardware) == kernel


def test_a_calibrated_profile_keeps_its_measured_curves_under_every_framework_default():
    # hardware_profiles/measured/h200-2026-12-04.yaml: PyTorch's flash kernel measured on this
    # project's H200 by sp-calibrate. Named as the built-in H200's GPU (base_profile), the
    # framework's published default (FA3, cuDNN) would replace the measurement; it keeps it, and
    # --attention-kernel still picks a published curve.
    measured = load_hardware("hardware_profiles/measured/h200-2026-12-04.yaml")
    assert measured.calibration is not None and measured.calibration.attention
    mine = measured.model_copy(update={"base_profile": "H200"})
    for framework in ("megatron", "deepspeed", "torchtitan", "yunchang"):
        assert default_kernel(framework, mine) is None
    assert default_kernel("megatron", load_hardware("h200")) is not None
    assert with_attention_kernel(mine, "fa3").efficiency.attention_fwd != mine.efficiency.attention_fwd


@pytest.mark.parametrize("interface,hardware,runs,kernel", [
    # torchtitan v0.2.x: sdpa_kernel([CUDNN, FLASH, MATH], set_priority=True), cuDNN first everywhere.
    ("0.2", H100, "cudnn", "cudnn"),
    ("0.2", B200, "cudnn", "cudnn"),
    ("0.2", A100, "cudnn", None),  # no cuDNN curve on Ampere: the profile's own (FA2's)
    # 0.3.0 runs FlexAttention: SDPA flash's curve stands in; no interface is 0.3's.
    ("0.3", H100, "sdpa", "sdpa"),
    (None, H100, "sdpa", "sdpa"),
    ("0.3", A100, "sdpa", "sdpa"),
])
def test_torchtitans_kernel_follows_the_release_its_flags_target(interface, hardware, runs, kernel):
    assert framework_kernel("torchtitan", hardware, interface) == runs
    assert default_kernel("torchtitan", hardware, interface) == kernel


def test_an_unknown_torchtitan_interface_is_refused_and_other_frameworks_ignore_it():
    with pytest.raises(ValueError, match="unknown torchtitan interface '0.1'"):
        framework_kernel("torchtitan", H100, "0.1")
    assert framework_kernel("megatron", H100, "0.2") == "cudnn"
