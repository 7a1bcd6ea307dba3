"""How sp-run runs once its input is checked: as one rank of a torchrun/SLURM launch, as one
node's torchrun agent, or with every rank on this machine; each refuses (exit 2) a run that cannot
fit before anything starts, shows a progress line, and names a failure in one line with a log.

Torch-free: torch is imported only for a CUDA run's device count and memory, and in the ranks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from rich.console import Console

from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.terminal import wrap_at_spaces
from sp_planner.destination import deliver_text
from sp_planner.errors import UserInputError
from sp_planner.executor.budget import (
    LONG_REFERENCE_S,
    RUNTIME_OVERHEAD_BYTES,
    held_bytes,
    reference_time_s,
    run_memory,
)
from sp_planner.executor.config import RunConfig
from sp_planner.executor.devices import check_local_gpus
from sp_planner.executor.failure import STAGE_DONE
from sp_planner.executor.launch import LaunchSpec, local_command, run_local
from sp_planner.executor.multinode import NodeJob, run_node, split_endpoint
from sp_planner.executor.predict import predict
from sp_planner.executor.result import RankResult, RunResult, summarize
from sp_planner.executor.summary import print_summary
from sp_planner.executor.worker import RESULTS_FILE, run_worker
from sp_planner.planfile import PlanFile
from sp_planner.units import format_bytes, format_seconds

EXIT_FAILED = 1


class Job(NamedTuple):
    """One sp-run invocation, checked and ready to start."""

    cfg: RunConfig
    plan_file: PlanFile | None
    out: Path | None
    timeout_s: float
    console: Console
    cluster: str  # the torchrun line that runs this on a cluster (for --print-launch and hints)
    notes: tuple[str, ...] = ()  # said on stdout once every check has passed: a refused run prints one line


def announce(job: Job) -> None:
    """Job's notes on its console, each wrapped at its spaces (as write_note wraps stderr's) and
    written as it is: a model name is no rich markup."""
    for text in job.notes:
        job.console.file.write("\n".join(wrap_at_spaces(f"note: {text}", job.console.width, hang="      ")) + "\n")


def run_joined(job: Job) -> int:
    """This process is one rank of a torchrun/SLURM launch: run, and summarize on each node's rank 0."""
    announce(job)
    ranks = run_worker(job.cfg, None, job.timeout_s)
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # one summary per node
        return 0
    return _finish(job, ranks)


def run_node_agent(job: Job, rdzv_endpoint: str | None, rdzv_id: str, node_rank: int | None,
                    join_timeout_s: float) -> int:
    """Start this node's torchrun agent, join the others at the rendezvous, run."""
    if rdzv_endpoint is None:
        raise UserInputError("--node-rank joins a multi-node run: give --rdzv-endpoint HOST:PORT of node rank 0")
    split_endpoint(rdzv_endpoint)
    cfg, per_node = job.cfg, job.cfg.ranks_per_node
    slots = _local_slots(cfg.device)
    if slots is not None and slots < per_node:
        raise UserInputError(f"--nproc-per-node {per_node} but this node has {slots} CUDA devices")
    check_fits(cfg, per_node, job.plan_file, job.cluster, job.timeout_s, job.console)
    node = NodeJob(nnodes=cfg.num_nodes, nproc_per_node=per_node, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id,
                   node_rank=node_rank, join_timeout_s=join_timeout_s, nccl=cfg.device == "cuda")
    return _launch(job, lambda config_path, result_dir, log_path, watch: run_node(
        node, config_path, result_dir, job.timeout_s, log_path=log_path, watch=watch))


def run_here(job: Job, nproc: int | None) -> int:
    """Every rank on this machine, started by a local torchrun."""
    cfg, world = job.cfg, job.cfg.world_size
    if nproc is not None and nproc > world:
        raise UserInputError(f"the run needs ulysses*ring = {world} ranks but --nproc {nproc}; drop --nproc or "
                             f"give --nproc {world}")
    if nproc is not None and nproc < world:
        raise UserInputError(f"the run needs ulysses*ring = {world} ranks but --nproc {nproc}; sp-run never shrinks "
                             f"a plan: give --nproc {world} (or drop it), or on a cluster run on every node: "
                             f"{job.cluster}")
    check_local_gpus(cfg.device, world, job.cluster)  # a CUDA device a rank
    check_fits(cfg, world, job.plan_file, job.cluster, job.timeout_s, job.console)
    return _launch(job, lambda config_path, result_dir, log_path, watch: run_local(
        local_command(LaunchSpec(nproc_per_node=world), config_path, result_dir, job.timeout_s),
        result_dir=result_dir, world_size=world, timeout_s=job.timeout_s, log_path=log_path, watch=watch,
        nccl_timeout_s=job.timeout_s if cfg.device == "cuda" else None))


def _local_slots(device: str) -> int | None:
    """CUDA devices on this machine (None for CPU, where any number of processes can run)."""
    if device != "cuda":
        return None
    import torch  # lazily: only once a CUDA run is asked for

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _finish(job: Job, ranks: list[RankResult]) -> int:
    plan_file = job.plan_file
    prediction = predict(job.cfg, plan_file.hardware if plan_file else None,
                         plan_file.gpus_per_node if plan_file else None, plan_file.framework if plan_file else None)
    result: RunResult = summarize(job.cfg, ranks, prediction)
    try:
        print_summary(result, job.console)
    finally:  # the result file the user asked for, even when stdout is gone (a closed pipe)
        if job.out is not None:
            deliver_text(job.out, result.model_dump_json(indent=2) + "\n", what="result")
    return 0 if result.passed else EXIT_FAILED


