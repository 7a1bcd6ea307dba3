"""distinct: the distinct rows of a table, against numpy's sorting unique, along both key paths
(the mixed-radix key over each column's range, and hashing column by column)."""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from sp_planner.distinct import (DISTINCT_MIN_ROWS, _columns_key, _hashed_key, _table_key, distinct_columns,
                                 distinct_float_rows, distinct_key, distinct_rows, per_distinct, per_distinct_rows,
                                 per_key)


def _check_against_numpy(keys):
    first, inverse = distinct_rows(keys)
    unique, numpy_first = np.unique(keys, axis=0, return_index=True)
    assert len(first) == len(unique)
    assert sorted(first) == sorted(numpy_first)  # each distinct row's lowest index
    assert (keys[first][inverse] == keys).all()  # every row maps to its own distinct row
    # Numbered by first appearance: first increases, and each new number is one above the largest
    # seen so far.
    assert (np.diff(first) > 0).all()
    assert list(inverse[:1]) == [0] and (np.diff(np.maximum.accumulate(inverse)) <= 1).all()
    assert first.dtype == inverse.dtype == np.int64
    return first, inverse


def test_distinct_rows_match_numpy_unique():
    keys = np.random.default_rng(1).integers(0, 5, size=(5000, 6))
    assert _table_key(keys) is not None  # 5^6 values: the range key
    _check_against_numpy(keys)


_RNG = np.random.default_rng(2)
_TABLES = {
    "negative": _RNG.integers(-3, 3, size=(3000, 4)),
    "constant column": np.column_stack([_RNG.integers(0, 4, 3000), np.full(3000, -7), _RNG.integers(0, 2, 3000)]),
    # Small ranges of large values: keys @ radices wraps around int64 but the key is exact.
    "large values, small ranges": 2 ** 60 + _RNG.integers(0, 4, size=(3000, 3)),
    "very negative values": -(2 ** 62) + _RNG.integers(0, 4, size=(3000, 3)),
    "narrow dtype": _RNG.integers(-128, 127, size=(3000, 2)).astype(np.int8),
    "not contiguous": _RNG.integers(0, 3, size=(4, 3000)).T,
    "fewer rows than a bounds block": _RNG.integers(0, 2, size=(37, 3)),
}


@pytest.mark.parametrize("name", list(_TABLES))
def test_range_key_matches_numpy_and_hashing(name):
    keys = _TABLES[name]
    assert _table_key(keys) is not None
    first, inverse = _check_against_numpy(keys)
    # The column-by-column hashing numbers the same rows the same way (both in order of first
    # appearance).
    hashed, _ = pd.factorize(_hashed_key(keys))
    assert np.array_equal(inverse, hashed)
    assert np.array_equal(first, np.unique(hashed, return_index=True)[1])


@pytest.mark.parametrize("name", list(_TABLES))
def test_columns_key_is_the_table_key(name):
    # Column by column, without stacking: the same integer key, so the same numbering.
    keys = _TABLES[name]
    columns = list(keys.T)
    assert np.array_equal(_columns_key(columns), _table_key(keys))
    first, inverse = distinct_columns(columns)
    expected_first, expected_inverse = distinct_rows(keys)
    assert np.array_equal(first, expected_first) and np.array_equal(inverse, expected_inverse)


def test_distinct_columns_of_mixed_and_other_columns():
    rng = np.random.default_rng(4)
    ints, flags = rng.integers(0, 3, 2000), rng.integers(0, 2, 2000).astype(bool)
    constant = np.broadcast_to(np.int64(5), (2000,))  # a broadcast scalar, as cost.dp_times passes
    first, inverse = distinct_columns([ints, flags, constant])
    expected = distinct_rows(np.stack([ints, flags.astype(np.int64), constant], axis=1))
    assert np.array_equal(first, expected[0]) and np.array_equal(inverse, expected[1])
    assert len(first) == 6  # 3 x 2 values, the constant column adding none
    # Floats and ranges too wide for one key: the stacked table's hashing, the same numbering.
    halves = ints / 2
    assert _columns_key([halves, ints]) is None
    first, inverse = distinct_columns([halves, ints])
    assert list(first) == list(distinct_rows(np.stack([halves, ints], axis=1))[0])
    wide = rng.choice(np.array([-(2 ** 40), 0, 2 ** 40], dtype=np.int64), size=(2000, 3))
    assert _columns_key(list(wide.T)) is None
    assert np.array_equal(distinct_columns(list(wide.T))[1], distinct_rows(wide)[1])


