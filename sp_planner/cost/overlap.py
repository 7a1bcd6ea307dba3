"""Which data-parallel communication a plan overlaps with compute, and what that leaves exposed.

Overlap is what the emitted flags make the framework do (flags/*.py emit them; tests/flags check
each renderer's text against cost.runtime's `FRAMEWORK_RUNTIME`), or the framework's default
where nothing is emitted. The limits (vectorized over candidates, per pipeline stage and
micro-batch):
- every bucket or unit is its own collective call and pays NCCL's ring latency (cost.buckets);
- a gradient reduce overlaps the backward, except the last buckets (those issued at the first
  layer and after the embedding, cost.buckets), which leave after the last layer's backward
  GEMMs, beside its TP reduce-scatter (those after the embedding only after it; `Edges`)
  (Megatron DDP `--overlap-grad-reduce`, torch DDP/FSDP2 by default);
- ZeRO-1/2's parameter all-gather after the optimizer step overlaps the next step's first forward
  except the first buckets, the same ones (Megatron `--overlap-param-gather`), or is exposed
  whole (DeepSpeed stage 1/2 gathers synchronously after `step()`);
- ZeRO-3 gathers each layer's parameters one layer ahead (FSDP2's implicit prefetch, DeepSpeed's
  `stage3_prefetch_bucket_size`) on the same stream as the gradient reduce-scatters: the root
  unit's and the first layer's gathers hide only behind the TP collectives before the first GEMM
  (and the loss's backward), the last layer's reduce-scatter only behind the TP reduce-scatter
  after the last one, the root's not at all, and a layer whose gather (plus, in backward, its
  reduce-scatter) takes longer than its compute exposes the difference; reshard-after-forward
  gathers twice per micro-batch (cost.comm counts the bytes), keeping the parameters (reshard
  false) once; ZeRO-2/3 reduce (and ZeRO-3 gathers) every micro-batch (`micro_batch_dp_s`), which
  in a pipeline cost.pipeline_dp charges to the pacing stage;
- hidden communication is not free: NCCL's kernels hold whole SMs while they run ("NCCL CTAs
  won't share an SM with compute kernels"; "on DGX with 8 NICs and a top speed of 190 GB/s ... it
  would use 16 SMs", i.e. a DGX A100's eight 200G HDR NICs; NVIDIA/nccl#689), so the compute they
  hide behind runs on 16 SMs fewer for as long as they run: 16 of A100's 108 SMs (A800 the same
  die), measured as stated; 16 of H100's 132 (NVIDIA H100 Tensor Core GPU Architecture
  whitepaper, 132 SMs on SXM5), the count transferred. SM counts: stas00/ml-engineering
  compute/accelerator/README.md (744d01e) cache table, A100 SXM 108 and H100/H200 SXM 132 SMs;
  B200 148 (Chips and Cheese, "Nvidia's B200: Keeping the CUDA Juggernaut Rolling", 2025-12,
  measured on a B200: "B200 enables 74 SMs per die, giving 148 SMs across the GPU"; GB200 carries
  the same die, an assumption); B300 and GB300 160 (NVIDIA developer blog "Inside NVIDIA Blackwell
  Ultra", reference moe_fp8_pipeline_frameworks.md). Other profiles (L20, L40S, Ascend, MI300X)
  take H100's share. The count is gpu_sm_count's, which TE's userbuffers SM margins use too
  (cost.tp_overlap);
- pipeline sends (cost.step): the plain 1F1B schedule sends and receives in one blocking batch
  (Megatron-Core schedules.py, batch_p2p_comm), so every send is on the pacing stage's path. The
  interleaved schedule with overlap_p2p_comm (Overlap.pp_p2p) posts a chunk's send and the next
  receive after its compute and waits for them only before the block that needs them, with one
  block of another chunk run in between (schedules.py forward_backward_pipelining_with_interleaving,
  fwd_wait_handles / bwd_wait_handles): a transfer is exposed only by what it takes beyond one
  chunk's forward, the shorter of the blocks that can run beside it. The simulator runs the same
  transfers beside the sender's next blocks (sim.pipeline). Not charged: the SMs the point-to-point
  kernels hold (one or two channels, not the collectives' 16).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.hardware import HardwareProfile

# Compute lost per second of hidden NCCL traffic: 16 SMs of the GPU's (module docstring).
NCCL_SMS_WHILE_OVERLAPPED = 16
SMS_PER_GPU = 132  # H100 SXM
# SMs per GPU by family (module docstring for the sources).
SMS_BY_FAMILY: dict[str, int] = {
    "ampere": 108, "hopper": SMS_PER_GPU, "blackwell": 148, "grace-blackwell": 148,
    "blackwell-ultra": 160, "grace-blackwell-ultra": 160,
}
OVERLAP_COMPUTE_SLOWDOWN = NCCL_SMS_WHILE_OVERLAPPED / SMS_PER_GPU  # H100's


def gpu_sm_count(hardware: HardwareProfile) -> int:
    """The profile's SMs (module docstring); profiles outside the table take H100's 132."""
    return SMS_BY_FAMILY.get(PROFILE_FAMILY.get(hardware.name.lower(), ""), SMS_PER_GPU)


def overlap_compute_slowdown(hardware: HardwareProfile) -> float:
    """Compute lost per second of hidden NCCL traffic on this GPU: 16 SMs of its count (module
    docstring; profiles outside the table take H100's)."""
    return NCCL_SMS_WHILE_OVERLAPPED / gpu_sm_count(hardware)


class Overlap(FrozenModel):
    """What a framework overlaps, as run with the flags sp-plan emits for it."""

    grad_reduce: bool  # ZeRO-1/2/3: gradient buckets reduce-scattered during backward
    param_gather: bool  # ZeRO-1/2 parameter all-gather hidden behind the next forward
    tp_comm: bool  # TP collectives overlapped with the GEMMs (Megatron --tp-comm-overlap)
    zero3_prefetch: bool  # ZeRO-3 gathers issued one layer ahead of use
    grad_all_reduce: bool  # ZeRO-0: gradient buckets all-reduced during backward
    # MoE dispatch/combine behind another micro-batch's compute (Megatron
    # --overlap-moe-expert-parallel-comm, cost.ep_overlap); sp-plan emits it for no framework.
    ep_comm: bool = False
    # The interleaved pipeline's sends and receives run beside the next chunk's compute (Megatron
    # overlap_p2p_comm, module docstring); the plain 1F1B schedule blocks on them whatever this says.
    pp_p2p: bool = False


# Megatron-LM / MindSpeed: sp-plan emits --overlap-grad-reduce, and --overlap-param-gather with
# the distributed optimizer (it needs both; framework_flags.md 1, arguments.py). --tp-comm-overlap
# needs Transformer Engine userbuffers and is not emitted. The interleaved schedule overlaps its
# sends by default (overlap_p2p_comm: --no-overlap-p2p-communication turns it off; arguments.py
# sets it off without virtual stages; the default since Megatron-LM 4eeff55d1f, 2023-10-23).
# ZeRO-2/3 run as Megatron-FSDP or torch FSDP2 (flags/megatron_fsdp.py), which prefetch the next
# layer's parameters.
MEGATRON_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                           grad_all_reduce=True, pp_p2p=True)
# DeepSpeed: sp-plan emits "overlap_comm": true for ZeRO >= 1; stage 1/2 gather the updated
# parameters after step() with no overlap (no flag for it); stage 3 prefetches
# (stage3_prefetch_bucket_size default). Stage 0 all-reduces the gradients after the backward
# (engine.allreduce_gradients), not overlapped.
DEEPSPEED_OVERLAP = Overlap(grad_reduce=True, param_gather=False, tp_comm=False, zero3_prefetch=True,
                            grad_all_reduce=False)
