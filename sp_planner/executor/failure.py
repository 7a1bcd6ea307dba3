"""Which rank failed, on which host, and why: read from the files a node's ranks leave behind.

Each rank writes, in its node's result directory, `rank<r>.stage` (what it is doing),
`rank<r>.error.json` when it raises, and, after the world check, `world.json` (every rank's host
and address). After torchrun exits this module names the root cause, in this order:

1. an error that is not a lost connection or a timeout (a bug, a bad world, an injected failure);
2. a rank that stopped without writing an error: killed by a signal or crashed;
3. a lost connection (gloo's "Connection closed/reset by peer"), with the peer address mapped to
   its host and ranks;
4. an operation that timed out (gloo's "Timed out waiting ... for send/recv operation"): a
   symptom too, waiting on a peer that failed or hangs, and it names no peer;
5. a rank terminated by its torchrun agent (SIGTERM) after another failed.

Torch-free: the launcher reads these files after its workers are gone.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path

STAGE_DONE = "done"
WORLD_FILE = "world.json"
TERMINATED = "Terminated"  # exception type the worker raises on SIGTERM
# gloo's messages for a peer that went away (gloo/transport/tcp/pair.cc).
_LOST_PEER_RE = re.compile(r"Connection (closed|reset) by peer|Read error|Socket closed|Connection refused")
_ADDRESS_RE = re.compile(r"\[([0-9.]+|[0-9a-fA-F:]+)\]:\d+")
# gloo's and c10d's timeouts (gloo/transport/tcp/unbound_buffer.cc "Timed out waiting ...ms for send
# operation to complete"; c10d "... timed out after ...").
_TIMEOUT_RE = re.compile(r"Timed out waiting|timed out after")
# gloo prefixes its source location and appends generic advice; the launcher's line keeps the fact.
_GLOO_ADVICE = ". This is typically caused by"
_SOURCE_RE = re.compile(r"\[[^\]\s]*\.cc:\d+\] ")


@dataclass(frozen=True)
class RankTrace:
    rank: int
    stage: str | None
    error: str | None
    error_time: float | None
    host: str | None


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _text(trace: RankTrace) -> str:
    return trace.error or ""


def _rank_of(path: Path, suffix: str) -> int:
    return int(path.name[len("rank"):-len(suffix)])


def read_traces(result_dir: Path) -> list[RankTrace]:
    """One trace per rank that left a file here (the ranks of this node), in rank order."""
    ranks = {_rank_of(p, ".stage") for p in result_dir.glob("rank*.stage")}
    ranks |= {_rank_of(p, ".error.json") for p in result_dir.glob("rank*.error.json")}
    traces = []
    for rank in sorted(ranks):
        stage_path = result_dir / f"rank{rank}.stage"
        stage = stage_path.read_text() if stage_path.exists() else None
        error = _read_json(result_dir / f"rank{rank}.error.json")
        if not isinstance(error, dict):  # missing, unreadable, or not the object a rank writes
            error = {}
        traces.append(RankTrace(rank=rank, stage=stage, error=error.get("error"), error_time=error.get("time"),
                                host=error.get("host")))
    return traces


def read_world(result_dir: Path) -> list[dict]:
    """Every rank's place (rank, host, address, ...) as gathered by the world check, or []."""
    world = _read_json(result_dir / WORLD_FILE)
    return world if isinstance(world, list) else []


def _short(error: str) -> str:
    return _SOURCE_RE.sub("", error.split(_GLOO_ADVICE)[0])


def _peer_hosts(error: str, world: list[dict]) -> str:
    """'(192.0.2.2 is host sp-node1: ranks 2, 3)' for each peer address named in a gloo error."""
    notes = []
    for address in dict.fromkeys(_ADDRESS_RE.findall(error)):
        ranks = [p for p in world if p.get("address") == address]
        if ranks:
            hosts = sorted({p["host"] for p in ranks})
            notes.append(f"{address} is host {', '.join(hosts)}: ranks {', '.join(str(p['rank']) for p in ranks)}")
    return f" ({'; '.join(notes)})" if notes else ""


def _names_remote_peer(error: str, world: list[dict], local_ranks: set[int]) -> bool:
    addresses = set(_ADDRESS_RE.findall(error))
    return any(p.get("address") in addresses and p["rank"] not in local_ranks for p in world)


def _where(trace: RankTrace, host: str | None) -> str:
    return f"rank {trace.rank}" + (f" on host {trace.host or host}" if host else "")


# torchrun's failure summary (torch/distributed/elastic/multiprocessing/errors): per failed rank
# "rank      : 1 (local_rank: 1)" then "exitcode  : -9 (pid: 123)".
_SUMMARY_RE = re.compile(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-?\d+)")


