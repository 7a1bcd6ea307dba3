"""HybridEP's token dispatch and combine inside one NVLink domain, timed from its own benchmark.

Megatron's flex dispatcher with the HybridEP backend (MoESpec.dispatcher "hybridep") moves tokens
with DeepEP's HybridEP kernels, not NCCL's all-to-all. Two things differ from NCCL's all-to-all:
  - a token goes once to each EP rank that holds at least one of its top_k experts, not once per
    expert (the receiving rank expands it to its local experts), and the copy a rank keeps for its
    own experts goes through the same kernel;
  - its speed is HybridEP's, measured.

Source: deepseek-ai/DeepEP, branch hybrid-ep at 94a9f8f6 (2026-07-10), docs/README_Hybrid-EP.md
"Performance Results", measured with tests/test_hybrid_ep.py: 4096 tokens a rank, hidden 7168,
top-8, 8 local experts a rank, random uniform routing, BF16 tokens. The "Torch API" columns time
the Python call as training makes it (kernels, copies and host overhead). Their bandwidth is
"algorithm bandwidth": nvl_recv_bytes = dispatched_hidden.numel() x 2 over the time, the rows a rank
receives (one a token and rank, its own included) x hidden x 2 bytes (test_hybrid_ep.py,
test_hybrid_ep_benchmark "Bandwidth constants"), for dispatch and for combine alike.
  GB200 (NVLink5, NVL72), by EP ranks, GB/s, dispatch BF16 / combine, at 16 and at 32 SMs:
     8: 550.10/538.44, 545.71/568.94     16: 472.84/474.48, 523.48/521.55
    24: 441.89/444.40, 507.32/483.76     32: 485.50/423.19, 484.22/464.54
    36: 469.96/418.27, 479.02/447.89
  B200 (NVLink5, 8 GPUs), 8 ranks at 16 SMs: 535.94 / 530.86.
The SM count is the run's (Megatron moe_flex_dispatcher_num_sms, formerly moe_hybridep_num_sms;
MoESpec.dispatcher_sms). Megatron's default None leaves HybridEP's own: 24 SMs for dispatch and for
combine inside one NVLink domain, 8 across domains (Megatron-LM dev d48bd6be transformer_config.py
1005-1008, token_dispatcher.py 1213-1214; csrc/hybrid_ep/config.cuh 366-367, Configurer).
Megatron-Bridge's performance recipes set 32 (v0.2.0 scripts/performance/utils/helpers.py 111-113,
v0.4.2 and v0.5.0 overrides.py 71-73 and 73-75, v0.6.0 perf_recipes/_common.py 86-87), as do Megatron-LM's
Qwen3-235B MoE recipes. GB200's figures are interpolated linearly in the SM count between the 16-
and 32-SM columns (24: their mean) and held outside them. B200's one column (16 SMs) is taken for
any count: at 8 ranks GB200's figures barely move from 16 to 32 SMs (550/538 -> 546/569). Between
the listed rank counts the figures are interpolated linearly, and held at the end points outside
them (EP 64 on an NVL72 takes the 36-rank figure).
GB300 and B300 take GB200's and B200's (the same NVLink5 switch and HybridEP kernels; no figure of
their own is published).

Rows a rank receives per source token, balanced routing: a token picks top_k of E experts without
replacement (force-balanced routing draws them uniformly), and a rank holding E/ep of them misses
it with probability C(E - E/ep, k) / C(E, k), so the expected ranks a token reaches, its own
included, are ep x (1 - C(E - E/ep, k) / C(E, k)) (8 x (1 - C(112, 8) / C(128, 8)) = 5.34 for
Qwen3-30B-A3B at EP 8, against 8 copies in NCCL's all-to-all).
Group-limited routing (MoESpec.router_groups G, router_group_topk M; DeepSeek-V3 8 and 4) narrows
that reach: Megatron applies it under force-balanced routing too, and the ranks a token reaches are
those of Megatron's own group_limited_topk run on a fixed sample of the benchmark's random logits
(cost.group_routing, which cites the router's source and the sample's standard error). DeepSeek-V3
at EP 8: 3.96 ranks, not 5.29; EP 32 6.84 (7.27), EP 64 7.49 (7.68).

What of a call can hide behind compute (cost.ep_overlap): the same tables give each call's
"Kernel Only" rate beside its "Torch API" one; the difference is what the benchmark's call runs
around its kernel, the copy of the received rows out of (combine: into) HybridEP's buffer and what
the test calls "misc" (device_sync, update_flag; tests/test_hybrid_ep.py at 94a9f8f6 lines
360-366), which holds the host or the stream, so a call's share 1 - torch rate / kernel rate does
not overlap: 0.24 for GB200 at EP 16 (kernel-only dispatch 661.93/706.95, combine 600.75/666.26 at
16/32 SMs), 0.21 for H100 across nodes at EP 16 ("IB Bandwidth" at HybridEP's multi-node default of
8 SMs: torch 57.74/56.96 against kernel 76.80/68.00; 32 ranks 46.54/50.68 against 54.50/56.40, 64
ranks 41.46/47.68 against 50.55/51.03; at 16 SMs 54.47/53.35, 47.36/52.53, 41.24/46.57 against
71.71/62.95, 57.69/57.46, 49.97/49.77). B200's 16-SM row: kernel 734.95 / 673.84.

Every figure is at hidden 7168 (a 14 KiB bf16 row); no run at another hidden size is published,
so a model with smaller rows (Qwen3-30B-A3B: 4 KiB) takes the same rate per byte, which likely
flatters it (per-row costs weigh more on short rows). Megatron-Bridge's H100 A/B of the EP overlap
(validation/corpus/megatron_bridge_ep_overlap.yaml) shows it across nodes: its Nsight figures put
that run's HybridEP dispatch at 4.25 s a step, 2.4-4.7x what the H100 "IB Bandwidth" rate per
row would give (0.9 s for the forward dispatches, 1.8 s with the backward's), which is why HybridEP
across nodes stays on NCCL's model (at the profile's ep_kernel_all_to_all, DeepEP's internode RDMA
rate, where set: cost.links).

Not in either rate, and not timed: the metadata preprocessing that training runs once per MoE
layer forward. The benchmark passes the handle of a warm-up call (test_hybrid_ep.py line 267 at
7febc6e, the commit that added the tables; lines 318-341 at 94a9f8f6), and HybridEPBuffer skips
metadata_preprocessing when given one (deep_ep/hybrid_ep_buffer.py lines 208-213 and 358-370 at
94a9f8f6), whereas Megatron's HybridEPDispatch.forward passes none (Megatron-LM 9c5258f1
megatron/core/transformer/moe/fused_a2a.py lines 636-656). It all-gathers the bool routing map
(tokens x experts bytes a rank) over the EP group (csrc/hybrid_ep/executor/executor.cu
allgather_routing_map: NCCL across NVLink domains, and inside one where the custom all-gather is off,
HybridEPBuffer's default False at 94a9f8f6, True at the cf78085 the Megatron-LM recipes pin), runs
the scan kernel (Megatron moe_hybridep_num_sms_preprocessing 108 SMs) and, unless the run bounds
the permuted tokens (moe_expert_rank_capacity_factor, drop-and-pad), synchronizes the stream
(executor.cu metadata_preprocess_core line 167, cudaStreamSynchronize) for the host's token
counts, the per-layer sync cost.host counts. An Nsight range around it (Megatron-Bridge's EP
overlap A/B: 3.109 s a step, ~1 ms a layer forward) is host wall time that contains that sync's
wait for the queued GPU work, not the preprocessing's own GPU time. The all-gather alone, timed as
NCCL's (cost.links), is ~47 us a layer forward for Qwen3-30B-A3B at EP 8 on H100 (4096 tokens).

Not covered here, and timed as NCCL's all-to-all by cost.moe (stated in the docstring there):
HybridEP on other GPUs (no intra-node H100 figure is published) and across NVLink domains (its
RDMA path).
"""

