"""`make gpu-check`: prove sp-run's CUDA path on one GPU in one short run, and keep every result.

    python scripts/gpu_check.py --device cuda --wheels gpu-wheels --out gpu-check-results/RUN

Standard library only until the dependencies are in place: on a machine without network whose
Python has torch but not pydantic, the missing packages are installed from the wheels folder
that `make gpu-wheels` fills (pip --no-index --target, into a folder of their own: the machine's
torch and site-packages are never touched). The project runs from this checkout (PYTHONPATH).

Steps (scripts/gpu_check_steps.py), each in its own process with a time limit, so a failure or
a hang is recorded and the next step runs:
  1 kernels      flash and memory-efficient kernels against the fp32 reference; CUDA tests
  2 sp_run       sp-run with one NCCL rank; Ulysses, Ring, USP on gloo ranks sharing the GPU
  3 ring_blocks  benchmarks/attention_blocks.py: blockwise ring compute vs monolithic flash
  4 calibrate    sp-calibrate --quick: the GEMM and attention curves of this GPU
  5 attention_sweep  benchmarks/attention_sweep.py: SDPA's flash and cuDNN backends by shape
Step 6 is this folder: every step's JSON and log, summary.json and summary.txt.
With --device cpu the same steps run their CPU variants (CI proves the script itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS_SCRIPT = REPO / "scripts" / "gpu_check_steps.py"
# (step, seconds it may take at most); the budget stops the run at 9.5 minutes with the environment
# probe. On an H200 (2026-12-04) the first four took 23-32, 45-64, 83-92 and 31-39 s: ring_blocks
# ran past its former 90 s once, so it has 160 (its benchmark 150). attention_sweep was added after
# (estimated 40-60 s from its FLOPs at the measured SDPA rates; not yet run on a GPU).
STEPS = (("kernels", 150), ("sp_run", 150), ("ring_blocks", 160), ("calibrate", 60), ("attention_sweep", 120))
ENV_PROBE_S = 30
BUDGET_S = 570
# module -> requirement, installed from the wheels folder when the module is missing.
REQUIRED = {"pydantic": "pydantic>=2.6", "yaml": "PyYAML>=6.0"}
OPTIONAL = {"pytest": "pytest>=8", "pytest_timeout": "pytest-timeout>=2.2"}  # step 1's test run


def _missing(modules: dict[str, str]) -> list[str]:
    return [req for module, req in modules.items() if importlib.util.find_spec(module) is None]


def install(wheels: Path, site: Path) -> str:
    """Install what is missing from `wheels` into `site`; one line saying what happened."""
    missing = _missing(REQUIRED) + _missing(OPTIONAL)
    if not missing:
        return "dependencies: all present, nothing installed"
    if not wheels.is_dir() or not any(wheels.glob("*.whl")):
        return (f"dependencies: missing {', '.join(missing)} and no wheels in {wheels} "
                "(run `make gpu-wheels` where pip reaches PyPI); steps that need them will fail")
    site.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
               "--only-binary=:all:", "--target", str(site), "--upgrade", *missing]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return f"dependencies: installed {', '.join(missing)} from {wheels} into {site}"
    # No pip (or it refused): a wheel is a zip of its import roots; unpack every one.
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"dependencies: pip failed ({tail}); unpacked every wheel of {wheels} into {site}"


def _run_step(name: str, limit_s: float, args, env: dict[str, str]) -> dict:
    """Run one step in its own session; its result JSON, or a failure naming what happened."""
    log = args.out / f"{name}.log"
    result_path = args.out / f"{name}.json"
    command = [sys.executable, str(STEPS_SCRIPT), name, "--device", args.device, "--out", str(args.out)]
    start = time.monotonic()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and whatever it launched (torchrun, ranks)
            returncode, timed_out = proc.wait(), True
    seconds = time.monotonic() - start
    if result_path.exists() and not timed_out:
        result = json.loads(result_path.read_text())
    else:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        why = f"timed out after {limit_s:.0f} s" if timed_out else f"exited with code {returncode}"
        result = {"step": name, "status": "failed", "lines": [f"{why}; see {log.name}", *tail]}
    result["seconds"] = round(seconds, 1)
    result["log"] = log.name
    return result


WIDTH = 80


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def _step_lines(step: dict) -> list[str]:
    head = [f"[{step['status']}] {step['step']} ({step.get('seconds', 0):.0f} s)"]
    return head + [w for line in step.get("lines", []) for w in _wrap(line, "    ")]


def _summary_text(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"sp-planner gpu-check ({summary['device']}) {summary['started']}, {summary['seconds']:.0f} s",
             *_wrap(f"machine: {env.get('device_name', '?')}; torch {env.get('torch', '?')}, "
                    f"CUDA {env.get('cuda') or 'none'}, NCCL {env.get('nccl') or 'none'}; "
                    f"commit {env.get('commit', '?')}"),
             *_wrap(summary["dependencies"])]
    for step in summary["steps"]:
        lines += _step_lines(step)
    lines += [w for line in summary["not_proven"] for w in _wrap(f"not proven: {line}")]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="results folder (must not exist or be empty)")
    parser.add_argument("--wheels", type=Path, default=REPO / "gpu-wheels")
    parser.add_argument("--site", type=Path, default=REPO / ".gpu-check-site")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.out.exists() and any(args.out.iterdir()):
        sys.stderr.write(f"error: {args.out} already holds files; give a new --out (results are never replaced)\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started, start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    deps = install(args.wheels, args.site)
    print("\n".join(_wrap(deps)), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), str(args.site), os.environ.get("PYTHONPATH")) if p))
    probe = _run_step("environment", ENV_PROBE_S, args, env)
    environment = probe.get("environment", {})
    print("\n".join(_wrap(f"environment: {'; '.join(probe.get('lines', []))}")), flush=True)
    steps = []
    for number, (name, cap_s) in enumerate(STEPS, start=1):
        left_s = BUDGET_S - (time.monotonic() - start)
        if left_s < 10:
            steps.append({"step": name, "status": "skipped", "lines": [f"no time left in the {BUDGET_S} s budget"]})
        else:
            print(f"step {number}/{len(STEPS)} {name} (at most {min(cap_s, left_s):.0f} s) ...", flush=True)
            steps.append(_run_step(name, min(cap_s, left_s), args, env))
        print(f"  {steps[-1]['status']}", flush=True)
    summary = {"device": args.device, "started": started, "seconds": round(time.monotonic() - start, 1),
               "dependencies": deps, "environment": environment, "steps": steps,
               "not_proven": [line for s in steps for line in s.get("not_proven", [])]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = _summary_text(summary)
    (args.out / "summary.txt").write_text(text)
    print(f"\n{text}results: {args.out}")
    if all(s["status"] == "skipped" for s in steps):
        sys.stderr.write("error: every step was skipped: nothing was proven here\n")
        return 1
    return 1 if any(s["status"] == "failed" for s in steps) or probe["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
