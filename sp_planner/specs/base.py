"""Shared pydantic configuration: specs are immutable and reject unknown fields."""

import math

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def whole_bytes(value: float) -> int | float:
    """A byte count as JSON holds it: whole bytes (the model computes in floats; summary.json and
    plans.csv round alike), infinity left for the caller's finite check. Byte fields declared as
    float write through it (`@field_serializer(..., when_used="json")`) and read back as floats
    (pydantic's lax mode takes an int where a float is declared), so a file round-trips."""
    return round(value) if math.isfinite(value) else value