# torchtitan: FSDP2 / DDP defaults (nothing to emit): reduce-scatter in backward, implicit forward
# and backward prefetch; its ZeRO-1/2 is FSDP2 without resharding after forward, which still
# reshards after backward, so it is costed as ZeRO-3 keeping the parameters
# (cost.fsdp.torch_fsdp_as_run: every micro-batch's forward gathers, layer by layer).
TORCHTITAN_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                             grad_all_reduce=True)


def pp_sends_beside_compute(overlap: Overlap, vpp):
    """Whether a plan's pipeline sends run beside the next chunk's compute (module docstring): the
    framework overlaps them and the schedule is interleaved (plain 1F1B blocks on them)."""
    return overlap.pp_p2p & (np.asarray(vpp) > 1)


def slowed_by_overlap(compute_s, comm_s, slowdown: float):
    """A kernel's time while `comm_s` of NCCL traffic runs beside it: the overlapped part runs on
    fewer SMs (`slowdown`: overlap_compute_slowdown of the GPU); used for ring steps and their K/V
    transfers."""
    return compute_s + slowdown * np.minimum(compute_s, comm_s)


class DPTimes(NamedTuple):
    """Seconds of one pass of the data-parallel collectives over a stage's parameters on one rank
    (vectorized), each call paying its latency (cost.buckets, cost.links.ring_latency_s)."""

    grad_all_reduce_s: np.ndarray  # ZeRO-0: every bucket's all-reduce
    grad_reduce_scatter_s: np.ndarray  # ZeRO-1/2: every bucket's reduce-scatter (+ HSDP's replica all-reduce)
    param_all_gather_s: np.ndarray  # ZeRO-1/2: every bucket's parameter all-gather
    last_all_reduce_s: np.ndarray  # the buckets that cannot hide (cost.buckets BucketLayout.unhideable)
    last_reduce_scatter_s: np.ndarray
    first_all_gather_s: np.ndarray
    tail_all_reduce_s: np.ndarray  # of the last ones, those issued after the embedding's backward
    tail_reduce_scatter_s: np.ndarray
    layer_gather_s: np.ndarray  # ZeRO-3: one layer's all-gather ...
    layer_reduce_s: np.ndarray  # ... and reduce-scatter (+ HSDP's replica all-reduce)
    root_gather_s: np.ndarray  # ZeRO-3: the root unit's (embedding, final norm, output layer)
    root_reduce_s: np.ndarray


