"""Rank layout: the one axis order, and every process group, stride and span derived from it.

Megatron-LM (`RankGenerator`, order 'tp-cp-ep-dp-pp') lays ranks out with tp varying fastest:
    global_rank = tp_r + TP*(cp_r + CP*(dp_r + DP*pp_r))
and for hierarchical CP (a2a+p2p) the a2a (Ulysses) level is made of adjacent CP ranks, so
    cp_r = ulysses_r + U*ring_r.
yunchang's `set_seq_parallel_pg(..., use_ulysses_low=True)`, DeepSpeed Ulysses, MindSpeed's
hybrid_cp_algo and torchtitan's mesh (pp, dp, cp, tp) put the axes in the same order, so one
grid serves every framework we emit (see shared reference framework_flags.md, 1.2 and 5).

The cost model calls `axis_stride` / `group_stride` on columns of candidates (numpy arrays), the
simulator and the executor on a ParallelPlan; a new axis is one entry in GRID_ORDER (and its
ParallelPlan field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # plan.py derives its world size from GRID_ORDER, so it imports this module
    from sp_planner.plan import ParallelPlan

# Slowest-varying first; the last axis holds adjacent ranks.
GRID_ORDER: tuple[str, ...] = ("pp", "dp", "ring", "ulysses", "tp")
# Multi-axis groups, each a run of adjacent axes of GRID_ORDER, slowest first.
CP_AXES: tuple[str, ...] = ("ring", "ulysses")  # USP's 2D sequence mesh (cp_r = ulysses_r + U*ring_r)
DP_CP_AXES: tuple[str, ...] = ("dp", "ring", "ulysses")  # Megatron's dp-cp group: ZeRO, gradients
# The expert layers' own grid over the same ranks (MoE "parallel folding", Megatron-Core
# parallel_state.initialize_model_parallel: a second RankGenerator(tp=ETP, ep=EP, dp=EDP, pp=PP,
# cp=1) with the same 'tp-cp-ep-dp-pp' order): etp fastest, then ep, then the expert-data-parallel
# edp = world / (pp*ep*etp), pp outermost (so the pipeline groups of both grids coincide).
EXPERT_GRID_ORDER: tuple[str, ...] = ("pp", "edp", "ep", "etp")
# The groups `rank_groups` reports (plan JSON `rank_groups`), in that order.
GROUPS: dict[str, tuple[str, ...]] = {
    "tp": ("tp",), "cp": CP_AXES, "dp": ("dp",), "pp": ("pp",), "ulysses": ("ulysses",), "ring": ("ring",),
    "ep": ("ep",), "etp": ("etp",), "edp": ("edp",),
}

# Anything that holds a degree per axis: a ParallelPlan, candidates.Candidates (arrays over
# candidates), or a mapping axis -> degree. Read by name, so the type is open.
Degrees = Any


def _degree(degrees: Degrees, axis: str):
    return degrees[axis] if isinstance(degrees, Mapping) else getattr(degrees, axis)


def grid_of(axis: str) -> tuple[str, ...]:
    """The grid an axis belongs to: the dense GRID_ORDER, else the expert grid (pp is in both, at
    the same stride)."""
    if axis in GRID_ORDER:
        return GRID_ORDER
    if axis in EXPERT_GRID_ORDER:
        return EXPERT_GRID_ORDER
    raise ValueError(f"unknown axis {axis!r}; axes: {GRID_ORDER} and the expert grid's {EXPERT_GRID_ORDER}")


def _check_run(axes: tuple[str, ...]) -> int:
    """Index in its grid of the innermost of `axes`, which must be adjacent and in grid order."""
    order = grid_of(axes[0])
    first = order.index(axes[0])
    if order[first:first + len(axes)] != axes:
        raise ValueError(f"axes {axes} are not adjacent in the grid order {order}")
    return first + len(axes) - 1


def axis_stride(degrees: Degrees, axis: str):
    """Distance in global rank between neighbours of one group along `axis` (product of the
    degrees of the faster axes of its grid); an int for a plan, an array for candidate columns."""
    order = grid_of(axis)
    stride = 1
    for inner in order[order.index(axis) + 1:]:
        stride = stride * _degree(degrees, inner)
    return stride


def group_size(degrees: Degrees, axes: tuple[str, ...]):
    """Ranks in one group spanning `axes`."""
    size = 1
    for axis in axes:
        size = size * _degree(degrees, axis)
    return size


def group_stride(degrees: Degrees, axes: tuple[str, ...]):
    """Stride of a group spanning adjacent `axes`: that of its innermost axis."""
    return axis_stride(degrees, grid_of(axes[0])[_check_run(axes)])


def rank_grid(plan: ParallelPlan, order: tuple[str, ...] = GRID_ORDER) -> np.ndarray:
    """Global ranks as an array of shape (pp, dp, ring, ulysses, tp), or (pp, edp, ep, etp) for
    the expert grid."""
    shape = tuple(getattr(plan, axis) for axis in order)
    return np.arange(plan.world_size).reshape(shape)


def groups_over(plan: ParallelPlan, axes: tuple[str, ...]) -> np.ndarray:
    """All groups of ranks that differ only along `axes`, shape (num_groups, group_size).

    Groups are sorted by their first rank; inside a group, ranks follow `axes` slowest first
    (for adjacent axes in grid order: ascending)."""
    order = grid_of(axes[0])
    return groups_in_grid(order, {axis: getattr(plan, axis) for axis in order}, axes)


def groups_in_grid(order: tuple[str, ...] | list[str], degrees: Mapping[str, int], axes: tuple[str, ...]) -> np.ndarray:
    """`groups_over` for any grid: ranks laid out over `order` (slowest first) with `degrees`
    (a plan file's rank_layout expands through this)."""
    grid = np.arange(int(np.prod([degrees[axis] for axis in order]))).reshape([degrees[axis] for axis in order])
    moving = [list(order).index(axis) for axis in axes]
    keep = [i for i in range(grid.ndim) if i not in moving]
    # (kept..., grouped...) -> (num_groups, group_size)
    flat = np.transpose(grid, keep + moving).reshape(-1, int(np.prod([degrees[axis] for axis in axes])))
    return flat[np.argsort(flat[:, 0], kind="stable")]


def rank_groups(plan: ParallelPlan) -> dict[str, list[list[int]]]:
    """Groups for each entry of GROUPS: tp, cp (= ring x ulysses, ring-major), dp, pp, ulysses, ring,
    and the expert grid's ep, etp and edp (each a single group-of-one per rank for dense models)."""
    return {name: groups_over(plan, axes).tolist() for name, axes in GROUPS.items()}


def nodes_spanned(plan: ParallelPlan, axis: str, gpus_per_node: int) -> int:
    """How many nodes one group along `axis` touches (groups are congruent, so rank 0's suffices)."""
    size = getattr(plan, axis)
    ranks = np.arange(size) * axis_stride(plan, axis)
    return len(set((ranks // gpus_per_node).tolist()))
