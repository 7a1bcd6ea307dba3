"""Launching sp-run's ranks through torchrun's elastic agent (torch-free).

Local runs use `--standalone` (c10d rendezvous on a free local port). Cluster runs use c10d
rendezvous (--nnodes, --nproc-per-node, --rdzv-backend c10d, --rdzv-endpoint, --rdzv-id) with
sp-run itself as the script: under torchrun it sees RANK/WORLD_SIZE and joins the launch. A later
multi-node issue can add node rank and endpoint options to `LaunchSpec` without a custom rendezvous.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

WORKER_MODULE = "sp_planner.executor.worker"
CLI_MODULE = "sp_planner.cli.run_cmd"


@dataclass(frozen=True)
class LaunchSpec:
    nproc_per_node: int
    nnodes: int = 1
    # None: single node, --standalone. Otherwise HOST:PORT of the c10d rendezvous store.
    rdzv_endpoint: str | None = None
    rdzv_id: str = "sp-run"


def torchrun_args(spec: LaunchSpec) -> list[str]:
    if spec.rdzv_endpoint is None:
        return ["--standalone", "--nnodes=1", f"--nproc-per-node={spec.nproc_per_node}"]
    return [f"--nnodes={spec.nnodes}", f"--nproc-per-node={spec.nproc_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={spec.rdzv_endpoint}", f"--rdzv-id={spec.rdzv_id}"]


def local_command(spec: LaunchSpec, config_path: Path, result_dir: Path, timeout_s: float) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(spec), "-m", WORKER_MODULE,
            "--config", str(config_path), "--result-dir", str(result_dir), "--timeout", str(timeout_s)]


def cluster_command(spec: LaunchSpec, sp_run_args: list[str]) -> str:
    """The command to run on every node of a cluster (same on each; torchrun assigns ranks)."""
    return shlex.join(["torchrun", *torchrun_args(spec), "-m", CLI_MODULE, *sp_run_args])


@dataclass(frozen=True)
class LaunchOutcome:
    returncode: int
    timed_out: bool
    failure: str | None  # which rank failed and why, or what each rank was doing at the timeout


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the launch's process group (torchrun forwards it to its workers), then SIGKILL
    whatever is left after `grace_s`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap torchrun so the group can empty
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def describe_failure(result_dir: Path, world_size: int, *, timed_out: bool, timeout_s: float) -> str | None:
    """Name the failing rank (earliest error) or, after a timeout, each rank's last stage."""
    errors = []
    for path in result_dir.glob("rank*.error.json"):
        errors.append(json.loads(path.read_text()))
    if errors:
        errors.sort(key=lambda e: e["time"])
        first = errors[0]
        others = sorted(e["rank"] for e in errors[1:])
        tail = f" (ranks {others} failed after it)" if others else ""
        return f"rank {first['rank']} failed: {first['error']}{tail}"
    if timed_out:
        stages = []
        for rank in range(world_size):
            path = result_dir / f"rank{rank}.stage"
            stages.append(f"rank {rank}: {path.read_text() if path.exists() else 'not started'}")
        return f"timed out after {timeout_s:g} s; " + "; ".join(stages)
    return None


def run_local(command: list[str], *, result_dir: Path, world_size: int, timeout_s: float) -> LaunchOutcome:
    """Run torchrun in its own process group; on timeout, kill the whole group (no strays)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc)
        proc.wait()
    returncode = 1 if timed_out else proc.returncode
    failure = describe_failure(result_dir, world_size, timed_out=timed_out, timeout_s=timeout_s)
    if failure is None and returncode != 0:
        failure = f"torchrun exited with code {returncode} (see its output above)"
    return LaunchOutcome(returncode=returncode, timed_out=timed_out, failure=failure)
