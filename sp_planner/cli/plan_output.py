"""What sp-plan prints (table, JSON or CSV on stdout) and writes (--out plan.json, --report DIR)."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ConfigDict, PrivateAttr
from rich.console import Console
from rich.text import Text

from sp_planner.cli.plan_file_out import answer_plan_file
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.question import PlanQuestion
from sp_planner.cli.terminal import stdout_console, write_note
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.flags import FRAMEWORKS, FlagChoices, FlagRequest, render_flags, render_launch
from sp_planner.flags import torchtitan
from sp_planner.flags.launch import Launcher
from sp_planner.planfile import write_plan_file
from sp_planner.present.advice import FitSuggestion
from sp_planner.present.summary import build_summary, estimate_row
from sp_planner.present.expressible import EXPRESSIBLE_COLUMN, MAX_SCANNED, best_expert_parallel, framework_flags
from sp_planner.present.breakdown import comm_table, memory_table, prune_table, time_table
from sp_planner.present.fit import fitted_tables, print_heading
from sp_planner.present.table import ranked_tables
from sp_planner.present.labels import plan_name
from sp_planner.present.why import closest_and_fixes, expert_parallel_note, why_this_plan
from sp_planner.specs.base import FrozenModel
from sp_planner.units import format_seconds, format_tokens, plural


# What each framework's launch line runs (shared reference framework_flags.md 7.2; the flags'
# notes say the bash arrays go to pretrain_gpt.py). deepspeed and yunchang plug into the user's
# own script. torchtitan 0.3.x takes its overrides on the command line, 0.2.x a TOML file.
LAUNCH_COMMANDS: dict[str, str] = {
    "megatron": 'pretrain_gpt.py "${MEGATRON_ARGS[@]}"',
    "mindspeed": 'pretrain_gpt.py "${MINDSPEED_ARGS[@]}"',
    "deepspeed": "train.py",
    "yunchang": "train.py",
    "torchtitan": '-m torchtitan.train "${TORCHTITAN_ARGS[@]}"',
}
TORCHTITAN_V02_LAUNCH = "-m torchtitan.train --job.config_file train.toml"


def launch_command(framework: str, framework_version: str | None) -> str:
    if framework == "torchtitan" and torchtitan.resolve_version(framework_version) == "0.2":
        return TORCHTITAN_V02_LAUNCH
    return LAUNCH_COMMANDS[framework]


class Answer(FrozenModel):
    """A question, the search's result and, when nothing fits, the verified fixes."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    question: PlanQuestion
    result: SearchResult
    suggestions: tuple[FitSuggestion, ...]
    top_k: int
    framework: str  # a name in sp_planner.flags.FRAMEWORKS, or "all"
    launcher: Launcher | None
    # The fitting plans `framework` can express, best first (for one framework; empty for "all" or
    # when none is): the table ranks these, and plan.json holds the first.
    framework_ranked: tuple[PlanEstimate, ...] = ()
    # The second plan of that ranking, kept when --top 1 shows only the first: "why this plan"
    # compares the two (None where the search ranked one plan).
    runner_up: PlanEstimate | None = None
    _summary: dict[str, Any] | None = PrivateAttr(default=None)
    _summary_full: bool = PrivateAttr(default=False)  # whether _summary lists the rank groups in full

    @property
    def fits(self) -> bool:
        return bool(self.result.ranked) and self.result.ranked[0].fits

    @property
    def ranked(self) -> tuple[PlanEstimate, ...]:
        """The plans shown: the framework's, else every plan."""
        return self.framework_ranked or self.result.ranked[: self.top_k]

    @property
    def chosen(self) -> PlanEstimate:
        return self.ranked[0]

    @property
    def overall_best_differs(self) -> bool:
        return bool(self.framework_ranked) and self.framework_ranked[0].plan != self.result.ranked[0].plan

    @property
    def flag_choices(self) -> FlagChoices:
        """How to render the flags (the question's: --framework-version, --attention-kernel, whether
        --fp8-recipe was given)."""
        q = self.question
        return q.flag_choices.model_copy(update={"fp8_recipe_given": q.fp8_recipe_given})

    def flag_request(self, estimate: PlanEstimate | None = None) -> FlagRequest:
        """The flags' question for `estimate`'s plan (the chosen plan's by default)."""
        q = self.question
        return self.flag_choices.request((estimate or self.chosen).plan, model=q.model, workload=q.workload,
                                         num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node)


