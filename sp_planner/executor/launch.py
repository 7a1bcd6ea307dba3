"""Launching sp-run's ranks through torchrun's elastic agent (torch-free).

Local runs use `--standalone` (c10d rendezvous on a free local port). Cluster runs use c10d
rendezvous (--nnodes, --nproc-per-node, --rdzv-backend c10d, --rdzv-endpoint, --rdzv-id) with
sp-run itself as the script: under torchrun it sees RANK/WORLD_SIZE and joins the launch. One
node's agent (sp-run --node-rank, sp_planner.executor.multinode) adds the rendezvous options of
`--rdzv-conf` (join_timeout, read_timeout, is_host), all torchrun's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sp_planner.executor.failure import root_cause, stages, torchrun_exit_codes
from sp_planner.executor.stop import (LAUNCH_ENV, new_marker, signal_handlers, signals_noted, stop_launch,
                                     survivors_note)
from sp_planner.executor.tether import tethered

WORKER_MODULE = "sp_planner.executor.worker"
CLI_MODULE = "sp_planner.cli.run_cmd"


@dataclass(frozen=True)
class LaunchSpec:
    nproc_per_node: int
    nnodes: int = 1
    # None: single node, --standalone. Otherwise HOST:PORT of the c10d rendezvous store.
    rdzv_endpoint: str | None = None
    rdzv_id: str = "sp-run"
    # c10d rendezvous options (torch/distributed/elastic/rendezvous/dynamic_rendezvous.py and
    # c10d_rendezvous_backend.py): seconds to wait for every node, and whether this agent hosts
    # the store (None: torchrun decides from the endpoint's host name).
    join_timeout_s: float | None = None
    is_host: bool | None = None


def _rdzv_conf(spec: LaunchSpec) -> list[str]:
    conf = []
    if spec.join_timeout_s is not None:
        # read_timeout bounds a store client stuck on an endpoint that is not a c10d store.
        seconds = max(1, round(spec.join_timeout_s))
        conf += [f"join_timeout={seconds}", f"read_timeout={seconds}"]
    if spec.is_host is not None:
        conf.append(f"is_host={int(spec.is_host)}")
    return [f"--rdzv-conf={','.join(conf)}"] if conf else []


def torchrun_args(spec: LaunchSpec) -> list[str]:
    if spec.rdzv_endpoint is None:
        return ["--standalone", "--nnodes=1", f"--nproc-per-node={spec.nproc_per_node}"]
    return [f"--nnodes={spec.nnodes}", f"--nproc-per-node={spec.nproc_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={spec.rdzv_endpoint}", f"--rdzv-id={spec.rdzv_id}", *_rdzv_conf(spec)]


def local_command(spec: LaunchSpec, config_path: Path, result_dir: Path, timeout_s: float) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(spec), "-m", WORKER_MODULE,
            "--config", str(config_path), "--result-dir", str(result_dir), "--timeout", str(timeout_s)]


def cluster_argv(spec: LaunchSpec, sp_run_args: list[str]) -> list[str]:
    """The command to run on every node of a cluster (same on each; torchrun assigns ranks)."""
    return ["torchrun", *torchrun_args(spec), "-m", CLI_MODULE, *sp_run_args]


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a job stopped by Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a job stopped by SIGTERM


class _Terminated(Exception):
    """SIGTERM arrived (timeout(1), a scheduler, CI) while the ranks ran."""


def _sigterm_raises() -> AbstractContextManager[None]:
    """While the ranks run, SIGTERM raises _Terminated in the main thread, so the launch's process
    group is stopped before sp-run exits (the default action would leave torchrun and its ranks
    running); elsewhere (another thread) the handler is left as it is."""
    def on_sigterm(signum, frame):
        raise _Terminated()

    return signal_handlers({signal.SIGTERM: on_sigterm})


@dataclass(frozen=True)
class LaunchOutcome:
    returncode: int
    timed_out: bool
    failure: str | None  # which rank failed and why, or what each rank was doing at the timeout
    interrupted: bool = False  # Ctrl-C or SIGTERM stopped the run (failure says whether every rank ended)


def describe_failure(result_dir: Path, world_size: int, *, timed_out: bool, timeout_s: float,
                     ranks: list[int] | None = None, host: str | None = None,
                     nccl_timeout_s: float | None = None, exit_codes: dict[int, int] | None = None) -> str | None:
    """Name the failing rank (sp_planner.executor.failure) or, after a timeout, each rank's last
    stage. ranks: this node's ranks (default: all of world_size); host: name it in the message;
    nccl_timeout_s: the ranks' NCCL group timeout, when they run NCCL; exit_codes: the failed ranks'
    exit codes from torchrun's summary."""
    if timed_out:
        # Checked first: the ranks' errors written while they were being killed are not the cause.
        local = ranks if ranks is not None else list(range(world_size))
        where = f" on host {host}" if host else ""
        return f"timed out after {timeout_s:g} s{where}; " + stages(result_dir, local)
    return root_cause(result_dir, host=host, nccl_timeout_s=nccl_timeout_s, exit_codes=exit_codes)


