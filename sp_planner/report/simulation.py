"""The report's "Simulated timeline" section: the event simulator run on the recommended plan.

The Gantt chart is sp_planner.sim.gantt's figure (the one sp-simulate saves), rendered inline
under the report style. A plan that does not fit, or that the simulator rejects, gets a sentence
saying why instead of a chart.
"""

from __future__ import annotations

from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate
from sp_planner.report.html import Raw, facts, figure, section, table, tag
from sp_planner.report.svg import render_svg
from sp_planner.sim.gantt import gantt_figure
from sp_planner.sim.result import SimResult
from sp_planner.sim.simulate import simulate
from sp_planner.sim.streams import STREAMS
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.units import format_seconds

SECTION_ID = "simulation"
HEADING = "Simulated timeline of the recommended plan"
# Kinds of work on the simulator's critical path (sp_planner.sim.simulate._critical_path).
KIND_LABELS: dict[str, str] = {
    "gemm": "GEMMs",
    "attention": "attention kernels",
    "recompute_gemm": "recomputed GEMMs",
    "recompute_attention": "recomputed attention",
    "recompute_elementwise": "recomputed MoE activations and norms",
    "ulysses_comm": "Ulysses all-to-all",
    "ring_comm": "ring-axis K/V, P2P or all-gather CP (not hidden by attention)",
    "tp_comm": "TP all-gather / reduce-scatter",
    "moe_comm": "expert dispatch / combine",
    "pp_comm": "PP send",
    "dp_comm": "DP gradient sync / parameter gather (not hidden)",
    "optimizer": "optimizer, grad buffers",
    "idle": "waiting (pipeline bubble, upstream stages)",
    "host_overhead": "host (CPU) time not hidden by GPU work",
    "activation_offload": "activation offload copies not hidden by the layers",
    "mfu_ceiling": "held to the best published MFU",
}


def simulate_chosen(model: ModelSpec, hardware: HardwareProfile, workload: Workload, chosen: PlanEstimate, *,
                    num_nodes: int, gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> SimResult | str:
    """The simulated step of `chosen`, or the sentence saying why there is none."""
    if not chosen.fits:
        return (f"The recommended plan does not fit in memory ({chosen.reason}), so its step is not simulated: "
                "a timeline of a plan that cannot run would mislead.")
    try:
        return simulate(model, hardware, workload, chosen.plan, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                        detail=True, runtime=runtime)
    except (UserInputError, ValueError) as err:
        return f"The simulator cannot run the recommended plan: {err}."


def gantt_svg(result: SimResult, *, prefix: str = "gantt") -> str:
    """sp-simulate's Gantt chart as an inline <svg>."""
    return render_svg(lambda: gantt_figure(result), prefix=prefix,
                      title="Simulated timeline of one step, one representative rank per pipeline stage")


def simulation_section(*, model: ModelSpec, hardware: HardwareProfile, workload: Workload, chosen: PlanEstimate,
                       num_nodes: int, gpus_per_node: int, runtime: Runtime = MEGATRON_RUNTIME) -> Raw:
    outcome = simulate_chosen(model, hardware, workload, chosen, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                              runtime=runtime)
    if isinstance(outcome, str):
        return section(SECTION_ID, HEADING, tag("p", outcome, class_="warn"))
    sim = outcome
    step = sim.step_time_s
    analytic = sim.analytic_step_time_s if sim.analytic_step_time_s is not None else chosen.step_time_s
    intro = tag("p", (
        "The event simulator (sp-simulate) runs one optimizer step of the recommended plan on the cluster's "
        "link graph: every collective is a set of flows sharing the links (contention included), and each "
        "stage's ops run on three streams (compute, communication, data-parallel communication) with their "
        "dependencies, under the 1F1B pipeline schedule. Every rank of a stage runs the same ops, so one "
        "representative rank per stage is shown."))
    summary = facts([
        ("simulated step", f"{format_seconds(step)} ({sim.tokens_per_s:,.0f} tokens/s)"),
        ("analytic step", f"{format_seconds(analytic)}; the simulated step is "
                          f"{step / analytic - 1.0:+.1%} against it" if analytic > 0 else format_seconds(analytic)),
        ("micro-batches", f"{sim.num_micro_batches} per step on each pipeline"),
        ("topology", sim.topology.replace("_", " ")),
        ("compute idle", f"{sim.compute_idle_fraction:.1%} of the step on the busiest stage's compute stream "
                         "(pipeline bubble and waits on exposed communication)"),
    ])
    chart = figure(gantt_svg(sim), (
        "One step of the recommended plan: one row per pipeline stage and stream of its representative rank "
        "(light blue: forward of a micro-batch, green: backward; on the comm rows, pipeline sends; on the "
        "dp_comm rows, the gradient and parameter collectives after the last backward). Below: the ops of "
        "layer 0 of stage 0 in the forward and backward of micro-batch 0, where ring transfers overlap "
        "attention steps and all-to-alls block."), figure_id="fig-gantt")
    return section(SECTION_ID, HEADING, intro, summary, chart,
                   tag("h3", "Critical path by kind of work"), _critical_table(sim),
                   tag("h3", "Busy and idle time per stream"), _streams_table(sim))


def _critical_table(sim: SimResult) -> Raw:
    step = sim.step_time_s
    ordered = sorted(((kind, s) for kind, s in sim.critical_path_by_kind_s.items() if s > 0),
                     key=lambda kv: (-kv[1], kv[0]))
    rows = [[kind, KIND_LABELS.get(kind, kind), format_seconds(seconds), f"{seconds / step:.1%}" if step else "-"]
            for kind, seconds in ordered]
    rows.append(["total", "the simulated step", format_seconds(sum(s for _, s in ordered)),
                 f"{sum(s for _, s in ordered) / step:.1%}" if step else "-"])
    return table(["kind", "work", "time on the critical path", "share of the step"], rows, numeric=(2, 3))


def _streams_table(sim: SimResult) -> Raw:
    usage = {(u.stage, u.stream): u for u in sim.streams}
    stages = sorted({u.stage for u in sim.streams})
    step = sim.step_time_s
    rows = []
    for stage in stages:
        row: list[object] = [stage, usage[(stage, "compute")].rank]
        for stream in STREAMS:
            u = usage[(stage, stream)]
            row += [format_seconds(u.busy_s), format_seconds(u.idle_s), f"{u.busy_s / step:.1%}" if step else "-"]
        rows.append(row)
    headers = ["stage", "rank"] + [f"{stream} {what}" for stream in STREAMS for what in ("busy", "idle", "busy %")]
    return table(headers, rows, numeric=range(0, len(headers)))
