"""Memory at the edge against what published runs say of memory: every scored run completed, so
the cost model must predict it fits (thresholds.check fails the corpus otherwise, as
test_accuracy_guard runs it on the shipped corpus), and a run a
source says ran out of memory must be predicted not to fit.

The USP paper (Fang & Zhao, arXiv 2405.07719, the text beside its Table 5; shared/reference
usp_paper_tables.md): LLAMA2-7B at 64K tokens on one node of 8 x A800, sequence parallelism alone
(ulysses x ring = 8, tp 1) runs out of memory, while its three 64K rows with tp 4 or 8 ran.
"""

from __future__ import annotations

import pytest

from sp_planner.validation.row_run import predict_row
from sp_planner.validation.score import ValidationResult
from sp_planner.validation.thresholds import check, default_thresholds_path, load_thresholds

LIMITS = load_thresholds(default_thresholds_path())


def _row(corpus, row_id):
    return next(r for r in corpus.rows if r.id == row_id)


@pytest.mark.parametrize("ulysses,ring", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_sequence_parallelism_alone_at_64k_runs_out_of_memory_as_the_paper_says(corpus, ulysses, ring):
    row = _row(corpus, "usp-t5-64k-t4u2r1").model_copy(update={"tp": 1, "ulysses": ulysses, "ring": ring, "dp": 1})
    est = predict_row(row, corpus)
    assert not est.fits
    assert est.memory_peak_bytes > 80 * 2**30  # over the 80 GB card by more than its reserve


@pytest.mark.parametrize("row_id", ["usp-t5-64k-t4u2r1", "usp-t5-64k-t4u1r2", "usp-t5-64k-t8u1r1"])
def test_the_64k_runs_that_ran_fit(corpus, row_id):
    assert predict_row(_row(corpus, row_id), corpus).fits


def test_check_fails_a_completed_run_predicted_not_to_fit(scored):
    first = scored.rows[0]
    broken = first.model_copy(update={"fits": False, "fit_reason": "oom: needs 81.2 GiB per GPU, 79.3 GiB available"})
    result = ValidationResult(rows=(broken, *scored.rows[1:]), skipped=scored.skipped,
                              mape_percent=scored.mape_percent, groups=scored.groups)
    failures = check(result, LIMITS)
    assert failures == [f"row {first.id}: predicted not to fit (oom: needs 81.2 GiB per GPU, 79.3 GiB "
                        "available), but the run completed"]
