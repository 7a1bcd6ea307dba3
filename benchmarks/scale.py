"""The performance budget at scale (issue "Performance at scale"), one row per figure, with its target.

Run: make bench   (or .venv/bin/python benchmarks/scale.py [--skip-slow])

Each case runs in its own Python process, so "peak MB" is that case's peak resident memory
(imports included, about 100 MB; the larger of the process and its largest child). Wall and CPU
seconds are both printed: on a shared machine the wall time grows with the load, the CPU time
much less. CPU seconds include child processes: the report writes plans.csv in a forked child
while it draws the page, so with a second core free its wall time is below its CPU time. The
per-candidate comparison with llm-analysis needs it importable (not a dependency of sp-planner;
`pip install --no-deps llm-analysis==0.2.2 fire==0.5.0 termcolor six`); without it that row says so.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, target) in the order printed; each name is a function below.
CASES: list[tuple[str, str]] = [
    ("search_4096", "< 1 s, < 1 GB"),
    ("search_131072", "< 5 s, < 1 GB"),
    ("search_8m", "< 30 s, < 1 GB"),
    ("refuse_5.8m", "one line, < 30 s"),
    ("versus_llm_analysis", ">= 20x cheaper"),
    ("plan_file_131072", "small at any scale"),
    ("json_131072", "small at any scale"),
    ("simulate_4096", "< 2 s"),
    ("simulate_131072", "< 30 s"),
    ("report_4096", "< 5 s, HTML < 1 MB"),
]
SLOW = {"simulate_131072"}


def _question(model: str, seq_len: int, nodes: int, batch: int):
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.specs import Workload

    return load_model(model), load_hardware("H100-SXM"), Workload(seq_len=seq_len, global_batch=batch), nodes


def _search(model: str, seq_len: int, nodes: int, batch: int) -> dict:
    from sp_planner.search import search

    from sp_planner.search import SearchTooLarge

    m, hw, w, nodes = _question(model, seq_len, nodes, batch)
    try:
        result = search(m, hw, w, num_nodes=nodes, gpus_per_node=8)
    except SearchTooLarge as refused:  # the space outgrew the budget: answered in one line instead
        return {"figure": "refused", "detail": str(refused)[:75] + "..."}
    best = result.ranked[0]
    return {"figure": f"{result.candidates_evaluated:,} candidates",
            "detail": f"{model} {seq_len // 1024}K on {nodes * 8:,} GPUs; best fits: {best.fits}"}


def search_4096() -> dict:
    return _search("Llama-3-70B", 131072, 512, 512)


def search_131072() -> dict:
    return _search("Llama-3.1-405B", 1 << 20, 16384, 16384)


def search_8m() -> dict:
    return _search("Llama-3.1-405B", 1 << 20, 1_000_000, 16384)


def refuse_5_8m() -> dict:
    """720,720 nodes (a highly composite count): 67.5 million candidates."""
    from sp_planner.search import SearchTooLarge, search

    m, hw, w, nodes = _question("Llama-3.1-405B", 1 << 20, 720_720, 16384)
    try:
        search(m, hw, w, num_nodes=nodes, gpus_per_node=8)
    except SearchTooLarge as refused:
        return {"figure": "refused", "detail": str(refused)[:75] + "..."}
    return {"figure": "ANSWERED", "detail": "expected a refusal"}


def versus_llm_analysis() -> dict:
    """Per-configuration cost of llm-analysis's training() against ours, both on one machine now."""
    try:
        import logging

        from llm_analysis.analysis import ActivationRecomputation, DSZeRO, LLMAnalysis
        from llm_analysis.config import (
            ParallelismConfig,
            get_dtype_config_by_name,
            get_gpu_config_by_name,
            get_model_config_by_name,
        )
    except ImportError:
        return {"figure": "n/a", "detail": "llm-analysis not importable (see the module docstring)"}
    from sp_planner.search import search

    logging.getLogger().setLevel(logging.ERROR)
    model = get_model_config_by_name("upstage_Llama-2-70b-instruct-v2")
    gpu, dtype = get_gpu_config_by_name("h100-sxm-80gb"), get_dtype_config_by_name("w16a16e16")
    configs = [(tp, pp, zero) for tp in (1, 2, 4, 8) for pp in (1, 2, 4, 8) for zero in DSZeRO]
    start = time.process_time()
    for tp, pp, zero in configs * 5:
        analysis = LLMAnalysis(model, gpu, dtype, ParallelismConfig(tp_size=tp, pp_size=pp, dp_size=4096 // (tp * pp)),
                               flops_efficiency=0.5, hbm_memory_efficiency=0.9)
        analysis.training(batch_size_per_gpu=1, global_batch_size=4096 // (tp * pp), seq_len=4096, ds_zero=zero,
                          activation_recomputation=ActivationRecomputation.FULL)
    theirs = (time.process_time() - start) / (5 * len(configs))
    m, hw, w, nodes = _question("Llama-3-70B", 131072, 512, 512)
    start = time.process_time()
    result = search(m, hw, w, num_nodes=nodes, gpus_per_node=8)
    ours = (time.process_time() - start) / result.candidates_evaluated
    return {"figure": f"{theirs / ours:.0f}x",
            "detail": f"llm-analysis {1e6 * theirs:.0f} us/config, sp-planner {1e6 * ours:.2f} us/candidate"}


def plan_file_131072() -> dict:
    from sp_planner.layout import rank_groups
    from sp_planner.plan import ParallelPlan
    from sp_planner.planfile import PlanFile, RankLayout, write_plan_file

    m, hw, w, nodes = _question("Llama-3.1-405B", 1 << 20, 16384, 16384)
    plan = ParallelPlan(dp=128, pp=1, tp=1, ulysses=64, ring=16)
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for full in (False, True):
            path = Path(tmp) / f"plan-{full}.json"
            write_plan_file(path, PlanFile(model=m, hardware=hw, workload=w, num_nodes=nodes, gpus_per_node=8,
                                           plan=plan, rank_layout=RankLayout.of(plan),
                                           rank_groups=rank_groups(plan) if full else {}))
            sizes.append(path.stat().st_size)
    return {"figure": f"{sizes[0] / 1e3:.0f} KB", "detail": f"with --rank-groups: {sizes[1] / 1e6:.0f} MB"}


def json_131072() -> dict:
    """`sp-plan --format json` (the top 10 plans with their rank groups' generator) at 131,072 GPUs."""
    import contextlib
    import io

    from sp_planner.cli.plan_cmd import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            main(["--model", "llama3.1-405b", "--hardware", "h100-sxm", "--nodes", "16384", "--seq-len", "1m",
                  "--global-batch", "16384", "--format", "json"])
        except SystemExit:
            pass
    size = len(text.getvalue().encode())
    return {"figure": f"{size / 1e3:.0f} KB", "detail": "sp-plan --format json, Llama-3.1-405B 1M (185 MB when "
                                                         "every plan listed its rank groups)"}


def _simulate(model: str, seq_len: int, nodes: int, batch: int, plan_degrees: dict) -> dict:
    from sp_planner.plan import ParallelPlan
    from sp_planner.sim import simulate

    m, hw, w, nodes = _question(model, seq_len, nodes, batch)
    plan = ParallelPlan(**plan_degrees)
    result = simulate(m, hw, w, plan, num_nodes=nodes, gpus_per_node=8)
    off = 100 * (result.step_time_s / result.analytic_step_time_s - 1)
    return {"figure": f"{off:+.1f}% vs analytic", "detail": f"{model} {plan_degrees}"}


def simulate_4096() -> dict:
    return _simulate("Llama-3-70B", 131072, 512, 512, dict(dp=64, ulysses=8, ring=8, zero=3))


def simulate_131072() -> dict:
    return _simulate("Llama-3.1-405B", 1 << 20, 16384, 16384, dict(dp=128, ulysses=64, ring=16, zero=3))


def report_4096() -> dict:
    from sp_planner.cli.plan_cmd import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        try:
            main(["--model", "llama3-70b", "--hardware", "h100-sxm", "--nodes", "512", "--seq-len", "128k",
                  "--report", str(out), "--format", "json"])
        except SystemExit:
            pass
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    return {"figure": f"HTML {sizes['index.html'] / 1e6:.2f} MB",
            "detail": f"plans.csv {sizes['plans.csv'] / 1e6:.0f} MB, summary.json {sizes['summary.json'] / 1e6:.1f} MB"}


def _children_cpu_s() -> float:
    """CPU seconds of the finished child processes (the report's plans.csv writer), so that CPU s
    counts all the work, whichever process did it."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_one(name: str) -> None:
    """Child process: run one case, print its figures as JSON on the last line. The package's
    modules are imported first, so the times are the work's, not Python's start-up."""
    import sp_planner.cli.plan_cmd  # noqa: F401
    import sp_planner.report  # noqa: F401
    import sp_planner.search  # noqa: F401
    import sp_planner.sim  # noqa: F401

    devnull = open(os.devnull, "w")
    wall, cpu = time.perf_counter(), time.process_time() + _children_cpu_s()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull  # the report case prints sp-plan's output
    try:
        figures = globals()[name.replace(".", "_")]()
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    figures.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() + _children_cpu_s() - cpu,
                   peak_mb=max(resource.getrusage(who).ru_maxrss  # the largest process of the case
                               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024)
    print(json.dumps(figures))


def main() -> None:
    skip_slow = "--skip-slow" in sys.argv
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {platform.processor() or ''} {cores} cores, load {load:.1f}, "
          f"Python {platform.python_version()}")
    print(f"{'case':<20} {'wall s':>7} {'CPU s':>6} {'peak MB':>7}  {'target':<19} figure")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for name, target in CASES:
        if skip_slow and name in SLOW:
            print(f"{name:<20} {'skipped (--skip-slow)':>23}  {target}")
            continue
        done = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            print(f"{name:<20} FAILED: {why}")
            continue
        f = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:<20} {f['wall_s']:>7.2f} {f['cpu_s']:>6.2f} {f['peak_mb']:>7.0f}  {target:<19} {f['figure']}")
        print(f"{'':<20} {f['detail']}")


if __name__ == "__main__":
    if "--case" in sys.argv:
        _run_one(sys.argv[sys.argv.index("--case") + 1])
    else:
        main()