def test_ranges_too_wide_for_one_key_fall_back_to_hashing():
    # Each column spans about 2^40: their product passes 2^62, so the rows are hashed column by column.
    rng = np.random.default_rng(3)
    keys = rng.choice(np.array([-(2 ** 40), 0, 2 ** 40], dtype=np.int64), size=(4000, 3))
    assert _table_key(keys) is None
    _check_against_numpy(keys)
    full = rng.integers(-(2 ** 63), 2 ** 63 - 1, size=(500, 2), dtype=np.int64)
    assert _table_key(full) is None
    first, _ = _check_against_numpy(np.concatenate([full, full]))
    assert list(first) == list(range(500))


def test_values_of_any_size():
    # Column ranges near 2^41 multiply past 2^62: the hashed path, whose codes do not depend on the
    # values' size.
    keys = np.array([[2**40, 3, 2**41], [1, 3, 2**41], [2**40, 3, 2**41], [1, 4, 7]], dtype=np.int64)
    first, inverse = distinct_rows(keys)
    assert list(first) == [0, 1, 3] and list(inverse) == [0, 1, 0, 2]


def test_other_dtypes_and_empty_tables():
    floats = np.array([[0.5, 1.0], [0.5, 2.0], [0.5, 1.0]])
    assert _table_key(floats) is None
    first, inverse = distinct_rows(floats)
    assert list(first) == [0, 1] and list(inverse) == [0, 1, 0]
    first, inverse = distinct_rows(np.zeros((0, 3), dtype=np.int64))
    assert len(first) == len(inverse) == 0
    first, inverse = distinct_rows(np.zeros((3, 0), dtype=np.int64))  # no columns: one row, repeated
    assert list(first) == [0] and list(inverse) == [0, 0, 0]


class _Pair(NamedTuple):
    total: np.ndarray
    rows: np.ndarray


def _recording(calls):
    def fn(a, b, c):
        calls.append(np.broadcast_shapes(np.shape(a), np.shape(b), np.shape(c)))
        return _Pair(np.asarray(a) * 100 + np.asarray(b) * 10 + c, np.zeros(np.shape(a)) + len(calls))
    return fn


@pytest.mark.parametrize("c_values", [[0, 1], list(range(-50_000, 50_000, 7))])
def test_per_distinct_evaluates_each_distinct_row_once(c_values):
    # Two values of c: the key's range (3 * 4 * 2) is below the row count, a lookup table; many
    # values of c (negative too): a range past the row count, hashed.
    rng = np.random.default_rng(4)
    n = 2 * DISTINCT_MIN_ROWS
    a = rng.integers(0, 3, n)[:, None]
    b = rng.integers(-2, 2, 4)[None, :]
    c = rng.choice(np.array(c_values), size=(n, 4))
    calls = []
    out = per_distinct(_recording(calls), a, b, c)
    assert type(out) is _Pair and out.total.shape == (n, 4)
    assert np.array_equal(out.total, a * 100 + b * 10 + c)
    rows = np.stack(np.broadcast_arrays(a, b, c), axis=-1).reshape(-1, 3)
    assert calls == [(len(np.unique(rows, axis=0)),)]  # one call, once per distinct row


def test_per_distinct_runs_directly_when_it_cannot_help():
    few = np.arange(DISTINCT_MIN_ROWS - 1)
    wide = np.array([0, 2 ** 40] * DISTINCT_MIN_ROWS)
    for a, b, c in [(few, few, few), (wide, wide, wide), (wide.astype(np.float64), wide, wide)]:
        calls = []
        out = per_distinct(_recording(calls), a, b, c)
        assert calls == [np.shape(a)]  # the rows as given
        assert np.array_equal(out.total, a * 100 + b * 10 + c)
    plain = per_distinct(lambda a: a * 2, np.arange(2 * DISTINCT_MIN_ROWS) % 5)
    assert isinstance(plain, np.ndarray) and list(plain[:6]) == [0, 2, 4, 6, 8, 0]


