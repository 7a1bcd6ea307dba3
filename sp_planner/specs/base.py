"""Shared pydantic configuration: specs are immutable and reject unknown fields."""

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