class Edges(NamedTuple):
    """The work beside a layer chunk's data-parallel edges, one micro-batch (cost.step): before
    its first forward GEMM (the TP all-gather of its input), before its first backward GEMM (the
    TP all-gathers of the gradient and the saved input; under full recompute the recomputed
    forward's, under selective also the recomputed attention) and after its last backward GEMM
    (the TP reduce-scatter), all off the data-parallel stream (sim.layer_program orders them so)."""

    fwd_lead_s: np.ndarray | float
    bwd_lead_s: np.ndarray | float
    bwd_trail_s: np.ndarray | float


def hidden_behind(total_s, window_s, unhideable_s, overlapped: bool):
    """Exposed seconds of `total_s` overlapped with `window_s`, of which `unhideable_s` (the last
    or first buckets) can never hide."""
    if not overlapped:
        return np.asarray(total_s, dtype=np.float64)
    return np.maximum(np.minimum(unhideable_s, total_s), total_s - window_s)


def layerwise_exposed_s(gather_s, reduce_s, window_s, layers, *, before_s=0.0, after_s=0.0, prefetch: bool = True,
                        ahead_s=0.0, behind_s=0.0):
    """ZeRO-3: exposed seconds of one pass (forward or backward) of `layers` layers, each gathering
    its parameters in gather_s (and, in backward, reduce-scattering its gradients in reduce_s) on
    one stream while computing window_s. The first layer's gather (after `before_s`, the root
    unit's gather in forward) and the last layer's reduce-scatter (then `after_s`, the root's) are
    never hidden, but for the work `ahead_s` that runs before the first layer's first GEMM (its
    TP all-gathers; in backward also the output layer's and the loss's, during which FSDP2's root
    pre-backward hook prefetches the last block, FSDPParamGroup.pre_backward) and `behind_s` after
    the last one's (its TP reduce-scatter, before which the root's cannot start); each other
    layer exposes what its communication takes beyond its compute. Without prefetch every gather
    waits in line before its layer."""
    middle = (layers - 1) * np.maximum(0.0, np.where(prefetch, gather_s, 0.0) + reduce_s - window_s)
    first = np.maximum(0.0, before_s + gather_s - ahead_s)
    queued = 0.0 if prefetch else (layers - 1) * gather_s
    # The root's reduce-scatter is issued after the last layer's TP reduce-scatter (behind_s).
    return first + queued + middle + np.maximum(0.0, reduce_s - behind_s) + after_s


