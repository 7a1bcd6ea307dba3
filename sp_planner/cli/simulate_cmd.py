"""`sp-simulate plan.json`: simulate one training step of a plan on the cluster graph.

Prints the breakdown (step time against the analytic model, critical path by kind, stream busy
and idle, communication phases with their bottleneck link) and writes the timeline as JSON plus a
Gantt chart (PNG or SVG) into --out-dir.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console

from sp_planner.cli.common import folder_name, run_app
from sp_planner.cli.plan_notes import plan_file_notes
from sp_planner.cli.progress import delayed_progress
from sp_planner.destination import (
    check_file_destination,
    check_folder_destination,
    deliver_text,
    new_folder_mode,
    refuse_reading_file_as_output,
    resolve_link,
)
from sp_planner.errors import UserInputError
from sp_planner.figure_mark import figure_signature
from sp_planner.fileio import bears_signature
from sp_planner.present.fit import FitColumn, FitTable, fitted_tables
from sp_planner.plan_messages import empty_chunks_text
from sp_planner.planfile import PlanFile, load_plan_file
from sp_planner.planfile_checks import check_loaded_plan_times
from sp_planner.search import evaluate
from sp_planner.estimate import PlanEstimate
from sp_planner.sim import AnalyticStep, simulate
from sp_planner.sim.moe_work import network_dispatch_off_graph
from sp_planner.sim.result import TIMELINE_SIGNATURE, SimResult, timeline_text
from sp_planner.specs.hardware import FabricTopology
from sp_planner.units import format_bytes, format_seconds
from sp_planner.cli.help_format import PlainHelpCommand
from sp_planner.planfile_router import router_timing_note
from sp_planner.cli.terminal import stdout_console, terminal_columns, write_note, wrote_lines

EPILOG = """\
Example:

  sp-simulate plan.json --out-dir sim/ --gantt svg

Exit codes: 0 simulated, 2 bad input.
"""

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


# The fabric choices are the profile's own Literal, plus "profile" for the profile's fabric.
Topology = Literal["profile", FabricTopology]
GanttFormat = Literal["png", "svg"]


def _summary(result: SimResult, console: Console) -> None:
    p = result.plan
    extra = (f" vpp {p.vpp}" if p.vpp > 1 else "") + (f" ep {p.ep} etp {p.etp}" if p.ep * p.etp > 1 else "")
    console.print(
        f"[bold]plan[/bold] dp {p.dp} pp {p.pp}{extra} tp {p.tp} ulysses {p.ulysses} ring {p.ring} "
        f"zero {p.zero} recompute {p.recompute} micro_batch {p.micro_batch}"
        + (f" cpu_offload_layers {p.cpu_offload_layers}" if p.cpu_offload_layers else "")
        + f" on {result.num_nodes} x "
        f"{result.gpus_per_node} GPUs ({result.topology})"
    )
    analytic = result.analytic_step_time_s
    line = f"[bold]simulated step[/bold] {format_seconds(result.step_time_s)}"
    if analytic:
        line += f"   analytic {format_seconds(analytic)} ({(result.step_time_s / analytic - 1) * 100:+.1f}%)"
    console.print(line + f"   {result.tokens_per_s:,.0f} tokens/s")
    if result.dp_exposed_s > 0:
        console.print(f"[bold]data-parallel traffic[/bold] adds {format_seconds(result.dp_exposed_s)} "
                      f"({result.dp_exposed_s / result.step_time_s:.1%} of the step)")

    kinds = sorted(result.critical_path_by_kind_s.items(), key=lambda kv: -kv[1])
    crit = FitTable(title="critical path by kind", title_justify="center",
                    columns=(FitColumn("kind"), FitColumn("time", "right"), FitColumn("share", "right")),
                    rows=tuple((kind, format_seconds(seconds), f"{seconds / result.step_time_s:.1%}")
                               for kind, seconds in kinds if seconds > 0))
    streams = FitTable(title="streams (representative rank of each stage)", title_justify="center",
                       columns=(FitColumn("stage"), FitColumn("rank"), FitColumn("stream"), FitColumn("busy", "right"),
                                FitColumn("idle", "right")),
                       rows=tuple((str(s.stage), str(s.rank), s.stream, format_seconds(s.busy_s),
                                   format_seconds(s.idle_s)) for s in result.streams))
    # One space between columns (as sp-plan's ranked table) even where a box would fit.
    phases = FitTable(title="communication phases (all groups at once)", boxed=False,
                      columns=(FitColumn("collective", prose=True), FitColumn("bytes/rank", "right"),
                               FitColumn("time", "right"), FitColumn("rate/rank", "right"),
                               FitColumn("groups", "right"), FitColumn("limited by")),
                      rows=tuple((ph.name, format_bytes(ph.bytes_per_rank), format_seconds(ph.duration_s),
                                  f"{ph.achieved_bytes_per_s / 1e9:.1f} GB/s", str(ph.num_groups), ph.bottleneck)
                                 for ph in result.phases if ph.duration_s > 0))
    for spec in (crit, streams, phases):
        for table in fitted_tables(spec, console):
            console.print(table)


def _keep_unnamed(*paths: Path) -> None:
    """Refuse (UserInputError) to replace anything at `paths` in the current folder when --out-dir
    was not given: a timeline.json there may be the user's own, and replacing it needs a named folder."""
    for path in paths:
        if os.path.lexists(path):
            raise UserInputError(f"{path.name} already exists in the current folder; sp-simulate replaces files "
                                 "only in a folder you name: give --out-dir . to replace it, or another --out-dir")


