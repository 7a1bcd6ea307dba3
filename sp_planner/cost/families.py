"""The GPU family of each built-in hardware profile: one table that the attention-kernel curves,
the GEMM contraction curves, the MFU ceilings and the runtime memory all read.

Families: the same SM design (so the same kernel benchmarks apply), split further where the
published training records differ (Grace-hosted racks: cost.mfu_ceiling). Profiles not listed
(L20, L40S, MI300X, user profiles) have no family: only their own curves and no ceiling.
Every table keyed by profile is read at profile_key: a user profile that names its GPU
(base_profile) takes that built-in's entries, whatever its own name.
"""

from __future__ import annotations

from sp_planner.specs.hardware import HardwareProfile

# Built-in profiles (lower-cased names) by GPU family.
PROFILE_FAMILY: dict[str, str] = {
    "a100-40gb": "ampere", "a100-80gb": "ampere", "a800": "ampere",
    "h100-sxm": "hopper", "h200": "hopper", "h800": "hopper", "b200": "blackwell",
    "gb200-nvl72": "grace-blackwell", "b300": "blackwell-ultra", "gb300-nvl72": "grace-blackwell-ultra",
    "ascend-910b": "ascend",
}
# Blackwell-generation families (B200, GB200, and Blackwell Ultra's B300 and GB300).
BLACKWELL_FAMILIES: frozenset[str] = frozenset({"blackwell", "grace-blackwell", "blackwell-ultra",
                                                "grace-blackwell-ultra"})
HOPPER_PROFILES: tuple[str, ...] = tuple(name for name, family in PROFILE_FAMILY.items() if family == "hopper")
BLACKWELL_PROFILES: tuple[str, ...] = tuple(name for name, family in PROFILE_FAMILY.items()
                                            if family in BLACKWELL_FAMILIES)
# Families whose GPUs sit beside Grace CPUs (GB200 and GB300 NVL72 compute trays, 2 Grace per 4
# GPUs): cost.host's and cost.te_host's per-op host times.
GRACE_FAMILIES: frozenset[str] = frozenset({"grace-blackwell", "grace-blackwell-ultra"})
GRACE_PROFILES: frozenset[str] = frozenset(name for name, family in PROFILE_FAMILY.items() if family in GRACE_FAMILIES)
# CUDA compute capability (major, minor) of each built-in NVIDIA profile's GPU, which kernels gate
# on (flags.flash_head_dim): NVIDIA's CUDA GPUs table (https://developer.nvidia.com/cuda-gpus: A100
# 8.0, L40S and L20 (Ada) 8.9, H100 9.0, B200 / GB200 10.0, B300 / GB300 10.3); A800, H800 and H200
# are A100, H100 and H100-class chips. Transformer Engine 5535b09 names the same: "sm103 (B300),
# sm89 (L40S)". MI300X and Ascend have none.
COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {
    "a100-40gb": (8, 0), "a100-80gb": (8, 0), "a800": (8, 0), "l20": (8, 9), "l40s": (8, 9),
    "h100-sxm": (9, 0), "h200": (9, 0), "h800": (9, 0), "b200": (10, 0), "gb200-nvl72": (10, 0),
    "b300": (10, 3), "gb300-nvl72": (10, 3),
}


def profile_key(hardware: HardwareProfile) -> str:
    """The key of the profile's GPU in the cost model's tables (lower-cased built-in names): its
    base_profile where it names one, else its own name."""
    return (hardware.base_profile or hardware.name).lower()


def compute_capability(hardware: HardwareProfile) -> tuple[int, int] | None:
    """The profile's CUDA compute capability (COMPUTE_CAPABILITY at profile_key); None for a GPU
    that is not a built-in NVIDIA one (a user profile naming no base_profile, MI300X, Ascend)."""
    return COMPUTE_CAPABILITY.get(profile_key(hardware))


def gpu_generation(profile_name: str) -> str | None:
    """The GPU generation of a built-in profile ("ampere", "hopper", "blackwell" for B200, GB200,
    B300 and GB300, "ascend"), None for profiles of no family (L20, L40S, MI300X, user profiles).
    The prediction band groups the validation runs by it (validation.band)."""
    family = PROFILE_FAMILY.get(profile_name.lower())
    if family is None:
        return None
    return "blackwell" if family in BLACKWELL_FAMILIES else family


def on_npu(profile: HardwareProfile) -> bool:
    """Whether the profile's chips are Ascend NPUs (the built-in or a profile naming it, or HCCS links)."""
    return gpu_generation(profile_key(profile)) == "ascend" or profile.intra_node.kind == "hccs"
