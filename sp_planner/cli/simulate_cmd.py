"""`sp-simulate plan.json`: simulate one training step of a plan on the cluster graph.

Prints the breakdown (step time against the analytic model, critical path by kind, stream busy
and idle, communication phases with their bottleneck link) and writes the timeline as JSON plus a
Gantt chart (PNG or SVG) into --out-dir.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sp_planner.cli.common import run_app
from sp_planner.fileio import write_text_atomic
from sp_planner.planfile import read_plan_file
from sp_planner.sim import simulate
from sp_planner.sim.gantt import write_gantt
from sp_planner.sim.result import SimResult
from sp_planner.units import format_bytes, format_seconds

app = typer.Typer(add_completion=False, rich_markup_mode="rich")


class Topology(str, Enum):
    profile = "profile"
    rail_optimized = "rail_optimized"
    fat_tree = "fat_tree"


class GanttFormat(str, Enum):
    png = "png"
    svg = "svg"


def _summary(result: SimResult, console: Console) -> None:
    p = result.plan
    console.print(
        f"[bold]plan[/bold] dp {p.dp} pp {p.pp} tp {p.tp} ulysses {p.ulysses} ring {p.ring} "
        f"zero {p.zero} recompute {p.recompute} micro_batch {p.micro_batch} on {result.num_nodes} x "
        f"{result.gpus_per_node} GPUs ({result.topology})"
    )
    analytic = result.analytic_step_time_s
    line = f"[bold]simulated step[/bold] {format_seconds(result.step_time_s)}"
    if analytic:
        line += f"   analytic {format_seconds(analytic)} ({(result.step_time_s / analytic - 1) * 100:+.1f}%)"
    console.print(line + f"   {result.tokens_per_s:,.0f} tokens/s")

    crit = Table(title="critical path by kind")
    crit.add_column("kind")
    crit.add_column("time", justify="right")
    crit.add_column("share", justify="right")
    for kind, seconds in sorted(result.critical_path_by_kind_s.items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            crit.add_row(kind, format_seconds(seconds), f"{seconds / result.step_time_s:.1%}")
    console.print(crit)

    streams = Table(title="streams (representative rank of each stage)")
    for col in ("stage", "rank", "stream", "busy", "idle"):
        streams.add_column(col, justify="right" if col in ("busy", "idle") else "left")
    for s in result.streams:
        streams.add_row(str(s.stage), str(s.rank), s.stream, format_seconds(s.busy_s), format_seconds(s.idle_s))
    console.print(streams)

    phases = Table(title="communication phases (all groups at once)")
    for col in ("collective", "bytes/rank", "time", "rate/rank", "groups", "limited by"):
        phases.add_column(col, justify="left" if col in ("collective", "limited by") else "right")
    for ph in result.phases:
        if ph.duration_s > 0:
            phases.add_row(ph.name, format_bytes(ph.bytes_per_rank), format_seconds(ph.duration_s),
                           f"{ph.achieved_bytes_per_s / 1e9:.1f} GB/s", str(ph.num_groups), ph.bottleneck)
    console.print(phases)


@app.command(epilog="Example: sp-simulate plan.json --out-dir sim/ --gantt svg")
def simulate_command(
    plan_file: Annotated[Path, typer.Argument(help="plan.json written by sp-plan --out")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where timeline.json and the Gantt go")] = Path("."),
    gantt: Annotated[GanttFormat, typer.Option(help="Gantt chart format")] = GanttFormat.png,
    topology: Annotated[
        Topology, typer.Option(help="network fabric; 'profile' uses the hardware profile's")
    ] = Topology.profile,
    nics_per_node: Annotated[Optional[int], typer.Option(min=1, help="NICs per node (default: one per GPU)")] = None,
) -> None:
    """Simulate one training step of PLAN_FILE and print where its time goes."""
    pf = read_plan_file(plan_file)
    result = simulate(
        pf.model, pf.hardware, pf.workload, pf.plan, num_nodes=pf.num_nodes, gpus_per_node=pf.gpus_per_node,
        topology=None if topology is Topology.profile else topology.value, nics_per_node=nics_per_node,
    )
    console = Console()
    _summary(result, console)
    timeline = Path(out_dir) / "timeline.json"
    write_text_atomic(timeline, result.model_dump_json(indent=1) + "\n")
    chart = write_gantt(result, Path(out_dir) / f"gantt.{gantt.value}")
    console.print(f"wrote {timeline} and {chart}")


def main() -> None:
    run_app(app, prog_name="sp-simulate")


if __name__ == "__main__":
    main()