def available_bytes(device: str, plan_file: PlanFile | None) -> tuple[int, str] | None:
    """Memory one local rank can use before the launch: CPU, MemAvailable of /proc/meminfo (shared
    by the local ranks); CUDA, the first device's total memory (each rank has its own), else the
    plan's HBM. None where neither can be read (no check)."""
    if device == "cpu":
        try:
            lines = Path("/proc/meminfo").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
        return None
    import torch  # lazily: only once a CUDA run is asked for

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory), "on CUDA device 0"
    if plan_file is not None:
        return int(plan_file.hardware.hbm_bytes), f"HBM of {plan_file.hardware.name} in the plan"
    return None


def check_fits(cfg: RunConfig, local_ranks: int, plan_file: PlanFile | None, cluster: str, timeout_s: float,
                console: Console) -> None:
    """Refuse (exit 2) a run whose ranks cannot fit this machine's memory, before torchrun starts
    anything; note a long reference. sp-run never shrinks a plan to make it fit."""
    available = available_bytes(cfg.device, plan_file)
    if available is not None:
        have, source = available
        per_rank = have // local_ranks if cfg.device == "cpu" else have
        shared = f" / {local_ranks} local ranks" if cfg.device == "cpu" and local_ranks > 1 else ""
        held = held_bytes(cfg)
        if held > per_rank:  # refused before the step's replay, which takes minutes at thousands of ring ranks
            raise UserInputError(
                f"the run needs over {format_bytes(held)} per rank (the global fp32 inputs and reference "
                f"{format_bytes(held - RUNTIME_OVERHEAD_BYTES[cfg.device])} and "
                f"{format_bytes(RUNTIME_OVERHEAD_BYTES[cfg.device])} for the runtime, before any phase's own) but "
                + _too_big_tail(per_rank, have, source, shared, cluster, plan_file))
        memory = run_memory(cfg)
        need = memory.peak_bytes
        if need > per_rank:
            phase, phase_bytes = memory.largest_phase
            raise UserInputError(
                f"the run needs about {format_bytes(need)} per rank (the global fp32 inputs and reference "
                f"{format_bytes(memory.inputs_bytes + memory.reference_bytes)}, then {phase} "
                f"{format_bytes(phase_bytes)}, and {format_bytes(memory.runtime_bytes)} for the runtime) but "
                + _too_big_tail(per_rank, have, source, shared, cluster, plan_file))
    seconds = reference_time_s(cfg, local_ranks=local_ranks, cpu_cores=os.cpu_count() or 1)
    if seconds > timeout_s:  # the run would be killed before it could finish: say so now
        raise UserInputError(
            f"each rank computes the full fp32 reference first, about {format_seconds(seconds)} on {cfg.device} "
            f"here, longer than --timeout {timeout_s:g} s; raise --timeout to at least {math.ceil(2 * seconds)} "
            f"or pass a shorter --seq-len")
    if seconds > LONG_REFERENCE_S:
        also = "" if cfg.dtype == "float32" else " and then runs the kernel once on the full sequence in the dtype"
        console.print(f"note: each rank computes the full fp32 reference first, about {format_seconds(seconds)} "
                      f"on {cfg.device} here{also} (--timeout {timeout_s:g} s bounds the whole run; raise it if "
                      "that is too short)", soft_wrap=True, highlight=False)


def _too_big_tail(per_rank: int, have: int, source: str, shared: str, cluster: str,
                  plan_file: PlanFile | None) -> str:
    """The end of check_fits' refusal: what is available, and where the run fits instead."""
    return (f"{format_bytes(per_rank)} is available per rank ({format_bytes(have)} {source}{shared}); sp-run never "
            f"shrinks a plan: run it where it fits, e.g. on the cluster with --device cuda: {cluster} ; or pass a "
            "smaller --seq-len" + (" with explicit --ulysses/--ring/--heads/--kv-heads/--head-dim instead of --plan"
                                   if plan_file is not None else ""))


def _launch(job: Job, start) -> int:
    """Write the config, start the ranks (start(config_path, result_dir, log_path, watch) ->
    LaunchOutcome) with a progress line, and summarize the results this node received. The ranks'
    own output goes to a log kept (and named) only when the run fails."""
    announce(job)
    fd, log_name = tempfile.mkstemp(prefix="sp-run-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with tempfile.TemporaryDirectory(prefix="sp-run-") as tmp, \
            delayed_progress(f"starting {job.cfg.world_size} ranks") as update:
        result_dir = Path(tmp)
        config_path = result_dir / "config.json"
        config_path.write_text(job.cfg.model_dump_json())
        outcome = start(config_path, result_dir, log_path, lambda: update(*rank_progress(result_dir,
                                                                                          job.cfg.world_size)))
        if outcome.failure is None:
            ranks = [RankResult.model_validate(r) for r in json.loads((result_dir / RESULTS_FILE).read_text())]
    if outcome.failure is not None:
        sys.stderr.write(f"error: {outcome.failure}; the ranks' output is in {log_path}\n")
        if outcome.interrupted:
            raise SystemExit(outcome.returncode)  # said here, in full: not the generic "interrupted"
        return EXIT_FAILED
    log_path.unlink(missing_ok=True)
    return _finish(job, ranks)


def rank_progress(result_dir: Path, world_size: int) -> tuple[int, int, str]:
    """(ranks done, ranks, 'rank 0: running attention') from the stage files the ranks write."""
    stages = {}
    for path in result_dir.glob("rank*.stage"):
        try:
            stages[int(path.name[4:-6])] = path.read_text()
        except (OSError, ValueError):
            continue
    done = sum(stage == STAGE_DONE for stage in stages.values())
    first = min(stages) if stages else None
    doing = f"rank {first}: {stages[first]}" if first is not None else "starting the ranks"
    return done, world_size, doing
