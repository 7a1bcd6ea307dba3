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
Megatron leaves the SM count to HybridEP (moe_flex_dispatcher_num_sms None: Megatron-LM dev
d48bd6be transformer_config.py 1005-1008, token_dispatcher.py 1213-1214), whose default inside one
NVLink domain is 24 SMs for dispatch and for combine (csrc/hybrid_ep/config.cuh 366-367,
Configurer). GB200's figures at 24 SMs are taken as the mean of the 16- and 32-SM ones (linear in
the SM count). B200's 16-SM figure is taken as is: at 8 ranks GB200's figures barely move from 16
to 32 SMs (550/538 -> 546/569). Between the listed rank counts the figures are interpolated
linearly, and held at the end points outside them (EP 64 on an NVL72 takes the 36-rank figure).
GB300 and B300 take GB200's and B200's (the same NVLink5 switch and HybridEP kernels; no figure of
their own is published).

Rows a rank receives per source token, balanced routing: a token picks top_k of E experts without
replacement (force-balanced routing draws them uniformly), and a rank holding E/ep of them misses
it with probability C(E - E/ep, k) / C(E, k), so the expected ranks a token reaches, its own
included, are ep x (1 - C(E - E/ep, k) / C(E, k)) (8 x (1 - C(112, 8) / C(128, 8)) = 5.34 for
Qwen3-30B-A3B at EP 8, against 8 copies in NCCL's all-to-all).

What of a call can hide behind compute (cost.ep_overlap): the same tables give each call's
"Kernel Only" rate beside its "Torch API" one; the difference (the metadata preprocessing, whose
kernel takes 108 SMs by default, config.cuh 365, the host synchronization and device copies the
test names "misc") holds the host or most SMs, so a call's share 1 - torch rate / kernel rate does
not overlap: 0.24 for GB200 at EP 16 (kernel-only dispatch 661.93/706.95, combine 600.75/666.26 at
16/32 SMs), 0.21 for H100 across nodes at EP 16 ("IB Bandwidth" at HybridEP's multi-node default of
8 SMs: torch 57.74/56.96 against kernel 76.80/68.00; 32 ranks 46.54/50.68 against 54.50/56.40, 64
ranks 41.46/47.68 against 50.55/51.03). B200's 16-SM row: kernel 734.95 / 673.84.

Every figure is at hidden 7168 (a 14 KiB bf16 row); no run at another hidden size is published,
so a model with smaller rows (Qwen3-30B-A3B: 4 KiB) takes the same rate per byte, which likely
flatters it (per-row costs weigh more on short rows). Megatron-Bridge's H100 A/B of the EP overlap
(validation/corpus/megatron_bridge_ep_overlap.yaml) shows it across nodes: its Nsight figures put
that run's HybridEP dispatch at 4.25 s a step, 2.4-4.7x what the H100 "IB Bandwidth" rate per
row would give (0.9 s for the forward dispatches, 1.8 s with the backward's), which is why HybridEP
across nodes stays on NCCL's model.

Not covered here, and timed as NCCL's all-to-all by cost.moe (stated in the docstring there):
HybridEP on other GPUs (no intra-node H100 figure is published) and across NVLink domains (its
RDMA path).
"""

from __future__ import annotations

from math import comb

import numpy as np

from sp_planner.cost.families import PROFILE_FAMILY
from sp_planner.cost.links import ranks_per_node
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# SMs HybridEP's dispatch and combine kernels hold inside one NVLink domain by default
# (csrc/hybrid_ep/config.cuh 366-367); Megatron passes none (module docstring).
HYBRIDEP_SMS = 24
# (EP ranks, dispatch GB/s, combine GB/s) at HybridEP's 24-SM default (module docstring).
_GB200_16_SM = ((8, 550.10, 538.44), (16, 472.84, 474.48), (24, 441.89, 444.40), (32, 485.50, 423.19),
                (36, 469.96, 418.27))
_GB200_32_SM = ((8, 545.71, 568.94), (16, 523.48, 521.55), (24, 507.32, 483.76), (32, 484.22, 464.54),
                (36, 479.02, 447.89))
GB200_TABLE: tuple[tuple[int, float, float], ...] = tuple(
    (a[0], (a[1] + b[1]) / 2, (a[2] + b[2]) / 2) for a, b in zip(_GB200_16_SM, _GB200_32_SM))
B200_TABLE: tuple[tuple[int, float, float], ...] = ((8, 535.94, 530.86),)
# Kernel-only rates beside them (module docstring), same layout.
_GB200_KERNEL_16_SM = ((8, 750.15, 684.27), (16, 661.93, 600.75), (24, 637.80, 565.53), (32, 629.79, 547.25),
                       (36, 612.85, 543.27))
_GB200_KERNEL_32_SM = ((8, 764.03, 737.13), (16, 706.95, 666.26), (24, 665.97, 639.80), (32, 642.23, 605.15),
                       (36, 632.31, 596.99))
GB200_KERNEL_TABLE: tuple[tuple[int, float, float], ...] = tuple(
    (a[0], (a[1] + b[1]) / 2, (a[2] + b[2]) / 2) for a, b in zip(_GB200_KERNEL_16_SM, _GB200_KERNEL_32_SM))
B200_KERNEL_TABLE: tuple[tuple[int, float, float], ...] = ((8, 734.95, 673.84),)
# H100 across nodes at 8 SMs: (ranks, torch dispatch, torch combine) and the kernel-only rates.
H100_IB_TABLE: tuple[tuple[int, float, float], ...] = ((16, 57.74, 56.96), (32, 46.54, 50.68), (64, 41.46, 47.68))
H100_IB_KERNEL_TABLE: tuple[tuple[int, float, float], ...] = ((16, 76.80, 68.00), (32, 54.50, 56.40),
                                                             (64, 50.55, 51.03))
# Which table a built-in profile's family takes (cost.families.PROFILE_FAMILY).
FAMILY_TABLES = {"grace-blackwell": GB200_TABLE, "grace-blackwell-ultra": GB200_TABLE,
                 "blackwell": B200_TABLE, "blackwell-ultra": B200_TABLE}


def hybridep_table(hardware: HardwareProfile) -> tuple[tuple[int, float, float], ...] | None:
    """The profile's HybridEP figures (ranks, dispatch, combine GB/s), None when none is published."""
    return FAMILY_TABLES.get(PROFILE_FAMILY.get(hardware.name.lower(), ""))


def ranks_reached_per_token(num_experts: int, top_k: int, ep) -> np.ndarray:
    """Expected EP ranks (its own included) a token's top_k experts lie on, experts spread evenly
    over ep ranks and drawn uniformly without replacement (module docstring)."""
    ep = np.asarray(ep)
    sizes, where = np.unique(ep, return_inverse=True)
    reached = np.array([e * (1.0 - comb(num_experts - num_experts // int(e), top_k) / comb(num_experts, top_k))
                        for e in sizes], dtype=np.float64)
    return reached[where].reshape(ep.shape)


def hybridep_call_s(table: tuple[tuple[int, float, float], ...], received_bytes, ep) -> np.ndarray:
    """One HybridEP dispatch or combine (their mean: training runs each once a direction) in
    which a rank receives `received_bytes` (module docstring's metric), over `ep` ranks."""
    ranks = [float(r) for r, _, _ in table]
    dispatch = np.interp(np.asarray(ep, dtype=np.float64), ranks, [d for _, d, _ in table]) * 1e9
    combine = np.interp(np.asarray(ep, dtype=np.float64), ranks, [c for _, _, c in table]) * 1e9
    received = np.asarray(received_bytes, dtype=np.float64)
    return received * (1.0 / dispatch + 1.0 / combine) / 2.0


def hybridep_timed(hardware: HardwareProfile, model: ModelSpec, ep, ep_stride, gpus_per_node: int) -> np.ndarray:
    """Whether HybridEP's benchmark times the plan's dispatch: the hybridep dispatcher on a profile
    with published figures, every member of an EP group (ep > 1) on one NVLink domain (as
    cost.links.all_to_all_time_s counts a group's intra-node share)."""
    ep = np.asarray(ep)
    if model.moe is None or model.moe.dispatcher != "hybridep" or hybridep_table(hardware) is None:
        return np.zeros(ep.shape, dtype=bool)
    return (ep > 1) & (ranks_per_node(ep, ep_stride, gpus_per_node) >= ep)


def hybridep_dispatch_s(hardware: HardwareProfile, model: ModelSpec, *, tokens_per_tp_rank, load, ep,
                        elem_bytes: int) -> np.ndarray:
    """One dispatch or combine of a rank holding `load` x the mean token copies, at HybridEP's
    measured speed (where hybridep_timed; 0 on profiles without figures)."""
    table = hybridep_table(hardware)
    if model.moe is None or table is None:
        return np.zeros(np.shape(ep))
    received = (np.asarray(tokens_per_tp_rank, dtype=np.float64) * load * model.hidden_size * elem_bytes
                * ranks_reached_per_token(model.moe.num_experts, model.moe.top_k, ep))
    return hybridep_call_s(table, received, ep)


def _unhidden(torch_table, kernel_table, ep) -> np.ndarray:
    """1 - (kernel-only time / Torch API time) of a dispatch and a combine (module docstring)."""
    ones = np.ones(np.shape(ep))
    return 1.0 - hybridep_call_s(kernel_table, ones, ep) / hybridep_call_s(torch_table, ones, ep)


def hybridep_unhidden_share(hardware: HardwareProfile, model: ModelSpec, ep, ep_stride,
                            gpus_per_node: int) -> np.ndarray:
    """Share of each HybridEP dispatch or combine that cannot hide behind compute (module
    docstring): inside one NVLink domain from the profile's own table, across nodes on Hopper from
    the H100 "IB Bandwidth" table; 0 for NCCL's all-to-all (the alltoall dispatcher: its kernel is
    the whole call) and where HybridEP publishes nothing (inside an H100 node, Blackwell across
    NVLink domains)."""
    ep = np.asarray(ep)
    share = np.zeros(ep.shape)
    if model.moe is None or model.moe.dispatcher != "hybridep":
        return share
    family = PROFILE_FAMILY.get(hardware.name.lower(), "")
    kernels = {"grace-blackwell": GB200_KERNEL_TABLE, "grace-blackwell-ultra": GB200_KERNEL_TABLE,
               "blackwell": B200_KERNEL_TABLE, "blackwell-ultra": B200_KERNEL_TABLE}
    inside = hybridep_timed(hardware, model, ep, ep_stride, gpus_per_node)
    if family in kernels:
        share = np.where(inside, _unhidden(FAMILY_TABLES[family], kernels[family], ep), share)
    if family == "hopper":  # the H100 table's groups cross nodes; none is published inside one
        across = ranks_per_node(ep, ep_stride, gpus_per_node) < ep
        share = np.where(across, _unhidden(H100_IB_TABLE, H100_IB_KERNEL_TABLE, ep), share)
    return share
