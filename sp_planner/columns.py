"""Row selection over typed columns: numpy arrays, NamedTuples of columns (cost.*Columns) and
dataclass containers with `take`/`concat` (candidates.Candidates), nested in any way.

The streaming search keeps the best rows of each chunk with these, so a column added anywhere
(a new search axis, a new cost field) flows through without being named here. A None in place of
columns (ones not priced yet, search_columns.Evaluated.comm) stays None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import numpy as np

T = TypeVar("T")


def take(columns: T, index: np.ndarray) -> T:
    """The rows at `index` of every column in `columns`."""
    return cast(T, _take(columns, index))


def take_rows(values: T, index: np.ndarray | slice, num_rows: int) -> T:
    """The rows at `index` of the per-candidate arrays in `values` (those whose first axis has
    num_rows entries), nested in tuples, dicts and containers as `take` walks them; scalars and other
    values that broadcast (floats, a pydantic model's settings) stay as they are. A cost function
    that is computed row by row gives these rows exactly what it gives the whole columns."""
    return cast(T, _take_rows(values, index, num_rows))


def concat(parts: Sequence[T]) -> T:
    """The rows of `parts` one after another (all of one type)."""
    return cast(T, _concat(list(parts)))


def concat_take(parts: Sequence[T], index: np.ndarray) -> T:
    """take(concat(parts), index), one column at a time: the whole concatenation is never held (a
    report's search sorts millions of rows this way, search_rank.ranked_union)."""
    return cast(T, _concat_take(list(parts), index))


def concat_taken(parts: Sequence[T], indexes: Sequence[np.ndarray | None]) -> T:
    """concat([take(part, index) for each part and index]) (an index None: the whole part), each
    array column written once into its place in the result instead of taken and then copied again
    (the search's pruned scan gathers its rows this way, search_pruned_scan)."""
    return cast(T, _concat_taken(list(parts), list(indexes)))


def held_rows(priced: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the places in `index` whose row is among `priced` (ascending row indices), where each is in
    `priced`): a cost table priced on some rows (cost.kind_table), read after a take of `index`."""
    found = np.minimum(np.searchsorted(priced, index), max(len(priced) - 1, 0))
    at = np.flatnonzero(priced[found] == index) if len(priced) else np.zeros(0, dtype=np.intp)
    return at, found[at]


def _take(obj: Any, index: np.ndarray) -> Any:
    if obj is None:
        return None
    if isinstance(obj, np.ndarray):
        return obj[index]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_take(part, index) for part in obj))
    if hasattr(obj, "take"):
        return obj.take(index)
    raise TypeError(f"cannot select rows of {type(obj).__name__}")


def _take_rows(obj: Any, index: np.ndarray | slice, num_rows: int) -> Any:
    if isinstance(obj, np.ndarray):
        return obj[index] if obj.ndim and len(obj) == num_rows else obj
    if isinstance(obj, tuple):
        parts = (_take_rows(part, index, num_rows) for part in obj)
        return type(obj)(*parts) if hasattr(obj, "_fields") else tuple(parts)
    if isinstance(obj, dict):
        return {key: _take_rows(value, index, num_rows) for key, value in obj.items()}
    if hasattr(obj, "take") and not isinstance(obj, np.generic):
        return obj.take(index)
    return obj


def _concat_take(parts: list[Any], index: np.ndarray) -> Any:
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, np.ndarray):
        return (first if len(parts) == 1 else np.concatenate(parts))[index]
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_concat_take([p[i] for p in parts], index) for i in range(len(first))))
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        # a container of columns (candidates.Candidates), one column at a time
        return type(first)(**{f.name: _concat_take([getattr(p, f.name) for p in parts], index)
                              for f in dataclasses.fields(first)})
    return _take(first if len(parts) == 1 else _concat(parts), index)


def _concat_taken(parts: list[Any], indexes: list[np.ndarray | None]) -> Any:
    first = parts[0]
    if first is None:
        return None
    if all(isinstance(p, np.ndarray) and p.ndim and p.shape[1:] == first.shape[1:] for p in parts):
        sizes = [len(p) if i is None else len(i) for p, i in zip(parts, indexes)]
        out = np.empty((sum(sizes), *first.shape[1:]), dtype=np.result_type(*parts))
        start = 0
        for part, index, size in zip(parts, indexes, sizes):
            if index is None:
                out[start:start + size] = part
            else:
                np.take(part, index, axis=0, out=out[start:start + size])
            start += size
        return out
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_concat_taken([p[i] for p in parts], indexes) for i in range(len(first))))
    if dataclasses.is_dataclass(first) and not isinstance(first, type) and all(
            isinstance(getattr(first, f.name), np.ndarray) for f in dataclasses.fields(first)):
        # a container of array columns (candidates.Candidates), one column at a time
        return type(first)(**{f.name: _concat_taken([getattr(p, f.name) for p in parts], indexes)
                              for f in dataclasses.fields(first)})
    return _concat([p if i is None else _take(p, i) for p, i in zip(parts, indexes)])


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(_concat([p[i] for p in parts]) for i in range(len(first))))
    if hasattr(type(first), "concat"):
        return type(first).concat(parts)
    raise TypeError(f"cannot concatenate {type(first).__name__}")
