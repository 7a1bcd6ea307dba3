"""Which attention kernel each framework runs by default on a GPU, where its curve is published.

Frameworks run other kernels than the one a profile's curves measure (cost.attention_kernels
PROFILE_KERNEL; shared reference attention_kernels_and_cp_costs.md, section 2):
- Megatron-LM (Transformer Engine, attention_backend auto): cuDNN fused attention on Hopper and
  newer ("Disabling FlashAttention to give FusedAttention preference on Hopper+", TE
  dot_product_attention/utils.py), FlashAttention-2 on Ampere. TE has preferred it on sm90 since
  v1.2 (32db392, 2023-12) with NVTE_FUSED_ATTN/NVTE_FLASH_ATTN unset (read at v1.3, v2.2, v2.9);
  a run that sets NVTE_FUSED_ATTN=0 runs flash-attn instead (FA2 until TE v1.11 added FA3), as the
  NeMo-Framework-Launcher did by default in tags 24.01-24.07 (validation/corpus/nemo_long_sequence.yaml);
- MindSpeed: torch_npu.npu_fusion_attention;
- torchtitan by the release its flags target (TORCHTITAN_KERNEL): v0.2.x runs SDPA under
  sdpa_kernel([CUDNN, FLASH, MATH], set_priority=True), cuDNN first on every GPU (models/attention.py
  at v0.2.0-v0.2.2, since 6a3a9da9; d0ed9b42 put FLASH first, cuDNN first on sm100 only), flash where
  PyTorch's cuDNN SDPA refuses the head dim (flags.flash_head_dim.torchtitan_default_kernel); 0.3.0
  runs FlexAttention (release/0.3 models/common/config_utils.py), which no published curve measures:
  SDPA's flash curve (FA2-based, pytorch#142132: 329 TFLOPS on H100) stands in;
- yunchang: AttnType.FA, the flash-attn 2 package (FA3 only if built from source);
- DeepSpeed-Ulysses: the wrapped HF kernel, flash_attention_2 by default.
default_kernel is the framework's kernel where cost.attention_kernels publishes its curve on the
GPU, else None: the profile's own curves, which a framework default falls back to
(docs/cost-model.md).
"""

from __future__ import annotations

from sp_planner.cost.attention_kernels import kernel_curves, own_attention
from sp_planner.cost.families import BLACKWELL_PROFILES, HOPPER_PROFILES, profile_key
from sp_planner.specs.hardware import HardwareProfile

# torchtitan's kernel by config interface (flags.torchtitan.resolve_version's keys; module docstring).
TORCHTITAN_KERNEL: dict[str, tuple[str, str]] = {"0.3": ("sdpa", "sdpa"), "0.2": ("cudnn", "cudnn")}
# The kernel each framework runs by default on Hopper and newer / before (module docstring).
FRAMEWORK_KERNEL: dict[str, tuple[str, str]] = {
    "megatron": ("cudnn", "fa2"),
    "mindspeed": ("npu", "npu"),
    "deepspeed": ("fa2", "fa2"),
    "yunchang": ("fa2", "fa2"),
    "torchtitan": TORCHTITAN_KERNEL["0.3"],
}


def framework_kernel(framework: str, hardware: HardwareProfile, interface: str | None = None) -> str:
    """The kernel `framework` runs by default on this GPU (FRAMEWORK_KERNEL), curve or not;
    `interface`: torchtitan's, "0.3" (None) or "0.2" (TORCHTITAN_KERNEL)."""
    if framework not in FRAMEWORK_KERNEL:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORK_KERNEL)}")
    kernels = FRAMEWORK_KERNEL[framework]
    if framework == "torchtitan" and interface is not None:
        if interface not in TORCHTITAN_KERNEL:
            raise ValueError(f"unknown torchtitan interface {interface!r}; expected one of "
                             f"{', '.join(TORCHTITAN_KERNEL)}")
        kernels = TORCHTITAN_KERNEL[interface]
    hopper_or_newer, older = kernels
    return hopper_or_newer if profile_key(hardware) in (*HOPPER_PROFILES, *BLACKWELL_PROFILES) else older


def default_kernel(framework: str, hardware: HardwareProfile, interface: str | None = None) -> str | None:
    """The framework's kernel on this GPU where its curve is known; None: the profile's own, and
    always for a profile whose attention curves are its own (own_attention: sp-calibrate's
    `calibration.attention` or the user's edit; --attention-kernel still picks a published curve).
    `interface`: torchtitan's (framework_kernel)."""
    kernel = framework_kernel(framework, hardware, interface)
    if own_attention(hardware):
        return None
    return kernel if kernel_curves(hardware, kernel) is not None else None
