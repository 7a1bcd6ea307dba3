"""A command run as one rank of a torchrun/SLURM launch (sp-run, sp-calibrate): how it knows, and
how its one bad-input line is said once per node rather than once by every rank.

Every rank parses the same options, so every rank refuses them alike: a node's first local rank
(LOCAL_RANK 0, or SLURM_LOCALID 0 under srun) says the line, the others exit 2 without it. Each
node says it once because each node's launcher shows its own ranks' output (one torchrun per
node). torchrun stops a node's other ranks (SIGTERM) as soon as one exits, so a quiet rank waits
for that stop before it exits, and the first rank's line is never cut off by a quiet rank leaving
first; a quiet rank that is not stopped (the first rank went on: a refusal of this rank alone)
says its line after all. A quiet rank still importing when the stop comes (a loaded machine skews
the ranks' start-up) dies of it, exit -15, saying nothing too. srun stops no one, and its first
task says the line unhurried.

Ctrl-C's 'interrupted' line follows the same rule, without the wait: the terminal sends SIGINT to
its foreground process group, the launcher and every rank of the node alike (torchrun then sends
its ranks the signal it got, SIGINT, not SIGTERM: torch.distributed.elastic's agent
_shutdown(e.sigval)), so the first rank is interrupted as surely as the quiet ones (quiet_rank).
"""

from __future__ import annotations

import os
import signal
from time import monotonic, sleep

# Seconds a quiet torchrun rank waits to be stopped: the ranks start together and refuse within
# a second of each other on an idle machine (the command's imports), but a loaded one (2 cores,
# three ranks beside a test run) skewed them past 5 s, and the quiet ranks spoke too; past this the
# first rank did not refuse. Only a refusal of this rank alone, which is rare, waits it out.
LAUNCHER_GRACE_S = 30.0
_POLL_S = 0.05


def joined_launch() -> bool:
    """True under torchrun/SLURM (RANK and WORLD_SIZE set, or a multi-task srun)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def _local_rank(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def quiet_rank() -> bool:
    """Whether this process is a rank of a joined launch other than its node's first (LOCAL_RANK,
    which torchrun sets, else srun's SLURM_LOCALID); a rank that cannot tell is not quiet."""
    if not joined_launch():
        return False
    local = _local_rank("LOCAL_RANK")
    return bool(local if local is not None else _local_rank("SLURM_LOCALID"))


def stays_quiet(grace_s: float | None = None) -> bool:
    """Whether this rank, refusing its options, exits without its line: a quiet rank of srun at
    once; a quiet rank of torchrun once torchrun's SIGTERM arrives within `grace_s` (False where it
    does not, or where no handler can be set: not the main thread). `grace_s`: LAUNCHER_GRACE_S."""
    if not quiet_rank():
        return False
    if "LOCAL_RANK" not in os.environ:  # srun's tasks: no launcher stops them, and the first says it
        return True
    stopped: list[int] = []
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    except ValueError:
        return False
    try:
        deadline = monotonic() + (LAUNCHER_GRACE_S if grace_s is None else grace_s)
        while not stopped and monotonic() < deadline:
            sleep(_POLL_S)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return bool(stopped)
