"""sp_planner.cli.pin_checks, called directly (tests/cli/test_question.py runs them through sp-plan's options)."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_model
from sp_planner.cli.pin_checks import _check_expert_grid, check_fsdp_pins, check_pins, gpus_left_to, with_derived_dp
from sp_planner.errors import UserInputError
from sp_planner.specs.workload import Workload

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


def _pinned(model: str, global_batch: int, micro_batch: int | None = None, experts: dict | None = None, **pins) -> str:
    """The message check_pins refuses these pins on 16 GPUs with."""
    degrees = {axis: pins.get(axis) for axis in ("tp", "pp", "dp", "ulysses", "ring")}
    with pytest.raises(UserInputError) as err:
        check_pins(degrees, micro_batch, load_model(model), Workload(seq_len=32768, global_batch=global_batch),
                   experts, world_size=16)
    return str(err.value)


@pytest.mark.parametrize("model, global_batch, micro_batch, experts, pins, fix", [
    # 20 % (8 x 1): the multiples of 8 around 20, or dp 4 (divides 20 and the 16 GPUs; was the rule's
    # message alone, no fix).
    ("llama3-8b", 20, None, None, {"dp": 8}, "; use --global-batch 16 or 24, or --dp 4"),
    # Micro batch 2 divides 4 where 3 did not; dp 1 has no smaller.
    ("llama3-8b", 4, 3, None, {}, "; use --global-batch 3 or 6, or --micro-batch 2"),
    ("llama3-8b", 1, None, None, {"dp": 16}, "; use --global-batch 16, or --dp 1"),
    # dp 8 and micro batch 2 with batch 4: no micro batch fits (8 > 4), so dp, the largest that divides 4: 2.
    ("llama3-8b", 4, 2, None, {"dp": 8}, "; use --global-batch 16, or --dp 2"),
    # Every other degree pinned: dp is fixed at 8 by the GPUs, so only the batch is offered.
    ("llama3-8b", 20, None, None, {"tp": 2, "pp": 1, "dp": 8, "ulysses": 1, "ring": 1},
     "the pinned plan breaks the batch rule: global_batch 20 is not divisible by dp*micro_batch = 8*1 (Megatron: "
     "GBS % (MBS*DP) == 0); use --global-batch 16 or 24"),
    # 28 heads, 4 KV heads, 16 GPUs: the splits dividing 16 and 28 that the KV heads' rule takes.
    ("qwen2.5-7b", 16, None, None, {"tp": 8}, "num_heads 28 is not divisible by tp*ulysses = 8*1; pin tp x ulysses "
                                              "to 1, 2 or 4"),
    ("mixtral-8x7b", 16, None, {"ep": 16}, {}, "num_experts 8 is not divisible by ep 16 (Megatron: num_experts % EP "
                                               "== 0); pin --ep to a divisor of 8"),
])
def test_a_broken_rule_says_how_to_mend_the_pins(model, global_batch, micro_batch, experts, pins, fix):
    message = _pinned(model, global_batch, micro_batch, experts, **pins)
    assert message.startswith("the pinned plan breaks the ") and message.endswith(fix), message
