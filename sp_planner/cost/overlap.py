"""Which data-parallel communication a plan overlaps with compute, and what that leaves exposed.

Overlap is what the emitted flags make the framework do (flags/*.py emit them; tests/flags check
each renderer's text against `FRAMEWORK_OVERLAP`), or the framework's default where nothing is
emitted. The limits (vectorized over candidates, per pipeline stage and micro-batch):
- a gradient reduce overlaps the backward, except the last bucket, which leaves after the last
  layer's backward (Megatron DDP `--overlap-grad-reduce`, torch DDP/FSDP2 by default);
- ZeRO-1/2's parameter all-gather after the optimizer step overlaps the next step's first forward
  except the first bucket (Megatron `--overlap-param-gather`), or is exposed whole (DeepSpeed
  stage 1/2 gathers synchronously after `step()`);
- ZeRO-3 gathers each layer's parameters one layer ahead (FSDP2's implicit prefetch, DeepSpeed's
  `stage3_prefetch_bucket_size`) on the same stream as the gradient reduce-scatters: the first
  layer's gather is never hidden, and a layer whose gather (plus, in backward, its reduce-scatter)
  takes longer than its compute exposes the difference; reshard-after-forward gathers twice per
  micro-batch (cost.comm counts the bytes), keeping the parameters (reshard false) once;
- hidden communication is not free: NCCL's kernels hold whole SMs while they run ("NCCL CTAs
  won't share an SM with compute kernels", 16 SMs on a DGX with 8 NICs; NVIDIA/nccl#689), so the
  compute they hide behind runs on 16 of H100's 132 SMs fewer (NVIDIA H100 Tensor Core GPU
  Architecture whitepaper, 132 SMs on SXM5) for as long as they run.
"""

from __future__ import annotations

import numpy as np

from sp_planner.specs.base import FrozenModel

# Compute lost per second of hidden NCCL traffic: 16 SMs of 132 (module docstring).
NCCL_SMS_WHILE_OVERLAPPED = 16
SMS_PER_GPU = 132
OVERLAP_COMPUTE_SLOWDOWN = NCCL_SMS_WHILE_OVERLAPPED / SMS_PER_GPU


class Overlap(FrozenModel):
    """What a framework overlaps, as run with the flags sp-plan emits for it."""

    grad_reduce: bool  # ZeRO-1/2/3: gradient buckets reduce-scattered during backward
    param_gather: bool  # ZeRO-1/2 parameter all-gather hidden behind the next forward
    tp_comm: bool  # TP collectives overlapped with the GEMMs (Megatron --tp-comm-overlap)
    zero3_prefetch: bool  # ZeRO-3 gathers issued one layer ahead of use
    grad_all_reduce: bool  # ZeRO-0: gradient buckets all-reduced during backward


# Megatron-LM / MindSpeed: sp-plan emits --overlap-grad-reduce, and --overlap-param-gather with
# the distributed optimizer (it needs both; framework_flags.md 1, arguments.py). --tp-comm-overlap
# needs Transformer Engine userbuffers and is not emitted. ZeRO-2/3 run as Megatron-FSDP or torch
# FSDP2 (flags/megatron_fsdp.py), which prefetch the next layer's parameters.
MEGATRON_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                           grad_all_reduce=True)
# DeepSpeed: sp-plan emits "overlap_comm": true for ZeRO >= 1; stage 1/2 gather the updated
# parameters after step() with no overlap (no flag for it); stage 3 prefetches
# (stage3_prefetch_bucket_size default). Stage 0 all-reduces the gradients after the backward
# (engine.allreduce_gradients), not overlapped.
DEEPSPEED_OVERLAP = Overlap(grad_reduce=True, param_gather=False, tp_comm=False, zero3_prefetch=True,
                            grad_all_reduce=False)
# torchtitan: FSDP2 / DDP defaults (nothing to emit): reduce-scatter in backward, implicit forward
# and backward prefetch; its ZeRO-1/2 is FSDP2 without resharding, gathered layer by layer in the
# first forward (flags/torchtitan.py).
TORCHTITAN_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                             grad_all_reduce=True)

FRAMEWORK_OVERLAP: dict[str, Overlap] = {
    "megatron": MEGATRON_OVERLAP,
    "mindspeed": MEGATRON_OVERLAP,
    "deepspeed": DEEPSPEED_OVERLAP,
    "torchtitan": TORCHTITAN_OVERLAP,
    # yunchang leaves data parallelism to the training loop; its note names DeepSpeed, whose
    # behaviour (the stricter one) is assumed.
    "yunchang": DEEPSPEED_OVERLAP,
}


