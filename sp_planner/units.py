"""Parsing and formatting of user-facing quantities (token counts, bytes, seconds)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from sp_planner.errors import UserInputError

KIB, MIB, GIB = 1024, 1024**2, 1024**3  # binary multiples, as CUDA tools report memory
MAX_TOKENS = 2**30  # = specs.workload.MAX_SEQ_LEN (units stays free of the specs)

_TOKEN_SUFFIX = {"": 1, "k": 1024, "m": 1024 * 1024}
_TOKENS_RE = re.compile(r"^\s*(-?)([0-9]+(?:\.[0-9]+)?)\s*([kKmM]?)\s*$")  # ASCII digits, as --nodes takes


def parse_tokens(text: str | int, *, what: str = "--seq-len") -> int:
    """Parse '131072', '128k', '1M' or '1.5M' (binary multiples, as long-context papers use) to a
    positive int; a fraction must come to whole tokens (1.5k = 1536; 1.3k = 1331.2 is refused)."""
    if isinstance(text, int):
        value = text
    else:
        match = _TOKENS_RE.match(str(text))
        if not match:
            raise UserInputError(
                f"{what} {text!r} is not a token count; use an integer or a suffix k/M, e.g. 128k"
            )
        if match.group(1):  # a count, but below zero
            raise UserInputError(f"{what} must be positive, got {text}")
        exact = Fraction(match.group(2)) * _TOKEN_SUFFIX[match.group(3).lower()]
        if exact.denominator != 1:
            # Only positive counts as examples: below one token, 0 would be refused next.
            near = " or ".join(str(n) for n in dict.fromkeys((max(math.floor(exact), 1), math.ceil(exact))))
            raise UserInputError(f"{what} {text!r} is {float(exact):g} tokens, not a whole number; give whole "
                                 f"tokens, e.g. {near}")
        value = int(exact)
    if value <= 0:
        raise UserInputError(f"{what} must be positive, got {text}")
    if value > MAX_TOKENS:
        raise UserInputError(f"{what} {text} is above the largest supported length, {MAX_TOKENS:,} tokens (1024M)")
    return value


def plural(count: int, noun: str) -> str:
    """'1 node', '2 nodes', '16,384 tokens'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_tokens(num_tokens: int) -> str:
    """131072 -> '128K'; values that are not whole multiples stay plain."""
    for suffix, factor in (("M", 1024 * 1024), ("K", 1024)):
        if num_tokens % factor == 0:
            return f"{num_tokens // factor}{suffix}"
    return str(num_tokens)


BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# format_seconds's units: (name, seconds in one, decimals shown), each for durations under the next's start.
SECOND_UNITS = (("µs", 1e-6, 1), ("ms", 1e-3, 1), ("s", 1.0, 2), ("h", 3600.0, 2), ("days", 86400.0, 1))
_SECOND_LIMITS = (1e-3, 1.0, 3600.0, 86400.0, math.inf)


def format_bytes(num_bytes: float) -> str:
    """Binary units, as memory is reported by CUDA tools (bytes_unit's)."""
    name, scale = bytes_unit(num_bytes)
    return f"{int(num_bytes)} B" if name == "B" else f"{float(num_bytes) / scale:.1f} {name}"


def format_seconds(seconds: float) -> str:
    """`seconds` in the unit of its size (seconds_unit), days with thousands separators."""
    name, scale, shown = seconds_unit(seconds)
    return f"{seconds / scale:{',' if name == 'days' else ''}.{shown}f} {name}"


def _decimals(value: float, shown: int) -> int:
    """`shown` decimals, or more where `shown` would leave `value` under two significant digits
    (0.0038 s, not 0.00 s)."""
    if value == 0 or abs(value) >= 1:
        return shown
    return max(shown, 1 - math.floor(math.log10(abs(value))))


def seconds_unit(like_s: float) -> tuple[str, float, int]:
    """(name, seconds in one, decimals): the unit format_seconds gives `like_s` (days for NaN)."""
    return next((unit for unit, below in zip(SECOND_UNITS, _SECOND_LIMITS) if like_s < below), SECOND_UNITS[-1])


def format_seconds_as(seconds: float, like_s: float) -> str:
    """`seconds` in the unit format_seconds gives `like_s`, so that the durations of one paragraph
    share a unit: 0.32 s beside a 258.99 s step, not 318.4 ms."""
    name, scale, shown = seconds_unit(like_s)
    value = seconds / scale
    return f"{value:,.{_decimals(value, shown)}f} {name}"


def bytes_unit(like_bytes: float) -> tuple[str, float]:
    """(name, bytes in one): the unit format_bytes gives `like_bytes`."""
    value = abs(float(like_bytes))
    for power, name in enumerate(BYTE_UNITS):
        if value < 1024 or name == BYTE_UNITS[-1]:
            return name, 1024.0**power
        value /= 1024
    raise AssertionError("unreachable")


def format_bytes_as(num_bytes: float, like_bytes: float) -> str:
    """`num_bytes` in the unit format_bytes gives `like_bytes`, so that the sizes of one paragraph
    share a unit: 0.047 GiB beside 80.0 GiB of HBM, not 48.0 MiB."""
    name, scale = bytes_unit(like_bytes)
    if name == "B":
        return f"{int(num_bytes)} B"
    value = num_bytes / scale
    return f"{value:,.{_decimals(value, 1)}f} {name}"


def format_significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits without an exponent: 239, 13.2, 0.518, 3,720."""
    if value == 0 or abs(value) < 10**digits:
        return f"{value:.{digits}g}"
    return f"{round(value, digits - 1 - math.floor(math.log10(abs(value)))):,.0f}"


def format_tflops(tflops: float, decimals: int = 1, *, thousands: bool = True) -> str:
    """TFLOPS with `decimals` decimals, thousands separated where `thousands` (312.0, 2,250.0), or to
    three significant digits under 1 (a CPU's 0.0441), which fixed decimals would show as 0.0."""
    if 0 < abs(tflops) < 1:
        return format_significant(tflops)
    return f"{tflops:{',' if thousands else ''}.{decimals}f}"
