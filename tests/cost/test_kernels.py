"""cost/kernels.py's memory-bound passes: bytes over the profile's HBM bandwidth times its measured
memory-bound share."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.specs.hardware import MEMORY_BOUND_DEFAULT, HardwareProfile


def test_a_pass_runs_at_the_profiles_memory_bound_share():
    gb200 = load_hardware("gb200-nvl72")
    # 1 GB through 8 TB/s at the 0.73 cuDNN's norms reach on GB200: 171 us.
    assert float(memory_pass_time_s(gb200, 1e9)) == pytest.approx(1e9 / (8e12 * 0.73))
    halved = gb200.model_copy(update={"efficiency": gb200.efficiency.model_copy(update={"memory_bound": 0.365})})
    assert float(memory_pass_time_s(halved, 1e9)) == pytest.approx(2 * float(memory_pass_time_s(gb200, 1e9)))


def test_a_user_profile_without_the_share_takes_the_stated_default():
    data = load_hardware("h100-sxm").model_dump()
    del data["efficiency"]["memory_bound"]
    profile = HardwareProfile(**data)
    assert profile.efficiency.memory_bound == MEMORY_BOUND_DEFAULT == 0.8
    assert float(memory_pass_time_s(profile, 3.35e12 * 0.8)) == pytest.approx(1.0)
