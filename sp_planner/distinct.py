"""The distinct rows of a table of candidate columns (vectorized), and a function evaluated once
per distinct row: the one place the planner tells rows apart.

Rows get one int64 key each. Integer columns whose ranges multiply to less than 2^62 are combined
exactly as a mixed-radix number over each column's range (digit value - min, radix max - min + 1);
other tables are hashed column by column (pd.factorize), renumbering before the combined key could
overflow. distinct_rows then hashes the key once (pd.factorize numbers in order of first
appearance); per_distinct, where order does not matter, looks it up in a table when the key's
range is at most the row count and decodes each distinct key back into its column values.
per_distinct_rows and per_key do the same for a container of candidate columns (candidates.Candidates)
and a function of the columns named, or of values computed from them. distinct_float_rows tells
the rows of a float table apart by their bytes, for a function that must give every row the bits
it gave it row by row."""

from __future__ import annotations

from typing import Callable

import numpy as np

from sp_planner.columns import take_rows

# Below this many rows per_distinct runs a function on the rows directly (finding the distinct
# rows costs more than it saves).
DISTINCT_MIN_ROWS = 4096

_KEY_LIMIT = 2 ** 62  # a mixed-radix key stays below this: no digit times its radix overflows int64

# Rows per block when taking a table's column minima and maxima (_column_bounds): numpy reduces
# an (n, k) array over axis 0 one short row at a time; (n / B, B * k) blocks are several times faster.
_BOUNDS_BLOCK_ROWS = 64


def distinct_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) for the distinct rows of `keys` (n, k): the index of each distinct row's
    first occurrence, and each row's distinct row, numbered in order of first appearance. Exact,
    with no bound on the values; several times faster than np.unique(axis=0), which sorts rows as
    structured records."""
    keys = np.asarray(keys)
    key = _table_key(keys)
    return _numbered(_hashed_key(keys) if key is None else key)


def distinct_float_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) for the rows of a float table (n, k) equal bit for bit (0.0 and -0.0, NaNs
    of different payloads stay apart), so a function of the rows gives the distinct rows what it
    gives every row: `first` the index of one occurrence of each, `inverse` each row's distinct row
    (numbered in sorted byte order, not order of appearance). np.unique over each row's bytes as
    one void value: the rows are few (hundreds) and wide, where hashing column by column
    (distinct_rows) costs a pass a column."""
    table = np.ascontiguousarray(table)
    n, width = table.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    record = table.view(np.dtype((np.void, width * table.itemsize))).ravel()
    _, first, inverse = np.unique(record, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def distinct_columns(columns) -> tuple[np.ndarray, np.ndarray]:
    """distinct_rows of the table whose columns are `columns` (1-D, of one length), without
    stacking it: an (n, k) table's columns are strided, and stacking, bounding and combining them
    costs several times what the same passes over each contiguous column cost. The same (first,
    inverse): both number the same partition of the rows in order of first appearance."""
    key = _columns_key(columns)
    if key is None:
        return distinct_rows(np.stack([np.asarray(c) for c in columns], axis=1))
    return _numbered(key)


def distinct_groups(columns) -> list[tuple[int, np.ndarray]]:
    """The rows of each distinct row of the table whose columns are `columns` (distinct_columns),
    in order of first appearance: (its first row's index, every row's index, ascending)."""
    if not len(columns[0]):
        return []
    first, inverse = distinct_columns(columns)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(first)))[:-1]
    return [(int(row), rows) for row, rows in zip(first, np.split(order, bounds))]


