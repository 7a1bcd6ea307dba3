"""The search's pruning (search_prune, search_pruned_scan.PrunedScan): rows whose step's lower bound keeps
them out of the ranking and of the refinement's tuple bests are not timed, and the search answers
as it does when every row is timed."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import sp_planner.search as search_module
import sp_planner.search_pruned_scan as pruned_scan
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.search import search
from sp_planner.search_prune import BOUND_MARGIN, skipped_rows, waiting_rows
from sp_planner.search_refine import TUPLE_COLUMNS, TupleBests, merged
from sp_planner.space import DEGREES
from sp_planner.specs import Workload


def _rows(pp, tuple_id):
    """Candidate-like columns: degree tuples (tuple_id in dp, pp as given, 1 elsewhere)."""
    cols = {name: np.ones(len(pp), dtype=np.int64) for name in TUPLE_COLUMNS}
    cols["pp"], cols["dp"] = np.asarray(pp), np.asarray(tuple_id)
    return SimpleNamespace(**cols)


def _bests(pp, tuple_id, step_s):
    tuples = np.ones((len(pp), len(TUPLE_COLUMNS)), dtype=np.int64)
    tuples[:, DEGREES.index("pp")], tuples[:, DEGREES.index("dp")] = pp, tuple_id
    return merged([TupleBests(tuples, np.asarray(step_s, dtype=float), np.arange(len(pp)))])


def test_skipped_rows_by_hand():
    # The last kept step 5 s; tuple (dp 1, pp 2) best 5.5 s, (dp 2, pp 2) 7 s: fewer tuples than
    # the refinement takes, so only a row above its own tuple's best is skipped beside pp 1 rows.
    bests = _bests([2, 2], [1, 2], [5.5, 7.0])
    bound = np.array([4.9, 6.0, 6.0, 6.0, np.nan, 5.0 * (1 + BOUND_MARGIN / 2), 5.5, 8.0])
    c = _rows([1, 1, 2, 2, 1, 1, 2, 2], [1, 1, 1, 2, 1, 1, 1, 3])
    expected = [False, True, True, False, False, False, False, False]
    # 4.9: may enter the ranking; 6.0 at pp 1: cannot enter it, no tuple; 6.0 of (1, 2): above
    # its tuple's 5.5; 6.0 of (2, 2): would be its tuple's best; NaN: never skipped; 5.0 + a
    # margin's half: within the margin; 5.5 of (1, 2): at its best, which a strictly greater
    # bound beats (ties go by place, and rounds time rows out of place order); 8.0 of a new tuple.
    assert skipped_rows(bound, c, 5.0, bests).tolist() == expected


def test_skipped_rows_past_the_tuples_refined():
    # 32 tuples of pp 2 recorded (1..32 s) and 4 of pp 4 (1..4 s): a new pp 2 tuple whose bound
    # exceeds both the 32nd best and pp 2's 4th cannot be refined; a new pp 8 tuple (none of its pp
    # recorded) can, as can a pp 4 row below pp 4's 4th best.
    pp = [2] * 32 + [4] * 4
    bests = _bests(pp, list(range(100, 132)) + [200, 201, 202, 203], list(range(1, 33)) + [1, 2, 3, 4])
    c = _rows([2, 8, 4, 4], [1, 1, 1, 2])
    bound = np.array([40.0, 40.0, 3.5, 40.0])
    assert skipped_rows(bound, c, 1.0, bests).tolist() == [True, False, False, True]


def test_waiting_rows_by_hand():
    # The last kept step 5 s. Tuple (dp 1, pp 2): bounds 6, 7 and 4, its least 4: the 6 and the 7
    # cannot enter the ranking and wait behind it; the 4 may enter it. Tuple (dp 2, pp 2): 8 waits
    # behind 5 + a margin's half (within the margin, so it may enter the ranking itself). Tuple
    # (dp 3, pp 2): two rows at its least, 6, neither waits. NaN never waits, nor does the lone
    # row of (dp 1, pp 1), nor the least of (dp 4, pp 2) with a NaN beside it.
    c = _rows([2, 2, 2, 2, 2, 2, 2, 1, 2, 2], [1, 1, 1, 2, 2, 3, 3, 1, 4, 4])
    bound = np.array([6.0, 7.0, 4.0, 8.0, 5.0 * (1 + BOUND_MARGIN / 2), 6.0, 6.0, 9.0, 6.0, np.nan])
    expected = [True, True, False, True, False, False, False, False, False, False]
    assert waiting_rows(bound, c, 5.0).tolist() == expected
    # Below the last kept step nothing waits.
    assert not waiting_rows(bound, c, 10.0).any()


QUESTIONS = [  # (model, hardware, nodes, seq_len, runtime)
    ("Qwen3-30B-A3B", "H100-SXM", 4, 65536, "megatron"),
    ("Qwen3-30B-A3B", "H100-SXM", 2, 32768, "torchtitan"),
    ("GLM-4.5-Air", "H100-SXM", 4, 16384, "megatron"),
]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: f"{q[0]}-{q[2]}x8-{q[3]}-{q[4]}")
@pytest.mark.parametrize("head_rows", [2000, 40])
def test_pruned_search_is_the_unpruned_search(question, head_rows, monkeypatch):
    # Every plan, figure, count and refined tuple equal to the search that times every fitting
    # row (skipped_rows: none); small rounds and batches, so the pruning runs between many of them.
    name, hardware, nodes, seq_len, framework = question
    model = load_model(name)
    workload = Workload(seq_len=seq_len, global_batch=8 * nodes, causal=True)
    monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
    monkeypatch.setattr(pruned_scan, "PRUNE_ROUND_ROWS", 512)
    monkeypatch.setattr(pruned_scan, "PRUNE_BATCH_ROWS", 4096)
    monkeypatch.setattr(pruned_scan, "BOUND_BATCH_ROWS", 4096)
    monkeypatch.setattr(pruned_scan, "MIN_ROUND_ROWS", 64)
    refined: list[np.ndarray] = []
    real_refine = search_module.tuples_to_refine
    monkeypatch.setattr(search_module, "tuples_to_refine", lambda *a: refined.append(out := real_refine(*a)) or out)
    skipped: list[int] = []
    real_skipped = pruned_scan.skipped_rows
    monkeypatch.setattr(pruned_scan, "skipped_rows",
                        lambda *a: skipped.append(int((s := real_skipped(*a)).sum())) or s)

    def answer():
        return search(model, load_hardware(hardware), workload, num_nodes=nodes, gpus_per_node=8, top_k=10,
                      runtime=FRAMEWORK_RUNTIME[framework])

    waited: list[int] = []
    real_waiting = pruned_scan.waiting_rows
    monkeypatch.setattr(pruned_scan, "waiting_rows", lambda *a: waited.append(int((w := real_waiting(*a)).sum())) or w)
    pruned = answer()
    assert sum(skipped) > 0  # the pruning ran and skipped rows
    # and rows waited behind their tuple's least-bound row (every question with 40 rows kept; with
    # 2,000 GLM-4.5-Air's rows left after skipped_rows include none that can wait)
    assert sum(waited) > 0 or head_rows == 2000
    monkeypatch.setattr(pruned_scan, "skipped_rows", lambda bound, *a: np.zeros(len(bound), dtype=bool))
    whole = answer()
    assert pruned.candidates_evaluated == whole.candidates_evaluated
    assert pruned.prune_counts == whole.prune_counts
    assert pruned.ranked == whole.ranked
    pd.testing.assert_frame_equal(pruned.head(head_rows), whole.head(head_rows))
    assert len(refined) == 2 and np.array_equal(refined[0], refined[1])


REFINED_QUESTIONS = [  # (model, hardware, nodes, seq_len, runtime): ones whose best tuples are refined
    ("GLM-4.5-Air", "H100-SXM", 4, 16384, "megatron"),
    ("gemma-2-9b", "H100-SXM", 4, 32768, "megatron"),
    ("gemma-2-9b", "H100-SXM", 4, 32768, "torchtitan"),
]


@pytest.mark.parametrize("question", REFINED_QUESTIONS, ids=lambda q: f"{q[0]}-{q[2]}x8-{q[3]}-{q[4]}")
def test_refinement_pruned_against_the_scans_rows_kept(question, monkeypatch):
    # The refinement's scan starts from the scan's rows kept (search_scan `after`) and prunes its
    # rows on the ranking alone (skipped_rows with no tuple bests): it skips rows, and every plan,
    # figure and count is the search's that times every fitting row of both scans, and the one
    # pass over every row's (every_row: no pruned scan, the refined rows ranked with the scan's).
    name, hardware, nodes, seq_len, framework = question
    model = load_model(name)
    workload = Workload(seq_len=seq_len, global_batch=8 * nodes, causal=True)
    monkeypatch.setattr(search_module, "HEAD_ROWS", 40)  # rows kept that all fit before the refinement
    skipped_in_refinement: list[int] = []
    real_skipped = pruned_scan.skipped_rows

    def counted(bound, c, last_kept_s, bests):
        s = real_skipped(bound, c, last_kept_s, bests)
        if bests is None:
            skipped_in_refinement.append(int(s.sum()))
        return s

    monkeypatch.setattr(pruned_scan, "skipped_rows", counted)

    def answer(every_row=False):
        return search(model, load_hardware(hardware), workload, num_nodes=nodes, gpus_per_node=8, top_k=10,
                      runtime=FRAMEWORK_RUNTIME[framework], every_row=every_row)

    pruned = answer()
    assert sum(skipped_in_refinement) > 0
    monkeypatch.setattr(pruned_scan, "skipped_rows", lambda bound, *a: np.zeros(len(bound), dtype=bool))
    for whole in (answer(), answer(every_row=True)):
        assert pruned.candidates_evaluated == whole.candidates_evaluated
        assert pruned.prune_counts == whole.prune_counts
        assert pruned.ranked == whole.ranked
        pd.testing.assert_frame_equal(pruned.head(40), whole.head(40))


def test_skipped_rows_without_tuple_bests_read_the_ranking_alone():
    # No tuple bests (the refinement's scan): a pipelined row is skipped on its bound alone.
    c = _rows([1, 2, 2, 4], [1, 1, 2, 3])
    bound = np.array([6.0, 6.0, 4.0, 5.0 * (1 + BOUND_MARGIN / 2)])
    assert skipped_rows(bound, c, 5.0, None).tolist() == [True, True, False, False]
