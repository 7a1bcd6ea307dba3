"""The one entry point of a launched rank (sp-run's and sp-calibrate's workers share it).

A rank records what it is doing in DIR/rank<r>.stage and, if it raises, its error in
DIR/rank<r>.error.json, so the launcher can name a failing or hung rank
(sp_planner.executor.failure). SIGTERM (torchrun stopping a node's other ranks after one failed,
or the launcher at its timeout) becomes a `Terminated` error, reported like any other, except
while a rank's own error unwinds through its cleanup (`shutdown`): that error stays the report.

Under NCCL a collective that outlives the group's timeout is caught by NCCL's watchdog thread.
torch's default (TORCH_NCCL_ASYNC_ERROR_HANDLING=3, "SkipCleanUp" in ProcessGroupNCCL.hpp) then
tears the process down from that thread, and the rank dies without a Python error. `join` sets
2 ("CleanUpOnly": abort the communicators, raise in the waiting op) unless the user chose a
mode, so the timeout reaches this module and the rank's error file.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, TypeVar

from sp_planner.executor.failure import TERMINATED
from sp_planner.fileio import write_text_atomic

T = TypeVar("T")
NCCL_ERROR_HANDLING_ENV = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
NCCL_CLEAN_UP_ONLY = "2"


class Terminated(RuntimeError):  # noqa: N818 - the launcher matches this name (failure.TERMINATED)
    """SIGTERM: torchrun stops a node's other ranks once one fails, and the launcher at its timeout."""


assert Terminated.__name__ == TERMINATED


def env_from_slurm() -> None:
    """Map a SLURM task launch (srun) to torch.distributed's variables; MASTER_ADDR must be set."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def stage_writer(result_dir: Path | None, rank: int) -> Callable[[str], None]:
    """stage(text): record what this rank is doing (a no-op without a result directory)."""

    def stage(text: str) -> None:
        if result_dir is not None:
            write_text_atomic(result_dir / f"rank{rank}.stage", text)

    return stage


def write_error(result_dir: Path, rank: int, err: BaseException) -> None:
    write_text_atomic(result_dir / f"rank{rank}.error.json", json.dumps({
        "rank": rank, "host": socket.gethostname(), "time": time.time(), "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
    }))


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the error report must not be cut short
    raise Terminated("terminated by SIGTERM (its torchrun agent stops the other ranks after one fails)")


def run_rank(body: Callable[[], T], result_dir: Path) -> T:
    """Run this rank's work; on any error write DIR/rank<r>.error.json, then re-raise."""
    env_from_slurm()
    rank = int(os.environ.get("RANK", "0"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return body()
    except BaseException as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the agent's SIGTERM must not cut the report short
        # The error as it left the body. Not a Terminated's __context__: a SIGTERM that lands while
        # library code handles its own exception (importlib's KeyError on a path-cache miss) has
        # that handled exception as context, which is not this rank's error. `shutdown` keeps a
        # real error that a SIGTERM interrupted while it unwound.
        write_error(result_dir, rank, err)
        raise


def shutdown(destroy: Callable[[], None]) -> None:
    """Call `destroy` (destroy_process_group) from a rank body's `finally`. When the agent's
    SIGTERM cuts it short while the body's own error unwinds, that error goes on unwinding and is
    what run_rank reports; after a clean body the Terminated is raised as usual."""
    unwinding = sys.exc_info()[1]  # inside a `finally`: the error leaving the body, or None
    try:
        destroy()
    except Terminated:
        if unwinding is None:
            raise


def join(device_type: str, timeout_s: float):
    """Bind this rank to its device and join the default group (NCCL on CUDA, gloo on CPU) with
    `timeout_s` for every collective. Returns the rank's torch.device."""
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        os.environ.setdefault(NCCL_ERROR_HANDLING_ENV, NCCL_CLEAN_UP_ONLY)  # read when the group is made
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return device
