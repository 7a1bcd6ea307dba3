"""Typed reads of one Hugging Face config.json field: every problem is one UserInputError line that
names the file and the field, never a TypeError from a hand-edited value."""

from __future__ import annotations

import math
from pathlib import Path

from sp_planner.errors import UserInputError

WHAT = "model config"
# A model's sources entry starting with one of these is an import note the CLI prints (without the
# prefix; hf_config.import_notes): NOT_MODELLED for what the spec leaves out of the model, MODELLED
# for what it keeps and prices otherwise than a plain field says (group-limited routing).
NOT_MODELLED = "not modelled: "
MODELLED = "modelled: "


def error(path: Path, message: str) -> UserInputError:
    return UserInputError(f"{WHAT} file {path}: {message}")


def positive_int(cfg: dict, key: str, path: Path, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise error(path, f"required field {key!r} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise error(path, f"field {key!r} must be a positive integer, got {value!r}")
    return value


def count(cfg: dict, key: str, path: Path) -> int:
    """A non-negative integer field (0 when absent or null)."""
    value = cfg.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(path, f"field {key!r} must be a non-negative integer, got {value!r}")
    return value


def int_list(cfg: dict, key: str, path: Path) -> list[int] | None:
    """A list of integers, or None when absent or null."""
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise error(path, f"field {key!r} must be a list of integers, got {value!r}")
    return value


def flag(cfg: dict, key: str, path: Path, default: bool = False) -> bool:
    """A true/false field (`default` when absent; null is refused, as before)."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise error(path, f"field {key!r} must be true or false, got {value!r}")
    return value


def number(cfg: dict, key: str, path: Path, default: float) -> float:
    """A finite number field of a mapping (`default` when absent or null)."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(path, f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def positive_number(cfg: dict, key: str, path: Path, default: float | None) -> float | None:
    """A finite number > 0 (`default` when absent or null)."""
    value = number(cfg, key, path, math.nan)
    if math.isnan(value):
        return default
    if value <= 0:
        raise error(path, f"field {key!r} must be a positive number, got {cfg[key]!r}")
    return value


def probability(cfg: dict, key: str, path: Path) -> float:
    """A dropout probability in [0, 1) (0 when absent or null): 1 would drop every value, which
    no model trains with (ModelSpec's hidden_dropout / attention_dropout refuse it too)."""
    value = number(cfg, key, path, 0.0)
    if not 0 <= value < 1:
        raise error(path, f"field {key!r} must be a dropout probability in [0, 1), got {cfg[key]!r}")
    return value
