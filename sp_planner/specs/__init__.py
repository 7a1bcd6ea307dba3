"""Frozen, strict pydantic specs: model, hardware profile, workload."""

from sp_planner.specs.hardware import (
    CollectiveEfficiency,
    CurvePoint,
    EfficiencySpec,
    HardwareProfile,
    InterNodeLink,
    IntraNodeLink,
    LinkSpec,
)
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import MoESpec
from sp_planner.specs.workload import Workload

__all__ = [
    "CollectiveEfficiency",
    "CurvePoint",
    "EfficiencySpec",
    "HardwareProfile",
    "InterNodeLink",
    "IntraNodeLink",
    "LinkSpec",
    "ModelSpec",
    "MoESpec",
    "Workload",
]
