"""Run many attention cases in one group of spawned gloo processes (tests, quick self-checks).

A spawn costs seconds (interpreter + torch import + rendezvous), so one group runs every case of
its world size; Ulysses/Ring groups are built once per (ulysses, ring).

device "cuda": every rank holds its tensors on CUDA device 0. NCCL refuses two ranks on one
device, so the group stays gloo: its all-to-all takes CUDA tensors (it stages them through
host memory itself, ProcessGroupGloo's AsyncAlltoallCUDAWork); ring P2P goes through host
copies (sp_planner.executor.comm.RingComm). This runs the multi-rank paths on one GPU.
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


# A case that hangs on one rank becomes an error on the others instead of a stuck test run.
TIMEOUT_S = 60.0


def _rank_main(rank: int, world_size: int, port: int, cases_json: list[str], result_dir: str,
               device_type: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    groups_by_degrees = {}
    outcomes: list[dict[str, Any]] = []
    try:
        for text in cases_json:
            cfg = RunConfig.model_validate_json(text)
            key = (cfg.ulysses, cfg.ring)
            if key not in groups_by_degrees:
                groups_by_degrees[key] = build_sequence_groups(cfg.ulysses, cfg.ring, TIMEOUT_S)
            try:
                result = run_case(cfg, groups_by_degrees[key], device)
                outcomes.append({"result": result.model_dump(mode="json")})
            except Exception:  # noqa: BLE001 - reported per case, the other cases still run
                outcomes.append({"error": traceback.format_exc()})
    finally:
        write_text_atomic(Path(result_dir) / f"rank{rank}.json", json.dumps(outcomes))
        dist.destroy_process_group()


def run_cases(world_size: int, cases: list[RunConfig], result_dir: Path, device: str = "cpu"
              ) -> dict[int, list[CaseOutcome]]:
    """Every rank's outcome for every case, by rank, in case order (device: the cases' device)."""
    for cfg in cases:
        if cfg.world_size != world_size or cfg.device != device:
            raise ValueError(f"case {cfg} does not run on {world_size} {device} ranks")
    # The harness's own scratch folder (the ranks' atomic writes do not create parents).
    Path(result_dir).mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world_size, free_port(), [c.model_dump_json() for c in cases],
                                         str(result_dir), device), nprocs=world_size, start_method="spawn")
    outcomes: dict[int, list[CaseOutcome]] = {}
    for rank in range(world_size):
        items = json.loads((Path(result_dir) / f"rank{rank}.json").read_text())
        outcomes[rank] = [RankResult.model_validate(i["result"]) if "result" in i else i["error"] for i in items]
    return outcomes
