"""cost.families: one table of the built-in profiles' GPU families, and the sets derived from it."""

import pytest

from sp_planner.catalog import builtin_hardware_names
from sp_planner.cost.families import BLACKWELL_PROFILES, GRACE_PROFILES, HOPPER_PROFILES, PROFILE_FAMILY


def test_every_family_entry_names_a_builtin_profile():
    # A renamed or removed profile would silently lose its curves and ceilings otherwise.
    builtins = {name.lower() for name in builtin_hardware_names()}
    assert set(PROFILE_FAMILY) <= builtins
    # The profiles left without a family are the ones with only their own curves (module docstring).
    assert builtins - set(PROFILE_FAMILY) == {"l20", "l40s", "mi300x"}


def test_derived_sets():
    assert set(HOPPER_PROFILES) == {"h100-sxm", "h200", "h800"}
    assert set(BLACKWELL_PROFILES) == {"b200", "gb200-nvl72", "b300", "gb300-nvl72"}
    # Grace hosts: the NVL72 racks (2 Grace CPUs per 4 GPUs), not the x86 HGX/DGX B200 and B300.
    assert GRACE_PROFILES == {"gb200-nvl72", "gb300-nvl72"}


def test_profile_key_is_the_named_gpu_else_the_name():
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.families import profile_key

    h100 = load_hardware("H100-SXM")
    assert profile_key(h100) == "h100-sxm" and PROFILE_FAMILY[profile_key(h100)] == "hopper"
    assert profile_key(h100.model_copy(update={"name": "my-h100"})) == "my-h100"
    assert profile_key(h100.model_copy(update={"name": "my-h100", "base_profile": "H100-SXM"})) == "h100-sxm"


def _gpu_tables(hardware) -> tuple:
    """Every cost-model lookup keyed by the profile's GPU, read for `hardware`."""
    import numpy as np

    from sp_planner.cost.attention_kernels import causal_ratio, head_dim_rounding, kernel_curves
    from sp_planner.cost.collective_sizes import size_factor
    from sp_planner.cost.fp8_attention import fp8_sdpa_chip
    from sp_planner.cost.framework_kernels import default_kernel
    from sp_planner.cost.gemm_outputs import has_output_table, output_ratio
    from sp_planner.cost.gemm_shapes import contraction_ratio
    from sp_planner.cost.host import host_s_per_op
    from sp_planner.cost.hybridep import hybridep_rates
    from sp_planner.cost.mfu_ceiling import best_published_mfu
    from sp_planner.cost.overlap import gpu_sm_count
    from sp_planner.cost.runtime_memory import p2p_channels_per_peer
    from sp_planner.cost.te_host import te_module_extra_s

    k = np.array([1024.0, 4096.0, 16384.0])
    return (
        best_published_mfu(hardware), best_published_mfu(hardware, "fp8"),
        tuple(default_kernel(f, hardware) for f in ("megatron", "deepspeed", "torchtitan")),
        tuple(kernel_curves(hardware, kernel) for kernel in ("fa2", "fa3", "cudnn", "sdpa", "npu")),
        causal_ratio(hardware, backward=False), head_dim_rounding(hardware),
        fp8_sdpa_chip(hardware), has_output_table(hardware), tuple(output_ratio(hardware, 1e6, k)),
        tuple(contraction_ratio(hardware, k)), host_s_per_op(hardware), te_module_extra_s(hardware),
        hybridep_rates(hardware), gpu_sm_count(hardware),
        tuple(p2p_channels_per_peer(hardware, np.array([8.0]), 1, 8)),
        tuple(size_factor(hardware, "all_reduce", np.array([1e6, 1e8]), 8)),
    )


@pytest.mark.parametrize("name", ["H100-SXM", "A800", "B200", "GB200-NVL72", "Ascend-910B", "MI300X"])
def test_a_renamed_copy_that_names_its_gpu_reads_every_table_of_it(name):
    from sp_planner.catalog import load_hardware

    builtin = load_hardware(name)
    renamed = builtin.model_copy(update={"name": "my-cluster", "base_profile": name})
    assert _gpu_tables(renamed) == _gpu_tables(builtin)


def test_a_renamed_copy_of_no_gpu_reads_the_generic_entries():
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.mfu_ceiling import best_published_mfu

    h100 = load_hardware("H100-SXM")
    generic = h100.model_copy(update={"name": "my-cluster"})
    assert _gpu_tables(generic) != _gpu_tables(h100)
    assert best_published_mfu(generic) is None and best_published_mfu(h100) is not None


def test_compute_capability_of_every_builtin_nvidia_profile():
    # NVIDIA's CUDA GPUs table: A100 8.0, Ada (L40S, L20) 8.9, H100 9.0, B200 10.0, B300 10.3; a user
    # profile reads its base_profile's; MI300X and Ascend have none.
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.families import COMPUTE_CAPABILITY, compute_capability
    builtins = {name.lower() for name in builtin_hardware_names()}
    assert builtins - set(COMPUTE_CAPABILITY) == {"mi300x", "ascend-910b"}
    assert {name: compute_capability(load_hardware(name)) for name in ("a800", "l40s", "l20", "h800", "b200", "b300",
                                                                       "gb300-nvl72", "mi300x")} == {
        "a800": (8, 0), "l40s": (8, 9), "l20": (8, 9), "h800": (9, 0), "b200": (10, 0), "b300": (10, 3),
        "gb300-nvl72": (10, 3), "mi300x": None}
    mine = load_hardware("l40s").model_copy(update={"name": "my-cluster", "base_profile": "l40s"})
    assert compute_capability(mine) == (8, 9)
    assert compute_capability(mine.model_copy(update={"base_profile": None})) is None
