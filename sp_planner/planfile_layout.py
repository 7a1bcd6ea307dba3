"""A plan file's rank groups (sp_planner.planfile): the generator it writes (`rank_layout`: axis
order and degrees) and the checks that a generator or full group lists read back are the plan's,
each a one-line reason naming the fix."""

from __future__ import annotations

from sp_planner.layout import (EXPERT_GRID_ORDER, GRID_ORDER, GROUPS, SPLIT_AXES, degree, groups_in_grid,
                               plan_groups, rank_groups, split_order)
from sp_planner.plan import ParallelPlan
from sp_planner.specs.base import FrozenModel


class RankLayout(FrozenModel):
    """The rank groups as a generator: global ranks fill a grid over `order` (slowest first) with
    `degrees`, so rank = sum of r_axis x (product of the degrees of the axes after it); each entry
    of `groups` is the axes one kind of group spans (see sp_planner.layout)."""

    order: tuple[str, ...]
    degrees: dict[str, int]
    groups: dict[str, tuple[str, ...]]
    # The expert layers' grid over the same ranks (layout.EXPERT_GRID_ORDER; Megatron-Core's second
    # RankGenerator): groups whose axes are in it expand over it. Absent from older files.
    expert_order: tuple[str, ...] = ()

    @classmethod
    def of(cls, plan: ParallelPlan, *, hsdp: bool = True) -> "RankLayout":
        """The plan's layout; with HSDP (dp_replicate > 1) the degrees of the split axes' parts and
        HSDP's groups too (layout.SPLIT_AXES, HSDP_GROUPS), unless not `hsdp` (files written before
        they were, stop 63)."""
        groups = plan_groups(plan) if hsdp else GROUPS
        axes = dict.fromkeys((*GRID_ORDER, *EXPERT_GRID_ORDER))
        if groups is not GROUPS:
            axes |= dict.fromkeys(part for parts in SPLIT_AXES.values() for part in parts)
        return cls(order=GRID_ORDER, degrees={axis: degree(plan, axis) for axis in axes},
                   groups=groups, expert_order=EXPERT_GRID_ORDER)

    def expand(self) -> dict[str, list[list[int]]]:
        """The full lists: group kind -> groups of global ranks (a split axis's part, layout.SPLIT_AXES,
        over its grid with that axis split)."""
        def grid(axes: tuple[str, ...]) -> tuple[str, ...]:
            return self.order if axes[0] in (*self.order, *split_order(self.order)) else self.expert_order
        return {name: groups_in_grid(grid(axes), self.degrees, axes).tolist() for name, axes in self.groups.items()}


def layout_problem(plan: ParallelPlan, layout: RankLayout) -> str | None:
    """Why `layout` is not the plan's generator (RankLayout.of; without HSDP's groups as files
    written before them), in one line; None where it is."""
    expected = RankLayout.of(plan)
    if layout in (expected, RankLayout.of(plan, hsdp=False)):
        return None
    return (f"rank_layout is not the plan's layout: {_layout_differences(layout, expected)}; remove rank_layout "
            "or write the plan again with sp-plan --out")


def rank_groups_problem(plan: ParallelPlan, groups_read: dict[str, list[list[int]]]) -> str | None:
    """Why full group lists disagree with the plan's degrees (layout.rank_groups; without HSDP's
    groups as files written before them), in one line; None where they agree."""
    expected = rank_groups(plan)
    if set(groups_read) == set(GROUPS):  # written before HSDP's groups were (stop 63)
        expected = {name: expected[name] for name in GROUPS}
    if set(groups_read) != set(expected):
        return f"rank_groups has axes {sorted(groups_read)} but the plan needs {sorted(expected)}"
    for axis, groups in expected.items():
        if groups_read[axis] != groups:
            return (f"rank_groups[{axis!r}] {_short(groups_read[axis])} disagree with the degrees (dp {plan.dp} "
                    f"pp {plan.pp} tp {plan.tp} ulysses {plan.ulysses} ring {plan.ring}), which give "
                    f"{_short(groups)}; remove rank_groups or write the plan again with sp-plan --out")
    return None


def _layout_differences(layout: RankLayout, expected: RankLayout) -> str:
    """What of `layout` differs from `expected`, each with the plan's value ('ring 4 (the plan's: 2)'):
    the whole of both, with every group, ran to 600 characters for one edited degree."""
    found = []
    for field in ("order", "expert_order"):
        mine, plans = list(getattr(layout, field)), list(getattr(expected, field))
        if mine != plans:
            found.append(f"{field} {mine} (the plan's: {plans})")
    for field in ("degrees", "groups"):
        mine, plans = getattr(layout, field), getattr(expected, field)
        for key in dict.fromkeys((*plans, *mine)):
            if mine.get(key) != plans.get(key):
                found.append(f"{field}.{key} {_shown(mine.get(key))} (the plan's: {_shown(plans.get(key))})")
    return ", ".join(found)


def _shown(value: object) -> str:
    if value is None:
        return "missing"
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _short(groups: list[list[int]]) -> str:
    text = str(groups)
    return text if len(text) <= 60 else text[:57] + "..."
