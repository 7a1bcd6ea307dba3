"""One rank of an sp-run launch: joins the process group that torchrun (or SLURM) set up, runs
the validated, measured step, and gathers every rank's result on rank 0.

Entry point for the local launch: `python -m torch.distributed.run ... -m sp_planner.executor.worker
--config cfg.json --result-dir DIR`, through the shared rank entry (sp_planner.executor.rank:
stage and error files, SIGTERM). Before any attention runs, every rank checks its world against the
plan (sp_planner.executor.world_check). Every rank gets every rank's result, so each node's
launcher (one per node in a multi-node run) can print the summary and exit with the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time
from pathlib import Path

from sp_planner.executor.config import RunConfig
from sp_planner.executor.failure import STAGE_DONE, WORLD_FILE
from sp_planner.executor.rank import env_from_slurm, join, local_rank, run_rank, shutdown, stage_writer
from sp_planner.executor.result import RankResult
from sp_planner.executor.world_check import check_env_world, check_layout, gather_places
from sp_planner.fileio import write_text_atomic

RESULTS_FILE = "results.json"


def run_worker(cfg: RunConfig, result_dir: Path | None = None, timeout_s: float = 300.0
               ) -> list[RankResult]:
    """Run this rank's share; returns every rank's result (on every rank)."""
    import torch.distributed as dist

    from sp_planner.executor.case import run_case
    from sp_planner.executor.usp import build_sequence_groups

    env_from_slurm()
    rank = int(os.environ["RANK"])
    stage = stage_writer(result_dir, rank)
    stage("checking the world against the plan")
    check_env_world(cfg)  # before init: a wrong world must not wait for ranks that never come
    stage("joining the process group")
    device = join(cfg.device, timeout_s)
    try:
        groups = build_sequence_groups(cfg.ulysses, cfg.ring, timeout_s)
        stage("checking rank groups and hosts against the plan")
        places = gather_places(cfg, groups)
        if result_dir is not None and local_rank() == 0:
            write_text_atomic(result_dir / WORLD_FILE, json.dumps([p.model_dump(mode="json") for p in places]))
        check_layout(cfg, places)  # every rank sees the same places, so all abort together
        if cfg.debug_fail_rank == rank:
            if cfg.debug_fail_mode == "stuck":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # before the stage file says so
            stage(f"debug {cfg.debug_fail_mode} injected")
            if cfg.debug_fail_mode in ("hang", "stuck"):
                while True:
                    time.sleep(1)
            if cfg.debug_fail_mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("debug failure injected (--debug-fail-rank)")
        stage("running attention")
        result = run_case(cfg, groups, device).model_copy(update={"host": socket.gethostname()})
        stage("gathering results")
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, result.model_dump(mode="json"))
        stage(STAGE_DONE)
        return [RankResult.model_validate(r) for r in gathered]
    finally:
        shutdown(dist.destroy_process_group)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sp_planner.executor.worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--result-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    cfg = RunConfig.model_validate_json(args.config.read_text())
    results = run_rank(lambda: run_worker(cfg, args.result_dir, args.timeout), args.result_dir)
    if local_rank() == 0:  # one copy per node, for that node's launcher
        payload = [r.model_dump(mode="json") for r in results]
        write_text_atomic(args.result_dir / RESULTS_FILE, json.dumps(payload))


if __name__ == "__main__":
    main()
