"""Memory a rank holds besides tensors: CUDA context, GEMM workspaces, NCCL buffers (vectorized).

Sources (shared reference attention_kernels_and_cp_costs.md section 5):
- CUDA context: 287,047,680 B with lazy module loading, PyTorch's default since 1.13
  (cudaMemGetInfo after a small .cuda() tensor; pytorch/pytorch PR #86509).
- cuBLAS workspaces, one per (handle, stream): PyTorch 32 MiB on sm90+ and 8,519,680 B before
  (aten/src/ATen/cuda/CublasHandlePool.cpp); Transformer Engine 32 MiB + 1 KiB on compute
  capability >= 9 and 4 MiB before (transformer_engine/pytorch/cpp_extensions/gemm.py).
- NCCL: each communicator the rank joins holds its channels' buffers, measured at 544 MB for a
  2-GPU group and 688 MB for larger ones on A100 (NVIDIA/nccl#964, #864). The plan creates one
  per parallel axis of degree > 1 (tp, ulysses, ring, pp) and one for the data-parallel x context-
  parallel group (gradients, ZeRO), as Megatron's parallel_state does. All-gather CP gathers over
  the ring axis's group (TE's cp_group), so it adds none. HSDP (dp_replicate > 1) moves the
  gradient and ZeRO traffic to a shard group (dp_shard x cp) and a replicate group (cost.fsdp),
  which take the dp x cp group's place (NCCL sets up a communicator's buffers on first use).
- Expert parallelism (ep > 1 or etp > 1): Megatron-Core's expert RankGenerator adds an ep, an
  etp and an expert-data-parallel (edp) group (parallel_state.initialize_model_parallel), one
  communicator each where its degree is > 1; the token dispatch all-to-all runs over the ep group.
- All-to-all connects every peer: on 8 x H100 the first all_to_all_single took a GPU from 1.06 to
  4.34 GB, 32 channels per GPU pair with 10,485,760 + 2,097,152 B each (NVIDIA/nccl#1685): 384 MiB
  per peer, counted for the ulysses - 1 peers of the Ulysses all-to-all and the ep - 1 of the
  expert dispatch.
The profile's `memory_reserve_bytes` is added on top: what the profile reserves beyond these
(allocator fragmentation, other processes).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.fsdp import shard_group_size
from sp_planner.cost.families import PROFILE_FAMILY
from sp_planner.layout import DP_CP_AXES, group_size
from sp_planner.space import Candidates
from sp_planner.specs.hardware import HardwareProfile

CUDA_CONTEXT_BYTES = 287_047_680
MIB = 1 << 20
# (PyTorch, Transformer Engine) cuBLAS workspace bytes, before and from compute capability 9.0.
CUBLAS_WORKSPACE_BYTES_SM80 = 8_519_680 + 4 * MIB
CUBLAS_WORKSPACE_BYTES_SM90 = 32 * MIB + 32 * MIB + 1024
NCCL_PAIR_COMMUNICATOR_BYTES = 544e6
NCCL_COMMUNICATOR_BYTES = 688e6
NCCL_ALL_TO_ALL_PEER_BYTES = 32 * (10_485_760 + 2_097_152)
# The built-in profiles' memory_reserve_bytes: 3% of HBM for allocator fragmentation, an assumption
# (no comparable published reserved-vs-allocated gap; hardware_profiles/*.yaml say so). A profile
# measured without a base takes the same share, since the parts above are counted per plan.
FRAGMENTATION_RESERVE_FRACTION = 0.03
# The parallel axes with a communicator each (beside the dp x cp group).
COMMUNICATOR_AXES: tuple[str, ...] = ("tp", "ulysses", "ring", "pp")
# The expert grid's groups, created when the plan parallelizes experts (ep > 1 or etp > 1).
EXPERT_COMMUNICATOR_AXES: tuple[str, ...] = ("ep", "etp", "edp")


def _communicator_bytes(size) -> np.ndarray:
    size = np.asarray(size)
    return np.select([size == 2, size > 2], [NCCL_PAIR_COMMUNICATOR_BYTES, NCCL_COMMUNICATOR_BYTES], 0.0)


def runtime_bytes(hardware: HardwareProfile, c: Candidates) -> np.ndarray:
    """Per-rank bytes of the CUDA context, workspaces and NCCL buffers, plus the profile's reserve."""
    sm90 = PROFILE_FAMILY.get(hardware.name.lower()) != "ampere"  # Hopper, Blackwell, other or unknown: the larger
    workspace = CUBLAS_WORKSPACE_BYTES_SM90 if sm90 else CUBLAS_WORKSPACE_BYTES_SM80
    nccl = sum(_communicator_bytes(getattr(c, axis)) for axis in COMMUNICATOR_AXES)
    hsdp = np.asarray(c.dp_replicate) > 1
    gradient_groups = np.where(
        hsdp,
        _communicator_bytes(shard_group_size(c)) + _communicator_bytes(c.dp_replicate),
        _communicator_bytes(group_size(c, DP_CP_AXES)),
    )
    nccl = nccl + gradient_groups
    expert_parallel = (np.asarray(c.ep) > 1) | (np.asarray(c.etp) > 1)
    expert_groups = sum(_communicator_bytes(getattr(c, axis)) for axis in EXPERT_COMMUNICATOR_AXES)
    nccl = nccl + np.where(expert_parallel, expert_groups, 0.0)
    all_to_all = NCCL_ALL_TO_ALL_PEER_BYTES * (np.asarray(c.ulysses) - 1 + np.asarray(c.ep) - 1)
    total = CUDA_CONTEXT_BYTES + workspace + nccl + all_to_all + hardware.memory_reserve_bytes
    return np.broadcast_to(np.asarray(total, dtype=np.float64), np.shape(c.tp)).copy()
