"""One rank of an sp-run launch: joins the process group that torchrun (or SLURM) set up, runs
the validated, measured step, and gathers every rank's result on rank 0.

Entry point for the local launch: `python -m torch.distributed.run ... -m sp_planner.executor.worker
--config cfg.json --result-dir DIR`. Each rank records its stage in DIR/rank<r>.stage and, if it
raises, its error in DIR/rank<r>.error.json, so the launcher can name a failing or hung rank.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
import traceback
from pathlib import Path

from sp_planner.executor.config import RunConfig
from sp_planner.executor.result import RankResult
from sp_planner.fileio import write_text_atomic

RESULTS_FILE = "results.json"


def env_from_slurm() -> None:
    """Map a SLURM task launch (srun) to torch.distributed's variables; MASTER_ADDR must be set."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))


def _stage(result_dir: Path | None, rank: int, stage: str) -> None:
    if result_dir is not None:
        write_text_atomic(result_dir / f"rank{rank}.stage", stage)


def run_worker(cfg: RunConfig, result_dir: Path | None = None, timeout_s: float = 300.0
               ) -> list[RankResult] | None:
    """Run this rank's share; rank 0 returns every rank's result, the others None."""
    import torch
    import torch.distributed as dist

    from sp_planner.executor.case import run_case
    from sp_planner.executor.usp import build_sequence_groups

    env_from_slurm()
    rank = int(os.environ["RANK"])
    _stage(result_dir, rank, "joining the process group")
    if cfg.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        if dist.get_world_size() != cfg.world_size:
            raise RuntimeError(f"launched {dist.get_world_size()} ranks, the run needs "
                               f"ulysses*ring = {cfg.world_size}")
        groups = build_sequence_groups(cfg.ulysses, cfg.ring, device.type)
        if cfg.debug_fail_rank == rank:
            _stage(result_dir, rank, f"debug {cfg.debug_fail_mode} injected")
            if cfg.debug_fail_mode == "hang":
                while True:
                    time.sleep(1)
            raise RuntimeError("debug failure injected (--debug-fail-rank)")
        _stage(result_dir, rank, "running attention")
        result = run_case(cfg, groups, device)
        _stage(result_dir, rank, "gathering results")
        gathered: list | None = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(result.model_dump(mode="json"), gathered, dst=0)
        _stage(result_dir, rank, "done")
        return [RankResult.model_validate(r) for r in gathered] if rank == 0 else None
    finally:
        dist.destroy_process_group()


def write_error(result_dir: Path, rank: int, err: BaseException) -> None:
    write_text_atomic(result_dir / f"rank{rank}.error.json", json.dumps({
        "rank": rank, "time": time.time(), "error": f"{type(err).__name__}: {err}",
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
    try:
        results = run_worker(cfg, args.result_dir, args.timeout)
    except BaseException as err:
        write_error(args.result_dir, rank, err)
        raise
    if results is not None:
        payload = [r.model_dump(mode="json") for r in results]
        write_text_atomic(args.result_dir / RESULTS_FILE, json.dumps(payload))


if __name__ == "__main__":
    main()
