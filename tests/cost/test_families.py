"""cost.families: one table of the built-in profiles' GPU families, and the sets derived from it."""

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
