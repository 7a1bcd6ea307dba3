"""write_report: index.html, plans.csv and summary.json, written atomically into one folder.

Everything is built in a hidden temporary folder beside the target and renamed into place, so a
reader (or a crash) never sees half a report. An existing report is replaced by two renames (the
old one aside, the new one in); if the second fails the old one is put back. A folder holding
anything other than a report is never replaced: the user may have pointed --out at their work.
A large plans.csv is written into the temporary folder by a forked child while the page is drawn
(report/background.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from sp_planner import __version__
from sp_planner.destination import WriteFailed, new_folder_mode, resolve_link
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.fileio import check_output_folder
from sp_planner.flags import FlagChoices, release_runtime
from sp_planner.report import recommendation, sections
from sp_planner import interrupts
from sp_planner.report.background import Background
from sp_planner.report.simulation import simulation_section
from sp_planner.report.csv import CSV_COLUMNS, with_simulated, write_plans_csv
from sp_planner.report.html import page
from sp_planner.report.runs import RunRecord
from sp_planner.present.summary import SUMMARY_SCHEMA
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import format_tokens

REPORT_FILES: frozenset[str] = frozenset({"index.html", "plans.csv", "summary.json"})
# What an earlier report's files hold at their head (its title, the CSV's first columns, the
# summary's schema): a file of the user's that bears one of these names is not replaced.
REPORT_TITLE = "sp-planner report"
REPORT_SIGNATURES: dict[str, bytes] = {
    "index.html": f"<title>{REPORT_TITLE}".encode(),
    "plans.csv": (",".join(CSV_COLUMNS[:4]) + ",").encode(),
    "summary.json": f'"schema_version": "{SUMMARY_SCHEMA.rpartition("/")[0]}/'.encode(),  # any version
}
# From this many rows on, plans.csv is written by a forked child while the page is drawn: below it
# the CSV takes under a tenth of a second, about what forking a process holding the search costs.
BACKGROUND_CSV_ROWS = 20_000
# How many plans the table and the per-plan figures show.
TOP_PLANS = 10


def write_report(
    out_dir: Path,
    *,
    model: ModelSpec,
    hardware: HardwareProfile,
    workload: Workload,
    num_nodes: int,
    gpus_per_node: int,
    result: SearchResult,
    summary: dict[str, Any],
    runs: Sequence[RunRecord] = (),
    framework: str = "megatron",
    choices: FlagChoices = FlagChoices(),
    chosen: PlanEstimate | None = None,
    framework_choice: bool = False,
) -> Path:
    """Write the report into `out_dir` and return the path of its index.html.

    `chosen` is the plan the report recommends (a plan file's plan); by default the search's first.
    `framework_choice`: `chosen` is not a plan file's but the best plan `framework` can express
    (sp-plan --framework F --report, where F cannot express the search's first), as sp-plan answers.
    `framework` names whose flags to show ("all" for every framework), rendered with `choices`
    (whose framework_version, torchtitan's release, flags.release_runtime, is also the runtime the
    simulation section times the plan with).
    `summary` is written as
    summary.json unchanged: pass sp_planner.present.summary.build_summary's document.
    """
    out_dir = resolve_link(Path(out_dir))  # a link to a report folder: the folder is replaced, the link stays
    check_report_target(out_dir)
    if chosen is None and not result.ranked:
        raise UserInputError("no candidate plan passed the hard rules, so there is no plan to report on")
    plan_file_plan = chosen is not None and not framework_choice
    chosen = chosen if chosen is not None else result.ranked[0]
    # Every row, read by the figures and the CSV (with sp-plan --simulate K's simulated steps).
    frame = with_simulated(result.frame, result.ranked)
    batch = workload.global_batch  # plans.csv's vpp_group: the micro-batch group priced (report.csv.plans_table)
    summary_text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    try:
        staging: Path | None = _new_folder(out_dir.parent, f".{out_dir.name}.tmp-")
    except OSError as err:
        staging, failure = None, err
    # A large plans.csv is written by a forked child while the page is drawn (report/background.py).
    csv = None
    try:
        if staging is not None and len(frame) >= BACKGROUND_CSV_ROWS:
            csv_path = staging / "plans.csv"
            with interrupts.held_interrupts():  # a Ctrl-C comes once `csv` names the child, which _discard stops
                csv = Background.start(lambda: write_plans_csv(csv_path, frame, global_batch=batch))
        text = render_index(model=model, hardware=hardware, workload=workload, num_nodes=num_nodes,
                            gpus_per_node=gpus_per_node, result=result, runs=runs, framework=framework,
                            chosen=chosen, from_plan_file=plan_file_plan, frame=frame,
                            choices=choices, framework_choice=framework_choice)
    except BaseException:
        _discard(staging, csv)
        raise
    if staging is None:
        _write_failed(out_dir, failure, text=text, frame=frame, summary_text=summary_text, global_batch=batch)
    try:
        _fill(staging, text=text, frame=frame, summary_text=summary_text, csv=csv, global_batch=batch)
        try:
            interrupts.check()  # a Ctrl-C some finalizer swallowed stops the report here
            with interrupts.held_interrupts():  # the earlier report's files aside and the new ones in, whole
                _swap_into_place(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except OSError as err:
        _write_failed(out_dir, err, text=text, frame=frame, summary_text=summary_text, global_batch=batch)
    return out_dir / "index.html"


def _write_failed(out_dir: Path, err: OSError, *, text: str, frame: pd.DataFrame, summary_text: str,
                  global_batch: int) -> NoReturn:
    """Raise WriteFailed for `err`, keeping the report in the temporary folder when it can be written
    there: the search behind it may have taken minutes."""
    try:
        kept = _stage(Path(tempfile.gettempdir()), "sp-planner-report-", text=text, frame=frame,
                      summary_text=summary_text, global_batch=global_batch)
    except OSError:
        raise WriteFailed(f"could not write the report {out_dir}: {err.strerror or err}") from None
    raise WriteFailed(f"could not write the report {out_dir}: {err.strerror or err}; "
                      f"it is kept at {kept}") from None


def render_index(*, model: ModelSpec, hardware: HardwareProfile, workload: Workload, num_nodes: int,
                 gpus_per_node: int, result: SearchResult, runs: Sequence[RunRecord], framework: str,
                 chosen: PlanEstimate, from_plan_file: bool, frame: pd.DataFrame | None = None,
                 choices: FlagChoices = FlagChoices(), framework_choice: bool = False) -> str:
    """The text of index.html. `frame`: result.frame when the caller already holds it."""
    frame = result.frame if frame is None else frame
    shown = list(result.ranked[:TOP_PLANS])
    chosen_outside = all(est.plan != chosen.plan for est in shown)
    if chosen_outside:
        shown = [chosen, *shown[: TOP_PLANS - 1]]
    flag_request = choices.request(chosen.plan, model=model, workload=workload, num_nodes=num_nodes,
                                   gpus_per_node=gpus_per_node)
    world = num_nodes * gpus_per_node
    parts = [
        sections.question_section(model=model, hardware=hardware, workload=workload, num_nodes=num_nodes,
                                  gpus_per_node=gpus_per_node, result=result),
        recommendation.recommendation_section(chosen=chosen, result=result, hardware=hardware,
                                              flag_request=flag_request, framework=framework,
                                              from_plan_file=from_plan_file, framework_choice=framework_choice),
        sections.top_plans_section(shown, chosen=chosen, hardware=hardware, chosen_outside=chosen_outside),
        sections.figures_section(frame=frame, shown=shown, chosen=chosen, hardware=hardware,
                                 prune_counts=result.prune_counts),
        simulation_section(model=model, hardware=hardware, workload=workload, chosen=chosen, num_nodes=num_nodes,
                           gpus_per_node=gpus_per_node,
                           runtime=release_runtime(framework, choices.framework_version, model=model)),
    ]
    if runs:
        parts.append(sections.runs_section(runs))
    parts.append(sections.assumptions_section(model=model, hardware=hardware))
    question = (f"{model.name} at {format_tokens(workload.seq_len)} tokens on {num_nodes} x {gpus_per_node} "
                f"{hardware.name} ({world:,} GPUs)")
    return page(
        title=f"{REPORT_TITLE}: {question}",
        heading="Parallelism plan report",
        subtitle=question,
        sections=parts,
        footer=(f"Generated by sp-planner {__version__}. Beside this file: plans.csv (every candidate) and "
                "summary.json (the same document as sp-plan --format json)."),
    )


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new folder `parent`/`prefix`XXXX with the permissions of any new folder (mkdtemp's are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        os.chmod(folder, new_folder_mode())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _fill(staging: Path, *, text: str, frame: pd.DataFrame, summary_text: str, csv: Background | None,
          global_batch: int) -> None:
    """Write the report's files into `staging` (plans.csv: wait for `csv`, or write it here when None);
    on any failure the folder is removed, with anything half written in it."""
    try:
        (staging / "index.html").write_text(text, encoding="utf-8")
        (staging / "summary.json").write_text(summary_text, encoding="utf-8")
        if csv is None:
            write_plans_csv(staging / "plans.csv", frame, global_batch=global_batch)
        else:
            csv.wait()
    except BaseException:
        _discard(staging, csv)
        raise


def _discard(staging: Path | None, csv: Background | None) -> None:
    """Stop the CSV's writer, then remove the staging folder (nothing writes into it any more)."""
    if csv is not None:
        csv.stop()
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(parent: Path, prefix: str, *, text: str, frame: pd.DataFrame, summary_text: str,
           global_batch: int) -> Path:
    """The report's three files in a new folder `parent`/`prefix`XXXX (removed again on failure)."""
    staging = _new_folder(parent, prefix)
    _fill(staging, text=text, frame=frame, summary_text=summary_text, csv=None, global_batch=global_batch)
    return staging


def check_report_target(out_dir: Path) -> None:
    """Refuse a target that is a file or a folder of other things (UserInputError)."""
    check_output_folder(resolve_link(Path(out_dir)), allowed=REPORT_FILES, label="report folder", kind="a report",
                        signatures=REPORT_SIGNATURES)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename `staging` to `out_dir` when there is none. Into an existing folder (empty, or an
    earlier report: check_report_target) the files move instead, so that the folder itself, its
    permissions and owner stay the user's: the earlier report's files aside first, then the new
    ones in; if a move fails, the earlier files go back."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    aside: list[str] = []
    try:
        for name in sorted(REPORT_FILES):
            if os.path.lexists(out_dir / name):
                os.replace(out_dir / name, old / name)
                aside.append(name)
        for name in sorted(REPORT_FILES):
            os.replace(staging / name, out_dir / name)
    except BaseException:
        for name in sorted(REPORT_FILES):
            if os.path.lexists(out_dir / name) and not os.path.lexists(staging / name):
                os.unlink(out_dir / name)  # a new file already moved in
        for name in aside:
            os.replace(old / name, out_dir / name)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    staging.rmdir()