def torchrun_exit_codes(log_text: str) -> dict[int, int]:
    """Global rank -> exit code of each failed rank in torchrun's summary (negative: killed by that signal)."""
    return {int(rank): int(code) for rank, code in _SUMMARY_RE.findall(log_text)}


def describe_exit(code: int) -> str:
    """'exit code -9: killed by SIGKILL', 'exit code 1'."""
    if code < 0:
        try:
            return f"exit code {code}: killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"exit code {code}: killed by signal {-code}"
    return f"exit code {code}"


def root_cause(result_dir: Path, *, host: str | None = None, nccl_timeout_s: float | None = None,
               exit_codes: dict[int, int] | None = None) -> str | None:
    """The failure of this node's ranks, most likely cause first; None if none failed.

    host: the node's host name, to name in the message (None on a single machine, where it adds
    nothing). nccl_timeout_s: the ranks ran NCCL groups with this timeout; a rank that died
    without an error was then most likely torn down by NCCL's watchdog (sp_planner.executor.rank).
    exit_codes: each failed rank's exit code (torchrun_exit_codes, from the launch's log).
    """
    exit_codes = exit_codes or {}
    traces = read_traces(result_dir)
    world = read_world(result_dir)
    errors = sorted((t for t in traces if t.error), key=lambda t: t.error_time or 0.0)
    timed_out = [t for t in errors if _TIMEOUT_RE.search(_text(t)) and not _LOST_PEER_RE.search(_text(t))
                 and not _text(t).startswith(TERMINATED)]
    own = [t for t in errors if not _text(t).startswith(TERMINATED) and not _LOST_PEER_RE.search(_text(t))
           and t not in timed_out]
    silent = [t for t in traces if t.error is None and t.stage not in (None, STAGE_DONE)]
    lost = [t for t in errors if _LOST_PEER_RE.search(_text(t)) and not _text(t).startswith(TERMINATED)]
    # A connection lost to another node points nearer the cause than one to a local peer that
    # failed because of it.
    mine = {t.rank for t in traces}
    lost.sort(key=lambda t: not _names_remote_peer(_text(t), world, mine))
    terminated = [t for t in errors if _text(t).startswith(TERMINATED)]
    if own:
        first = own[0]
        message = f"{_where(first, host)} failed: {_short(_text(first))}"
        others = sorted(t.rank for t in errors if t is not first)
    elif silent:
        first = silent[0]
        who = ", ".join(_where(t, host) for t in silent)
        how = describe_exit(exit_codes[first.rank]) if first.rank in exit_codes else None
        if nccl_timeout_s is not None:
            message = (f"{who} died while '{first.stage}' without reporting an error"
                       f"{f' ({how})' if how else ''}: most likely an NCCL collective ran past the "
                       f"{nccl_timeout_s:g} s timeout (--timeout) and NCCL's watchdog aborted the process (a crash "
                       "is also possible)")
        else:
            message = (f"{who} died while '{first.stage}' without reporting an error "
                       f"({how or 'killed by a signal or crashed'})")
        others = sorted(t.rank for t in errors)
    elif lost:
        first = lost[0]
        message = f"{_where(first, host)} lost a peer: {_short(_text(first))}{_peer_hosts(_text(first), world)}"
        others = sorted(t.rank for t in errors if t is not first)
    elif timed_out:
        first = timed_out[0]
        message = f"{_where(first, host)} timed out: {_short(_text(first))}"
        others = sorted(t.rank for t in errors if t is not first)
    elif terminated:
        first = terminated[0]
        message = f"{_where(first, host)}: {_short(_text(first))}"
        others = sorted(t.rank for t in errors if t is not first)
    else:
        return None
    return message + (f" (ranks {others} failed after it)" if others else "")


def stages(result_dir: Path, ranks: list[int]) -> str:
    """'ranks 0-6: running attention; rank 7: not started' for a timeout message: consecutive ranks
    at one stage in one part (a node of 8 GPUs, or 1000 CPU ranks, made a line of each rank)."""
    runs: list[tuple[int, int, str]] = []  # (first rank, last rank, stage)
    for rank in ranks:
        path = result_dir / f"rank{rank}.stage"
        stage = path.read_text() if path.exists() else "not started"
        if runs and runs[-1][1] == rank - 1 and runs[-1][2] == stage:
            runs[-1] = (runs[-1][0], rank, stage)
        else:
            runs.append((rank, rank, stage))
    return "; ".join(f"rank {first}: {stage}" if first == last else f"ranks {first}-{last}: {stage}"
                     for first, last, stage in runs)
