"""cli.option_checks: sp-plan's options beside the degrees, checked or resolved before any search."""

from __future__ import annotations

import pytest

from sp_planner.cli.option_checks import resolve_fp8_recipe
from sp_planner.errors import UserInputError


@pytest.mark.parametrize(("given", "framework", "precision", "expected"), [
    (None, "megatron", "fp8", "delayed"),  # Transformer Engine's default in Megatron
    (None, "all", "fp8", "delayed"),
    (None, "torchtitan", "fp8", "tensorwise"),  # torchao float8 has dynamic scaling only
    (None, "torchtitan", "auto", "tensorwise"),
    (None, "torchtitan", "bf16", "delayed"),  # unread without FP8 GEMMs
    ("blockwise", "torchtitan", "fp8", "blockwise"),
    ("tensorwise", "megatron", "fp8", "tensorwise"),
])
def test_fp8_recipe_defaults_to_the_frameworks_own(given, framework, precision, expected):
    assert resolve_fp8_recipe(given, framework, precision) == expected


def test_delayed_scaling_is_refused_for_torchtitan():
    with pytest.raises(UserInputError, match="torchtitan's float8 .torchao. has no delayed scaling"):
        resolve_fp8_recipe("delayed", "torchtitan", "fp8")