def test_per_distinct_dedupes_fewer_rows_from_min_rows():
    a = np.arange(300) % 3
    calls = []
    out = per_distinct(_recording(calls), a, a, a, min_rows=64)
    assert calls == [(3,)] and np.array_equal(out.total, a * 111)
    calls.clear()
    per_distinct(_recording(calls), a[:50], a[:50], a[:50], min_rows=64)
    assert calls == [(50,)]  # under min_rows: the rows as given


@dataclass(frozen=True)
class _Rows:
    """A container of per-row columns with `take` and a length, as candidates.Candidates."""

    a: np.ndarray
    b: np.ndarray
    unread: np.ndarray

    def __len__(self):
        return len(self.a)

    def take(self, index):
        return _Rows(self.a[index], self.b[index], self.unread[index])


def test_per_distinct_rows_prices_each_distinct_row_of_the_named_columns_once():
    rng = np.random.default_rng(5)
    n = 2 * DISTINCT_MIN_ROWS
    rows = _Rows(rng.integers(0, 3, n), rng.integers(0, 2, n).astype(bool), rng.integers(0, 1000, n))
    seen = []

    def fn(r):
        seen.append(len(r.a))
        return _Pair(r.a * 10 + r.b, 7.0)  # a scalar field stays a scalar

    out = per_distinct_rows(fn, rows, ["a", "b"])
    assert seen == [6]  # 3 x 2 distinct (a, b), whatever `unread` holds
    assert np.array_equal(out.total, rows.a * 10 + rows.b) and out.rows == 7.0
    few = rows.take(np.arange(DISTINCT_MIN_ROWS - 1))
    assert np.array_equal(per_distinct_rows(fn, few, ["a", "b"]).total, few.a * 10 + few.b)
    assert seen[-1] == DISTINCT_MIN_ROWS - 1  # below the threshold: the rows as given


def test_per_key_spreads_a_row_by_row_function_of_the_keys_columns():
    rng = np.random.default_rng(6)
    n = 2 * DISTINCT_MIN_ROWS
    rows = _Rows(rng.integers(0, 4, n), rng.integers(0, 2, n).astype(bool), rng.integers(0, 1000, n))
    derived = rows.a * 0.5 + rows.b  # a per-row value computed from the key's columns
    key = distinct_key(rows, ["a", "b"])
    assert key is not None and len(key[0]) == 8
    seen = []

    def fn(x, pair, *, scale):
        seen.append(len(x))
        return x * scale + pair[0], 2.0

    total, constant = per_key(fn, key, derived, (derived, 1.0), scale=3.0)
    assert seen == [8] and constant == 2.0
    assert np.array_equal(total, derived * 3.0 + derived)
    assert distinct_key(rows.take(np.arange(10)), ["a"]) is None  # too few rows: per_key runs on them all
    assert np.array_equal(per_key(fn, None, derived, (derived, 1.0), scale=3.0)[0], total)


def test_distinct_groups_hold_every_row_of_each_distinct_row_in_order_of_first_appearance():
    from sp_planner.distinct import distinct_groups

    pp, vpp = np.array([8, 4, 8, 4, 2, 8]), np.array([2, 1, 2, 1, 1, 1])
    groups = distinct_groups([pp, vpp])
    assert [(row, rows.tolist()) for row, rows in groups] == [(0, [0, 2]), (1, [1, 3]), (4, [4]), (5, [5])]
    assert distinct_groups([np.array([], dtype=np.int64)]) == []


def test_float_rows_are_told_apart_bit_for_bit():
    # 0.0 and -0.0 compare equal but are different rows; a NaN row equals itself.
    table = np.array([[1.5, 0.0], [1.5, -0.0], [np.nan, 2.0], [1.5, 0.0], [np.nan, 2.0], [0.1 + 0.2, 1.0],
                      [0.3, 1.0]])
    first, inverse = distinct_float_rows(table)
    assert len(first) == 5
    assert table[first][inverse].tobytes() == table.tobytes()  # every row is its distinct row, bit for bit
    assert inverse[0] == inverse[3] != inverse[1] and inverse[2] == inverse[4] and inverse[5] != inverse[6]
    assert [len(a) for a in distinct_float_rows(np.zeros((0, 3)))] == [0, 0]
