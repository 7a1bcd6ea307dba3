"""What sp-plan prints (table, JSON or CSV on stdout) and writes (--out plan.json, --report DIR)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ConfigDict
from rich.console import Console
from rich.text import Text

from sp_planner.cli.question import PlanQuestion
from sp_planner.estimate import SearchResult
from sp_planner.flags import FRAMEWORKS, FlagRequest, render_flags, render_launch
from sp_planner.flags import torchtitan
from sp_planner.flags.launch import Launcher
from sp_planner.layout import rank_groups
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.present.advice import FitSuggestion
from sp_planner.present.summary import build_summary, estimate_row
from sp_planner.present.expressible import best_expressible
from sp_planner.present.table import comm_table, memory_table, plans_table, prune_table, time_table
from sp_planner.present.labels import plan_name
from sp_planner.present.why import closest_and_fixes, why_this_plan
from sp_planner.specs.base import FrozenModel
from sp_planner.units import format_tokens


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
    framework_version: str | None = None  # torchtitan's interface (flags/torchtitan.py); None = newest

    @property
    def fits(self) -> bool:
        return bool(self.result.ranked) and self.result.ranked[0].fits

    def flag_request(self) -> FlagRequest:
        q = self.question
        return FlagRequest(
            model=q.model, workload=q.workload, plan=self.result.ranked[0].plan,
            num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node, framework_version=self.framework_version,
        )


def summary(answer: Answer) -> dict[str, Any]:
    q = answer.question
    return build_summary(
        model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
        gpus_per_node=q.gpus_per_node, result=answer.result, top_k=answer.top_k, suggestions=answer.suggestions,
    )


def emit_answer(answer: Answer, *, output_format: str, explain: bool) -> None:
    if output_format == "json":
        sys.stdout.write(json.dumps(summary(answer), indent=2, allow_nan=False) + "\n")
    elif output_format == "csv":
        rows = [{"rank": i, **estimate_row(est)} for i, est in enumerate(answer.result.ranked[: answer.top_k], 1)]
        pd.DataFrame(rows).to_csv(sys.stdout, index=False)
    else:
        print_table_answer(answer, stdout_console(), explain=explain)


def stdout_console() -> Console:
    """Rich on stdout; a pipe or file gets 160 columns (not Rich's 80) unless COLUMNS says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


def print_table_answer(answer: Answer, console: Console, *, explain: bool) -> None:
    q, result = answer.question, answer.result
    console.print(
        f"{q.model.name} at {format_tokens(q.workload.seq_len)} tokens x {q.workload.global_batch} sequences "
        f"on {q.num_nodes} x {q.gpus_per_node} {q.hardware.name}: "
        f"{result.candidates_evaluated:,} candidate{'' if result.candidates_evaluated == 1 else 's'} evaluated",
        markup=False, highlight=False,
    )
    ranked = result.ranked[: answer.top_k]
    if ranked:
        console.print(plans_table(ranked, q.hardware))
    if answer.fits or (ranked and q.all_degrees_pinned):
        heading = "Why this plan." if answer.fits else "The pinned plan."
        console.print(Text.assemble((heading, "bold"), " ", why_this_plan(ranked, q.hardware)))
    if not answer.fits:
        advice = closest_and_fixes(ranked, q.hardware, answer.suggestions, pinned=q.all_degrees_pinned)
        console.print(advice, highlight=False, style="yellow", markup=False)
    if explain and ranked:
        for table in (memory_table(ranked[0], q.hardware), time_table(ranked[0]), comm_table(ranked[0])):
            console.print(table)
    if explain:
        console.print(prune_table(result.prune_counts, result.candidates_evaluated))
    if answer.fits or (ranked and q.all_degrees_pinned):
        print_flags(answer, console)


def print_flags(answer: Answer, console: Console) -> None:
    q = answer.question
    request = answer.flag_request()
    names = FRAMEWORKS if answer.framework == "all" else (answer.framework,)
    printed: list[str] = []
    for name in names:
        rendered = render_flags(name, request)
        heading = f"{name} flags for plan 1"
        if not rendered.supported:
            console.print(f"{name} cannot express plan 1: {rendered.reason}", markup=False, highlight=False)
            fallback = best_expressible(answer.result, name, model=q.model, workload=q.workload,
                                        num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node,
                                        framework_version=answer.framework_version)
            if fallback is None:
                console.print(f"No plan that fits can be expressed in {name}.", markup=False, highlight=False)
                continue
            rank, est, rendered = fallback
            slower = est.step_time_s / answer.result.ranked[0].step_time_s - 1
            heading = f"{name} flags for plan {rank} ({plan_name(est.plan)}; {slower:.1%} slower than plan 1)"
        console.rule(heading, align="left")
        # Plain, unwrapped text so that it can be pasted as it is.
        console.print(rendered.text, markup=False, highlight=False, soft_wrap=True)
        for note in rendered.notes:
            console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        printed.append(name)
    if answer.launcher is None:
        return
    # One launch per framework whose flags were printed, each with that framework's entry point.
    for name in printed:
        console.rule(f"{answer.launcher} launch" + (f" ({name})" if len(names) > 1 else ""), align="left")
        script = render_launch(answer.launcher, num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node,
                               command=launch_command(name, answer.framework_version))
        console.print(script, markup=False, highlight=False, soft_wrap=True)


def write_outputs(answer: Answer, *, out: Path | None, report: Path | None) -> None:
    """--out and --report, after everything else has succeeded; notes go to stderr."""
    q = answer.question
    if out is not None:
        if not answer.result.ranked or not (answer.fits or q.all_degrees_pinned):
            sys.stderr.write(f"note: {out} not written: no plan fits\n")
        else:
            best = answer.result.ranked[0]
            write_plan_file(out, PlanFile(
                model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
                gpus_per_node=q.gpus_per_node, framework="megatron" if answer.framework == "all" else answer.framework,
                plan=best.plan, estimate=best, rank_groups=rank_groups(best.plan),
            ))
            sys.stderr.write(f"wrote {out}\n")
    if report is not None:
        from sp_planner.report import write_report  # matplotlib and the HTML code load only when asked

        index = write_report(
            report, model=q.model, hardware=q.hardware, workload=q.workload, num_nodes=q.num_nodes,
            gpus_per_node=q.gpus_per_node, result=answer.result, summary=summary(answer), framework=answer.framework,
        )
        sys.stderr.write(f"wrote {index}\n")
