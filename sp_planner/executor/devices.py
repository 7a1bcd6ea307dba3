"""How many local ranks this machine's devices can hold (torch imported lazily: the CLI calls
this only once a CUDA run is asked for)."""

from __future__ import annotations

from sp_planner.errors import UserInputError


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
