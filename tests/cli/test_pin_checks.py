"""sp_planner.cli.pin_checks, called directly (tests/cli/test_question.py runs them through sp-plan's options)."""

from __future__ import annotations

import pytest

from sp_planner.cli.pin_checks import _check_expert_grid, check_fsdp_pins, gpus_left_to, with_derived_dp
from sp_planner.errors import UserInputError

PINS = {"tp": 2, "pp": None, "dp": None, "ulysses": 4, "ring": None}


def test_gpus_left_to_an_axis_are_the_world_over_the_other_pins():
    assert gpus_left_to(PINS, 64, "dp") == 8  # 64 / (tp 2 x ulysses 4)
    assert gpus_left_to({**PINS, "dp": 2}, 64, "pp") == 4  # 64 / (2 x 4 x dp 2)
    assert gpus_left_to({**PINS, "tp": None}, 64, "tp") == 16  # its own pin does not count


def test_dp_is_derived_only_when_every_other_degree_is_pinned():
    assert with_derived_dp(PINS, 64) == PINS
    assert with_derived_dp({**PINS, "pp": 2, "ring": 1}, 64)["dp"] == 4


def test_replicas_must_divide_the_gpus_dp_can_take():
    check_fsdp_pins(None, 3, 4, None, data_parallel_gpus=8)
    with pytest.raises(UserInputError, match=r"^--dp-replicate 3 divides no data-parallel degree here: dp divides 8"):
        check_fsdp_pins(None, 3, 3, None, data_parallel_gpus=8)


def test_expert_grid_that_divides_no_stage_is_refused_before_any_search():
    # ep*etp must divide a stage's GPUs (world / pp); unpinned degrees do not change that.
    _check_expert_grid({"ep": 8, "etp": 1}, None, 16)
    _check_expert_grid({"ep": 4, "etp": 2}, 2, 16)
    with pytest.raises(UserInputError, match=r"^the pinned plan breaks the expert_grid rule: ep\*etp = 16\*1 does "
                                             r"not divide the 8 GPUs"):
        _check_expert_grid({"ep": 16}, None, 8)
    with pytest.raises(UserInputError, match=r"ep\*etp = 8\*3 does not divide the 16 GPUs"):
        _check_expert_grid({"ep": 8, "etp": 3}, None, 16)
    with pytest.raises(UserInputError, match=r"ep\*etp = 8\*1 does not divide the 4 GPUs of a pipeline stage \(pp 2\)"):
        _check_expert_grid({"ep": 8}, 2, 8)
