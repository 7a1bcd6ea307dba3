"""`sp-validate`: predict every published run in the validation corpus and show the error.

Exit codes: 0 scored (and, with --check, every limit held); 1 --check found a broken limit;
2 bad input (one line on stderr). --check's result follows the table, sits in the JSON under
"check", and goes to stderr with --format markdown (whose stdout is the README's section).
"""

from __future__ import annotations

import json
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sp_planner.cli.common import folder_name, run_app
from sp_planner.cli.terminal import pack_words, terminal_columns, wrap_at_spaces, wrote_lines
from sp_planner.destination import check_folder_destination
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.validate_row import explain_row, render_row
from sp_planner.errors import UserInputError
from sp_planner.present.fit import FitColumn, FitTable, fitted_lines
from sp_planner.units import format_tokens, plural
from sp_planner.validation.corpus import default_corpus_path, load_corpus
from sp_planner.validation.row_run import check_rows
from sp_planner.validation.score import ValidationResult, group_name, score_corpus
from sp_planner.validation.thresholds import check, check_group_names, load_thresholds
from sp_planner.cli.help_format import PlainHelpCommand

EXIT_CHECK_FAILED = 1
WIDTH = 80
# Short labels for the table; the legend under it spells them out.
FIGURE_LABELS = {
    ("model_tflops_per_gpu", "megatron_full_square"): "TFLOPS sq",
    ("model_tflops_per_gpu", "causal_model"): "TFLOPS cz",
    ("mfu_percent", "megatron_full_square"): "MFU% sq",
    ("mfu_percent", "causal_model"): "MFU% cz",
    ("model_tflops_per_gpu", "megatron_2021_recompute"): "TFLOPS rc",
    ("mfu_percent", "megatron_2021_recompute"): "MFU% rc",
    ("model_tflops_per_gpu", "usp_v5"): "TFLOPS v5",
    ("tokens_per_s_per_gpu", "none"): "tok/s/GPU",
    ("step_time_s", "none"): "step s",
}
# The tables' columns where a terminal under 80 columns splits them (the fixed layout is 75 and 56 wide).
ROW_COLUMNS = (FitColumn("row"), FitColumn("source"), FitColumn("figure"), FitColumn("predicted", "right"),
               FitColumn("measured", "right"), FitColumn("error", "right"))
GROUP_COLUMNS = (FitColumn("group", prose=True), FitColumn("rows", "right"), FitColumn("MAPE", "right"),
                 FitColumn("Spearman", "right"))
LEGEND = ("TFLOPS and MFU are per GPU; sq = attention counted over the full s x s square (Megatron-LM to "
          "core_v0.11), cz = over the causal half (Megatron-LM from core_v0.12), rc = the full square plus "
          "the recompute forward (Narayanan 2021 eq. 3), v5 = the USP paper's v5 count (causal, no K/V projections). "
          "error = (predicted - measured) / measured.")