from __future__ import annotations

from math import comb

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY, profile_key
from sp_planner.cost.group_routing import group_limited_reach
from sp_planner.cost.links import ranks_per_node
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# SMs HybridEP's dispatch and combine kernels hold by default (csrc/hybrid_ep/config.cuh 366-367):
# 24 inside one NVLink domain, 8 across domains; a run may set its own (MoESpec.dispatcher_sms).
HYBRIDEP_SMS, HYBRIDEP_SMS_ACROSS = 24, 8
# Rates by SM count: (SMs, ((EP ranks, dispatch GB/s, combine GB/s), ...)) (module docstring).
Rates = tuple[tuple[int, tuple[tuple[int, float, float], ...]], ...]
GB200_RATES: Rates = (
    (16, ((8, 550.10, 538.44), (16, 472.84, 474.48), (24, 441.89, 444.40), (32, 485.50, 423.19),
          (36, 469.96, 418.27))),
    (32, ((8, 545.71, 568.94), (16, 523.48, 521.55), (24, 507.32, 483.76), (32, 484.22, 464.54),
          (36, 479.02, 447.89))))
GB200_KERNEL_RATES: Rates = (
    (16, ((8, 750.15, 684.27), (16, 661.93, 600.75), (24, 637.80, 565.53), (32, 629.79, 547.25),
          (36, 612.85, 543.27))),
    (32, ((8, 764.03, 737.13), (16, 706.95, 666.26), (24, 665.97, 639.80), (32, 642.23, 605.15),
          (36, 632.31, 596.99))))
