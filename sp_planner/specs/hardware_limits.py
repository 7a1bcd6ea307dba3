"""The ranges a hardware profile's figures must lie in, and the base of its models: finite numbers
only (no inf or nan), so that a typo is refused naming its field and range instead of
being planned with."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from sp_planner.specs.base import FrozenModel

# An efficiency: a fraction (0, 1] of the peak it multiplies.
Fraction = Field(gt=0.0, le=1.0)

# Upper bounds far above today's parts (B200: 2.25e15 dense bf16 FLOP/s, 192 GB HBM at 8e12 B/s;
# NVLink 5: 9e11 B/s per GPU) and above the idealized "free compute" profiles the tests build
# (1e21 FLOP/s, 1e18 B/s), yet low enough that a typo such as 1e30 (or .inf) is refused with its
# range instead of planned with, and every product of them stays finite in float64.
MAX_FLOPS = 1e24
MAX_MEMORY_BYTES = 2.0**60  # 1 EiB
MAX_BANDWIDTH_BYTES_PER_S = 1e21
# Lower bounds far below any part a plan runs on (one CPU core: ~1e10 FLOP/s and ~1e9 B/s; a
# calibrated 2-core CPU profile measures 7e10 FLOP/s and 1e9 B/s between ranks), so that a
# typo such as 1e-30 is refused with its range instead of planned into NaN or 1e41-day steps.
MIN_FLOPS = 1e8
MIN_MEMORY_BYTES = 2.0**20  # 1 MiB
MIN_BANDWIDTH_BYTES_PER_S = 1e6
MAX_LATENCY_S = 1.0
MAX_GPUS_PER_NODE = 1024


class FiniteModel(FrozenModel):
    """Hardware figures are finite numbers: inf and nan are refused. A file's true or false where a
    number is asked for (YAML's booleans) is refused by the strict validation every file gets
    (fileio.validate_strict); a model_validator(mode="before") here would put the whole profile
    through strict Python mode, where a YAML list is no tuple."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
