"""The streaming search: chunked, rules before costing, best rows kept, frame built on request.
Whatever the chunk size, the answer is the one a single chunk gives."""

import numpy as np
import pandas as pd
import pytest

import sp_planner.search as search_module
from sp_planner import columns
from sp_planner.catalog import load_hardware, load_model
from sp_planner.search import Pins, search
from sp_planner.space import (
    Axes,
    degree_tuples,
    enumerate_candidates,
    expand_candidates,
    iter_candidates,
    ordered_factorizations,
    search_order,
)
from sp_planner.space_count import count_candidates
from sp_planner.space_degrees import _divisors
from sp_planner.specs import Workload

MODEL = load_model("Llama-3-8B")
HW = load_hardware("A800")
WORKLOAD = Workload(seq_len=12288, global_batch=6)  # 12288 = 2^12 * 3: some splits fail
AXES = Axes(num_layers=MODEL.num_layers, precisions=HW.precisions)


def _search(chunk: int, head_rows: int, monkeypatch, **kwargs):
    monkeypatch.setattr(search_module, "CHUNK_CANDIDATES", chunk)
    monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
    return search(MODEL, HW, WORKLOAD, num_nodes=4, gpus_per_node=8, top_k=7, **kwargs)


@pytest.mark.parametrize("chunk,head_rows", [(97, 5), (500, 40), (1 << 20, 5)])
def test_chunks_and_kept_rows_change_nothing(chunk, head_rows, monkeypatch):
    whole = _search(1 << 20, 1 << 20, monkeypatch)  # one chunk, every row kept: the plain ranking
    streamed = _search(chunk, head_rows, monkeypatch)
    assert streamed.candidates_evaluated == whole.candidates_evaluated == len(whole.frame)
    assert streamed.prune_counts == whole.prune_counts
    assert streamed.ranked == whole.ranked
    pd.testing.assert_frame_equal(streamed.frame, whole.frame)
    pd.testing.assert_frame_equal(streamed.head(head_rows), whole.frame.head(head_rows))
    # beyond the rows kept, head() falls back to the frame
    pd.testing.assert_frame_equal(streamed.head(head_rows + 3), whole.frame.head(head_rows + 3))


@pytest.mark.parametrize("chunk,head_rows", [(97, 5), (500, 40), (1 << 20, 5), (97, 1 << 20)])
def test_every_row_in_one_pass_gives_the_same_answer(chunk, head_rows, monkeypatch):
    # every_row (a report): one pass costs every candidate; ranking, counts and frame are unchanged,
    # also when too few plans pass the rules to fill the kept rows (head_rows 1 << 20).
    calls = []
    real = search_module.scan_chunks
    monkeypatch.setattr(search_module, "scan_chunks", lambda *a, **k: calls.append(k["breakers"]) or real(*a, **k))
    plain = _search(chunk, head_rows, monkeypatch)
    calls.clear()
    once = _search(chunk, head_rows, monkeypatch, every_row=True)
    assert calls == [None]
    frame = once.frame
    assert calls == [None]  # the frame needs no further pass
    assert once.candidates_evaluated == plain.candidates_evaluated == len(frame)
    assert once.prune_counts == plain.prune_counts
    assert once.ranked == plain.ranked
    pd.testing.assert_frame_equal(frame, plain.frame)
    pd.testing.assert_frame_equal(once.head(5), plain.frame.head(5))
    assert 0 < int(frame["fits"].sum()) < len(frame) and frame["reason"].str.contains(":").any()


def test_frame_is_built_only_when_asked(monkeypatch):
    calls = []
    real = search_module.scan_chunks
    monkeypatch.setattr(search_module, "scan_chunks", lambda *a, **k: calls.append(k["keep"]) or real(*a, **k))
    result = _search(200, 5, monkeypatch)
    assert None not in calls  # the search itself keeps only the best rows
    result.head(5)
    assert None not in calls
    frame = result.frame
    assert calls.count(None) == 2  # passing and breaking candidates, once
    result.frame
    assert calls.count(None) == 2  # built once
    assert len(frame) == result.candidates_evaluated


def test_prune_counts_add_up(monkeypatch):
    result = _search(97, 5, monkeypatch)
    frame = result.frame
    assert sum(result.prune_counts.values()) == int((~frame["fits"]).sum())
    assert result.prune_counts["oom"] == int(frame["reason"].str.startswith("oom").sum())


