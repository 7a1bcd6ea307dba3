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
  Under HSDP the experts' gradient and ZeRO traffic runs over the intra-partial expert group
  (edp / dp_replicate) and the replicas' group (cost.fsdp.expert_shard_size), in edp's place.
- Point-to-point connections: NCCL connects each peer a rank sends to with p2pnChannelsPerPeer
  channels, each holding buffers of 10,485,760 + 2,097,152 B (on 8 x H100 the first
  all_to_all_single took a GPU from 1.06 to 4.34 GB, 32 channels per GPU pair; NVIDIA/nccl#1685).
  Counted for the ulysses - 1 peers of the Ulysses all-to-all, the ep - 1 of the expert dispatch
  and the ring's neighbours (1 at ring 2, else 2; all-gather CP sends none). The flex dispatcher's
  HybridEP backend moves tokens with its own kernels and buffers, not NCCL's all-to-all (its only
  NCCL call on the expert grid is the all-gather of the counts, a ring collective), so its expert
  peers open no connections; HybridEP's own buffers are not counted (DeepEP's are, cost.deepep via
  cost.memory; it opens no NCCL peer connections either). The channels per peer
  follow NCCL's rule (src/graph/paths.cc ncclTopoGetNchannels and ncclTopoComputeP2pChannels, at
  v2.20.3-1 and at master 5067397c), the minimum over the group's peers:
  - inside the NVLink domain, 2 per NVLink lane of the GPU (the path's bandwidth over one lane's),
    rounded up to a power of 2, at most the communicator's p2p channels: H100 18 lanes -> 36 -> 32
    (the measured 32); A100 12 lanes -> 24 -> 32; A800 and H800 8 lanes -> 16; NVLink5 18 -> 32.
    Lanes = the profile's per-direction NVLink rate over a lane's: 25 GB/s on NVLink3 and 4, 50 on
    NVLink5 (A100 12 links 300 GB/s, H100 18 links 450, B200 18 links 900; reference
    hardware_and_models.md A.1). PCIe peers: 2.
  - a group that leaves the NVLink domain takes its network peers' count for every peer:
    max(one NIC, NIC GB/s / NCCL_P2P_PER_CHANNEL_NET_BW 14), rounded up to a power of 2 (HDR 200G:
    2, as v2.20's fixed 2; NDR 400G: 4), halved while it times ceil(ranks / 8)
    (NCCL_MAX_DEV_WORK_P2P_PER_BATCH) exceeds the communicator's 32 p2p channels.
  Other fabrics (MI300X xGMI under RCCL, Ascend HCCS under HCCL) take the measured 32 channels
  inside a node (transferred, low confidence) and NCCL's network rule across nodes.
The profile's `memory_reserve_bytes` is added on top: what the profile reserves beyond these
(allocator fragmentation, other processes).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.fsdp import expert_shard_size, shard_group_size
from sp_planner.cost.families import BLACKWELL_FAMILIES, PROFILE_FAMILY, profile_key
from sp_planner.cost.links import INTER, INTRA, group_link
from sp_planner.layout import DP_CP_AXES, axis_stride, group_size
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile

CUDA_CONTEXT_BYTES = 287_047_680
MIB = 1 << 20
# (PyTorch, Transformer Engine) cuBLAS workspace bytes, before and from compute capability 9.0.
CUBLAS_WORKSPACE_BYTES_SM80 = 8_519_680 + 4 * MIB
CUBLAS_WORKSPACE_BYTES_SM90 = 32 * MIB + 32 * MIB + 1024
NCCL_PAIR_COMMUNICATOR_BYTES = 544e6
NCCL_COMMUNICATOR_BYTES = 688e6
# NCCL point-to-point connections (module docstring).
NCCL_P2P_CHANNEL_BYTES = 10_485_760 + 2_097_152
NCCL_P2P_CHANNELS = 32  # a communicator's p2p channels: the measured 32 per H100 pair
NCCL_PCIE_CHANNELS_PER_PEER = 2
NCCL_P2P_PER_CHANNEL_NET_BW_BYTES_PER_S = 14e9
NCCL_MAX_DEV_WORK_P2P_PER_BATCH = 8
NVLINK_LANE_BYTES_PER_S = 25e9  # NVLink3 and NVLink4, per direction
NVLINK5_LANE_BYTES_PER_S = 50e9
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


def _pow2_up(x):
    return 2.0 ** np.ceil(np.log2(np.maximum(np.asarray(x, dtype=np.float64), 1.0)))


def p2p_channels_per_peer(hardware: HardwareProfile, size, stride, domain_gpus: int) -> np.ndarray:
    """Channels NCCL connects to each peer of a point-to-point group of `size` ranks `stride`
    apart, with `domain_gpus` GPUs on the NVLink domain (module docstring)."""
    size = np.asarray(size, dtype=np.float64)
    link = group_link(size, stride, domain_gpus)
    kind = hardware.intra_node.kind
    if kind == "nvlink":
        family = PROFILE_FAMILY.get(profile_key(hardware))
        lane = NVLINK5_LANE_BYTES_PER_S if family in BLACKWELL_FAMILIES else NVLINK_LANE_BYTES_PER_S
        lanes = max(round(hardware.intra_node.bandwidth_bytes_per_s / lane), 1)
        inside = min(float(_pow2_up(2 * lanes)), NCCL_P2P_CHANNELS)
    elif kind == "pcie":
        inside = NCCL_PCIE_CHANNELS_PER_PEER
    else:
        inside = NCCL_P2P_CHANNELS
    net = _pow2_up(np.ceil(hardware.inter_node.bandwidth_bytes_per_s / NCCL_P2P_PER_CHANNEL_NET_BW_BYTES_PER_S))
    net = np.broadcast_to(net, size.shape).copy()
    batches = np.ceil(size / NCCL_MAX_DEV_WORK_P2P_PER_BATCH)
    while np.any(over := (net * batches > NCCL_P2P_CHANNELS) & (net > 1)):
        net = np.where(over, net / 2, net)
    return np.select([link == INTRA, link == INTER], [np.full(size.shape, inside), net], 0.0)


def p2p_peer_bytes(hardware: HardwareProfile, c: Candidates, domain_gpus: int, *,
                   nccl_dispatch: bool = True) -> np.ndarray:
    """Buffers of the point-to-point connections a rank opens: the Ulysses and expert all-to-alls'
    peers and the p2p ring's neighbours (module docstring); the expert peers only where NCCL's
    all-to-all moves the tokens (`nccl_dispatch`: not HybridEP's kernels)."""
    ring_peers = np.where(np.asarray(c.allgather), 0, np.minimum(np.asarray(c.ring) - 1, 2))
    expert_peers = (np.asarray(c.ep) - 1) if nccl_dispatch else 0
    peers = (
        (np.asarray(c.ulysses) - 1) * p2p_channels_per_peer(hardware, c.ulysses, axis_stride(c, "ulysses"), domain_gpus)
        + expert_peers * p2p_channels_per_peer(hardware, c.ep, axis_stride(c, "ep"), domain_gpus)
        + ring_peers * p2p_channels_per_peer(hardware, c.ring, axis_stride(c, "ring"), domain_gpus)
    )
    return NCCL_P2P_CHANNEL_BYTES * peers


def runtime_bytes(hardware: HardwareProfile, c: Candidates, *, domain_gpus: int,
                  nccl_dispatch: bool = True) -> np.ndarray:
    """Per-rank bytes of the CUDA context, workspaces and NCCL buffers, plus the profile's reserve;
    `domain_gpus`: the GPUs on one NVLink domain (the host, or a rack-scale domain);
    `nccl_dispatch`: MoE tokens move by NCCL's all-to-all (p2p_peer_bytes)."""
    sm90 = PROFILE_FAMILY.get(profile_key(hardware)) != "ampere"  # Hopper, Blackwell, other or unknown: the larger
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
    expert_groups = expert_groups + np.where(
        hsdp, _communicator_bytes(expert_shard_size(c)) + _communicator_bytes(c.dp_replicate)
        - _communicator_bytes(c.edp), 0.0)
    nccl = nccl + np.where(expert_parallel, expert_groups, 0.0)
    peers = p2p_peer_bytes(hardware, c, domain_gpus, nccl_dispatch=nccl_dispatch)
    total = CUDA_CONTEXT_BYTES + workspace + nccl + peers + hardware.memory_reserve_bytes
    return np.broadcast_to(np.asarray(total, dtype=np.float64), np.shape(c.tp)).copy()
