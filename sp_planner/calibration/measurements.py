"""Raw measurements as the calibration worker reports them (and `--save-measurements` keeps them).

Every time and size must be a positive, finite number: a negative or NaN time is a broken timer
or a hand-edited file, never something to fit, so reading one raises a UserInputError naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sp_planner.fileio import read_structured, validate_as, write_text_atomic
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.calibration import Collective, Environment, LinkTier

Seconds = Field(gt=0, allow_inf_nan=False)
WHAT = "measurements"  # the file's name in read errors ("measurements file raw.json is invalid: ...")


class CollectiveSample(FrozenModel):
    """One collective at one nccl-tests size S on one group, timed on one member rank."""

    collective: Collective
    link: LinkTier
    group_size: int = Field(ge=2)
    rank: int = Field(ge=0)
    size_bytes: int = Field(gt=0)
    time_s: float = Seconds


class GemmSample(FrozenModel):
    name: str = Field(min_length=1)
    m: int = Field(gt=0)
    n: int = Field(gt=0)
    k: int = Field(gt=0)
    rank: int = Field(ge=0)
    time_s: float = Seconds


class AttentionSample(FrozenModel):
    direction: Literal["fwd", "bwd"]
    causal: bool
    batch: int = Field(gt=0)
    heads: int = Field(gt=0)
    tokens: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    rank: int = Field(ge=0)
    time_s: float = Seconds


class CopySample(FrozenModel):
    """dst.copy_(src) of `size_bytes`: moves 2 x size_bytes through memory (read + write)."""

    size_bytes: int = Field(gt=0)
    rank: int = Field(ge=0)
    time_s: float = Seconds


class Measurements(FrozenModel):
    environment: Environment
    collectives: tuple[CollectiveSample, ...] = ()
    gemm: tuple[GemmSample, ...] = ()
    attention: tuple[AttentionSample, ...] = ()
    memory_copy: tuple[CopySample, ...] = ()

    @model_validator(mode="after")
    def _one_batch_per_length(self) -> "Measurements":
        """An attention curve has one rate per length (calibration.fit.attention_curves), and
        sp-calibrate times each length at one batch: two batches at one length are two runs mixed."""
        batches: dict[tuple, set[int]] = {}
        for a in self.attention:
            batches.setdefault((a.direction, a.causal, a.heads, a.head_dim, a.tokens), set()).add(a.batch)
        for (direction, causal, heads, head_dim, tokens), seen in batches.items():
            if len(seen) > 1:
                raise ValueError(
                    f"attention {direction} {'causal' if causal else 'full-mask'}, {heads} heads x head_dim "
                    f"{head_dim} at {tokens} tokens was timed at batches {', '.join(map(str, sorted(seen)))}; "
                    "a curve takes one batch per length: keep the samples of one run")
        return self


def read_measurements(path: Path) -> Measurements:
    """A measurements JSON/YAML; malformed, negative or non-finite values -> one UserInputError line."""
    return measurements_from(read_structured(Path(path), what=WHAT), path)


def measurements_from(data: object, path: Path | str) -> Measurements:
    """Parsed measurements (read_structured) checked as read_measurements checks them."""
    return validate_as(Measurements, data, what=WHAT, path=path)


def write_measurements(path: Path, measurements: Measurements) -> None:
    write_text_atomic(Path(path), measurements.model_dump_json(indent=1) + "\n")
