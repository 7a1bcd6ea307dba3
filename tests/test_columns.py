"""columns: row selection over nested typed columns; concat_take is take of concat, column by column."""

from typing import NamedTuple

import numpy as np
import pytest

from sp_planner import columns
from sp_planner.candidates import Candidates
from sp_planner.plan import ParallelPlan


class _Costs(NamedTuple):
    step_s: np.ndarray
    reason: np.ndarray


class _Rows(NamedTuple):
    candidates: Candidates
    costs: _Costs


def _rows(plans: list[ParallelPlan], first: float) -> _Rows:
    n = len(plans)
    reasons = np.array([f"r{first + i:g}" for i in range(n)], dtype=object)
    return _Rows(Candidates.concat([Candidates.of_plan(p) for p in plans]),
                 _Costs(first + np.arange(n, dtype=float), reasons))


def _equal(a, b) -> None:
    for got, want in zip(a.costs, b.costs):
        np.testing.assert_array_equal(got, want)
    for name in Candidates.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a.candidates, name), getattr(b.candidates, name))


@pytest.mark.parametrize("index", [[4, 0, 2, 1, 3], [3, 3, 0], [], [1]])
def test_concat_take_is_take_of_concat(index):
    plans = [ParallelPlan(dp=d, pp=1, tp=8 // d) for d in (1, 2, 4, 8)] + [ParallelPlan(dp=2, pp=2, tp=2)]
    parts = [_rows(plans[:2], 0.0), _rows(plans[2:], 10.0)]
    rows = np.array(index, dtype=np.int64)
    got = columns.concat_take(parts, rows)
    want = columns.take(columns.concat(parts), rows)
    _equal(got, want)
    # by hand: the step times are 0, 1 (first part) then 10, 11, 12
    np.testing.assert_array_equal(got.costs.step_s, np.array([0.0, 1.0, 10.0, 11.0, 12.0])[rows])
    np.testing.assert_array_equal(got.candidates.dp, np.array([1, 2, 4, 8, 2])[rows])


def test_concat_take_of_one_part_takes_its_rows():
    part = _rows([ParallelPlan(dp=4, pp=1, tp=2), ParallelPlan(dp=8, pp=1, tp=1)], 5.0)
    got = columns.concat_take([part], np.array([1, 0]))
    np.testing.assert_array_equal(got.costs.step_s, [6.0, 5.0])
    np.testing.assert_array_equal(got.candidates.dp, [8, 4])
    assert list(got.costs.reason) == ["r6", "r5"]


def test_columns_not_priced_yet_stay_none():
    # search_columns.Evaluated.comm is None until search_columns.explained_rows prices the shown rows.
    class _Maybe(NamedTuple):
        step_s: np.ndarray
        comm: np.ndarray | None

    parts = [_Maybe(np.array([1.0, 2.0]), None), _Maybe(np.array([3.0]), None)]
    whole = columns.concat(parts)
    np.testing.assert_array_equal(whole.step_s, [1.0, 2.0, 3.0])
    assert whole.comm is None
    assert columns.take(whole, np.array([2, 0])).comm is None
    got = columns.concat_take(parts, np.array([2, 0]))
    np.testing.assert_array_equal(got.step_s, [3.0, 1.0])
    assert got.comm is None


@pytest.mark.parametrize("indexes", [([1, 0], None), (None, [2, 2, 0]), ([], [1]), ([1], [])])
def test_concat_taken_is_concat_of_takes(indexes):
    plans = [ParallelPlan(dp=d, pp=1, tp=8 // d) for d in (1, 2, 4, 8)] + [ParallelPlan(dp=2, pp=2, tp=2)]
    parts = [_rows(plans[:2], 0.0), _rows(plans[2:], 10.0)]
    index = [None if i is None else np.array(i, dtype=np.int64) for i in indexes]
    got = columns.concat_taken(parts, index)
    _equal(got, columns.concat([p if i is None else columns.take(p, i) for p, i in zip(parts, index)]))
    # by hand: the first part's step times are 0, 1, the second's 10, 11, 12
    first = [0.0, 1.0] if index[0] is None else [[0.0, 1.0][i] for i in index[0]]
    second = [10.0, 11.0, 12.0] if index[1] is None else [[10.0, 11.0, 12.0][i] for i in index[1]]
    np.testing.assert_array_equal(got.costs.step_s, first + second)
    assert got.costs.reason.dtype == object and list(got.costs.reason) == [f"r{s:g}" for s in first + second]
    assert got.candidates.dp.dtype == np.int64 and got.candidates.zigzag.dtype == bool


def test_concat_taken_keeps_a_column_not_priced_none():
    class _Maybe(NamedTuple):
        step_s: np.ndarray
        comm: np.ndarray | None

    parts = [_Maybe(np.array([1.0, 2.0]), None), _Maybe(np.array([3.0]), None)]
    got = columns.concat_taken(parts, [np.array([1]), None])
    np.testing.assert_array_equal(got.step_s, [2.0, 3.0])
    assert got.comm is None


def test_held_rows_finds_each_taken_row_among_the_priced():
    # Rows 1, 4 and 7 priced; a take of rows 7, 0, 4, 4, 9 holds priced rows at places 0, 2, 3,
    # which are the priced table's entries 2, 1, 1.
    at, found = columns.held_rows(np.array([1, 4, 7]), np.array([7, 0, 4, 4, 9]))
    assert at.tolist() == [0, 2, 3] and found.tolist() == [2, 1, 1]
    at, found = columns.held_rows(np.array([], dtype=np.int64), np.array([3]))
    assert at.tolist() == [] and found.tolist() == []
