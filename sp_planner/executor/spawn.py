"""Run many attention cases in one group of spawned gloo processes (tests, quick self-checks).

A spawn costs seconds (interpreter + torch import + rendezvous), so one group runs every case of
its world size; Ulysses/Ring groups are built once per (ulysses, ring).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import traceback
from typing import Any
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sp_planner.executor.case import run_case
from sp_planner.executor.config import RunConfig
from sp_planner.executor.result import RankResult
from sp_planner.executor.usp import build_sequence_groups
from sp_planner.fileio import write_text_atomic

CaseOutcome = RankResult | str  # a result, or the error text of a case that raised


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, cases_json: list[str], result_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    # A case that hangs on one rank becomes an error on the others instead of a stuck test run.
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    groups_by_degrees = {}
    outcomes: list[dict[str, Any]] = []
    try:
        for text in cases_json:
            cfg = RunConfig.model_validate_json(text)
            key = (cfg.ulysses, cfg.ring)
            if key not in groups_by_degrees:
                groups_by_degrees[key] = build_sequence_groups(cfg.ulysses, cfg.ring, "cpu")
            try:
                result = run_case(cfg, groups_by_degrees[key], torch.device("cpu"))
                outcomes.append({"result": result.model_dump(mode="json")})
            except Exception:  # noqa: BLE001 - reported per case, the other cases still run
                outcomes.append({"error": traceback.format_exc()})
    finally:
        write_text_atomic(Path(result_dir) / f"rank{rank}.json", json.dumps(outcomes))
        dist.destroy_process_group()


def run_cases(world_size: int, cases: list[RunConfig], result_dir: Path) -> dict[int, list[CaseOutcome]]:
    """Every rank's outcome for every case, by rank, in case order."""
    for cfg in cases:
        if cfg.world_size != world_size or cfg.device != "cpu":
            raise ValueError(f"case {cfg} does not run on {world_size} CPU ranks")
    mp.start_processes(_rank_main, args=(world_size, free_port(), [c.model_dump_json() for c in cases],
                                         str(result_dir)), nprocs=world_size, start_method="spawn")
    outcomes: dict[int, list[CaseOutcome]] = {}
    for rank in range(world_size):
        items = json.loads((Path(result_dir) / f"rank{rank}.json").read_text())
        outcomes[rank] = [RankResult.model_validate(i["result"]) if "result" in i else i["error"] for i in items]
    return outcomes