def micro_batch_dp_s(overlap: Overlap, *, zero, layers, times: DPTimes, fwd_window_s, bwd_window_s, reshard,
                     ahead_s=0.0, chunks=1, edges: Edges | None = None):
    """(exposed, busy) seconds of one micro-batch's data-parallel traffic on one pipeline stage
    under ZeRO-2/3, which reduce-scatter every micro-batch's gradients (ZeRO-3 also gathers its
    parameters every micro-batch); 0 under ZeRO-0/1, whose traffic goes once a step. A stage's
    backward ends only when that traffic has left: Megatron-FSDP reduces gradients "on every
    backward propagation" with optim_grads / optim_grads_params, and its root post-backward
    callback, queued at the end of each micro-batch's backward, makes the compute stream wait for
    the queued reduce-scatters (megatron_fsdp.py _root_post_backward, GradReducePipeline.reset ->
    wait_for_previous_grad_reduce(0); Megatron-LM d98e8a6). `ahead_s`: the compute before the
    stage's first layer in backward (the output layer's and the loss's on the last stage);
    `edges`: the TP collectives around a chunk's first and last GEMMs, which the first gather and
    the last reduce-scatter overlap (layerwise_exposed_s).
    `chunks`: the stage's model chunks (interleaved 1F1B, vpp), each wrapped on its own and run as
    its own forward and backward (Megatron's get_model builds one DDP/FSDP module a chunk), so each
    exposes its own first gather and last reduce-scatter; a ZeRO-2 chunk's (its first layer's
    buckets) are approximated by a layer's share of the stage's buckets."""
    t = times
    e = edges or Edges(0.0, 0.0, 0.0)
    # A later chunk's first layer's buckets: a layer's share of the stage's (latency included).
    chunk_first = (t.grad_reduce_scatter_s - t.root_reduce_s) / layers
    unhideable2 = (last_calls_s(t.last_reduce_scatter_s, t.tail_reduce_scatter_s, e)
                   + (chunks - 1) * np.maximum(0.0, chunk_first - e.bwd_trail_s))
    reduce2 = hidden_behind(t.grad_reduce_scatter_s, bwd_window_s, unhideable2, overlap.grad_reduce)
    prefetch = overlap.zero3_prefetch
    # Parameters kept after forward (reshard_after_forward false) are not gathered in backward.
    bwd_gather = np.where(np.asarray(reshard, dtype=bool), t.layer_gather_s, 0.0)
    per_chunk = layers / chunks
    fwd_w, bwd_w = fwd_window_s / layers, bwd_window_s / layers

    def forward(before_s=0.0):
        return layerwise_exposed_s(t.layer_gather_s, 0.0, fwd_w, per_chunk, before_s=before_s, prefetch=prefetch,
                                   ahead_s=e.fwd_lead_s)

    def backward(after_s=0.0, loss_s=0.0):
        return layerwise_exposed_s(bwd_gather, t.layer_reduce_s, bwd_w, per_chunk, after_s=after_s,
                                   prefetch=prefetch, ahead_s=loss_s + e.bwd_lead_s, behind_s=e.bwd_trail_s)

    # The root unit goes with the stage's first chunk (forward) and leaves after it (backward);
    # the loss's backward runs before the last chunk's.
    zero3 = (forward(t.root_gather_s) + backward(t.root_reduce_s, ahead_s)
             + (chunks - 1) * (forward() + backward()))
    busy3 = t.root_gather_s + layers * (t.layer_gather_s + bwd_gather + t.layer_reduce_s) + t.root_reduce_s
    exposed = np.select([zero == 2, zero == 3], [reduce2, zero3], 0.0)
    busy = np.select([zero == 2, zero == 3], [t.grad_reduce_scatter_s, busy3], 0.0)
    return exposed, busy


