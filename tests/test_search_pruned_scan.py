"""The pruned scan (search_pruned_scan.PrunedScan): rows out of memory are counted and their memory
priced, but not timed once the rows kept all fit; the answer is the one timing every row gives.
The pruning rule itself: tests/test_search_prune.py."""

import numpy as np
import pandas as pd

import sp_planner.search as search_module
import sp_planner.search_pruned_scan as pruned_scan
from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import RULES
from sp_planner.search import search
from sp_planner.specs import Workload

MODEL = load_model("Llama-3-8B")
HW = load_hardware("A800")
WORKLOAD = Workload(seq_len=12288, global_batch=6)  # tests/test_search_stream.py's question


def _search(chunk: int, head_rows: int, monkeypatch):
    monkeypatch.setattr(search_module, "CHUNK_CANDIDATES", chunk)
    monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
    return search(MODEL, HW, WORKLOAD, num_nodes=4, gpus_per_node=8, top_k=7)


def test_rows_out_of_memory_are_not_timed_once_the_kept_rows_all_fit(monkeypatch):
    whole = _search(1 << 20, 1 << 20, monkeypatch)
    timed_oom: list[int] = []
    real = pruned_scan.evaluate_rows

    def counted(*args, **kwargs):
        e = real(*args, **kwargs)
        timed_oom.append(int(np.count_nonzero(e.rule_code == len(RULES))))
        return e

    monkeypatch.setattr(pruned_scan, "evaluate_rows", counted)
    # Rounds smaller than the search (in one round its fitting and OOM rows are timed together).
    monkeypatch.setattr(pruned_scan, "PRUNE_ROUND_ROWS", 64)
    streamed = _search(97, 5, monkeypatch)
    assert sum(timed_oom) < streamed.prune_counts["oom"]  # OOM rows counted, some never timed
    assert streamed.prune_counts == whole.prune_counts and streamed.ranked == whole.ranked
    pd.testing.assert_frame_equal(streamed.head(5), whole.frame.head(5))


def test_fitting_rows_gathered_over_memory_batches_answer_as_bounded_per_batch(monkeypatch):
    # Fitting rows bounded BOUND_BATCH_ROWS at a time, gathered over several memory batches: fewer
    # bound calls on more rows each, the same answer as bounding each memory batch's rows as they
    # come.
    monkeypatch.setattr(pruned_scan, "PRUNE_ROUND_ROWS", 64)
    monkeypatch.setattr(pruned_scan, "PRUNE_BATCH_ROWS", 256)
    bound_rows: list[int] = []
    real = pruned_scan.candidate_step_bound

    def counted(*args, **kwargs):
        bound_rows.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(pruned_scan, "candidate_step_bound", counted)

    def answer(bound_batch: int):
        monkeypatch.setattr(pruned_scan, "BOUND_BATCH_ROWS", bound_batch)
        bound_rows.clear()
        result = _search(97, 5, monkeypatch)
        return result, list(bound_rows)

    per_batch, per_batch_calls = answer(1)
    gathered, gathered_calls = answer(1024)
    assert len(gathered_calls) < len(per_batch_calls) and max(gathered_calls) > max(per_batch_calls)
    assert gathered.candidates_evaluated == per_batch.candidates_evaluated
    assert gathered.prune_counts == per_batch.prune_counts and gathered.ranked == per_batch.ranked
    pd.testing.assert_frame_equal(gathered.head(5), per_batch.head(5))


def test_held_oom_rows_that_cannot_be_kept_are_dropped_untimed(monkeypatch):
    # Rows kept that never all fit (40 kept; Llama-3-70B at 128K on 2 x 8 H100: no plan fits;
    # Qwen3-30B-A3B at 64K on 8 H100: 5 of 22,120 do): held OOM rows that 40 fitting rows and OOM
    # rows of a smaller peak over capacity rank before are dropped (_still_held), none of them
    # timed, and every plan, figure and count is the answer that keeps every held row until it is
    # timed.
    monkeypatch.setattr(pruned_scan, "PRUNE_ROUND_ROWS", 64)
    monkeypatch.setattr(pruned_scan, "PRUNE_BATCH_ROWS", 256)
    monkeypatch.setattr(pruned_scan, "BOUND_BATCH_ROWS", 1024)
    dropped: list[int] = []
    real = pruned_scan.PrunedScan._still_held

    def counted(self):
        held = real(self)
        dropped.append(sum(len(p.place) for p in self.held) - sum(len(p.place) for p in held))
        return held

    def answer(name: str, nodes: int, seq_len: int, head_rows: int):
        monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
        workload = Workload(seq_len=seq_len, global_batch=8 * nodes, causal=True)
        return search(load_model(name), load_hardware("h100-sxm"), workload, num_nodes=nodes, gpus_per_node=8,
                      top_k=10)

    for question in (("Llama-3-70B", 2, 131072, 40), ("Qwen3-30B-A3B", 1, 65536, 40)):
        monkeypatch.setattr(pruned_scan.PrunedScan, "_still_held", counted)
        dropped.clear()
        pruned = answer(*question)
        assert sum(dropped) > 0, question
        monkeypatch.setattr(pruned_scan.PrunedScan, "_still_held", lambda self: self.held)
        whole = answer(*question)
        assert pruned.candidates_evaluated == whole.candidates_evaluated
        assert pruned.prune_counts == whole.prune_counts and pruned.ranked == whole.ranked
        pd.testing.assert_frame_equal(pruned.head(question[3]), whole.head(question[3]))