def _replace_only_own(path: Path, signature: bytes, what: str) -> None:
    """Refuse (UserInputError) to replace anything at `path` but an earlier sp-simulate's `what`, a
    regular file whose head holds `signature`: a timeline.json or gantt.png of the user's in the
    folder named is not replaced for its name, nor a link (followed, it would replace its target) or
    a device of that name. check_file_destination has refused a folder there already."""
    if not os.path.lexists(path):
        return
    label = f"{path} (in --out-dir)"
    if path.is_symlink():
        raise UserInputError(f"{label} is a link, which sp-simulate does not write through; remove it or give "
                             "another --out-dir")
    if not path.is_file():  # a device or FIFO (check_file_destination refused the rest)
        raise UserInputError(f"{label} is a device or FIFO, which sp-simulate does not write into; remove it or "
                             "give another --out-dir")
    if not bears_signature(path, signature):
        raise UserInputError(f"{label} does not carry sp-simulate's {what} mark (a file of yours, or one written "
                             "before sp-planner marked its own), so it is kept; remove it or give another --out-dir")


def _estimate(pf: PlanFile) -> PlanEstimate | None:
    """The plan file's plan as sp-plan and sp-report judge it with the file's runtime
    (search.evaluate), which the simulator's analytic figures are too; None where it cannot be
    evaluated (the simulator then says why it cannot run it)."""
    try:
        return evaluate(pf.model, pf.hardware, pf.workload, pf.plan, num_nodes=pf.num_nodes,
                        gpus_per_node=pf.gpus_per_node, runtime=pf.runtime)
    except ValueError:
        return None


def _unfit_note(estimate: PlanEstimate | None) -> str | None:
    """The line saying the plan file's plan does not fit (search.evaluate's reason); None where it
    fits or cannot be evaluated."""
    if estimate is None or estimate.fits:
        return None
    return (f"the plan does not fit ({estimate.reason}); its step is simulated all the same, the timeline of "
            "a plan that cannot run (sp-report shows none)")


