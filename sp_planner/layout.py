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
ParallelPlan field). HSDP's shard and replicate groups (dense and expert) come from the same grids
with the data-parallel axis split in two (SPLIT_AXES): the simulator, the cost model's strides and
the plan file all take them from here.
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
# HSDP (cost.fsdp) splits each grid's data-parallel axis in two, replicas outermost: dp into
# dp_replicate x dp_shard (torchtitan's mesh, PyTorch HYBRID_SHARD) and edp into edp_replicate x
# edp_shard (Megatron-Core create_hierarchical_groups, parallel_state.py d98e8a6 lines 378-434 and
# 1447-1497: intra-partial runs of edp / dp_replicate members, inter-partial the members that far
# apart). Both splits have dp_replicate replicas. A split axis lays out the same ranks as the axis.
SPLIT_AXES: dict[str, tuple[str, str]] = {"dp": ("dp_replicate", "dp_shard"), "edp": ("edp_replicate", "edp_shard")}
DP_SHARD_CP_AXES: tuple[str, ...] = ("dp_shard", "ring", "ulysses")  # the dense ZeRO/FSDP shard group
# The groups `rank_groups` reports (plan JSON `rank_groups`), in that order.
GROUPS: dict[str, tuple[str, ...]] = {
    "tp": ("tp",), "cp": CP_AXES, "dp": ("dp",), "pp": ("pp",), "ulysses": ("ulysses",), "ring": ("ring",),
    "ep": ("ep",), "etp": ("etp",), "edp": ("edp",),
}
# HSDP's groups, reported only where dp_replicate > 1: the dense shard (dp_shard x cp, torchtitan's
# "dp_shard_cp" mesh) and replicate groups, and the routed experts' (Megatron's expert intra- and
# inter-partial data-parallel groups; edp_replicate's are dp_replicate's ranks, cost.fsdp).
HSDP_GROUPS: dict[str, tuple[str, ...]] = {
    "dp_shard_cp": DP_SHARD_CP_AXES, "dp_replicate": ("dp_replicate",),
    "edp_shard": ("edp_shard",), "edp_replicate": ("edp_replicate",),
}

# Anything that holds a degree per axis: a ParallelPlan, candidates.Candidates (arrays over
# candidates), or a mapping axis -> degree. Read by name, so the type is open.
Degrees = Any


def degree(degrees: Degrees, axis: str):
    """An axis's degree; a split axis's part (SPLIT_AXES) that the degrees do not hold, from the
    dp_replicate replicas and the parent axis's degree."""
    if isinstance(degrees, Mapping) and axis in degrees:
        return degrees[axis]
    if not isinstance(degrees, Mapping) and hasattr(degrees, axis):
        return getattr(degrees, axis)
    for parent, (replicate, shard) in SPLIT_AXES.items():
        if axis in (replicate, shard) and axis != "dp_replicate":
            replicas = degree(degrees, "dp_replicate")
            return replicas if axis == replicate else degree(degrees, parent) // replicas
    raise KeyError(f"no degree for axis {axis!r}")


def split_order(order: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`order` with each split axis (SPLIT_AXES) replaced by its parts, replicas first."""
    return tuple(part for axis in order for part in SPLIT_AXES.get(axis, (axis,)))


def grid_of(axis: str) -> tuple[str, ...]:
    """The grid an axis belongs to: the dense GRID_ORDER, else the expert grid (pp is in both, at
    the same stride); for a split axis's part (SPLIT_AXES), that grid with its split axis split."""
    for order in (GRID_ORDER, EXPERT_GRID_ORDER):
        if axis in order:
            return order
        if axis in split_order(order):
            return split_order(order)
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
        stride = stride * degree(degrees, inner)
    return stride


def group_size(degrees: Degrees, axes: tuple[str, ...]):
    """Ranks in one group spanning `axes`."""
    size = 1
    for axis in axes:
        size = size * degree(degrees, axis)
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
    return groups_in_grid(order, {axis: degree(plan, axis) for axis in order}, axes)


def groups_in_grid(order: tuple[str, ...] | list[str], degrees: Mapping[str, int], axes: tuple[str, ...]) -> np.ndarray:
    """`groups_over` for any grid: ranks laid out over `order` (slowest first) with `degrees`
    (a plan file's rank_layout expands through this); an axis of `axes` that `order` holds unsplit
    (SPLIT_AXES) splits it."""
    if not set(axes) <= set(order):
        order = split_order(order)
    grid = np.arange(int(np.prod([degrees[axis] for axis in order]))).reshape([degrees[axis] for axis in order])
    moving = [list(order).index(axis) for axis in axes]
    keep = [i for i in range(grid.ndim) if i not in moving]
    # (kept..., grouped...) -> (num_groups, group_size)
    flat = np.transpose(grid, keep + moving).reshape(-1, int(np.prod([degrees[axis] for axis in axes])))
    return flat[np.argsort(flat[:, 0], kind="stable")]


def plan_groups(plan: ParallelPlan) -> dict[str, tuple[str, ...]]:
    """The groups a plan reports: GROUPS, and HSDP_GROUPS where dp_replicate > 1 (the experts' only
    where dp_replicate divides edp, as Megatron asserts: the expert_replicas rule refuses the rest)."""
    if plan.dp_replicate == 1:
        return GROUPS
    split = plan.edp % plan.dp_replicate == 0
    return {**GROUPS, **{name: axes for name, axes in HSDP_GROUPS.items() if split or axes[0] in SPLIT_AXES["dp"]}}


def rank_groups(plan: ParallelPlan) -> dict[str, list[list[int]]]:
    """Groups for each entry of plan_groups: tp, cp (= ring x ulysses, ring-major), dp, pp, ulysses,
    ring, the expert grid's ep, etp and edp (each a single group-of-one per rank for dense models),
    and with HSDP dp_shard_cp, dp_replicate, edp_shard and edp_replicate."""
    return {name: groups_over(plan, axes).tolist() for name, axes in plan_groups(plan).items()}


def nodes_spanned(plan: ParallelPlan, axis: str, gpus_per_node: int) -> int:
    """How many nodes one group along `axis` touches (groups are congruent, so rank 0's suffices)."""
    size = getattr(plan, axis)
    ranks = np.arange(size) * axis_stride(plan, axis)
    return len(set((ranks // gpus_per_node).tolist()))
