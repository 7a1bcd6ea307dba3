"""Accuracy thresholds (validation/thresholds.yaml) and the check `sp-validate --check` and CI run.

The file holds the issue's targets and, where the cost model does not meet them yet, an
enforced ratchet at today's accuracy: the suite then fails on any regression, and a group
without a ratchet entry (a new source) must meet the targets.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field

from sp_planner.errors import UserInputError

from sp_planner.fileio import read_structured, validate_as
from sp_planner.specs.base import FrozenModel
from sp_planner.validation.score import ValidationResult


# allow_inf_nan=False: an infinite limit (YAML .inf) would switch its check off without a word.
class Targets(FrozenModel):
    mape_percent: float = Field(gt=0, allow_inf_nan=False)
    group_mape_percent: float = Field(gt=0, allow_inf_nan=False)
    group_spearman_min: float = Field(ge=-1, le=1)


class GroupRatchet(FrozenModel):
    mape_percent: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    spearman_min: float | None = Field(default=None, ge=-1, le=1)


class Thresholds(FrozenModel):
    targets: Targets
    # Looser limits enforced until the model meets the targets; None = the target applies.
    enforced_mape_percent: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    enforced_groups: dict[str, GroupRatchet] = {}

    def mape_limit(self) -> float:
        return self.enforced_mape_percent or self.targets.mape_percent

    def group_limits(self, name: str) -> tuple[float, float]:
        ratchet = self.enforced_groups.get(name, GroupRatchet())
        mape = ratchet.mape_percent if ratchet.mape_percent is not None else self.targets.group_mape_percent
        rho = ratchet.spearman_min if ratchet.spearman_min is not None else self.targets.group_spearman_min
        return mape, rho


def default_thresholds_path() -> Path:
    return Path(__file__).resolve().parents[2] / "validation" / "thresholds.yaml"


def load_thresholds(path: Path) -> Thresholds:
    return validate_as(Thresholds, read_structured(path, what="thresholds"), what="thresholds", path=path)


def check_group_names(limits: Thresholds, groups: Iterable[str], *, path: Path) -> None:
    """Refuse (one line) a ratchet entry naming no group of the corpus: a misspelt name would
    otherwise switch its limit off without a word."""
    known = sorted(set(groups))
    for name in limits.enforced_groups:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "sp-validate prints the group names"
            raise UserInputError(f"{path}: enforced_groups names '{name}', which is no group of the corpus; {hint}")


def check(result: ValidationResult, limits: Thresholds) -> list[str]:
    """Every broken limit, one sentence each (empty when all hold). Besides the accuracy limits,
    every scored run completed on its hardware, so a prediction that it does not fit in memory is
    a failure too (issue 12: memory at the edge was pessimistic for runs that ran)."""
    failures = [f"row {row.id}: predicted not to fit ({row.fit_reason or 'over the card'}), but the run completed"
                for row in result.rows if not row.fits]
    if result.mape_percent is not None and result.mape_percent > limits.mape_limit():
        failures.append(f"corpus MAPE {result.mape_percent:.1f}% is above {limits.mape_limit():g}%")
    for group in result.groups:
        mape, rho = limits.group_limits(group.name)
        if group.mape_percent > mape:
            failures.append(f"group {group.name}: MAPE {group.mape_percent:.1f}% is above {mape:g}%")
        if group.spearman is not None and group.spearman < rho:
            failures.append(f"group {group.name}: Spearman {group.spearman:.2f} is below {rho:g}")
    return failures


def target_gaps(result: ValidationResult, limits: Thresholds) -> list[str]:
    """Where today's accuracy misses the issue's targets (what the ratchet tolerates)."""
    return check(result, Thresholds(targets=limits.targets))
