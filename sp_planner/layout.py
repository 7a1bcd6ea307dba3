"""Rank layout: which global ranks form each process group.

Megatron-LM (`RankGenerator`, order 'tp-cp-ep-dp-pp') lays ranks out with tp varying fastest:
    global_rank = tp_r + TP*(cp_r + CP*(dp_r + DP*pp_r))
and for hierarchical CP (a2a+p2p) the a2a (Ulysses) level is made of adjacent CP ranks, so
    cp_r = ulysses_r + U*ring_r.
yunchang's `set_seq_parallel_pg(..., use_ulysses_low=True)`, DeepSpeed Ulysses, MindSpeed's
hybrid_cp_algo and torchtitan's mesh (pp, dp, cp, tp) put the axes in the same order, so one
grid serves every framework we emit (see shared reference framework_flags.md, 1.2 and 5).
"""

from __future__ import annotations

import numpy as np

from sp_planner.plan import ParallelPlan

# Slowest-varying first; the last axis holds adjacent ranks.
GRID_ORDER: tuple[str, ...] = ("pp", "dp", "ring", "ulysses", "tp")


def rank_grid(plan: ParallelPlan) -> np.ndarray:
    """Global ranks as an array of shape (pp, dp, ring, ulysses, tp)."""
    shape = tuple(getattr(plan, axis) for axis in GRID_ORDER)
    return np.arange(plan.world_size).reshape(shape)


def _groups_over(grid: np.ndarray, axes: tuple[int, ...]) -> list[list[int]]:
    """All groups of ranks that differ only along `axes` (those axes flattened, others kept)."""
    keep = [i for i in range(grid.ndim) if i not in axes]
    moved = np.transpose(grid, keep + list(axes))
    # (kept..., grouped...) -> (num_groups, group_size)
    flat = moved.reshape(-1, int(np.prod([grid.shape[i] for i in axes])))
    return sorted(flat.tolist())


def rank_groups(plan: ParallelPlan) -> dict[str, list[list[int]]]:
    """Groups for each axis: tp, cp (= ulysses x ring), dp, pp, ulysses, ring."""
    grid = rank_grid(plan)
    index = {axis: GRID_ORDER.index(axis) for axis in GRID_ORDER}
    # The cp group is ordered ring-major, ulysses-minor: cp_r = ulysses_r + U*ring_r.
    return {
        "tp": _groups_over(grid, (index["tp"],)),
        "cp": _groups_over(grid, (index["ring"], index["ulysses"])),
        "dp": _groups_over(grid, (index["dp"],)),
        "pp": _groups_over(grid, (index["pp"],)),
        "ulysses": _groups_over(grid, (index["ulysses"],)),
        "ring": _groups_over(grid, (index["ring"],)),
    }


def axis_stride(plan: ParallelPlan, axis: str) -> int:
    """Distance in global rank between neighbours of one group along `axis`."""
    inner = GRID_ORDER[GRID_ORDER.index(axis) + 1:]
    return int(np.prod([getattr(plan, a) for a in inner], dtype=np.int64))


def nodes_spanned(plan: ParallelPlan, axis: str, gpus_per_node: int) -> int:
    """How many nodes one group along `axis` touches (groups are congruent, so rank 0's suffices)."""
    size = getattr(plan, axis)
    ranks = np.arange(size) * axis_stride(plan, axis)
    return len(set((ranks // gpus_per_node).tolist()))
