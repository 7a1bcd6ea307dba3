"""`sp-report`: an HTML/CSV report for a plan file, with predicted-against-measured for sp-run results.

Exit codes: 0 report written; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from sp_planner.cli.common import MAX_TOP, folder_name, run_app
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.help_format import PlainHelpCommand
from sp_planner.cli.terminal import write_note

EPILOG = """\
Examples:

  sp-report plan.json --out report/

  sp-report plan.json --run result.json --run result-2x4.json --out report/

Exit codes: 0 report written, 2 bad input.
"""

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def report(
    plan_file: Annotated[
        Path, typer.Argument(help="plan.json written by sp-plan --out.", metavar="PLAN.json", show_default=False)
    ],
    *,
    out: Annotated[
        Path, typer.Option(parser=folder_name, help="Folder to write index.html, plans.csv and summary.json into.",
                           metavar="DIR")
    ],
    run: Annotated[
        Optional[list[Path]],
        typer.Option(help="An sp-run result.json to compare with the prediction; repeat for several.",
                     metavar="RESULT.json", show_default=False),
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=MAX_TOP, help="How many plans summary.json lists.")] = 10,
) -> int:
    """Write a self-contained report (HTML with figures, CSV of every candidate, JSON summary)."""
    # Imported here so that `sp-report --help` answers without loading pandas and matplotlib.
    from sp_planner.report.from_plan import report_from_plan_file

    with delayed_progress("searching plans and writing the report"):
        index = report_from_plan_file(plan_file, run_paths=run or (), out_dir=out, top_k=top,
                                      note=lambda text: write_note(text, sys.stderr))
    typer.echo(str(index))
    return 0


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-report")