EPILOG = """\
Examples:

  sp-validate

  sp-validate --format json

  sp-validate --report reports/validation --check validation/thresholds.yaml

  sp-validate --row nemo-b200-128k

Exit codes: 0 scored, 1 a --check limit is broken, 2 bad input.
"""


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def validate(
    *,
    corpus: Annotated[Optional[Path], typer.Option(show_default="validation/corpus in the source tree",
                                                   help="A corpus .yaml file or a folder of them.")] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", help="table for people; json for tools; markdown for the README's accuracy section.")]
    = OutputFormat.table,
    report: Annotated[Optional[Path], typer.Option(
        parser=folder_name, metavar="<path>",
        help="Write predicted_vs_measured.png and validation.csv to this folder.")] = None,
    check_limits: Annotated[Optional[Path], typer.Option(
        "--check", help="Exit 1 when a limit in this thresholds .yaml is broken, or a run that "
        "completed is predicted not to fit in memory (CI uses validation/thresholds.yaml).")] = None,
    row_id: Annotated[Optional[str], typer.Option(
        "--row", help="Take one row's prediction apart: its plan, the predicted figure against the measured "
        "one, and where the predicted step time and memory go.")] = None,
) -> int:
    """Score the cost model against published training runs: error per row, MAPE, rank correlation per group."""
    from sp_planner.validation.report import check_report_folder, write_report  # matplotlib only when asked

    path = corpus if corpus is not None else _relative(default_corpus_path())
    if corpus is None and not path.exists():
        raise UserInputError(f"no corpus at {path}: the corpus ships in the source tree's validation/ "
                             "folder, not in the wheel; pass --corpus PATH")
    loaded = load_corpus(path)
    check_rows(loaded)
    if row_id is not None:
        return _explain(loaded, row_id, output_format, report=report, check_limits=check_limits)
    limits = None
    if check_limits is not None:
        limits = load_thresholds(check_limits)
        check_group_names(limits, (group_name(row) for row in loaded.rows), path=check_limits)
    if report is not None:
        check_folder_destination(report, option="--report")
        check_report_folder(report)
    with delayed_progress("predicting published runs") as progress:
        result = score_corpus(loaded, progress=progress)
    failures = check(result, limits) if limits is not None else []
    if output_format is OutputFormat.json:
        doc = json.loads(result.model_dump_json())
        doc = {"corpus": str(path), "num_rows": len(loaded.rows), "num_scored": len(result.rows),
               "num_skipped": len(result.skipped), **doc,
               "sources": [source.model_dump() for source in loaded.sources]}
        if limits is not None:
            doc["check"] = {"thresholds": str(check_limits), "passed": not failures, "failures": failures}
        typer.echo(json.dumps(doc, indent=2))
    elif output_format is OutputFormat.markdown:
        typer.echo(render_markdown(result, num_sources=len(loaded.sources)))
        if limits is not None:  # on stderr: stdout stays the README's section
            typer.echo(render_check(failures, check_limits), err=True)
    else:
        width = terminal_columns()
        typer.echo(render_table(result, corpus=path, num_sources=len(loaded.sources), width=width))
        if limits is not None:
            typer.echo(render_check(failures, check_limits, width))
    if report is not None:
        written = write_report(result, report)
        typer.echo("\n".join(wrote_lines(written, terminal_columns())), err=True)
    return EXIT_CHECK_FAILED if failures else 0


def _explain(loaded, row_id: str, output_format: OutputFormat, *, report: Path | None,
             check_limits: Path | None) -> int:
    """sp-validate --row: one row taken apart (cli.validate_row), as a table or JSON."""
    if report is not None or check_limits is not None:
        raise UserInputError("--row explains one row; drop --report and --check, which score the whole corpus")
    if output_format is OutputFormat.markdown:
        raise UserInputError("--row prints a table or JSON; --format markdown is the README's accuracy section")
    explanation = explain_row(loaded, row_id)
    if output_format is OutputFormat.json:
        typer.echo(explanation.model_dump_json(indent=2))
    else:
        label = FIGURE_LABELS[(explanation.row.figure, explanation.row.convention)]
        typer.echo(render_row(explanation, figure_label=label, width=terminal_columns()))
    return 0


