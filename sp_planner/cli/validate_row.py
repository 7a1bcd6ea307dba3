"""`sp-validate --row ID`: one corpus row's prediction taken apart, for finding why it is off.

The row's plan, the predicted figure beside the measured one, and where the predicted step time
and memory go (the cost model's TimeBreakdown and MemoryBreakdown, as `sp-plan --explain` names
them). Rows the cost model cannot express have no prediction: asking for one is bad input.
"""

from __future__ import annotations

import difflib

from pydantic import Field

from sp_planner.cli.terminal import wrap_at_spaces
from sp_planner.estimate import MemoryBreakdown, PlanEstimate, TimeBreakdown
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.present.fit import FitColumn, FitTable, fitted_lines
from sp_planner.present.labels import MEMORY_LABELS, TIME_LABELS, plan_name
from sp_planner.specs.base import FrozenModel
from sp_planner.units import format_tokens
from sp_planner.validation.corpus import Corpus
from sp_planner.validation.corpus_row import CorpusRow
from sp_planner.validation.row_run import predict_row, row_model, row_plan
from sp_planner.validation.score import ScoredRow, score_row

GIB = 2**30
# The breakdowns' columns where a terminal is too narrow for their fixed layout (57 and 50 wide).
TIME_COLUMNS = (FitColumn("part", prose=True), FitColumn("time", "right"), FitColumn("of step", "right"))
MEMORY_COLUMNS = (FitColumn("part", prose=True), FitColumn("size", "right"))


class RowExplanation(FrozenModel):
    """One row's prediction and its parts (sp-validate --row ID --format json): the row as
    `sp-validate` scores it, with the plan and the cost model's breakdowns."""

    row: ScoredRow
    global_batch: int
    plan: ParallelPlan
    step_time_s: float
    time: TimeBreakdown
    memory: MemoryBreakdown
    # The maintainers' filing when the row is kept out of the score as a regression.
    regression: str | None = Field(default=None)


def find_row(corpus: Corpus, row_id: str) -> CorpusRow:
    """The scored or regression row `row_id`; bad input when there is none or it cannot be predicted."""
    # Ids are lower case; matched as model and hardware names are, whatever the case typed, and
    # without the spaces a pasted id brings (" a" was said to be no row, its nearest "a").
    wanted = row_id.strip().lower()
    if not wanted:  # `--row "$ID"` with ID unset: said as "--row : no such row"
        raise UserInputError("--row is empty; give a row id (`sp-validate` lists every row id)")
    row = next((r for r in corpus.rows if r.id == row_id), None) or next(
        (r for r in corpus.rows if r.id.lower() == wanted), None)
    if row is None:
        close = difflib.get_close_matches(wanted, [r.id for r in corpus.rows], n=3, cutoff=0.6)
        nearest = f" (the nearest: {', '.join(close)})" if close else ""
        raise UserInputError(f"--row {row_id}: no such row in the corpus{nearest}; `sp-validate` lists every row id")
    if not row.expressible:
        raise UserInputError(f"--row {row_id}: the row is not expressible, so it has no prediction ({row.reason})")
    return row


def explain_row(corpus: Corpus, row_id: str) -> RowExplanation:
    row = find_row(corpus, row_id)
    est: PlanEstimate = predict_row(row, corpus)
    plan = row_plan(row, row_model(row, corpus))
    return RowExplanation(row=score_row(row, corpus, est), global_batch=row.global_batch, plan=plan,
                          step_time_s=est.step_time_s, time=est.time, memory=est.memory, regression=row.regression)


def render_row(x: RowExplanation, *, figure_label: str, width: int = 80) -> str:
    """The explanation in lines of at most `width` columns."""
    def wrap(text: str) -> list[str]:
        return wrap_at_spaces(text, width, hang="  ")

    r = x.row
    lines = wrap(f"{r.id}: {r.source}, {r.table}")
    lines += wrap(f"{r.model} on {r.num_gpus} x {r.hardware}, {format_tokens(r.seq_len)} tokens, "
                  f"global batch {x.global_batch}")
    lines += wrap(f"plan: {plan_name(x.plan)}")
    lines += wrap(f"predicted {_number(r.predicted)} {figure_label}, measured {_number(r.measured)}: "
                  f"{r.error_percent:+.1f}%")
    if x.regression is not None:
        lines += wrap(f"not scored, filed as a regression: {x.regression}")
    lines += ["", f"step {x.step_time_s:.4g} s"]
    times = [(TIME_LABELS[name], f"{seconds:.4g} s", f"{100 * seconds / x.step_time_s:.1f}%")
             for name, seconds in x.time.model_dump().items() if seconds]
    fixed = [f"  {label:<34}{seconds:>14}{share:>9}" for label, seconds, share in times]
    lines += fitted_lines(fixed, FitTable("", TIME_COLUMNS, tuple(times), boxed=False), width, indent="  ")
    fit = "fits" if r.fits else "does not fit"
    lines += ["", *wrap(f"memory {r.predicted_memory_peak_bytes / GIB:.1f} of {r.hbm_bytes / GIB:.1f} GiB per GPU "
                        f"({fit})")]
    sizes = [(MEMORY_LABELS[name], f"{size / GIB:.2f} GiB") for name, size in x.memory.model_dump().items() if size]
    fixed = [f"  {label:<34}{size:>14}" for label, size in sizes]
    lines += fitted_lines(fixed, FitTable("", MEMORY_COLUMNS, tuple(sizes), boxed=False), width, indent="  ")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
