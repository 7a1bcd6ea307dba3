"""distinct: the distinct rows of a table, against numpy's sorting unique."""

import numpy as np

from sp_planner.distinct import distinct_rows


def test_distinct_rows_match_numpy_unique():
    keys = np.random.default_rng(1).integers(0, 5, size=(5000, 6))
    first, inverse = distinct_rows(keys)
    unique, numpy_first = np.unique(keys, axis=0, return_index=True)
    assert len(first) == len(unique)
    assert sorted(first) == sorted(numpy_first)  # each distinct row's lowest index
    assert (keys[first][inverse] == keys).all()  # every row maps to its own distinct row
    # Numbered by first appearance: each new number is one above the largest seen so far.
    assert list(inverse[:1]) == [0] and (np.diff(np.maximum.accumulate(inverse)) <= 1).all()


def test_values_of_any_size():
    # Codes come from hashing each column, so the values' size does not enter the combined key (a
    # radix of max + 1 per column would overflow int64 here).
    keys = np.array([[2**40, 3, 2**41], [1, 3, 2**41], [2**40, 3, 2**41], [1, 4, 7]], dtype=np.int64)
    first, inverse = distinct_rows(keys)
    assert list(first) == [0, 1, 3] and list(inverse) == [0, 1, 0, 2]