def _wait(proc: subprocess.Popen, result_dir: Path, timeout_s: float, start_deadline_s: float | None,
          watch: Callable[[], None] | None) -> bool:
    """Wait for torchrun; True if it ran past timeout_s, or no rank started by start_deadline_s.
    `watch` is called about every 0.2 s while it runs (progress)."""
    if start_deadline_s is None and watch is None:
        try:
            proc.wait(timeout=timeout_s)
            return False
        except subprocess.TimeoutExpired:
            return True
    start = time.monotonic()
    started = False
    while proc.poll() is None:
        elapsed = time.monotonic() - start
        started = started or any(result_dir.glob("rank*.stage"))
        if elapsed > timeout_s or (start_deadline_s is not None and not started and elapsed > start_deadline_s):
            return True
        if watch is not None:
            watch()
        time.sleep(0.2)
    return False


def run_local(command: list[str], *, result_dir: Path, world_size: int, timeout_s: float,
              ranks: list[int] | None = None, host: str | None = None,
              start_deadline_s: float | None = None, nccl_timeout_s: float | None = None,
              log_path: Path | None = None, watch: Callable[[], None] | None = None) -> LaunchOutcome:
    """Run torchrun in its own process group; on timeout or Ctrl-C, kill the whole group (no strays);
    if this process dies without a word (SIGKILL), torchrun gets SIGTERM and stops its ranks
    (executor.tether).

    start_deadline_s: also give up if no rank has started by then (a rendezvous that hangs).
    nccl_timeout_s: the ranks' NCCL group timeout, when they run NCCL (a rank that dies silently
    most likely ran past it). log_path: where torchrun's and the ranks' own output go (their
    tracebacks), instead of the terminal; the failure message reads the ranks' exit codes from it.
    watch: see _wait."""
    marker = new_marker()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{LAUNCH_ENV: marker})
    log = open(log_path, "w", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
    stopped_by = None  # "Ctrl-C" or "SIGTERM"
    try:
        with _sigterm_raises():
            proc = subprocess.Popen(tethered(command), start_new_session=True, env=env, stdout=log,
                                    stderr=subprocess.STDOUT if log is not None else None)
            try:
                timed_out = _wait(proc, result_dir, timeout_s, start_deadline_s, watch)
            except KeyboardInterrupt:
                timed_out, stopped_by = False, "Ctrl-C"
            except _Terminated:
                timed_out, stopped_by = False, "SIGTERM"
            finally:
                with signals_noted() as noted:
                    survivors = stop_launch(proc, marker)
                if noted and stopped_by is None:
                    timed_out, stopped_by = False, noted[0]
    finally:
        if log is not None:
            log.close()
    if stopped_by is not None:
        local = ranks if ranks is not None else list(range(world_size))
        code = EXIT_INTERRUPTED if stopped_by == "Ctrl-C" else EXIT_TERMINATED
        stopped = survivors_note(survivors) or "every rank was stopped"
        return LaunchOutcome(returncode=code, timed_out=False, interrupted=True,
                             failure=f"interrupted ({stopped_by}); {stopped}. " + stages(result_dir, local))
    returncode = 1 if timed_out or proc.returncode is None else proc.returncode
    failure = None
    if timed_out or returncode != 0:
        exit_codes = torchrun_exit_codes(log_path.read_text(errors="replace")) if log_path is not None else {}
        failure = describe_failure(result_dir, world_size, timed_out=timed_out, timeout_s=timeout_s,
                                   ranks=ranks, host=host, nccl_timeout_s=nccl_timeout_s, exit_codes=exit_codes)
    if failure is None and returncode != 0:
        failure = f"torchrun exited with code {returncode}"
    if survivors:
        failure = f"{failure}; {survivors_note(survivors)}" if failure else survivors_note(survivors)
        returncode = returncode or 1
    return LaunchOutcome(returncode=returncode, timed_out=timed_out, failure=failure)
