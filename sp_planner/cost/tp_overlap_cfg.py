"""Transformer Engine userbuffers configurations: how each of a layer's overlapped GEMMs hides its
TP collective (cost.tp_overlap prices them).

TE's defaults (module/base.py initialize_ub, get_default_config, lines 309-330 at v2.14.1
366798ef8; the same at v2.7 0289e7638, v2.9 70f536662, v2.16 4220403e8 and d0067d0): ring_exchange
for qkv_fprop, fc1_fprop, proj_dgrad, fc2_dgrad (num_sm 1, no SM margin, tp chunks); pipeline for
proj_fprop, fc2_fprop (num_sm 16, set_sm_margin, num_splits 4); bulk for qkv_dgrad, fc1_dgrad,
qkv_wgrad, fc1_wgrad (num_sm 16, set_sm_margin). A run may pass its own per-GEMM settings
(initialize_ub's ub_cfgs: `ub_cfg.update(user_ub_cfg[name])`, line 471), which replace those
values GEMM by GEMM: Megatron-Bridge's performance recipes select tuned ones by name
(training/comm_overlap.py TransformerLayerTPOverlapCfg instances, the same values at
25.09 fa0315ae2, v0.2.0 7af9601c9, v0.4.2 c81012934, v0.5.0 fcbb60311 and e43a7468f; passed to TE by
training/initialize.py _initialize_tp_communicators, ub_cfgs=model_config.tp_comm_overlap_cfg,
lines 342-370 at c81012934).

What the cost model prices of a GEMM's settings: its method (ring_exchange, pipeline, bulk), its
num_sm and set_sm_margin (with the margin its GEMM runs on sm_count - num_sm SMs: common/
comm_gemm_overlap/comm_gemm_overlap.cpp line 99, _math_sms = set_sm_margin ? sm_count -
num_comm_sm : sm_count; without it the collective's kernel holds num_sm SMs beside the GEMM while
it runs), and a pipeline's num_splits. Not priced, and the same in every configuration here:
cga_size (the communication kernel's cluster shape), aggregate and atomic_gemm (False), use_ce
(TE's default, True: the ring exchange's transfers on the copy engine). fp8_buf matters only for
the reduce-scatters, whose buffers stay bf16 here (TE sets fp8_buf for the all-gathers itself,
lines 468-472; Bridge's FP8 configs give proj_fprop and fc2_fprop fp8_buf False).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

RING_EXCHANGE, PIPELINE, BULK = "ring_exchange", "pipeline", "bulk"


class UbGemm(NamedTuple):
    """One overlapped GEMM's userbuffers settings (module docstring)."""

    method: str  # RING_EXCHANGE, PIPELINE or BULK
    num_sm: int  # SMs its collective's kernel holds
    set_sm_margin: bool  # its GEMM runs on sm_count - num_sm SMs
    num_splits: int = 4  # a pipeline's chunks (a ring exchange runs tp chunks)


class UbConfig(NamedTuple):
    """A layer's ten overlapped GEMMs (TE's names; cost.tp_overlap pairs them with collectives)."""

    qkv_fprop: UbGemm
    proj_fprop: UbGemm
    fc1_fprop: UbGemm
    fc2_fprop: UbGemm
    proj_dgrad: UbGemm
    fc2_dgrad: UbGemm
    qkv_dgrad: UbGemm
    fc1_dgrad: UbGemm
    qkv_wgrad: UbGemm
    fc1_wgrad: UbGemm


_RING_AG = UbGemm(RING_EXCHANGE, 1, False)  # TE's default, and Bridge's RingExchangeOverlapCfg()
_PIPELINE = UbGemm(PIPELINE, 16, True, 4)
_BULK = UbGemm(BULK, 16, True)
# A reduce-scatter run as a ring exchange (Bridge's FP8 configs: RingExchangeOverlapCfg(num_sm=1,
# set_sm_margin=True) for proj_fprop and fc2_fprop).
_RING_RS = UbGemm(RING_EXCHANGE, 1, True)

TE_DEFAULT = UbConfig(qkv_fprop=_RING_AG, proj_fprop=_PIPELINE, fc1_fprop=_RING_AG, fc2_fprop=_PIPELINE,
                      proj_dgrad=_RING_AG, fc2_dgrad=_RING_AG, qkv_dgrad=_BULK, fc1_dgrad=_BULK, qkv_wgrad=_BULK,
                      fc1_wgrad=_BULK)


def _bridge_fp8(qkv_dgrad: int, qkv_wgrad: int, fc1_dgrad: int, fc1_wgrad: int) -> UbConfig:
    """Megatron-Bridge's FP8 configurations: the bulk GEMMs' num_sm without SM margin
    (BulkOverlapCfg(num_sm=.., cga_size=2, set_sm_margin=False)), the reduce-scatters as ring
    exchanges with a 1-SM margin, the all-gathers' ring exchanges as TE's."""
    bulk = lambda num_sm: UbGemm(BULK, num_sm, False)  # noqa: E731
    return TE_DEFAULT._replace(proj_fprop=_RING_RS, fc2_fprop=_RING_RS, qkv_dgrad=bulk(qkv_dgrad),
                               qkv_wgrad=bulk(qkv_wgrad), fc1_dgrad=bulk(fc1_dgrad), fc1_wgrad=bulk(fc1_wgrad))


TE_DEFAULT_NAME = "te_default"
# Megatron-Bridge training/comm_overlap.py at c81012934 (line of each instance).
UB_CONFIGS: dict[str, UbConfig] = {
    TE_DEFAULT_NAME: TE_DEFAULT,
    "userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192": _bridge_fp8(4, 24, 2, 4),  # line 111
    "userbuffers_fp8_b200_h8192_tp2_mbs1_seqlen8192": _bridge_fp8(4, 24, 2, 4),  # line 137
    "userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192": _bridge_fp8(2, 24, 2, 2),  # line 164
    "userbuffers_fp8_b200_h16384_tp4_cp2_mbs1_seqlen8192": _bridge_fp8(8, 32, 2, 8),  # line 190
}
UbConfigName = Literal[
    "te_default",
    "userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192",
    "userbuffers_fp8_b200_h8192_tp2_mbs1_seqlen8192",
    "userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192",
    "userbuffers_fp8_b200_h16384_tp4_cp2_mbs1_seqlen8192",
]
