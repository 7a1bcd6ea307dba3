"""DeepEP's token dispatch and combine (Megatron's flex dispatcher, DeepEP backend), timed from its
published benchmarks; its buffers; where it runs.

Megatron runs it with --moe-token-dispatcher-type flex --moe-flex-dispatcher-backend deepep
(formerly --moe-enable-deepep): MoESpec.dispatcher "deepep". Megatron-LM d98e8a64
megatron/core/transformer/moe/token_dispatcher.py _DeepepManager and fused_a2a.py: DeepEP's normal
(high-throughput) Buffer.dispatch sends a token once to each rank holding one of its experts (its
own rank included), then Megatron permutes the received rows to its local experts with the fused
permute (get_permuted_hidden_states_by_experts) and unpermutes before Buffer.combine
(deepep_permutation_rows). Its group is the expert tp x ep group (MoETokenDispatcher.tp_ep_group;
its tp_size is the expert TP group's), timed over ep as HybridEP's is (at etp > 1 the flex
dispatcher sends each copy to every etp rank of its target, where cost.moe keeps the other
dispatchers' etp all-gather and reduce-scatter: an approximation, as for HybridEP); its SM count is
moe_flex_dispatcher_num_sms (megatron-core 0.16: moe_deepep_num_sms), None -> 20 ("DeepEP's
historical mcore default", _DeepepManager.__init__, Buffer.set_num_sms); MoESpec.dispatcher_sms
sets another.

Speeds: DeepEP V1's normal kernels, the legacy Buffer that Megatron's fused_a2a calls, measured on
H800 (NVLink ~160 GB/s achievable of 200 a direction; a CX-7 400 Gb/s NIC, 50 GB/s, a GPU), 4096
tokens, hidden 7168, top-8 (top-4 node groups), FP8 dispatch, BF16 combine (deepseek-ai/DeepEP
docs/legacy.md "Normal kernels"): intranode EP 8 153 / 158 GB/s NVLink; internode EP 16 / 32 / 64
43/43, 58/57, 51/50 GB/s RDMA. Each is taken as a fraction of its link's line rate (153/200 and
158/200 of the profile's NVLink, x/50 of its NIC), as cost-model.md's stop-10 conversion took
DeepEP's 153 of 200 for NCCL's all-to-all before NCCL's own figure replaced it: the h800 profile
gets the figures back, H100's 450 GB/s NVLink 344 / 356. Hopper (H100, H200, H800) and 8-GPU
Blackwell nodes (B200, B300) take them. No V1 figure is published on SM100; DeepEP's V2
(ElasticBuffer, another API and kernels; README "Performance") measures SM100's NVLink at 643 / 675
GB/s at 24 SMs and 726 / 740 at 64 (0.71-0.82 of NVLink5's 900), a bracket around the transferred
0.765 / 0.79. V2's internode figures (EP 8 x 2, 90 / 91 GB/s "logical" on SM90 and SM100) are not
V1's kernels and are not used; the RDMA path is the NIC's, and B200 nodes carry the same CX-7.
What the rates divide (the benchmarks' own metrics):
  NVLink (intranode): the rows a rank receives, one a token and rank reached, its own included
    (tests/test_intranode.py nvl_recv_bytes = recv_x.numel() x bytes):
    cost.hybridep.ranks_reached_per_token, within the router's groups where it limits them.
  RDMA (internode): tokens x nodes a token reaches, its own node included (tests/test_internode.py
    num_rdma_token_sent = rdma_idx.ne(-1).sum(), rdma_send_bytes = that x hidden bytes); nodes =
    group / 8 (NUM_MAX_NVL_PEERS), experts spread evenly over them (the same function over nodes).
    The benchmark limits a token to 4 nodes (top-4 groups); a model without group-limited routing
    reaches more, and is priced so; one with it (DeepSeek-V3's 4 of 8 groups) as its groups allow.
Between listed group sizes the rates are interpolated linearly, held beyond (EP 128 takes EP 64's).
No SM count is published beside V1's figures, so the run's SM count moves only what DeepEP takes
from overlapped compute (cost.ep_overlap) and its buffers. Every figure is at hidden 7168; FP8
dispatch is priced per byte as BF16 (Megatron dispatches the BF16 activation: fused_a2a
get_hidden_bytes, max(element size, 2)).

Buffers (fused_a2a.get_buffer: the larger of the dispatch and combine configs' hints at the
group's size, hidden_bytes = hidden x 2): DeepEP csrc/config.hpp (030cdf0a)
get_nvl_buffer_size_hint and get_rdma_buffer_size_hint, with deep_ep/buffer.py
get_dispatch_config / get_combine_config's num_max_nvl_chunked_recv_tokens (256 up to 8 ranks, 288
at 16-64, 560 at 128, 720 at 144-160) and num_max_rdma_chunked_recv_tokens 128; num_channels =
SMs / 2. Counted in the runtime reserve (cost.memory).

Where it runs (deepep_refusal, plan_rules "deepep_group"): DeepEP's Buffer asserts the group size
is in its config map (2, 4, 8, 16, 24, 32, 64, 128, 144, 160; get_dispatch_config), Megatron
asserts (expert) tp x ep > 1; intranode kernels reach at most 8 NVLink peers and internode ones
pair the 8 GPUs of each node, so an NVL72 rack's multi-node NVLink is not DeepEP's (Megatron:
"Currently only hybridep supports the MNNVL case"): GB200/GB300 are refused, as is every
generation with no DeepEP figure (Ampere, Ascend, MI300X, L20, L40S) and a profile whose nodes do
not hold 8 GPUs.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import GRACE_FAMILIES, PROFILE_FAMILY, profile_key
from sp_planner.cost.hybridep import moe_ranks_reached
from sp_planner.cost.links import ranks_per_node
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Megatron's SM count for DeepEP when moe_flex_dispatcher_num_sms is unset (token_dispatcher.py).
DEEPEP_SMS = 20
NUM_MAX_NVL_PEERS = 8  # DeepEP deep_ep/buffer.py and csrc/kernels/configs.cuh: NVLink peers a rank reaches
# Group sizes DeepEP's Buffer has a config for (deep_ep/buffer.py get_dispatch_config asserts it).
DEEPEP_GROUP_SIZES: tuple[int, ...] = (2, 4, 8, 16, 24, 32, 64, 128, 144, 160)
# num_max_nvl_chunked_recv_tokens by group size (the same in the dispatch and combine configs).
NVL_RECV_TOKENS: dict[int, int] = {2: 256, 4: 256, 8: 256, 16: 288, 24: 288, 32: 288, 64: 288, 128: 560,
                                   144: 720, 160: 720}
RDMA_RECV_TOKENS = 128
# config.hpp: kNumMaxTopK, kNumMaxScales, internode::get_source_meta_bytes (two ints).
MAX_TOPK, MAX_SCALES, SOURCE_META_BYTES = 128, 128, 8
# V1's rates as fractions of the line rate (module docstring): ((group size, dispatch, combine), ...).
Fractions = tuple[tuple[int, float, float], ...]
NVL_FRACTIONS: Fractions = ((8, 153 / 200, 158 / 200),)
RDMA_FRACTIONS: Fractions = ((16, 43 / 50, 43 / 50), (32, 58 / 50, 57 / 50), (64, 51 / 50, 50 / 50))
TIMED_FAMILIES = frozenset({"hopper", "blackwell", "blackwell-ultra"})


def deepep_timed(hardware: HardwareProfile) -> bool:
    """Whether the profile's family takes DeepEP's figures (module docstring)."""
    return PROFILE_FAMILY.get(profile_key(hardware), "") in TIMED_FAMILIES


def deepep_refusal(hardware: HardwareProfile, model: ModelSpec, gpus_per_node: int) -> str | None:
    """Why the deepep dispatcher cannot be priced on this profile with nodes of `gpus_per_node`
    GPUs, None where it can."""
    if model.moe is None or model.moe.dispatcher != "deepep":
        return None
    if not deepep_timed(hardware):
        rack = (" (an NVL72 rack's multi-node NVLink is HybridEP's: Megatron's DeepEP backend does not run it; "
                "use --moe-dispatcher hybridep)" if PROFILE_FAMILY.get(profile_key(hardware), "") in GRACE_FAMILIES
                else "")
        return (f"the DeepEP dispatcher has no published benchmark on {hardware.name}: DeepEP's figures are "
                f"Hopper's, transferred to 8-GPU Blackwell nodes{rack}")
    if gpus_per_node != NUM_MAX_NVL_PEERS:
        return (f"the DeepEP dispatcher needs {NUM_MAX_NVL_PEERS} GPUs a node (its internode kernels pair each "
                f"node's {NUM_MAX_NVL_PEERS} NVLink peers), not {gpus_per_node}")
    return None


def deepep_group_breaks(etp, ep):
    """Megatron's DeepEP group (expert tp x ep) is one DeepEP's Buffer has no config for, or a
    single rank (module docstring; vectorized)."""
    return ~np.isin(np.asarray(etp) * np.asarray(ep), DEEPEP_GROUP_SIZES)


def deepep_sms(model: ModelSpec) -> int:
    """SMs DeepEP's kernels hold: the run's count, else Megatron's 20."""
    moe = model.moe
    return moe.dispatcher_sms if moe is not None and moe.dispatcher_sms is not None else DEEPEP_SMS


