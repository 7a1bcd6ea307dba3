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
  in a pipeline cost.pipeline_dp charges to the pacing stage (these limits are computed in
  cost.dp_exposure);
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
  chunk's forward, the shorter of the blocks that can run beside it, but on the fill and drain,
  where the schedule waits on each hop (cost.pipeline_sends). The simulator runs the same
  transfers beside the sender's next blocks (sim.pipeline). Not charged: the SMs the point-to-point
  kernels hold (one or two channels, not the collectives' 16).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY, profile_key
from sp_planner.cost.tp_overlap_cfg import TE_DEFAULT_NAME, UbConfigName
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
    return SMS_BY_FAMILY.get(PROFILE_FAMILY.get(profile_key(hardware), ""), SMS_PER_GPU)


def overlap_compute_slowdown(hardware: HardwareProfile) -> float:
    """Compute lost per second of hidden NCCL traffic on this GPU: 16 SMs of its count (module
    docstring; profiles outside the table take H100's)."""
    return NCCL_SMS_WHILE_OVERLAPPED / gpu_sm_count(hardware)


class Overlap(FrozenModel):
    """What a framework overlaps, as run with the flags sp-plan emits for it."""

    grad_reduce: bool  # ZeRO-1/2/3: gradient buckets reduce-scattered during backward
    param_gather: bool  # ZeRO-1/2 parameter all-gather hidden behind the next forward
    tp_comm: bool  # TP collectives overlapped with the GEMMs (Megatron --tp-comm-overlap)
    # The userbuffers configuration tp_comm runs (cost.tp_overlap_cfg): TE 2.x's defaults unless a
    # corpus row names another (tp_comm_overlap_cfg: a recipe's tuned one, or TE 1.8's defaults).
    tp_comm_cfg: UbConfigName = TE_DEFAULT_NAME
    zero3_prefetch: bool  # ZeRO-3 gathers issued one layer ahead of use
    grad_all_reduce: bool  # ZeRO-0: gradient buckets all-reduced during backward
    # MoE dispatch/combine behind another micro-batch's compute (Megatron
    # --overlap-moe-expert-parallel-comm, cost.ep_overlap); sp-plan emits it for no framework.
    ep_comm: bool = False
    # The interleaved pipeline's sends and receives run beside the next chunk's compute (Megatron
    # overlap_p2p_comm, module docstring); the plain 1F1B schedule blocks on them whatever this says.
    pp_p2p: bool = False
    # The interleaved schedule launches each model chunk's whole gradient sync after its last
    # micro-batch's backward (pipeline rank r: r backwards after it), not bucket by bucket during
    # it (Megatron --align-grad-reduce, cost.dp_once.chunked_exposed_s); the plain 1F1B
    # schedule's first stage syncs by buckets whatever this says.
    aligned_grad_reduce: bool = False
    # ZeRO-3 with reshard after forward: the parameters outside the per-layer units (the embedding,
    # output layer and final norm) are gathered in the step's first forward and stay gathered
    # until the optimizer, not gathered every micro-batch (Megatron-FSDP, cost.fsdp.root_gathers_per_micro_batch);
    # their gradients are still reduce-scattered every micro-batch.
    root_gathered_once: bool = False
    # In a pipeline, ZeRO-3 (FSDP) reduce-scatters each stage's gradients once a step, after the
    # stage's last backward, the compute waiting for them, and keeps the gathered parameters from
    # each backward to the next forward (torch.distributed.pipelining's stage, as torchtitan runs
    # it: cost.fsdp.stage_synced).
    pp_stage_grad_sync: bool = False


# Megatron-LM / MindSpeed: sp-plan emits --overlap-grad-reduce, and --overlap-param-gather with
# the distributed optimizer (it needs both; framework_flags.md 1, arguments.py). --tp-comm-overlap
# needs Transformer Engine userbuffers and is not emitted. The interleaved schedule overlaps its
# sends by default (overlap_p2p_comm: --no-overlap-p2p-communication turns it off; arguments.py
# sets it off without virtual stages; the default since Megatron-LM 4eeff55d1f, 2023-10-23).
# ZeRO-2/3 run as Megatron-FSDP or torch FSDP2 (flags/megatron_fsdp.py), which prefetch the next
# layer's parameters. --align-grad-reduce is on unless --no-align-grad-reduce (Megatron-LM
# training/config/common_config.py align_grad_reduce True; Megatron-Bridge training/config.py the
# same), which sp-plan does not emit: training.py sets config.grad_sync_func to each chunk's
# start_grad_sync. Megatron-FSDP keeps the parameters outside its per-layer units gathered from the
# step's first forward to the optimizer (root_gathered_once, cost.fsdp.root_gathers_per_micro_batch).
MEGATRON_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                           grad_all_reduce=True, pp_p2p=True, aligned_grad_reduce=True, root_gathered_once=True)
# DeepSpeed: sp-plan emits "overlap_comm": true for ZeRO >= 1; stage 1/2 gather the updated
# parameters after step() with no overlap (no flag for it); stage 3 prefetches
# (stage3_prefetch_bucket_size default). Stage 0 all-reduces the gradients after the backward
# (engine.allreduce_gradients), not overlapped.
DEEPSPEED_OVERLAP = Overlap(grad_reduce=True, param_gather=False, tp_comm=False, zero3_prefetch=True,
                            grad_all_reduce=False)
# torchtitan: FSDP2 / DDP defaults (nothing to emit): reduce-scatter in backward, implicit forward
# and backward prefetch; its ZeRO-1/2 is FSDP2 without resharding after forward, which still
# reshards after backward, so it is costed as ZeRO-3 keeping the parameters
# (cost.fsdp.torch_fsdp_as_run: every micro-batch's forward gathers, layer by layer). With
# pipeline parallelism torch.distributed.pipelining runs the backwards with gradient sync and
# reshard after backward off and syncs each stage once, after its last backward
# (pp_stage_grad_sync, cost.fsdp.stage_synced).
TORCHTITAN_OVERLAP = Overlap(grad_reduce=True, param_gather=True, tp_comm=False, zero3_prefetch=True,
                             grad_all_reduce=True, pp_stage_grad_sync=True)


def pp_sends_beside_compute(overlap: Overlap, vpp):
    """Whether a plan's pipeline sends run beside the next chunk's compute (module docstring): the
    framework overlaps them and the schedule is interleaved (plain 1F1B blocks on them)."""
    return overlap.pp_p2p & (np.asarray(vpp) > 1)


def chunk_gathers_ahead(overlap: Overlap, zero, vpp):
    """Whether each model chunk's parameter all-gather is dispatched ahead of its first forward:
    Megatron's interleaved schedule with --overlap-param-gather aligns them (--align-param-gather,
    on unless --no-align-param-gather; arguments.py turns it off without virtual stages): chunks 0
    and 1 at the step's start, chunk j + 1 when chunk j's first micro-batch starts (schedules.py
    forward_backward_pipelining_with_interleaving, "Synchronize params for first two model chunks"
    and forward_step_helper_preprocess); ZeRO-1 only (ZeRO-2/3 run as FSDP, cost.fsdp)."""
    return overlap.param_gather & (np.asarray(zero) == 1) & (np.asarray(vpp) > 1)


def slowed_by_overlap(compute_s, comm_s, slowdown: float):
    """A kernel's time while `comm_s` of NCCL traffic runs beside it: the overlapped part runs on
    fewer SMs (`slowdown`: overlap_compute_slowdown of the GPU); used for ring steps and their K/V
    transfers."""
    return compute_s + slowdown * np.minimum(compute_s, comm_s)