def summary(answer: Answer, *, full_rank_groups: bool = False) -> dict[str, Any]:
    """The JSON document, built once per answer (--format json and the report's summary.json
    share it: it renders every framework's flags for each plan); the rank groups' full lists only
    when `full_rank_groups`."""
    if answer._summary is None or answer._summary_full != full_rank_groups:
        q = answer.question
        answer._summary = build_summary(
            model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
            gpus_per_node=q.gpus_per_node, result=answer.result, top_k=answer.top_k, suggestions=answer.suggestions,
            full_rank_groups=full_rank_groups, framework=answer.framework, framework_ranked=answer.framework_ranked,
            choices=answer.flag_choices, attention_kernel=q.attention_kernel,
        )
        answer._summary_full = full_rank_groups
    return answer._summary


def emit_answer(answer: Answer, *, output_format: str, explain: bool, wide: bool = False,
                full_rank_groups: bool = False) -> None:
    if output_format == "json":
        # Every plan's flags for every framework: a few seconds at --top 1000, under a bar.
        with delayed_progress(f"describing {plural(len(answer.ranked), 'plan')}"):
            document = summary(answer, full_rank_groups=full_rank_groups)
            text = json.dumps(document, indent=2, allow_nan=False) + "\n"
        sys.stdout.write(text)
    elif output_format == "csv":
        # The table's plans (those --framework can express, else the best overall: `expressible`
        # says which), as the table ranks them; `rank` empty for a plan that does not fit, as in
        # plans.csv (report.csv.plans_table): the table lists those after the plans that fit.
        with delayed_progress(f"describing {plural(len(answer.ranked), 'plan')}"):
            batch = answer.question.workload.global_batch
            rows = [{"rank": i if est.fits else None, **estimate_row(est, global_batch=batch), EXPRESSIBLE_COLUMN: ok}
                    for i, (est, ok) in enumerate(zip(answer.ranked, expressible_column(answer), strict=True), 1)]
            frame = pd.DataFrame(rows)
            if rows:  # whole numbers beside the empty ones (a rule breaker's bytes are empty, as its rank)
                whole = ["rank", "vpp_group", *(name for name in frame.columns if name.endswith("_bytes"))]
                frame[whole] = frame[whole].astype("Int64")
            text = frame.to_csv(index=False)
        sys.stdout.write(text)
    else:
        print_table_answer(answer, stdout_console(), explain=explain, wide=wide or explain)
    if output_format != "table" and answer.fits and answer.framework != "all" and not answer.framework_ranked:
        # The table says so under its plans; JSON and CSV rows do not, so stderr does (exit 1).
        where = ("the rows are the best plans overall (expressible False)" if output_format == "csv" else
                 f"framework_plans is empty and plans holds the best plans overall (flags.{answer.framework}."
                 "supported false)")
        write_note(f"no plan that fits can be expressed in {answer.framework}: {where}; --framework all ranks every "
                   "plan", sys.stderr)


def expressible_column(answer: Answer) -> list[bool | None]:
    """sp-plan --format csv's `expressible`: whether --framework can express each plan shown
    (render_flags, as the JSON's flags.NAME.supported); None (empty) for --framework all."""
    if answer.framework == "all":
        return [None] * len(answer.ranked)
    if answer.framework_ranked:  # the plans shown are those it expresses
        return [True] * len(answer.ranked)
    return [render_flags(answer.framework, answer.flag_request(est)).supported for est in answer.ranked]