def _s_per_byte(fractions: Fractions, ep, line_bytes_per_s: float) -> np.ndarray:
    """Mean seconds a byte of one dispatch and one combine (each runs once a direction)."""
    sizes = [float(n) for n, _, _ in fractions]
    ep = np.asarray(ep, dtype=np.float64)
    dispatch = np.interp(ep, sizes, [d for _, d, _ in fractions]) * line_bytes_per_s
    combine = np.interp(ep, sizes, [c for _, _, c in fractions]) * line_bytes_per_s
    return (1.0 / dispatch + 1.0 / combine) / 2.0


def deepep_dispatch_s(hardware: HardwareProfile, model: ModelSpec, *, tokens_per_tp_rank, load, ep, ep_stride,
                      gpus_per_node: int, elem_bytes: int) -> np.ndarray:
    """One DeepEP dispatch or combine (their mean) of a rank holding `load` x the mean token copies
    (module docstring); 0 where the profile has no figure (deepep_refusal says why)."""
    ep = np.asarray(ep)
    if model.moe is None or not deepep_timed(hardware):
        return np.zeros(ep.shape)
    row_bytes = np.asarray(tokens_per_tp_rank, dtype=np.float64) * load * model.hidden_size * elem_bytes
    received = row_bytes * moe_ranks_reached(model, ep)
    nvl = received * _s_per_byte(NVL_FRACTIONS, ep, hardware.intra_node.bandwidth_bytes_per_s)
    nodes = np.maximum(ep // NUM_MAX_NVL_PEERS, 1)
    net = (row_bytes * moe_ranks_reached(model, nodes)
           * _s_per_byte(RDMA_FRACTIONS, ep, hardware.inter_node.bandwidth_bytes_per_s))
    inside = ranks_per_node(ep, ep_stride, gpus_per_node) >= ep
    return np.where(ep > 1, np.where(inside, nvl, net), 0.0)


def deepep_permutation_rows(model: ModelSpec, ep, copies, load):
    """Rows Megatron's permute and unpermute move around DeepEP per source token, forward: each
    reads the rows received (one a rank reached) and writes the `copies` expert copies (top_k,
    with the router's padding), or back, x the busiest rank's `load` (cost.moe docstring)."""
    assert model.moe is not None
    reached = moe_ranks_reached(model, ep)
    return 2.0 * (reached + copies) * load


def deepep_buffer_bytes(model: ModelSpec, group, sms: int) -> np.ndarray:
    """Bytes of DeepEP's NVLink and RDMA buffers on a rank of a `group`-rank DeepEP group (module
    docstring; 0 for a group of one or one DeepEP has no config for)."""
    group = np.asarray(group, dtype=np.int64)
    hidden_bytes = model.hidden_size * 2
    channels = sms // 2
    nvl_tokens = np.vectorize(lambda n: NVL_RECV_TOKENS.get(int(n), 0), otypes=[np.float64])(group)
    rdma_ranks = np.maximum(group // NUM_MAX_NVL_PEERS, 1)
    nvl_ranks = np.minimum(group, NUM_MAX_NVL_PEERS)
    per_token = hidden_bytes + SOURCE_META_BYTES + MAX_TOPK * (8 + 4) + MAX_SCALES * 4
    nvl = channels * nvl_ranks * ((2 * rdma_ranks + 3) * 4 + nvl_tokens * per_token)
    rdma_per_token = 2 * (hidden_bytes + SOURCE_META_BYTES + MAX_TOPK * (8 + 4) + MAX_SCALES * 4 + 16)
    rdma = (channels * rdma_ranks * ((NUM_MAX_NVL_PEERS * 2 + 2) * 2 * 4 + RDMA_RECV_TOKENS * rdma_per_token)
            + 1_048_576)  # config.hpp: "add a large number to be safe"
    rdma = np.where(group > NUM_MAX_NVL_PEERS, rdma, 0.0)
    return np.where(nvl_tokens > 0, nvl + rdma, 0.0)
