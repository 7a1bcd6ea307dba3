"""One rank of an sp-run launch: joins the process group that torchrun (or SLURM) set up, runs
the validated, measured step, and gathers every rank's result on rank 0.

Entry point for the local launch: `python -m torch.distributed.run ... -m sp_planner.executor.worker
--config cfg.json --result-dir DIR`. Each rank records its stage in DIR/rank<r>.stage and, if it
raises, its error in DIR/rank<r>.error.json, so the launcher can name a failing or hung rank
(sp_planner.executor.failure). Before any attention runs, every rank checks its world against the
plan (sp_planner.executor.world_check). Every rank gets every rank's result, so each node's
launcher (one per node in a multi-node run) can print the summary and exit with the verdict.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import socket
import time
import traceback
from pathlib import Path

from sp_planner.executor.config import RunConfig
from sp_planner.executor.failure import STAGE_DONE, TERMINATED, WORLD_FILE
from sp_planner.executor.result import RankResult
from sp_planner.executor.world_check import check_env_world, check_layout, gather_places
from sp_planner.fileio import write_text_atomic

RESULTS_FILE = "results.json"


def env_from_slurm() -> None:
    """Map a SLURM task launch (srun) to torch.distributed's variables; MASTER_ADDR must be set."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))


class Terminated(RuntimeError):  # noqa: N818 - the launcher matches this name (failure.TERMINATED)
    """SIGTERM: torchrun stops a node's other ranks once one fails, and the launcher at its timeout."""


assert Terminated.__name__ == TERMINATED


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the error report must not be cut short
    raise Terminated("terminated by SIGTERM (its torchrun agent stops the other ranks after one fails)")


def _stage(result_dir: Path | None, rank: int, stage: str) -> None:
    if result_dir is not None:
        write_text_atomic(result_dir / f"rank{rank}.stage", stage)


def run_worker(cfg: RunConfig, result_dir: Path | None = None, timeout_s: float = 300.0
               ) -> list[RankResult]:
    """Run this rank's share; returns every rank's result (on every rank)."""
    import torch
    import torch.distributed as dist

    from sp_planner.executor.case import run_case
    from sp_planner.executor.usp import build_sequence_groups

    env_from_slurm()
    rank = int(os.environ["RANK"])
    _stage(result_dir, rank, "checking the world against the plan")
    check_env_world(cfg)  # before init: a wrong world must not wait for ranks that never come
    _stage(result_dir, rank, "joining the process group")
    if cfg.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        groups = build_sequence_groups(cfg.ulysses, cfg.ring, device.type)
        _stage(result_dir, rank, "checking rank groups and hosts against the plan")
        places = gather_places(cfg, groups)
        if result_dir is not None and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            write_text_atomic(result_dir / WORLD_FILE, json.dumps([p.model_dump(mode="json") for p in places]))
        check_layout(cfg, places)  # every rank sees the same places, so all abort together
        if cfg.debug_fail_rank == rank:
            _stage(result_dir, rank, f"debug {cfg.debug_fail_mode} injected")
            if cfg.debug_fail_mode == "hang":
                while True:
                    time.sleep(1)
            if cfg.debug_fail_mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("debug failure injected (--debug-fail-rank)")
        _stage(result_dir, rank, "running attention")
        result = run_case(cfg, groups, device).model_copy(update={"host": socket.gethostname()})
        _stage(result_dir, rank, "gathering results")
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, result.model_dump(mode="json"))
        _stage(result_dir, rank, STAGE_DONE)
        return [RankResult.model_validate(r) for r in gathered]
    finally:
        dist.destroy_process_group()


def write_error(result_dir: Path, rank: int, err: BaseException) -> None:
    write_text_atomic(result_dir / f"rank{rank}.error.json", json.dumps({
        "rank": rank, "host": socket.gethostname(), "time": time.time(), "error": f"{type(err).__name__}: {err}",
        "traceback": traceback.format_exc(),
    }))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sp_planner.executor.worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--result-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    cfg = RunConfig.model_validate_json(args.config.read_text())
    env_from_slurm()
    rank = int(os.environ.get("RANK", "0"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        results = run_worker(cfg, args.result_dir, args.timeout)
    except BaseException as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the agent's SIGTERM must not cut the report short
        # A SIGTERM that arrived while an error unwound (e.g. in destroy_process_group) hides it.
        cause = err.__context__ if isinstance(err, Terminated) and err.__context__ is not None else err
        write_error(args.result_dir, rank, cause)
        raise
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one copy per node, for that node's launcher
        payload = [r.model_dump(mode="json") for r in results]
        write_text_atomic(args.result_dir / RESULTS_FILE, json.dumps(payload))


if __name__ == "__main__":
    main()
