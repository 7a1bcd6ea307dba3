"""Userbuffers' multicast collectives: what a bulk or pipelined TP collective moves beside a ring.

On Hopper and Blackwell nodes Transformer Engine's userbuffers binds every buffer it registers to
an NVLink multicast object (common/comm_gemm_overlap/userbuffers/userbuffers-host.cpp at d0067d0:
use_mc where the device supports multicast and UB_SKIPMC is unset, lines 233-239, each buffer bound
within a 512 GB window, lines 63 and 642-648; TE 1.8: pytorch/csrc/userbuffers/userbuffers-host.cpp
lines 195-199 at v1.8, wherever sm_arch >= 9), and its SM-driven collectives then run the NVSwitch's
multimem instructions (userbuffers.cu at d0067d0):
- the bulk all-gather (allgather2_userbuff_inplace, lines 1783-1813, called by bulk_overlap,
  comm_gemm_overlap.cpp line 465): each rank multimem.st's its own shard (the _mc_ag kernel, line
  663, store at line 697), which the switch writes into every member's buffer, its own included;
- the bulk reduce-scatter (reducescatter2_userbuff_inplace, lines 1830-1860; comm_gemm_overlap.cpp
  line 479) and a pipeline's bf16 chunks (reducescatter2_userbuff_stridedoutput, lines 1861-1897;
  comm_gemm_overlap.cpp lines 694, 714 and 745): each rank multimem.ld_reduce's its own shard (the
  _mc_rs and _mc_rs_oop kernels, lines 498 and 579), which the switch reads from every member, its
  own included.
A pipeline's FP8 chunks (fp8_buf: reducescatter2_userbuff_stridedoutput_fp8, lines 1906-1934, no
multicast branch) and the ring exchanges' copy-engine transfers move what a ring does.

NCCL's NVLS algorithms move data the same way, and its maintainer counts the bytes (sjeaugey,
NVIDIA/nccl#1083, on NVLS reduce-scatters measured slower than rings on one H100 node): for S bytes
on N GPUs, NVLS sends S and receives S / N in a reduce-scatter and sends S / N and receives S in an
all-gather, a ring (N - 1) / N * S each way, and "the total operation time will be limited by the
largest size which is higher with NVLS". So a member's busier direction carries tp / (tp - 1) of a
ring's bytes: such a collective takes tp / (tp - 1) of the ring time cost.links prices for it (8/7
at TP 8, 4/3 at TP 4, 2 at TP 2), at the profile's link efficiency. Not modelled: a multimem
kernel's own rate on its num_sm SMs (no published userbuffers measurement; NCCL's NVLS reaches its
peak with 16 SMs, sjeaugey, NVIDIA/nccl#1649).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import gpu_generation, profile_key
from sp_planner.specs.hardware import HardwareProfile

# GPU generations whose NVSwitch nodes give userbuffers a multicast object (module docstring).
MULTICAST_GENERATIONS: frozenset[str] = frozenset({"hopper", "blackwell"})


def uses_multicast(hardware: HardwareProfile) -> bool:
    """Whether userbuffers runs its bulk and pipelined collectives on NVLink multicast on this
    profile's nodes: a Hopper or Blackwell GPU on NVLink (module docstring); profiles of no family
    (user profiles without a base_profile) keep the ring's bytes."""
    return gpu_generation(profile_key(hardware)) in MULTICAST_GENERATIONS and hardware.intra_node.kind == "nvlink"


def multicast_bytes_factor(hardware: HardwareProfile, tp):
    """A multicast bulk or pipelined collective's bytes on a member's busier direction over a ring's
    at TP degree `tp`: tp / (tp - 1) where the profile uses multicast, else 1 (vectorized)."""
    tp = np.asarray(tp, dtype=np.float64)
    ratio = np.where(tp > 1, tp / np.maximum(tp - 1, 1.0), 1.0)
    return ratio if uses_multicast(hardware) else np.ones(tp.shape)
