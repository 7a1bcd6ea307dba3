"""One rank of an sp-calibrate launch: time compute, then collectives; rank 0 gathers everything.

Entry point of the local launch: `python -m torch.distributed.run ... -m
sp_planner.executor.calibrate.worker --schedule schedule.json --result-dir DIR`, through the rank
entry it shares with sp-run's worker (sp_planner.executor.rank: stage and error files, SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

from sp_planner.calibration.measurements import Measurements, write_measurements
from sp_planner.calibration.schedule import CalibrationSchedule
from sp_planner.executor.failure import STAGE_DONE
from sp_planner.executor.rank import env_from_slurm, join, run_rank, shutdown, stage_writer
from sp_planner.specs.calibration import Environment

MEASUREMENTS_FILE = "measurements.json"


def _environment(schedule: CalibrationSchedule, device) -> Environment:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        # After every communicator exists: what the CUDA context and NCCL hold outside the allocator.
        free_b, total_b = torch.cuda.mem_get_info(device)
        reserved = total_b - free_b - torch.cuda.memory_reserved(device)
        nccl = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old releases
        nccl_version = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        return Environment(
            device_name=torch.cuda.get_device_name(device), backend="nccl", dtype=schedule.dtype,
            torch_version=torch.__version__, nccl_version=nccl_version,
            world_size=schedule.world_size, ranks_per_node=schedule.ranks_per_node,
            devices_per_node=torch.cuda.device_count(), device_memory_bytes=float(total_b),
            runtime_reserved_bytes=float(max(reserved, 0)), measured_on=datetime.date.today().isoformat())
    ram_b = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Environment(
        device_name=f"cpu ({platform.machine()})", backend="gloo", dtype=schedule.dtype,
        torch_version=torch.__version__, world_size=schedule.world_size, ranks_per_node=schedule.ranks_per_node,
        devices_per_node=schedule.ranks_per_node, device_memory_bytes=float(ram_b / schedule.ranks_per_node),
        measured_on=datetime.date.today().isoformat())


def run_calibration(schedule: CalibrationSchedule, result_dir: Path | None = None,
                    timeout_s: float = 600.0) -> Measurements | None:
    """Measure on this rank; rank 0 returns every rank's measurements, the others None."""
    import torch
    import torch.distributed as dist

    from sp_planner.executor.calibrate.collectives import build_groups, measure_collectives
    from sp_planner.executor.calibrate.compute import measure_attention, measure_copy, measure_gemm

    env_from_slurm()
    rank = int(os.environ["RANK"])
    stage = stage_writer(result_dir, rank)
    stage("joining the process group")
    device = join(schedule.device, timeout_s)
    if device.type == "cpu":
        # A CPU "device" is this rank's share of the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // schedule.ranks_per_node))
    dtype = getattr(torch, schedule.dtype)
    try:
        if dist.get_world_size() != schedule.world_size:
            raise RuntimeError(f"launched {dist.get_world_size()} ranks, the schedule is for {schedule.world_size}")
        groups = build_groups(schedule, timeout_s)
        gemm = measure_gemm(schedule, device, dtype, rank, stage)
        attention = measure_attention(schedule, device, dtype, rank, stage)
        copy = measure_copy(schedule, device, rank, stage)
        collectives = measure_collectives(schedule, groups, device, dtype, stage)
        environment = _environment(schedule, device)
        stage("gathering measurements")
        mine = Measurements(environment=environment, collectives=tuple(collectives), gemm=tuple(gemm),
                            attention=tuple(attention), memory_copy=tuple(copy)).model_dump(mode="json")
        gathered: list | None = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        stage(STAGE_DONE)
        if gathered is None:  # every rank but 0: rank 0 builds the profile
            return None
        parts = [Measurements.model_validate(m) for m in gathered]
        return Measurements(environment=parts[0].environment,
                            collectives=tuple(s for p in parts for s in p.collectives),
                            gemm=tuple(s for p in parts for s in p.gemm),
                            attention=tuple(s for p in parts for s in p.attention),
                            memory_copy=tuple(s for p in parts for s in p.memory_copy))
    finally:
        shutdown(dist.destroy_process_group)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sp_planner.executor.calibrate.worker")
    parser.add_argument("--schedule", type=Path, required=True)
    parser.add_argument("--result-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    schedule = CalibrationSchedule.model_validate_json(args.schedule.read_text())
    measurements = run_rank(lambda: run_calibration(schedule, args.result_dir, args.timeout), args.result_dir)
    if measurements is not None:
        write_measurements(args.result_dir / MEASUREMENTS_FILE, measurements)


if __name__ == "__main__":
    main()