def _off_graph_dispatch_note(pf: PlanFile, result: SimResult, topology: str, nics_per_node: int | None) -> str | None:
    """The line saying that the fabric options asked for do not reach a token dispatch timed from
    its benchmark across nodes (DeepEP's: sim.moe_work.network_dispatch_off_graph); None where none
    was asked for or the dispatch rides the graph."""
    asked = ([f"--topology {topology}"] if topology != "profile" else []) + (
        [f"--nics-per-node {nics_per_node}"] if nics_per_node is not None else [])
    domain = pf.hardware.link_domain_gpus(pf.gpus_per_node, pf.num_nodes * pf.gpus_per_node)
    if not asked or not network_dispatch_off_graph(pf.hardware, pf.model, pf.plan, domain):
        return None
    return (f"{' and '.join(asked)} {'do' if len(asked) > 1 else 'does'} not reach DeepEP's token dispatch and "
            f"combine across nodes (moe_comm on the critical path: "
            f"{format_seconds(result.critical_path_by_kind_s['moe_comm'])}): they are timed from DeepEP's "
            "benchmark (H800, one 400 Gb/s NIC a GPU; cost.deepep), not routed over the cluster graph, "
            "as the other collectives are")


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def simulate_command(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by sp-plan --out.", metavar="PLAN.json",
                                             show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", parser=folder_name, metavar="<path>",
        show_default="the current folder, where files already there are kept",
        help="Where timeline.json and the Gantt chart go.")] = None,
    gantt: Annotated[GanttFormat, typer.Option(help="Gantt chart format.")] = "png",
    topology: Annotated[
        Topology, typer.Option(help="Network fabric; 'profile' uses the hardware profile's.")
    ] = "profile",
    nics_per_node: Annotated[Optional[int], typer.Option(
        min=1, help="NICs the node's network rate is split over, each serving its GPUs (default: one per GPU).",
    )] = None,
) -> None:
    """Simulate one training step of the plan file and print where its time goes."""
    loaded = load_plan_file(plan_file)
    pf = loaded.plan_file
    check_loaded_plan_times(loaded)  # as sp-report refuses it, before any work
    if nics_per_node is not None and pf.gpus_per_node % nics_per_node:
        choices = ", ".join(str(n) for n in range(1, pf.gpus_per_node + 1) if pf.gpus_per_node % n == 0)
        raise UserInputError(f"--nics-per-node {nics_per_node} must divide the plan's {pf.gpus_per_node} GPUs per "
                             f"node: give one of {choices}")
    named, out_dir = out_dir is not None, Path(".") if out_dir is None else out_dir
    timeline, chart = out_dir / "timeline.json", out_dir / f"gantt.{gantt}"
    check_folder_destination(out_dir, option="--out-dir")
    if not named:  # the user named no destination: a file of theirs that bears one of these names stays
        _keep_unnamed(timeline, chart)
    if resolve_link(out_dir).is_dir():
        for path in (timeline, chart):
            check_file_destination(path, option="--out-dir", fixed_name=True)
            refuse_reading_file_as_output(path, option="--out-dir's", inputs=(("plan", plan_file),))
        _replace_only_own(timeline, TIMELINE_SIGNATURE, "timeline")
        _replace_only_own(chart, figure_signature(gantt), "Gantt chart")
    if loaded.release_note is not None:  # a file that predates framework_version: the release it is timed as
        write_note(loaded.release_note, sys.stderr)
    # The notes sp-plan printed on the plan's timing (cli.plan_notes: the cluster, the attention
    # kernel, the model's config), with the file's own on a Megatron plan not timed with the unfused
    # attention TE runs.
    for note in plan_file_notes(loaded):
        write_note(note, sys.stderr)
    router_note = router_timing_note(loaded.router, pf.model, source=f"plan file {plan_file}")
    if router_note is not None:  # a router the file does not say, which its dispatch's reach depends on
        write_note(router_note, sys.stderr)
    # A pinned split that leaves model chunks idle, which sp-plan noted when it wrote the file (and a
    # file written by hand or by an older sp-plan did not).
    if (chunks_note := empty_chunks_text(pf.model.num_layers, pf.plan)) is not None:
        write_note(chunks_note, sys.stderr)
    # A plan that cannot run (a file edited by hand, or another release's memory model): said, as
    # sp-report says it, rather than timed as if it ran.
    estimate = _estimate(pf)
    if (shortfall := _unfit_note(estimate)) is not None:
        write_note(shortfall, sys.stderr)
    from sp_planner.sim.gantt import gantt_bytes  # matplotlib: loaded to draw, after every input check

    with delayed_progress("simulating the step"):
        result = simulate(
            pf.model, pf.hardware, pf.workload, pf.plan, num_nodes=pf.num_nodes, gpus_per_node=pf.gpus_per_node,
            topology=None if topology == "profile" else topology, nics_per_node=nics_per_node,
            runtime=pf.runtime,  # the runtime sp-plan timed it with
            # the analytic step the estimate holds already, not timed a second time
            analytic=None if estimate is None else AnalyticStep.of(estimate),
        )
        chart_bytes = gantt_bytes(result, gantt)
    if (fabric_note := _off_graph_dispatch_note(pf, result, topology, nics_per_node)) is not None:
        write_note(fabric_note, sys.stderr)
    console = stdout_console()
    try:
        _summary(result, console)
    finally:  # the files asked for, even when stdout is gone (a closed pipe)
        try:
            resolve_link(out_dir).mkdir(mode=new_folder_mode(), exist_ok=True)  # the folder named, not its parents
        except OSError as err:
            raise UserInputError(f"--out-dir {out_dir}: cannot create the folder: {err.strerror or err}") from None
        deliver_text(timeline, timeline_text(result), what="timeline")
        deliver_text(chart, chart_bytes, what="Gantt chart")
    for line in wrote_lines([timeline, chart], terminal_columns()):  # whole paths, not Rich's wrap
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-simulate")


if __name__ == "__main__":
    main()