def time_saved_text(best_s: float, mine_s: float) -> str:
    """What the best plan overall saves against the framework's best, as the sentence says it: a
    tie to the shown digits reads "the same time to 0.1%", not "0.0% less"."""
    saved = 1 - best_s / mine_s
    return f"{saved:.1%} less" if round(saved, 3) > 0 else "the same time to 0.1%"


def print_table_answer(answer: Answer, console: Console, *, explain: bool, wide: bool = False) -> None:
    q, result = answer.question, answer.result
    console.print(
        f"{q.model.name} at {format_tokens(q.workload.seq_len)} token{'' if q.workload.seq_len == 1 else 's'} x "
        f"{plural(q.workload.global_batch, 'sequence')} on {q.num_nodes:,} x {q.gpus_per_node:,} {q.hardware.name}: "
        f"{plural(result.candidates_evaluated, 'candidate')} evaluated",
        markup=False, highlight=False,
    )
    ranked = answer.ranked
    if ranked:
        title = (f"Ranked plans {answer.framework} can express (best first)" if answer.framework_ranked
                 else "Ranked plans (best first)")
        # Rich measures every cell, to fit the console and again to print: a second or more at
        # --top 1000, under a bar; the tables are written once laid out.
        with delayed_progress(f"laying out {plural(len(ranked), 'plan')}"), console.capture() as captured:
            for table in ranked_tables(ranked, q.hardware, wide=wide, title=title, console=console):
                console.print(table)
        console.file.write(captured.get())
    if answer.overall_best_differs:
        best, mine = result.ranked[0], ranked[0]
        reason = render_flags(answer.framework, answer.flag_request(best)).reason
        less = time_saved_text(best.step_time_s, mine.step_time_s)
        console.print(
            f"The best plan overall, {plan_name(best.plan)}, takes {format_seconds(best.step_time_s)} per "
            f"step ({less}), but {answer.framework} cannot express "
            f"it: {reason}. --framework all ranks every plan.", markup=False, highlight=False)
    if answer.fits or (ranked and q.all_degrees_pinned):
        heading = "Why this plan." if answer.fits else "The pinned plan."
        why = why_this_plan(ranked, q.hardware, moe=q.model.moe is not None, runner_up=answer.runner_up)
        console.print(Text.assemble((heading, "bold"), " ", why))
    # For one framework, only when it expresses some plan (the table shows its plans).
    expressed = answer.framework == "all" or bool(answer.framework_ranked)
    if answer.fits and expressed and q.model.moe is not None and not q.pins.ep and all(e.plan.ep == 1 for e in ranked):
        found = best_expert_parallel(result, answer.framework, model=q.model, workload=q.workload,
                                     num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node,
                                     choices=answer.flag_choices)
        rank, other = found if found else (None, None)
        console.print(expert_parallel_note(ranked[0], other, rank, scanned=MAX_SCANNED, framework=answer.framework),
                      markup=False, highlight=False)
    if not answer.fits:
        advice = closest_and_fixes(ranked, q.hardware, answer.suggestions, pinned=q.all_degrees_pinned)
        console.print(advice, highlight=False, style="yellow", markup=False)
    if explain:
        specs = [memory_table(ranked[0], q.hardware), time_table(ranked[0]), comm_table(ranked[0])] if ranked else []
        for spec in (*specs, prune_table(result.prune_counts, result.candidates_evaluated)):
            for laid_out in fitted_tables(spec, console):
                console.print(laid_out)
    if answer.fits:
        print_flags(answer, console)