def _numbered(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """distinct_rows' (first, inverse) from one exact int64 key a row."""
    import pandas as pd  # pd.factorize's hash table; loaded by the first search, not with the planner

    ids, seen = pd.factorize(key)
    first = np.empty(len(seen), dtype=np.int64)
    first[ids[::-1]] = np.arange(len(ids) - 1, -1, -1)  # the lowest index of each distinct row wins
    return first, ids.astype(np.int64, copy=False)


def per_distinct(fn: Callable, *columns, min_rows: int = DISTINCT_MIN_ROWS):
    """fn(*columns) for int64 columns (broadcast together), evaluated once per distinct row and
    spread back: a search chunk holds about 10^5 candidates but a few dozen (pp, vpp, ...) rows.
    fn must work row by row and return an array or a tuple of arrays (a NamedTuple stays one).
    Inputs under `min_rows` rows, other dtypes and ranges too wide for one key go to fn directly
    (a costly fn is worth deduplicating at fewer rows than DISTINCT_MIN_ROWS)."""
    arrays = [np.asarray(c) for c in columns]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    rows = int(np.prod(shape))
    if rows < min_rows or any(a.dtype != np.int64 for a in arrays):
        return fn(*columns)
    radix = _radix_key(arrays, shape)
    if radix is None:
        return fn(*columns)
    key, lows, radices = radix
    flat, size = key.ravel(), radices[-1]
    if size <= rows:  # look the keys up in a table over their range (sorted order)
        seen = np.zeros(size, dtype=bool)
        seen[flat] = True
        distinct = np.flatnonzero(seen)
        number = np.zeros(size, dtype=np.intp)
        number[distinct] = np.arange(len(distinct))
        inverse = number[flat]
    else:
        import pandas as pd  # as _numbered

        inverse, distinct = pd.factorize(flat)
    out = fn(*(distinct // radix % (next_radix // radix) + low
               for low, radix, next_radix in zip(lows, radices, radices[1:])))
    if not isinstance(out, tuple):
        return np.asarray(out)[inverse].reshape(shape)
    spread = [np.asarray(a)[inverse].reshape(shape) for a in out]
    return type(out)(*spread) if hasattr(out, "_fields") else tuple(spread)


def per_distinct_rows(fn: Callable, rows, names):
    """fn(rows) for a container of per-row integer or bool columns with `take` (candidates.Candidates),
    evaluated once per row distinct in the columns `names` (every column fn reads) and spread back
    (columns.take_rows: scalars stay scalars). fn must work row by row. Small inputs go to fn
    directly, as per_distinct's."""
    key = distinct_key(rows, names)
    if key is None:
        return fn(rows)
    first, inverse = key
    return take_rows(fn(rows.take(first)), inverse, len(first))


def distinct_key(rows, names, *columns) -> tuple[np.ndarray, np.ndarray] | None:
    """distinct_rows' (first, inverse) of the columns `names` of a container of per-row integer or
    bool columns (candidates.Candidates) and of further integer `columns` computed from them (one
    entry a row), or None below DISTINCT_MIN_ROWS rows (per_key runs directly)."""
    if len(rows) < DISTINCT_MIN_ROWS:
        return None
    return distinct_columns([np.asarray(getattr(rows, name), dtype=np.int64) for name in names]
                            + [np.asarray(column, dtype=np.int64) for column in columns])


def per_key(fn: Callable, key: tuple[np.ndarray, np.ndarray] | None, *args, **kwargs):
    """fn(*args, **kwargs) priced on the first row of each distinct key (distinct_key's `key`; None:
    on every row) and spread back, for a fn that works row by row whose per-row arguments (arrays
    with one entry a row, nested as columns.take_rows walks them) are equal on rows of equal key:
    the caller's key holds every column they are computed from."""
    if key is None:
        return fn(*args, **kwargs)
    first, inverse = key
    n = len(inverse)
    return take_rows(fn(*take_rows(args, first, n), **take_rows(kwargs, first, n)), inverse, len(first))


def _table_key(keys: np.ndarray) -> np.ndarray | None:
    """The mixed-radix key of each row of an integer table (n, k), or None (not integer, or the
    columns' ranges multiply to _KEY_LIMIT or more)."""
    n, width = keys.shape
    if n == 0 or width == 0 or keys.dtype.kind not in "iu" or keys.dtype == np.uint64:
        return None
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    lows, highs = _column_bounds(keys)
    radices = [1]  # each column's place value, then the key's range
    for low, high in zip(lows, highs):
        radices.append(radices[-1] * (high - low + 1))
        if radices[-1] >= _KEY_LIMIT:
            return None
    # keys @ radices - lows @ radices equals (keys - lows) @ radices modulo 2^64 (int64 wraps), and
    # the latter lies in [0, 2^62): the two are equal, without an (n, k) temporary.
    place = np.array(radices[:-1], dtype=np.int64)
    offset = np.array(lows, dtype=np.int64) @ place
    return keys @ place - offset


def _columns_key(columns) -> np.ndarray | None:
    """_table_key of the table whose columns are `columns`, column by column: sum((column - low) x
    place), the integer _table_key's matrix product equals (integer sums in any order are exact);
    None where _table_key's would be (no rows or columns, not integer or bool, too wide a range)."""
    arrays = [np.asarray(c) for c in columns]
    if not arrays or any(a.ndim != 1 or len(a) != len(arrays[0]) or a.dtype.kind not in "iub" or a.dtype == np.uint64
                         for a in arrays) or len(arrays[0]) == 0:
        return None
    radix = _radix_key(arrays, (len(arrays[0]),))
    return None if radix is None else radix[0]


def _radix_key(arrays, shape) -> tuple[np.ndarray, list[int], list[int]] | None:
    """The mixed-radix key over `shape` of integer or bool `arrays` (broadcast to it), built column
    by column, each column's range and digit together while the column is in cache: (key, each
    column's low, the place values then the key's range); None where the ranges multiply to
    _KEY_LIMIT or more. per_distinct decodes its keys with the lows and places; _columns_key keeps
    the key."""
    key, lows, radices = np.zeros(shape, dtype=np.int64), [], [1]
    for a in arrays:
        a = a.astype(np.int64, copy=False)
        low, high = int(a.min()), int(a.max())
        if radices[-1] * (high - low + 1) >= _KEY_LIMIT:
            return None
        if high > low:  # a constant column adds 0
            digit = np.subtract(a, low)
            key += np.multiply(digit, radices[-1], out=digit)
        lows.append(low)
        radices.append(radices[-1] * (high - low + 1))
    return key, lows, radices


def _column_bounds(keys: np.ndarray) -> tuple[list[int], list[int]]:
    """Each column's minimum and maximum of a C-contiguous table (n, k), reduced block by block."""
    n, width = keys.shape
    whole = n // _BOUNDS_BLOCK_ROWS * _BOUNDS_BLOCK_ROWS
    blocks = keys[:whole].reshape(-1, _BOUNDS_BLOCK_ROWS * width)
    parts = [keys[whole:]] if whole < n else []
    if whole:
        parts += [blocks.min(axis=0).reshape(-1, width), blocks.max(axis=0).reshape(-1, width)]
    rest = np.concatenate(parts)
    return rest.min(axis=0).tolist(), rest.max(axis=0).tolist()


def _hashed_key(keys: np.ndarray) -> np.ndarray:
    """Each row's key from hashing column by column (pd.factorize), renumbered before the
    mixed-radix combination could overflow: exact for any values."""
    import pandas as pd  # as _numbered

    ids, bound = np.zeros(len(keys), dtype=np.int64), 1
    for column in keys.T:
        codes, distinct = pd.factorize(column)
        if bound * len(distinct) >= _KEY_LIMIT:  # renumber the combined key before it can overflow
            ids, seen = pd.factorize(ids)
            bound = len(seen)
        ids = ids * len(distinct) + codes  # mixed radix: distinct rows keep distinct keys
        bound *= max(len(distinct), 1)
    return ids
