"""A step's time columns, throughput and FLOP rates per candidate from the parts cost.step times
(vectorized): the parts' sum stretched to the best published MFU (cost.mfu_ceiling), Megatron's
model FLOPs (cost.flops) over it."""

from __future__ import annotations

from functools import reduce
from typing import NamedTuple

import numpy as np

from sp_planner.cost.flops import hardware_flops_per_step, model_flops_per_step
from sp_planner.cost.mfu_ceiling import bounded_flops_per_step, mfu_ceiling_s
from sp_planner.layout import GRID_ORDER, group_size
from sp_planner.plan import PRECISIONS
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


class TimeColumns(NamedTuple):
    """Seconds per step on the critical path, per candidate (estimate.TimeBreakdown's fields)."""

    gemm_s: np.ndarray
    attention_s: np.ndarray
    recompute_s: np.ndarray
    tp_comm_s: np.ndarray
    ulysses_comm_s: np.ndarray
    ring_comm_exposed_s: np.ndarray
    pp_comm_s: np.ndarray
    dp_comm_exposed_s: np.ndarray
    bubble_s: np.ndarray
    optimizer_s: np.ndarray
    moe_comm_s: np.ndarray  # MoE token dispatch/combine all-to-alls and etp collectives (cost.moe)
    host_overhead_s: np.ndarray  # host (CPU) time the GPU work does not hide (cost.host)
    offload_s: np.ndarray  # activation CPU offloading's copies compute does not hide (cost.offload)
    mfu_ceiling_s: np.ndarray  # stretch to the best published MFU (cost.mfu_ceiling)


class StepParts(NamedTuple):
    """TimeColumns' fields but the MFU ceiling's, per candidate (cost.step.time_parts; arrays or
    scalars that broadcast), summed in this order before the ceiling is added (step_columns)."""

    gemm_s: np.ndarray | float
    attention_s: np.ndarray | float
    recompute_s: np.ndarray | float
    tp_comm_s: np.ndarray | float
    ulysses_comm_s: np.ndarray | float
    ring_comm_exposed_s: np.ndarray | float
    pp_comm_s: np.ndarray | float
    dp_comm_exposed_s: np.ndarray | float
    bubble_s: np.ndarray | float
    optimizer_s: np.ndarray | float
    moe_comm_s: np.ndarray | float
    host_overhead_s: np.ndarray | float
    offload_s: np.ndarray | float


class StepColumns(NamedTuple):
    """Step time (the sum of `time`), throughput and FLOP rates per candidate."""

    time: TimeColumns
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    model_tflops_per_gpu: np.ndarray
    hardware_tflops_per_gpu: np.ndarray
    mfu: np.ndarray
    hardware_mfu: np.ndarray


def step_columns(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates,
                 parts: StepParts, moved: StepParts | None = None,
                 whole_mla_down_projections: bool = False) -> StepColumns:
    """StepColumns of the candidates `c` from their StepParts (cost.step.time_columns), the MFU
    ceiling's stretch added last; `moved`: seconds the breakdown shows in another part than
    `parts` counts them (cost.step_layers.recompute_comm_parts), after the step is summed;
    `whole_mla_down_projections`: the framework runs MLA's down projections whole on each TP rank
    (cost.tp_gathers), which the executed FLOPs count as run (cost.flops.hardware_flops_per_step)
    and the ceiling, bounding useful work, leaves out."""
    recompute, tp = c.recompute, c.tp
    world = group_size(c, GRID_ORDER)
    model_flops = model_flops_per_step(model, seq_len=workload.seq_len, global_batch=workload.global_batch)
    hw_flops = hardware_flops_per_step(model, seq_len=workload.seq_len, global_batch=workload.global_batch,
                                       causal=workload.causal, recompute=recompute, tp=tp,
                                       whole_mla_down_projections=whole_mla_down_projections)
    modelled = reduce(np.add, parts)  # left to right, as the parts are listed
    # The ceiling is per precision (a bf16 MFU record does not bound FP8 GEMMs) and bounds the
    # model's useful FLOPs as run, recompute left out as MFU leaves it out (cost.mfu_ceiling).
    useful = bounded_flops_per_step(model, workload)
    ceiling = sum(np.where(c.precision == code, mfu_ceiling_s(hardware, useful / world, modelled, name), 0.0)
                  for code, name in enumerate(PRECISIONS))
    held = (*parts, ceiling)
    time = TimeColumns(*(np.broadcast_to(np.asarray(v, dtype=np.float64), np.shape(tp)).copy() for v in held))
    step = reduce(np.add, time)
    if moved is not None:  # the same step, its seconds shown where `moved` puts them
        time = TimeColumns(*(np.asarray(v + d, dtype=np.float64) for v, d in zip(time, (*moved, 0.0))))
    model_tflops = model_flops / step / world / 1e12
    hardware_tflops = hw_flops / step / world / 1e12
    return StepColumns(
        time=time,
        step_time_s=step,
        tokens_per_s=np.asarray(workload.tokens_per_step / step),
        model_tflops_per_gpu=model_tflops,
        hardware_tflops_per_gpu=hardware_tflops,
        mfu=model_tflops * 1e12 / hardware.peak_bf16_flops,
        hardware_mfu=hardware_tflops * 1e12 / hardware.peak_bf16_flops,
    )