def print_flags(answer: Answer, console: Console) -> None:
    q = answer.question
    request = answer.flag_request()
    names = FRAMEWORKS if answer.framework == "all" else (answer.framework,)
    printed: list[str] = []
    if answer.framework != "all" and not answer.framework_ranked:
        reason = render_flags(answer.framework, request).reason
        console.print(f"{answer.framework} cannot express plan 1: {reason}", markup=False, highlight=False)
        console.print(f"No plan that fits can be expressed in {answer.framework}; --framework all ranks every "
                      "plan.", markup=False, highlight=False)
        names = ()
    for name in names:
        # Its own FP8 recipe's flags (flags.own_recipe); else the refusal, then a bar while it looks down.
        def searching(refusal: str, name: str = name) -> AbstractContextManager[object]:
            console.print(f"{name} cannot express plan 1: {refusal}", markup=False, highlight=False)
            return delayed_progress(f"looking for a plan {name} can express")

        found = framework_flags(name, request, answer.result, searching=searching)
        if found.flags is None:
            console.print(f"No plan that fits can be expressed in {name}.", markup=False, highlight=False)
            continue
        rendered, est, heading = found.flags, found.estimate, f"{name} flags for plan 1"
        if est is not None:
            slower = est.step_time_s / answer.result.ranked[0].step_time_s - 1
            heading = f"{name} flags for plan {found.rank} ({plan_name(est.plan)}; {slower:.1%} slower than plan 1)"
        print_heading(console, heading)
        # Plain, unwrapped text so that it can be pasted as it is.
        console.print(rendered.text, markup=False, highlight=False, soft_wrap=True)
        # Notes are prose, not flags: wrapped to the terminal.
        for note in rendered.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        printed.append(name)
    if answer.launcher is None:
        return
    # One launch per framework whose flags were printed, each with that framework's entry point.
    for name in printed:
        print_heading(console, f"{answer.launcher} launch" + (f" ({name})" if len(names) > 1 else ""))
        script = render_launch(answer.launcher, num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node,
                               command=launch_command(name, answer.flag_choices.framework_version),
                               domain_nodes=q.hardware.link_domain_gpus(q.gpus_per_node, q.num_nodes * q.gpus_per_node)
                               // q.gpus_per_node)
        console.print(script, markup=False, highlight=False, soft_wrap=True)


def write_outputs(answer: Answer, *, out: Path | None, report: Path | None, full_rank_groups: bool = False) -> None:
    """--out and --report, after everything else has succeeded; notes go to stderr. plan.json and
    summary.json hold the rank groups' generator, and their full lists too when `full_rank_groups`.

    plan.json is written only for a plan that fits: sp-run refuses any other, so a pinned plan that
    does not fit is answered like an unpinned search that finds nothing (exit 1, nothing written)."""
    q = answer.question
    if out is not None:
        if not answer.fits:
            why = "the pinned plan does not fit" if q.all_degrees_pinned and answer.result.ranked else "no plan fits"
            sys.stderr.write(f"note: {out} not written: {why}\n")
        elif answer.framework != "all" and not answer.framework_ranked:
            sys.stderr.write(f"note: {out} not written: no plan that fits can be expressed in {answer.framework}\n")
        else:
            plan_file, named = answer_plan_file(answer, full_rank_groups=full_rank_groups)
            write_plan_file(out, plan_file)
            sys.stderr.write(f"wrote {out}\n")
            if named is not None:  # --framework all: the framework the file names, where not Megatron
                write_note(f"{out} {named}", sys.stderr)
    if report is not None:
        from sp_planner.report import write_report  # matplotlib and the HTML code load only when asked

        with delayed_progress("writing the report"):
            index = write_report(
                report, model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
                gpus_per_node=q.gpus_per_node, result=answer.result,
                summary=summary(answer, full_rank_groups=full_rank_groups), framework=answer.framework,
                choices=answer.flag_choices,
                # The plan sp-plan answers with (and writes to --out): the framework's best.
                chosen=answer.chosen if answer.overall_best_differs else None,
                framework_choice=answer.overall_best_differs,
            )
        sys.stderr.write(f"wrote {index}\n")
