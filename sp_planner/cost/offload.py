"""Activation CPU offloading (Megatron --cpu-offloading-num-layers; vectorized over candidates):
the activations the GPU keeps, and the copy time compute does not hide.

Megatron-Core hands cpu_offloading_num_layers N and num_layers L to Transformer Engine's
get_cpu_offload_context, activations only by default (NVIDIA/Megatron-LM d98e8a6
megatron/core/transformer/transformer_block.py; model_parallel_config.py:
cpu_offloading_activations True, cpu_offloading_weights False), and rejects it with pipeline
parallelism or recompute and for N >= L (transformer_config.py; plan.ParallelPlan, plan_rules).
What TE then does (NVIDIA/TransformerEngine d0067d0 docs/features/other_optimizations/
cpu_offloading/cpu_offloading.rst, "Default Offloading Scheduling"): the first N layers' saved
tensors are copied to host memory as they are saved, at most L - N layers' activations are on the
GPU at any time (compute and reload stall to hold that), a reload must finish before its layer's
backward, and N = L - 1 leaves one set, so compute and copies cannot overlap.

Timing per micro-batch, with f and b one layer's forward and backward and c the copy of one
layer's saved activations over the host link (HardwareProfile.host_link_bytes_per_s, a measured
copy rate): the copies form one queue; taking each layer's copy to start when its forward ends (TE
starts earlier, so this bounds it), the forward with k = L - N >= 2 kept sets takes
max(L f, N c + 2 f) -- the queue ends at f + N c and the last layer waits for the last copy (the
earlier layers wait for less) -- so max(0, N c - (L - 2) f) is exposed; the backward mirrors it
with the reloads, max(0, N c - (L - 2) b). With k = 1 each offloaded layer waits for its own copy:
N c each way. Not modelled: the copies' HBM traffic slowing memory-bound kernels, which the TE
page warns of.
"""

from __future__ import annotations

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.cost.activations import saved_activation_bytes_per_layer
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

# Kept sets below which copies and compute cannot overlap (the TE page's N = L - 1 case).
OVERLAP_MIN_KEPT_LAYERS = 2


def resident_layers(layers, offload):
    """Layers whose saved activations the GPU holds at the peak: L - N (all L without offloading)."""
    return np.asarray(layers) - np.asarray(offload)


def check_host_link(hardware: HardwareProfile, offload) -> None:
    """Offloading needs the profile's measured host link."""
    if np.any(np.asarray(offload) > 0) and hardware.host_link_bytes_per_s is None:
        raise ValueError(f"the {hardware.name} profile has no host_link_bytes_per_s (a measured CPU-GPU copy "
                         "rate), so activation offloading cannot be timed; add one to the profile")


def offload_copy_s(hardware: HardwareProfile, saved_bytes_per_layer, offload):
    """Seconds to copy one layer's saved activations to or from host memory (0 where none is)."""
    check_host_link(hardware, offload)
    rate = hardware.host_link_bytes_per_s or 1.0  # unused where nothing is offloaded
    return np.where(np.asarray(offload) > 0, np.asarray(saved_bytes_per_layer, dtype=np.float64) / rate, 0.0)


def offload_exposed_s(*, copy_s, fwd_layer_s, bwd_layer_s, layers, offload):
    """Copy time per micro-batch that the forward and backward do not hide (module docstring)."""
    n = np.asarray(offload, dtype=np.float64)
    hidden_layers = np.asarray(layers, dtype=np.float64) - OVERLAP_MIN_KEPT_LAYERS
    overlapped = (np.maximum(n * copy_s - hidden_layers * fwd_layer_s, 0.0)
                  + np.maximum(n * copy_s - hidden_layers * bwd_layer_s, 0.0))
    serial = 2 * n * copy_s
    kept = resident_layers(layers, offload)
    return np.where(n > 0, np.where(kept >= OVERLAP_MIN_KEPT_LAYERS, overlapped, serial), 0.0)


def stage_offload_exposed_s(model: ModelSpec, hardware: HardwareProfile, workload: Workload, c: Candidates, *,
                            fwd_layer_s, bwd_layer_s, layers, sequence_parallel: bool, tp_gathers: TpGathers,
                            expert_row_padding: str):
    """offload_exposed_s of the candidates `c`, their pacing stage's `layers` layers of `fwd_layer_s`
    and `bwd_layer_s` each (cost.step_layers.layer_parts; the options as its); the saved bytes are
    sized only where some candidate offloads (the search's hot path otherwise), 0.0 where none does."""
    if not np.any(c.cpu_offload_layers):
        return 0.0
    copy = offload_copy_s(hardware, saved_activation_bytes_per_layer(
                              model, hardware, workload, c, sequence_parallel=sequence_parallel,
                              gathers=tp_gathers, expert_row_padding=expert_row_padding)[0],
                          c.cpu_offload_layers)
    return offload_exposed_s(copy_s=copy, fwd_layer_s=fwd_layer_s, bwd_layer_s=bwd_layer_s, layers=layers,
                             offload=c.cpu_offload_layers)
