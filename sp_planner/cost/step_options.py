"""The options cost.step.time_parts takes beside the candidates, as a TypedDict (StepOptions), so
that `**options: Unpack[StepOptions]` (cost.step.time_columns, cost.step_bound.step_lower_bound)
and the dicts callers build (search_columns._time_options) are type-checked: a misspelt name or a
wrong type is a mypy error. Their defaults and meaning: time_parts'."""

from __future__ import annotations

from typing import TypedDict

from sp_planner.cost.grad_buffer import GradSync
from sp_planner.cost.overlap import Overlap
from sp_planner.cost.ring_impl import RingImpl
from sp_planner.cost.states import TrainingStates
from sp_planner.cost.tp_gathers import TpGathers


class _RequiredStepOptions(TypedDict):
    gpus_per_node: int


class LayerOptions(_RequiredStepOptions, total=False):
    """The options cost.step_layers.layer_parts takes too (cost.step_bound passes these on)."""

    overlap: Overlap
    states: TrainingStates
    cuda_graphs: frozenset[str]
    ring_impl: RingImpl
    grad_sync: GradSync | None
    loss_bytes_per_logit: int
    sequence_parallel: bool
    tp_gathers: TpGathers
    unpads_attention: bool
    moe_router_dtype: str | None
    expert_row_padding: str


class StepOptions(LayerOptions, total=False):
    """time_parts' keyword options: gpus_per_node required, the rest at time_parts' defaults when left out."""

    sums_sequence_parallel_grads: bool
    partial_tp_grads: bool