B200_RATES: Rates = ((16, ((8, 535.94, 530.86),)),)
B200_KERNEL_RATES: Rates = ((16, ((8, 734.95, 673.84),)),)
# H100 across nodes ("IB Bandwidth", per rank).
H100_IB_RATES: Rates = (
    (8, ((16, 57.74, 56.96), (32, 46.54, 50.68), (64, 41.46, 47.68))),
    (16, ((16, 54.47, 53.35), (32, 47.36, 52.53), (64, 41.24, 46.57))))
H100_IB_KERNEL_RATES: Rates = (
    (8, ((16, 76.80, 68.00), (32, 54.50, 56.40), (64, 50.55, 51.03))),
    (16, ((16, 71.71, 62.95), (32, 57.69, 57.46), (64, 49.97, 49.77))))
# Which rates a built-in profile's family takes inside one NVLink domain (cost.families), with the
# kernel-only ones beside them.
FAMILY_RATES: dict[str, tuple[Rates, Rates]] = {
    "grace-blackwell": (GB200_RATES, GB200_KERNEL_RATES), "grace-blackwell-ultra": (GB200_RATES, GB200_KERNEL_RATES),
    "blackwell": (B200_RATES, B200_KERNEL_RATES), "blackwell-ultra": (B200_RATES, B200_KERNEL_RATES)}


def hybridep_rates(hardware: HardwareProfile) -> Rates | None:
    """The profile's HybridEP "Torch API" rates inside one NVLink domain, None when none is published."""
    pair = FAMILY_RATES.get(PROFILE_FAMILY.get(profile_key(hardware), ""))
    return None if pair is None else pair[0]