def slowed_by_overlap(compute_s, comm_s):
    """A kernel's time while `comm_s` of NCCL traffic runs beside it: the overlapped part runs on
    fewer SMs (OVERLAP_COMPUTE_SLOWDOWN); used for ring steps and their K/V transfers."""
    return compute_s + OVERLAP_COMPUTE_SLOWDOWN * np.minimum(compute_s, comm_s)


def framework_overlap(framework: str) -> Overlap:
    """The framework's overlap; "all" (sp-plan's every-framework answer) is timed as Megatron's."""
    if framework == "all":
        return MEGATRON_OVERLAP
    if framework not in FRAMEWORK_OVERLAP:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORK_OVERLAP)}")
    return FRAMEWORK_OVERLAP[framework]


def hidden_behind(total_s, window_s, unhideable_fraction, overlapped: bool):
    """Exposed seconds of `total_s` overlapped with `window_s`, of which `unhideable_fraction`
    (the last or first bucket) can never hide."""
    if not overlapped:
        return np.asarray(total_s, dtype=np.float64)
    return np.maximum(total_s * unhideable_fraction, total_s - window_s)


def layerwise_gather_exposed_s(gather_s, window_s, layers, bucket_fraction, *, reduce_s=0.0,
                               prefetch: bool = True):
    """ZeRO-3: exposed seconds of one pass (forward or backward) whose `layers` layers each gather
    gather_s/layers of parameters (and, in backward, reduce-scatter reduce_s/layers of gradients)
    on one stream while computing window_s/layers. The first gather and the last reduce-scatter
    are never hidden (at least the framework's bucket each, as for ZeRO-0/1/2, so a finer
    granularity cannot make ZeRO-3 look faster than the stages that move less); each other
    layer exposes what its communication takes beyond its compute."""
    g, r, w = gather_s / layers, reduce_s / layers, window_s / layers
    first, last = np.maximum(g, gather_s * bucket_fraction), np.maximum(r, reduce_s * bucket_fraction)
    if not prefetch:
        return gather_s + (layers - 1) * np.maximum(0.0, r - w) + last
    return first + (layers - 1) * np.maximum(0.0, g + r - w) + last


def dp_exposed_s(overlap: Overlap, *, zero, micro_batches, layers, grad_all_reduce_s, grad_reduce_scatter_s,
                 param_all_gather_s, fwd_window_s, bwd_window_s, bucket_fraction, reshard):
    """(exposed, hidden) seconds per step of the data-parallel traffic on one rank (the ZeRO
    shard group's, plus HSDP's replica all-reduce inside grad_reduce_scatter_s; cost.fsdp).

    grad_*_s and param_all_gather_s move the stage's whole gradients / parameters once;
    fwd/bwd_window_s are one micro-batch's forward / backward compute and TP traffic;
    bucket_fraction is the share of the stage's parameters in one DDP bucket; reshard (bool per
    candidate) says ZeRO-3 gathers again in backward (reshard_after_forward, cost.fsdp).
    """
    reduce0 = hidden_behind(grad_all_reduce_s, bwd_window_s, bucket_fraction, overlap.grad_all_reduce)
    reduce12 = hidden_behind(grad_reduce_scatter_s, bwd_window_s, bucket_fraction, overlap.grad_reduce)
    gather12 = hidden_behind(param_all_gather_s, fwd_window_s, bucket_fraction, overlap.param_gather)
    prefetch = overlap.zero3_prefetch
    # Parameters kept after forward (reshard_after_forward false) are not gathered in backward.
    bwd_gather = np.where(np.asarray(reshard, dtype=bool), param_all_gather_s, 0.0)
    zero3 = micro_batches * (
        layerwise_gather_exposed_s(param_all_gather_s, fwd_window_s, layers, bucket_fraction, prefetch=prefetch)
        + layerwise_gather_exposed_s(bwd_gather, bwd_window_s, layers, bucket_fraction,
                                     reduce_s=grad_reduce_scatter_s, prefetch=prefetch)
    )
    exposed = np.select(
        [zero == 0, zero == 1, zero == 2],
        [reduce0, reduce12 + gather12, micro_batches * reduce12 + gather12],
        zero3,
    )
    busy = np.select(
        [zero == 0, zero == 1, zero == 2],
        [grad_all_reduce_s, grad_reduce_scatter_s + param_all_gather_s,
         micro_batches * grad_reduce_scatter_s + param_all_gather_s],
        micro_batches * (param_all_gather_s + bwd_gather + grad_reduce_scatter_s),
    )
    return exposed, np.maximum(0.0, busy - exposed)
