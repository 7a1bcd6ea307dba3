"""What the spawned-rank tests share (test_distributed, test_distributed_mods): each world size's
cases run once per module, and every rank's result checked against the single-device reference
and the byte prediction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sp_planner.executor.config import RunConfig
from sp_planner.executor.predict import predicted_comm_bytes
from sp_planner.executor.result import RankResult, rank_failures
from sp_planner.executor.spawn import run_cases


def lazy_outcomes(cases: dict[int, Sequence[RunConfig]], folder: Callable[[int], Path]):
    """outcomes(world) -> {rank: results}: each world size spawned once, on first use."""
    cache: dict[int, dict[int, list]] = {}

    def get(world: int) -> dict[int, list]:
        if world not in cache:
            cache[world] = run_cases(world, list(cases[world]), folder(world))
        return cache[world]

    return get


def every_rank_passes(outcomes: dict[int, list], index: int, cfg: RunConfig) -> list[RankResult]:
    """Each rank's result of case `index`: it ran, matches the reference and the predicted bytes,
    and moved bytes (a degree exceeds 1). Returns them for the caller's own checks."""
    predicted = predicted_comm_bytes(cfg)
    checked = []
    for rank, results in outcomes.items():
        result = results[index]
        assert isinstance(result, RankResult), f"rank {rank} raised:\n{result}"
        assert rank_failures(result, predicted) == []
        # the contract counts something whenever a degree exceeds 1
        assert result.comm_bytes_measured.total > 0
        checked.append(result)
    return checked


def memory_matches_replay(results: list[RankResult], cfg: RunConfig) -> None:
    """Each rank's measured peak against executor.step_memory's replay of its ring rank (where
    the replay covers the kernel): at least the replay, to the byte, and above it by no more than
    the buffers gloo's worker threads may not have let go yet (collective_held_bytes; most runs
    read the replay exactly)."""
    from sp_planner.executor.step_memory import collective_held_bytes, ring_rank_peak_bytes

    for result in results:
        predicted = ring_rank_peak_bytes(cfg, result.groups.ring.index(result.rank))
        if predicted is None:
            continue
        assert predicted <= result.peak_memory_bytes <= predicted + collective_held_bytes(cfg), (
            f"rank {result.rank}: measured {result.peak_memory_bytes} B, replay {predicted} B "
            f"(+ up to {collective_held_bytes(cfg)} B held by gloo)")