def last_calls_s(last_s, tail_s, edges: Edges | None):
    """The unhideable gradient calls' exposed seconds: those issued at the first layer run beside
    its TP reduce-scatter (Edges.bwd_trail_s), those after the embedding's backward (tail_s, of
    last_s) only after it."""
    trail = 0.0 if edges is None else edges.bwd_trail_s
    return np.maximum(0.0, last_s - tail_s - trail) + tail_s


def dp_exposed_s(overlap: Overlap, *, zero, micro_batches, layers, times: DPTimes, fwd_window_s, bwd_window_s,
                 reshard, ahead_s=0.0, chunks=1, edges: Edges | None = None, micro_batch_traffic_s=None):
    """(exposed, hidden) seconds per step of the data-parallel traffic on one rank (the ZeRO
    shard group's, plus HSDP's replica all-reduce inside the reduce-scatter times; cost.fsdp).

    fwd/bwd_window_s are one micro-batch's forward / backward compute and TP traffic of the
    stage's `layers` layers; reshard (bool per candidate) says ZeRO-3 gathers again in backward
    (reshard_after_forward, cost.fsdp); ahead_s, chunks and edges as micro_batch_dp_s.
    ZeRO-2/3's per-micro-batch traffic exposes micro_batches x micro_batch_dp_s on a single
    stage; a pipeline passes what it exposes on the critical path instead, with what the first
    stage hides (`micro_batch_traffic_s`,
    cost.pipeline_dp.pipelined_dp_s; NaN where there is no pipeline). Hidden is otherwise this
    stage's own traffic less its own exposure.
    """
    t = times
    reduce0 = hidden_behind(t.grad_all_reduce_s, bwd_window_s, last_calls_s(t.last_all_reduce_s, t.tail_all_reduce_s,
                                                                             edges), overlap.grad_all_reduce)
    reduce1 = hidden_behind(t.grad_reduce_scatter_s, bwd_window_s,
                            last_calls_s(t.last_reduce_scatter_s, t.tail_reduce_scatter_s, edges), overlap.grad_reduce)
    gather12 = hidden_behind(t.param_all_gather_s, fwd_window_s, t.first_all_gather_s, overlap.param_gather)
    per_micro_batch, per_micro_batch_busy = micro_batch_dp_s(
        overlap, zero=zero, layers=layers, times=t, fwd_window_s=fwd_window_s, bwd_window_s=bwd_window_s,
        reshard=reshard, ahead_s=ahead_s, chunks=chunks, edges=edges)
    # Once a step: ZeRO-0's all-reduce, ZeRO-1's reduce-scatter, ZeRO-1/2's parameter gather.
    once = np.select([zero == 0, zero == 1, zero == 2], [reduce0, reduce1 + gather12, gather12], 0.0)
    once_busy = np.select([zero == 0, zero == 1, zero == 2],
                          [t.grad_all_reduce_s, t.grad_reduce_scatter_s + t.param_all_gather_s, t.param_all_gather_s],
                          0.0)
    exposed = once + micro_batches * per_micro_batch
    hidden = micro_batches * (per_micro_batch_busy - per_micro_batch)
    if micro_batch_traffic_s is not None:
        traffic, traffic_hidden = micro_batch_traffic_s
        exposed = np.where(np.isnan(traffic), exposed, once + traffic)
        hidden = np.where(np.isnan(traffic_hidden), hidden, traffic_hidden)
    return exposed, np.maximum(0.0, once_busy - once + hidden)
