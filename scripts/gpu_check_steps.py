"""The steps of `make gpu-check` (scripts/gpu_check.py runs each in its own process):

    python scripts/gpu_check_steps.py STEP --device cuda|cpu --out DIR

Each writes DIR/STEP.json: {"step", "status": passed|failed|skipped, "lines": [one-line
findings], "not_proven": [...], ...}, plus the data files it names. A step that cannot run here
says so in one line and is "skipped".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from sp_planner.calibration import builtin_for_device
from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernel_check import KernelShape, kernel_accuracy
from sp_planner.executor.kernels import CpuFlashKernel, CudaEfficientKernel, CudaFlashKernel
from sp_planner.executor.predict import predict
from sp_planner.executor.result import summarize
from sp_planner.executor.spawn import run_cases

REPO = Path(__file__).resolve().parent.parent
NO_CUDA = "no CUDA device visible here"
# What one GPU cannot prove: NCCL refuses two ranks on one device.
MULTI_GPU = ("NCCL all-to-all and P2P between ranks (ulysses or ring > 1 on NCCL) need 2+ GPUs; "
             "one GPU ran them on gloo only")
CPU_ONLY = "--device cpu: no CUDA or NCCL path ran; this run proves the script and the CPU paths"


def _run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run a command of this step (its output goes to the step's log); a timeout is an exit 124."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        done = subprocess.CompletedProcess(command, 124, text, f"timed out after {timeout_s:g} s")
    sys.stdout.write(done.stdout)
    sys.stdout.write(done.stderr)
    return done


def _benchmark_rows(step: str, out: Path, script_args: list[str], timeout_s: float
                    ) -> tuple[Path, list[dict], dict | None]:
    """Run a benchmark script that writes its rows as JSON: (the rows' path, the rows, None), or the
    step's failed result in third place. The rows go to STEP_rows.json, not STEP.json: the step's
    own result takes that name."""
    rows_path = out / f"{step}_rows.json"
    done = _run([sys.executable, *script_args, "--json", str(rows_path)], timeout_s)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return rows_path, [], {"status": "failed", "lines": [f"benchmark failed: {last}"]}
    return rows_path, json.loads(rows_path.read_text()), None


def tree_commit(repo: Path) -> str:
    """HEAD's short hash, and how many tracked files differ from it: a copied working tree can carry
    an older .git than its files (the first H200 run's second call named the commit before its fix)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                            text=True, cwd=repo)
    commit = head.stdout.strip() or "unknown"
    changed = len(status.stdout.splitlines()) if status.returncode == 0 else 0
    return f"{commit} + {changed} changed tracked file{'s' if changed != 1 else ''}" if changed else commit


def environment(device: str, out: Path) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0, "device_name": platform.processor()
           or platform.machine()}
    if torch.cuda.is_available():
        nccl = torch.cuda.nccl.version()
        env.update(device_name=torch.cuda.get_device_name(0), nccl=".".join(map(str, nccl))
                   if isinstance(nccl, tuple) else str(nccl),
                   memory_bytes=torch.cuda.get_device_properties(0).total_memory)
    env["commit"] = tree_commit(REPO)
    lines = [f"{env['gpus']} CUDA device(s), {env['device_name']}, torch {env['torch']}"]
    if device == "cuda" and not env["gpus"]:
        lines.append(f"{NO_CUDA}: every CUDA step will say so and skip")
    return {"status": "passed", "lines": lines, "environment": env}


def kernels(device: str, out: Path) -> dict:
    """Step 1: every kernel case against the fp32 reference, then the test file for the device."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "lines": [f"{NO_CUDA}: CUDA kernels not run"]}
    if device == "cuda":
        kinds, dtypes, seq = [CudaFlashKernel, CudaEfficientKernel], [torch.bfloat16, torch.float16], 2048
        # sp-run and the gloo ranks are step 2's; here the kernel and calibration-kernel tests.
        shapes, tests = [(16, 4, 64), (16, 4, 128), (16, 16, 128)], "tests/executor/test_cuda.py"
        select = ["-k", "not sp_run and not gloo_ranks"]
    else:
        kinds, dtypes, seq = [CpuFlashKernel], [torch.bfloat16, torch.float16, torch.float32], 96
        shapes, tests, select = [(4, 1, 64), (4, 4, 128)], "tests/executor/test_cuda_paths.py", []
    results = [kernel_accuracy(kind(), device, dtype, KernelShape(batch=2, seq_len=seq, heads=h, kv_heads=kv,
                                                                   head_dim=d, causal=causal))
               for kind in kinds for dtype in dtypes for causal in (False, True) for h, kv, d in shapes]
    if device == "cuda":
        results.append(kernel_accuracy(CudaEfficientKernel(), device, torch.float32,
                                       KernelShape(batch=1, seq_len=seq, heads=8, kv_heads=2, head_dim=128,
                                                   causal=True)))
    (out / "kernels_accuracy.json").write_text(json.dumps([r.model_dump() for r in results], indent=1) + "\n")
    bad = [r for r in results if not r.passed]
    lines = [f"{len(results) - len(bad)}/{len(results)} kernel cases within the 2x rule "
             f"({', '.join(sorted({r.kernel.split(' ')[0] for r in results}))}; "
             f"{', '.join(sorted({r.dtype for r in results}))}; causal and full; GQA and MHA; "
             f"head dims {sorted({r.shape.head_dim for r in results})}) -> kernels_accuracy.json"]
    lines += [f"FAILED {r.kernel.split(' ')[0]} {r.dtype} {r.shape}: err {r.max_abs_err} > {r.bound}" for r in bad]
    status = "failed" if bad else "passed"
    if importlib_find("pytest"):
        done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, *select], 100)
        last = (done.stdout.strip().splitlines() or ["no output"])[-1]
        lines.append(f"pytest {tests}: {last}")
        status = "failed" if done.returncode != 0 else status
    else:
        lines.append(f"pytest is not installed: {tests} not run")
    return {"status": status, "lines": lines}


def importlib_find(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _gloo_cases(device: str) -> dict[int, list[RunConfig]]:
    if device == "cuda":  # timed too: 2 iterations after the validated step
        shape = dict(seq_len=8192, num_heads=16, num_kv_heads=4, head_dim=128, dtype="bfloat16", iters=2)
    else:
        shape = dict(seq_len=96, num_heads=4, num_kv_heads=2, head_dim=16, dtype="bfloat16", iters=0)
    degrees = {2: [(2, 1, "contiguous"), (1, 2, "zigzag"), (1, 2, "contiguous")],
               4: [(2, 2, "zigzag"), (2, 2, "contiguous"), (4, 1, "contiguous"), (1, 4, "zigzag")]}
    return {world: [RunConfig(ulysses=u, ring=r, ring_layout=layout, causal=True, device=device, **shape)
                    for u, r, layout in cases] for world, cases in degrees.items()}


def sp_run(device: str, out: Path) -> dict:
    """Step 2: sp-run end to end with one rank (NCCL on CUDA), then every scheme on gloo ranks."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "lines": [f"{NO_CUDA}: sp-run --device cuda not run"]}
    one = out / "sp_run_one_rank.json"
    size = ["16k", "16", "4", "128"] if device == "cuda" else ["256", "4", "2", "32"]
    done = _run([sys.executable, "-m", "sp_planner.cli.run_cmd", "--device", device, "--seq-len", size[0],
                 "--heads", size[1], "--kv-heads", size[2], "--head-dim", size[3], "--causal", "--dtype", "bfloat16",
                 "--iters", "3", "--out", str(one)], 90)
    backend = "NCCL" if device == "cuda" else "gloo"
    ok = done.returncode == 0
    lines = [f"sp-run --device {device}, 1 rank ({backend} ran init, all_gather_object and barrier; ulysses = "
             "ring = 1 sends no attention bytes): "
             f"{'passed' if ok else 'FAILED: ' + (done.stderr.strip().splitlines() or ['?'])[-1]} -> {one.name}"]
    results = []
    for world, cases in _gloo_cases(device).items():
        try:
            outcomes = run_cases(world, cases, out / f"gloo{world}", device=device)
        except Exception as err:  # noqa: BLE001 - recorded; the other world size still runs
            ok = False
            lines.append(f"{world} gloo ranks: FAILED to run: {type(err).__name__}: {err}")
            continue
        for i, cfg in enumerate(cases):
            ranks = [outcomes[r][i] for r in range(world)]
            errors = [r for r in ranks if isinstance(r, str)]
            name = f"ulysses {cfg.ulysses} ring {cfg.ring} {cfg.ring_layout}"
            if errors:
                ok = False
                lines.append(f"{name}: FAILED: {errors[0].strip().splitlines()[-1]}")
                continue
            result = summarize(cfg, ranks, predict(cfg))
            results.append(result.model_dump(mode="json"))
            ok = ok and result.passed
            bytes_ok = "=" if result.comm_bytes_measured == result.comm_bytes_predicted else "!="
            lines.append(f"{name} on {world} gloo ranks: {'passed' if result.passed else 'FAILED'}; bytes "
                         f"a2a {result.comm_bytes_measured.all_to_all} p2p {result.comm_bytes_measured.p2p} "
                         f"{bytes_ok} predicted; {'; '.join(result.failures)}".rstrip("; "))
    (out / "sp_run_gloo.json").write_text(json.dumps(results, indent=1) + "\n")
    if device == "cuda":
        lines.append("backends: gloo ranks sharing CUDA device 0; all-to-all on gloo with CUDA tensors (gloo "
                     "stages them through host memory); ring P2P on gloo through host copies (gloo send/recv "
                     "take host memory only) -> sp_run_gloo.json")
    else:
        lines.append("backends: gloo ranks on CPU; all-to-all and ring P2P on gloo -> sp_run_gloo.json")
    not_proven = MULTI_GPU if device == "cuda" else CPU_ONLY
    return {"status": "passed" if ok else "failed", "lines": lines, "not_proven": [not_proven]}


def ring_blocks(device: str, out: Path) -> dict:
    """Step 3: blockwise ring compute against one flash call on the same work."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "lines": [f"{NO_CUDA}: long-sequence block benchmark not run"]}
    size = (["--seq-lens", "32k,64k,128k,256k", "--heads", "16", "--repeats", "3"] if device == "cuda"
            else ["--quick", "--repeats", "2"])
    rows_path, rows, failed = _benchmark_rows("ring_blocks", out, ["benchmarks/attention_blocks.py", "--ring", "4",
                                                                   "--head-dim", "128", *size], 150)
    if failed:
        return failed
    lines = [f"T_full(S) / (R * T_slowest rank), ring 4, forward, {rows[0]['dtype']}, head dim 128 -> {rows_path.name}"]
    for mask, layout in (("full", "contiguous"), ("causal", "contiguous"), ("causal", "zigzag")):
        picked = [r for r in rows if r["causal"] == (mask == "causal") and r["layout"] == layout]
        lines.append(f"{mask} {layout}: " + ", ".join(f"S={r['seq_len']} {r['efficiency']:.2f}" for r in picked))
    return {"status": "passed", "lines": lines}


def calibrate(device: str, out: Path) -> dict:
    """Step 4: sp-calibrate --quick on this machine; the profile goes into the results folder."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "lines": [f"{NO_CUDA}: sp-calibrate --device cuda not run"]}
    profile, raw = out / "calibrated-profile.yaml", out / "calibration-measurements.json"
    ranks = ["--nproc-per-node", "2"]
    if device == "cuda":
        # One GPU times no collective: the link figures come from a base profile. sp-calibrate
        # picks it by device name; an H200 variant it does not know still gets H200's.
        name = torch.cuda.get_device_name(0)
        ranks = [] if builtin_for_device(name) or "H200" not in name else ["--base", "H200"]
    done = _run([sys.executable, "-m", "sp_planner.cli.calibrate_cmd", "--device", device, "--quick", *ranks,
                 "--out", str(profile), "--save-measurements", str(raw)], 55)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": "failed", "lines": [f"sp-calibrate failed: {last}"]}
    measured = json.loads(raw.read_text())
    lines = [f"{len(measured['gemm'])} GEMM, {len(measured['attention'])} attention, "
             f"{len(measured['collectives'])} collective samples -> {profile.name}, {raw.name}"]
    if device == "cuda":
        lines.append("one GPU: no collective timed (needs 2+ ranks); GEMM and attention curves only")
    return {"status": "passed", "lines": lines}


def attention_sweep(device: str, out: Path) -> dict:
    """Step 5: SDPA's flash and cuDNN backends by shape (benchmarks/attention_sweep.py), the rows a
    later change to the cost model's attention curves can cite."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "lines": [f"{NO_CUDA}: attention sweep not run"]}
    rows_path, rows, failed = _benchmark_rows("attention_sweep", out, ["benchmarks/attention_sweep.py"], 110)
    if failed:
        return failed
    ran = [r for r in rows if "error" not in r]
    lines = [f"{len(ran)} of {len(rows)} backend x shape rows timed -> {rows_path.name}"]
    for backend in sorted({r["backend"] for r in rows}):
        mine = [r for r in ran if r["backend"] == backend and r["set"] == "lengths" and r["causal"]]
        refused = sum(1 for r in rows if r["backend"] == backend and "error" in r)
        if mine:
            longest = max(mine, key=lambda r: r["tokens"])
            lines.append(f"{backend}: causal at {longest['tokens']} tokens {longest['fwd_tflops']:.0f} TFLOPS forward, "
                         f"{longest['bwd_tflops']:.0f} backward" + (f"; {refused} shapes refused" if refused else ""))
        elif refused:
            first = next(r["error"] for r in rows if r["backend"] == backend)
            lines.append(f"{backend}: refused every shape ({first})")
    clocks = [c for r in ran for c in (r.get("clock_mhz_before"), r.get("clock_mhz_after")) if c is not None]
    if clocks:
        lines.append(f"SM clock {min(clocks):.0f}-{max(clocks):.0f} MHz across the sweep")
    return {"status": "passed" if ran else "failed", "lines": lines}


STEPS = {"environment": environment, "kernels": kernels, "sp_run": sp_run, "ring_blocks": ring_blocks,
         "calibrate": calibrate, "attention_sweep": attention_sweep}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    result = {"step": args.step, **STEPS[args.step](args.device, args.out)}
    (args.out / f"{args.step}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