def test_progress_reaches_every_candidate(monkeypatch):
    seen = []
    _search(97, 5, monkeypatch, progress=lambda done, total, what=None: seen.append((done, total)))
    total = count_candidates(WORKLOAD, 32, Pins(), gpus_per_node=8, axes=AXES)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3


def test_chunked_enumeration_is_the_whole_enumeration():
    degrees = search_order(degree_tuples(96, Pins()))
    chunks = [c for _, c in iter_candidates(WORKLOAD, degrees, Pins(), chunk_candidates=50, gpus_per_node=8,
                                            axes=AXES)]
    assert len(chunks) > 5
    whole = enumerate_candidates(WORKLOAD, 96, Pins(), gpus_per_node=8, axes=AXES)
    joined = columns.concat(chunks)
    for name in whole.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
    assert len(expand_candidates(WORKLOAD, degrees[:0], Pins(), axes=AXES)) == 0


def test_take_keeps_every_column():
    c = enumerate_candidates(WORKLOAD, 8, Pins(), axes=AXES)
    picked = columns.take(c, np.array([3, 1]))
    assert picked.plan(0) == c.plan(3) and picked.plan(1) == c.plan(1)


@pytest.mark.parametrize("n", [1, 2, 12, 36, 97, 1000, 2 ** 17])
def test_divisors(n):
    assert _divisors(n) == [d for d in range(1, n + 1) if n % d == 0]


def test_divisors_of_a_million_node_world():
    found = _divisors(8 * 1_000_000)  # 2^9 * 5^6: 10 * 7 divisors
    assert len(found) == 70 and found == sorted(found) and all(8_000_000 % d == 0 for d in found)


@pytest.mark.parametrize("world", [1, 8, 12, 96, 4096, 24 * 7 * 11])
def test_ordered_factorizations_count_degree_tuples(world):
    assert ordered_factorizations(world, 5) == len(degree_tuples(world, Pins()))


@pytest.mark.parametrize("pins", [Pins(), Pins(tp=2), Pins(ring=3, dp=2), Pins(ulysses=5)])
def test_degree_tuples_are_every_factorization_in_lexicographic_order(pins):
    import itertools

    from sp_planner.space import DEGREES

    world = 48
    divisors = [d for d in range(1, world + 1) if world % d == 0]
    expected = [t for t in itertools.product(divisors, repeat=len(DEGREES)) if np.prod(t) == world
                and all(getattr(pins, axis) in (None, v) for axis, v in zip(DEGREES, t))]
    assert degree_tuples(world, pins).tolist() == [list(t) for t in expected]


def test_too_large_a_search_is_refused_naming_a_size_that_is_answered(monkeypatch):
    from sp_planner.search import SearchTooLarge

    # candidates on 1..6 nodes of 8: 2145, 3993, 10845, 6690, 8808, 19671 (with vpp 2, 4, 8 where they
    # run: any m >= pp since Stop 64's micro-batch groups of N)
    monkeypatch.setattr(search_module, "MAX_CANDIDATES", 7000)
    with pytest.raises(SearchTooLarge) as refused:
        search(MODEL, HW, WORKLOAD, num_nodes=6, gpus_per_node=8)
    message = str(refused.value)
    assert "\n" not in message and "6 nodes x 8 GPUs give 19,671 candidate plans, more than the 7,000" in message
    assert "the largest round node count below it that is searched is 4" in message
    assert count_candidates(WORKLOAD, 32, Pins(), gpus_per_node=8, axes=AXES) == 6690
    search(MODEL, HW, WORKLOAD, num_nodes=4, gpus_per_node=8)


def test_degrees_stay_within_the_plans_bound(monkeypatch):
    import sp_planner.space_count as space_count
    import sp_planner.space_degrees as space_degrees
    from sp_planner.space import bounded_factorizations

    for module in (space_count, space_degrees):  # the enumeration and the count read the bound
        monkeypatch.setattr(module, "MAX_DEGREE", 8)
    tuples = degree_tuples(96, Pins())
    assert tuples.max() <= 8 and len(tuples) > 0
    import itertools

    divisors = [d for d in range(1, 9) if 96 % d == 0]
    brute = [t for t in itertools.product(divisors, repeat=5) if np.prod(t) == 96]
    assert tuples.tolist() == [list(t) for t in brute]
    assert bounded_factorizations(96, 5, 8) == len(brute)
    assert count_candidates(WORKLOAD, 96, Pins(), axes=AXES) == len(
        enumerate_candidates(WORKLOAD, 96, Pins(), axes=AXES))
