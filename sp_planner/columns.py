"""Row selection over typed columns: numpy arrays, NamedTuples of columns (cost.*Columns) and
dataclass containers with `take`/`concat` (space.Candidates), nested in any way.

The streaming search keeps the best rows of each chunk with these, so a column added anywhere
(a new search axis, a new cost field) flows through without being named here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import numpy as np

T = TypeVar("T")


def take(columns: T, index: np.ndarray) -> T:
    """The rows at `index` of every column in `columns`."""
    return cast(T, _take(columns, index))


def concat(parts: Sequence[T]) -> T:
    """The rows of `parts` one after another (all of one type)."""
    return cast(T, _concat(list(parts)))


def _take(obj: Any, index: np.ndarray) -> Any:
    if isinstance(obj, np.ndarray):
        return obj[index]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_take(part, index) for part in obj))
    if hasattr(obj, "take"):
        return obj.take(index)
    raise TypeError(f"cannot select rows of {type(obj).__name__}")


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_concat([p[i] for p in parts]) for i in range(len(first))))
    if hasattr(type(first), "concat"):
        return type(first).concat(parts)
    raise TypeError(f"cannot concatenate {type(first).__name__}")
