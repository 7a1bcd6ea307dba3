"""plan.json: the chosen plan with its model, hardware and workload, read back by sp-run.

The schema is versioned; `plan_file_json_schema()` exports it (docs/plan.schema.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sp_planner import __version__
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate
from sp_planner.destination import deliver_text
from sp_planner.fileio import read_structured, validate_as
from sp_planner.layout import rank_groups
from sp_planner.plan import ParallelPlan
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

SchemaVersion = Literal["sp-planner.plan/1"]
SCHEMA_VERSION: SchemaVersion = "sp-planner.plan/1"


class PlanFile(FrozenModel):
    schema_version: SchemaVersion = SCHEMA_VERSION
    created_by: str = f"sp-planner {__version__}"
    model: ModelSpec
    hardware: HardwareProfile
    workload: Workload
    num_nodes: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    framework: str = "megatron"
    plan: ParallelPlan
    estimate: PlanEstimate | None = None
    # axis -> list of global-rank groups, in the framework's layout (see sp_planner.layout).
    rank_groups: dict[str, list[list[int]]] = Field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @model_validator(mode="after")
    def _rank_groups_follow_the_degrees(self) -> PlanFile:
        """Groups edited by hand to disagree with the degrees would run another plan than the one named."""
        if not self.rank_groups:
            return self
        expected = rank_groups(self.plan)
        if set(self.rank_groups) != set(expected):
            raise ValueError(f"rank_groups has axes {sorted(self.rank_groups)} but the plan needs {sorted(expected)}")
        for axis, groups in expected.items():
            if self.rank_groups[axis] != groups:
                p = self.plan
                raise ValueError(
                    f"rank_groups[{axis!r}] {_short(self.rank_groups[axis])} disagree with the degrees (dp {p.dp} "
                    f"pp {p.pp} tp {p.tp} ulysses {p.ulysses} ring {p.ring}), which give {_short(groups)}; "
                    "remove rank_groups or write the plan again with sp-plan --out")
        return self


def _short(groups: list[list[int]]) -> str:
    text = str(groups)
    return text if len(text) <= 60 else text[:57] + "..."


def write_plan_file(path: Path, plan_file: PlanFile) -> None:
    """Write plan.json; if the write fails, the text is kept elsewhere and WriteFailed names it."""
    deliver_text(Path(path), plan_file.model_dump_json(indent=2) + "\n", what="plan")


def read_plan_file(path: Path) -> PlanFile:
    data = read_structured(Path(path), what="plan")
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise UserInputError(
            f"plan file {path} has schema_version {data.get('schema_version')!r}; "
            f"this sp-planner reads {SCHEMA_VERSION!r}"
        )
    return validate_as(PlanFile, data, what="plan", path=path)


def plan_file_json_schema() -> str:
    return json.dumps(PlanFile.model_json_schema(), indent=2) + "\n"