def ranks_reached_per_token(num_experts: int, top_k: int, ep, groups: int = 1, open_groups: int = 1,
                            score_function: str = "softmax", pre_softmax: bool = False) -> np.ndarray:
    """Expected EP ranks (its own included) a token's top_k experts lie on, experts spread evenly
    over ep ranks and drawn uniformly without replacement, or, where the router limits them to
    `open_groups` of `groups` expert groups (MoESpec.router_groups, router_group_topk), as
    Megatron's router picks them from random logits under the model's score function
    (cost.group_routing). Also DeepEP's nodes reached, with `ep` the node count (cost.deepep)."""
    ep = np.asarray(ep)
    sizes, where = np.unique(ep, return_inverse=True)
    if open_groups == groups:
        reached = np.array([e * (1.0 - comb(num_experts - num_experts // int(e), top_k) / comb(num_experts, top_k))
                            for e in sizes], dtype=np.float64)
    else:
        reached = np.array([group_limited_reach(num_experts, top_k, groups, open_groups, score_function, pre_softmax,
                                                int(e)) for e in sizes], dtype=np.float64)
    return reached[where].reshape(ep.shape)


def moe_ranks_reached(model: ModelSpec, units) -> np.ndarray:
    """ranks_reached_per_token for the model's router over `units` ranks (or nodes)."""
    assert model.moe is not None
    moe = model.moe
    return ranks_reached_per_token(moe.num_experts, moe.top_k, units, moe.router_groups, moe.router_group_topk,
                                   moe.router_score_function, moe.router_pre_softmax)


def hybridep_call_s(rates: Rates, received_bytes, ep, sms) -> np.ndarray:
    """One HybridEP dispatch or combine (their mean: training runs each once a direction) in
    which a rank receives `received_bytes` (module docstring's metric), over `ep` ranks, its
    kernels on `sms` SMs: each SM column interpolated linearly in the ranks, then the columns
    linearly in the SMs, both held beyond the listed ones."""
    ep = np.asarray(ep, dtype=np.float64)
    by_sms = [(float(n), *(np.interp(ep, [float(r) for r, _, _ in rows], [row[i] for row in rows]) * 1e9
                          for i in (1, 2))) for n, rows in rates]
    counts = [n for n, _, _ in by_sms]
    shape = np.broadcast(ep, np.asarray(sms, dtype=np.float64)).shape
    flat_sms = np.broadcast_to(np.asarray(sms, dtype=np.float64), shape)
    dispatch = np.zeros(shape)
    combine = np.zeros(shape)
    weights = [np.interp(flat_sms, counts, np.eye(len(counts))[k]) for k in range(len(counts))]
    for w, (_, d, c) in zip(weights, by_sms):
        dispatch, combine = dispatch + w * d, combine + w * c
    received = np.asarray(received_bytes, dtype=np.float64)
    return received * (1.0 / dispatch + 1.0 / combine) / 2.0


def hybridep_timed(hardware: HardwareProfile, model: ModelSpec, ep, ep_stride, gpus_per_node: int) -> np.ndarray:
    """Whether HybridEP's benchmark times the plan's dispatch: the hybridep dispatcher on a profile
    with published figures, every member of an EP group (ep > 1) on one NVLink domain (as
    cost.links.all_to_all_time_s counts a group's intra-node share)."""
    ep = np.asarray(ep)
    if model.moe is None or model.moe.dispatcher != "hybridep" or hybridep_rates(hardware) is None:
        return np.zeros(ep.shape, dtype=bool)
    return (ep > 1) & (ranks_per_node(ep, ep_stride, gpus_per_node) >= ep)


def hybridep_sms(model: ModelSpec, ep, ep_stride, gpus_per_node: int) -> np.ndarray:
    """SMs HybridEP's kernels hold: the run's own count, else HybridEP's default for a group inside
    one NVLink domain or across domains."""
    ep = np.asarray(ep)
    if model.moe is not None and model.moe.dispatcher_sms is not None:
        return np.full(ep.shape, float(model.moe.dispatcher_sms))
    inside = ranks_per_node(ep, ep_stride, gpus_per_node) >= ep
    return np.where(inside, float(HYBRIDEP_SMS), float(HYBRIDEP_SMS_ACROSS))


def hybridep_dispatch_s(hardware: HardwareProfile, model: ModelSpec, *, tokens_per_tp_rank, load, ep, ep_stride,
                        gpus_per_node: int, elem_bytes: int) -> np.ndarray:
    """One dispatch or combine of a rank holding `load` x the mean token copies, at HybridEP's
    measured speed (where hybridep_timed; 0 on profiles without figures)."""
    rates = hybridep_rates(hardware)
    if model.moe is None or rates is None:
        return np.zeros(np.shape(ep))
    received = (np.asarray(tokens_per_tp_rank, dtype=np.float64) * load * model.hidden_size * elem_bytes
                * moe_ranks_reached(model, ep))
    return hybridep_call_s(rates, received, ep, hybridep_sms(model, ep, ep_stride, gpus_per_node))


def _unhidden(torch_rates: Rates, kernel_rates: Rates, ep, sms) -> np.ndarray:
    """1 - (kernel-only time / Torch API time) of a dispatch and a combine (module docstring)."""
    ones = np.ones(np.shape(ep))
    return 1.0 - hybridep_call_s(kernel_rates, ones, ep, sms) / hybridep_call_s(torch_rates, ones, ep, sms)


def hybridep_unhidden_share(hardware: HardwareProfile, model: ModelSpec, ep, ep_stride,
                            gpus_per_node: int) -> np.ndarray:
    """Share of each HybridEP dispatch or combine that cannot hide behind compute (module
    docstring): inside one NVLink domain from the profile's own rates, across nodes on Hopper from
    the H100 "IB Bandwidth" rates; 0 for NCCL's all-to-all (the alltoall dispatcher: its kernel is
    the whole call) and where HybridEP publishes nothing (inside an H100 node, Blackwell across
    NVLink domains)."""
    ep = np.asarray(ep)
    share = np.zeros(ep.shape)
    if model.moe is None or model.moe.dispatcher != "hybridep":
        return share
    family = PROFILE_FAMILY.get(profile_key(hardware), "")
    sms = hybridep_sms(model, ep, ep_stride, gpus_per_node)
    if family in FAMILY_RATES:
        inside = hybridep_timed(hardware, model, ep, ep_stride, gpus_per_node)
        share = np.where(inside, _unhidden(*FAMILY_RATES[family], ep, sms), share)
    if family == "hopper":  # the H100 rates' groups cross nodes; none is published inside one
        across = ranks_per_node(ep, ep_stride, gpus_per_node) < ep
        share = np.where(across, _unhidden(H100_IB_RATES, H100_IB_KERNEL_RATES, ep, sms), share)
    return share