def _relative(path: Path) -> Path:
    """`path` relative to the working directory when it lies below it (shorter to print)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _wrap(text: str, indent: str = "", hang: str = "", *, width: int = WIDTH) -> str:
    """`text` wrapped at its spaces (a path or a hyphenated word stays whole)."""
    return "\n".join(wrap_at_spaces(text, width, indent=indent, hang=hang))


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def render_table(result: ValidationResult, *, corpus: Path, num_sources: int, width: int = WIDTH) -> str:
    """Rows, skipped reasons, groups and the corpus MAPE, every line within `width` columns (80:
    the tables' fixed columns; narrower, the tables split into column groups)."""
    def wrap(text: str, indent: str = "", hang: str = "") -> str:
        return _wrap(text, indent, hang, width=width)

    total = len(result.rows) + len(result.skipped)
    unexpressible = [r for r in result.skipped if r.kind == "not_expressible"]
    filed_rows = [r for r in result.skipped if r.kind == "regression"]
    filed_as = "a regression" if len(filed_rows) == 1 else "regressions"
    regressions = f", {len(filed_rows)} filed as {filed_as}" if filed_rows else ""
    lines = [wrap(f"sp-validate: {total} published runs from {plural(num_sources, 'source')} in {corpus}; "
                  f"{len(result.rows)} scored, {len(unexpressible)} skipped{regressions}."), ""]
    rows = [(r.id, r.source, FIGURE_LABELS[(r.figure, r.convention)], _number(r.predicted) + ("" if r.fits else "*"),
             _number(r.measured), f"{r.error_percent:+.1f}%") for r in result.rows]
    fixed = [f"{'row':<22} {'source':<10} {'figure':<10} {'predicted':>10} {'measured':>10} {'error':>8}"]
    fixed += [f"{i:<22} {src:<10} {fig:<10} {pred:>10} {meas:>10} {err:>8}" for i, src, fig, pred, meas, err in rows]
    lines += fitted_lines(fixed, FitTable("", ROW_COLUMNS, tuple(rows), boxed=False), width)
    lines.append(wrap(LEGEND))
    if any(not r.fits for r in result.rows):
        lines.append(wrap("* the cost model predicts this plan does not fit in memory (the run did)."))
    if unexpressible:
        lines += ["", wrap(f"Skipped ({len(unexpressible)}), not expressible by the cost model:")]
        for reason, count in Counter(r.reason for r in unexpressible).most_common():
            lines.append(wrap(f"{count:>3} {reason}", hang="    "))
    if filed_rows:
        lines += ["", wrap(f"Not scored ({len(filed_rows)}), measured during a performance regression "
                           "the framework's maintainers filed:")]
        for row in filed_rows:
            lines.append(wrap(f"  {row.id}: {row.reason}", hang="    "))
    groups = [(g.name, str(g.rows), f"{g.mape_percent:.1f}%", "n/a" if g.spearman is None else f"{g.spearman:.2f}")
              for g in result.groups]
    fixed = [f"{'group':<28} {'rows':>5} {'MAPE':>8} {'Spearman':>9}"]
    fixed += [f"{name:<28} {count:>5} {mape:>8} {rho:>9}" for name, count, mape, rho in groups]
    lines += ["", *fitted_lines(fixed, FitTable("", GROUP_COLUMNS, tuple(groups), boxed=False), width)]
    lines.append(wrap("Spearman: rank correlation of predicted and measured within a group; n/a with "
                      "fewer than 3 rows or when every prediction is equal (all held at the best "
                      "published MFU, cost.mfu_ceiling)."))
    mape = "n/a (no row scored)" if result.mape_percent is None else f"{result.mape_percent:.1f}%"
    lines += ["", f"MAPE over {len(result.rows)} scored rows: {mape}"]
    return "\n".join(lines)


def render_markdown(result: ValidationResult, *, num_sources: int) -> str:
    """The README's accuracy section: groups, then every scored row (regenerate, never hand-edit)."""
    total = len(result.rows) + len(result.skipped)
    mape = "n/a" if result.mape_percent is None else f"{result.mape_percent:.1f}%"
    regressions = sum(r.kind == "regression" for r in result.skipped)
    them = "it as a performance regression" if regressions == 1 else "them as performance regressions"
    filed = f", {regressions} not scored because the framework's maintainers filed {them}" if regressions else ""
    lines = [f"{total} published runs from {plural(num_sources, 'source')}; {len(result.rows)} scored, "
             f"{len(result.skipped) - regressions} skipped as not expressible by the cost model{filed} "
             f"(`sp-validate` names each reason). MAPE over the scored rows: **{mape}**.", "",
             "| group | rows | MAPE | Spearman |", "|---|---:|---:|---:|"]
    for g in result.groups:
        rho = "n/a" if g.spearman is None else f"{g.spearman:.2f}"
        lines.append(f"| {g.name} | {g.rows} | {g.mape_percent:.1f}% | {rho} |")
    lines += ["", "| row | model | GPUs | seq | figure | predicted | measured | error |",
              "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in result.rows:
        lines.append(f"| {r.id} | {r.model} | {r.num_gpus} | {format_tokens(r.seq_len)} | "
                     f"{FIGURE_LABELS[(r.figure, r.convention)]} | {_number(r.predicted)} | "
                     f"{_number(r.measured)} | {r.error_percent:+.1f}% |")
    return "\n".join(lines)


def render_check(failures: list[str], path: Path | None, width: int = WIDTH) -> str:
    # The path whole (spaces and all), on a line of its own where it does not fit beside the rest.
    verdict = f"{len(failures)} limit(s) broken" if failures else "every limit holds."
    head = pack_words(["check against", f"{path}:", verdict], width)
    return "\n".join([*head, *(_wrap(f"- {f}", hang="  ", width=width) for f in failures)])


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-validate")


if __name__ == "__main__":
    main()
