"""How long a report takes, search excluded: the whole write_report and its parts, 16 .. 4096 GPUs.

Parts: the CSV, the four search-space figures, and the simulated timeline of the recommended plan
(`simulate`: the event simulator with op-level detail; `gantt`: its chart as inline SVG).

Run: .venv/bin/python benchmarks/report_speed.py   (target: 4096 GPUs in under 10 s)

`--plan-file` instead times sp-report on a plan file, search included: Qwen3-235B-A22B at 4k tokens
on 256 x MI300X (2,048 GPUs, 3.37 million candidates, a 2 GB plans.csv), the case where sp-report
once took 7x sp-plan's time (it searched with top_k and built the frame by two more passes).
"""

from __future__ import annotations

import contextlib
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

from sp_planner.catalog import load_hardware, load_model
from sp_planner.present.summary import build_summary
from sp_planner.report import plots, plots_space, write_report
from sp_planner.report.csv import write_plans_csv
from sp_planner.report.simulation import gantt_svg, simulate_chosen
from sp_planner.search import search
from sp_planner.specs import Workload

CLUSTERS = [(2, 8), (64, 8), (512, 8)]


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    model, hardware = load_model("Llama-3-70B"), load_hardware("H100-SXM")
    print(f"{'GPUs':>6} {'candidates':>11} {'search':>7} {'report':>7} | {'csv':>6} {'heatmap':>7} "
          f"{'pareto':>7} {'memory':>7} {'comm':>6} {'simulate':>8} {'gantt':>6}  (seconds)")
    for nodes, per_node in CLUSTERS:
        gpus = nodes * per_node
        workload = Workload(seq_len=1024 * 1024, global_batch=gpus)
        start = time.perf_counter()
        # every_row: as sp-plan --report searches, costing every candidate once for the frame.
        result = search(model, hardware, workload, num_nodes=nodes, gpus_per_node=per_node, every_row=True)
        searched = time.perf_counter() - start
        summary = build_summary(model=model, hardware=hardware, workload=workload, num_nodes=nodes,
                                gpus_per_node=per_node, result=result)
        top = list(result.ranked[:10])
        with tempfile.TemporaryDirectory() as tmp:
            total = timed(lambda: write_report(
                Path(tmp) / "report", model=model, hardware=hardware, workload=workload, num_nodes=nodes,
                gpus_per_node=per_node, result=result, summary=summary))
            csv = timed(lambda: write_plans_csv(Path(tmp) / "plans.csv", result.frame,
                                                global_batch=workload.global_batch))
        heatmap = timed(lambda: plots_space.heatmap_svg(result.frame))
        pareto = timed(lambda: plots_space.pareto_svg(result.frame, hbm_bytes=hardware.hbm_bytes,
                                                      chosen_index=None))
        memory = timed(lambda: plots.memory_bars_svg(top, hbm_bytes=hardware.hbm_bytes))
        comm = timed(lambda: plots.comm_bars_svg(top, intra_kind="nvlink", inter_kind="infiniband"))
        start = time.perf_counter()
        sim = simulate_chosen(model, hardware, workload, result.ranked[0], num_nodes=nodes, gpus_per_node=per_node)
        simulated = time.perf_counter() - start
        gantt = timed(lambda: gantt_svg(sim)) if not isinstance(sim, str) else float("nan")
        print(f"{gpus:>6} {result.candidates_evaluated:>11} {searched:>7.2f} {total:>7.2f} | {csv:>6.2f} "
              f"{heatmap:>7.2f} {pareto:>7.2f} {memory:>7.2f} {comm:>6.2f} {simulated:>8.2f} {gantt:>6.2f}")


PLAN_FILE_QUESTION = ["--model", "Qwen3-235B-A22B", "--hardware", "mi300x", "--nodes", "256", "--seq-len", "4k"]


def plan_file_case() -> None:
    """sp-report on sp-plan's plan file for PLAN_FILE_QUESTION: wall and CPU seconds (this process
    and the CSV's forked writer) and peak RSS."""
    from sp_planner.cli import plan_cmd, report_cmd

    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.json"
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            plan_cmd.main([*PLAN_FILE_QUESTION, "--out", str(plan)])
        before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        start = time.perf_counter()
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
            report_cmd.main([str(plan), "--out", str(Path(tmp) / "report")])
        wall = time.perf_counter() - start
        after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
        csv_bytes = (Path(tmp) / "report" / "plans.csv").stat().st_size
    peak = max(a.ru_maxrss for a in after) / 2**20  # KiB -> GiB
    print(f"sp-report {' '.join(PLAN_FILE_QUESTION)}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"peak RSS {peak:.1f} GiB, plans.csv {csv_bytes / 1e9:.2f} GB")


if __name__ == "__main__":
    if "--plan-file" in sys.argv[1:]:
        plan_file_case()
    else:
        main()
