"""How many local ranks this machine's devices can hold (torch imported lazily: the CLI calls
this only once a CUDA run is asked for)."""

from __future__ import annotations

from sp_planner.errors import UserInputError
from sp_planner.executor.budget import RUNTIME_OVERHEAD_BYTES
from sp_planner.units import format_bytes


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_local_gpus(device: str, local_ranks: int, cluster_command: str, *, gpus: int | None = None) -> None:
    """Refuse (exit 2) more local CUDA ranks than CUDA devices: each rank binds device LOCAL_RANK
    and NCCL refuses two ranks on one device, so rank `gpus` would die on an invalid device
    ordinal after the launch. gpus: the count to check against (default: this machine's)."""
    if device != "cuda":
        return
    gpus = cuda_device_count() if gpus is None else gpus
    if local_ranks > gpus:
        raise UserInputError(
            f"{local_ranks} local ranks on --device cuda need one CUDA device each (NCCL refuses two ranks "
            f"on one device) but {gpus} are visible here; sp-run never shrinks a plan. "
            f"On a cluster run on every node: {cluster_command}")


def check_local_cpu_ranks(local_ranks: int, available: tuple[int, str] | None) -> None:
    """Refuse (exit 2) more local CPU ranks for sp-calibrate than this machine's memory holds: each
    is a Python process with torch and gloo (budget.RUNTIME_OVERHEAD_BYTES, as sp-run's fit check
    counts it); --nproc-per-node 1000 started 1000 of them on a 2-core machine with 22 GiB free.
    available: (bytes, where they were read), or None where they cannot be read (no check)."""
    if available is None:
        return
    have, source = available
    per_rank = RUNTIME_OVERHEAD_BYTES["cpu"]
    if local_ranks * per_rank <= have:
        return
    fewer = have // per_rank
    raise UserInputError(
        f"--nproc-per-node {local_ranks}: {local_ranks} CPU ranks need about {format_bytes(local_ranks * per_rank)} "
        f"({format_bytes(per_rank)} a rank for Python, torch and gloo) but {format_bytes(have)} is available "
        f"({source}); " + (f"give --nproc-per-node {fewer} or fewer" if fewer >= 2 else "free some memory first"))
