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
it runs, a ring exchange's 1 whatever its num_sm: use_ce, TE's default and True in every
configuration here, puts its transfers on the copy engine, cost.tp_overlap), a pipeline's
num_splits, a ring exchange's aggregate and a pipeline's fp8_buf (below). Not priced: cga_size (the
communication kernel's cluster shape), atomic_gemm (False in every configuration here), and a
pipeline's last chunk reduce-scattering on UB_MAX_SM SMs (v1.8 pytorch/csrc/
comm_gemm_overlap.h line 479; a kernel's speed on its SMs is not modelled). fp8_buf matters only
for the reduce-scatters (TE sets it for the all-gathers itself, lines 468-472); Bridge's FP8
configs give proj_fprop and fc2_fprop fp8_buf False, the NeMo launcher's FP8 one True.

TE 1.x (v1.8 3ec998e, the NeMo 24.07 container's 1.8.0.dev0: NeMo's software component table)
reads the same keys for a GEMM a run's ub_cfgs names (module/base.py initialize_ub lines 225-253:
num_sm 1 and cga_size 1 for ring_exchange, 16 and 2 otherwise, set_sm_margin, aggregate and
atomic_gemm 0, use_ce True unless given), and NeMo 1.x passes the launcher's
model.ub_tp_comm_overlap_cfg as ub_cfgs (megatron_gpt_model.py initialize_ub_func: use_fp8 =
config.fp8). Two keys Bridge's configurations leave at their defaults, which the NeMo launcher's
set (cost.tp_overlap prices them):
- aggregate (a ring-exchange all-gather's: UbufP2PCommOverlap::split_overlap_ag, pytorch/csrc/
  comm_gemm_overlap.h lines 869-933 at v1.8; no reduce-scatter here sets it): a 1X chunk exchange
  between rank pairs before the first GEMM, then tp / 2 GEMMs of 2 chunks each, beside the 2X sends
  of the next pair of chunks;
- fp8_buf (pipeline only, base.py lines 238-240; a uint8 buffer where use_fp8, line 165): the
  projection's and FC2's GEMM writes FP8 (E4M3, the forward's GEMM1/GEMM2_OUTPUT scale: linear.py
  lines 194-199, layernorm_mlp.py lines 301-306) and the chunks' reduce-scatter reads the peers'
  FP8 chunks, scales, sums and writes the 2-byte output in one kernel
  (reducescatter2_userbuff_stridedoutput_fp8, comm_gemm_overlap.h lines 461 and 483; userbuffers.cu
  line 840): the reduce-scatter moves 1 byte an element, no pass added.
TE's defaults changed twice (initialize_ub, the GEMMs a run's ub_cfgs leaves out, methods as
above at every tag):
- to v1.8 (v1.0 66d91d521 lines 200-205 ... v1.8 3ec998e lines 254-262, and main until 5ee981757,
  2024-07-23): add_ub's defaults, num_sm 16 and set_sm_margin 0 for every GEMM (v1.8 lines
  117-123), ring exchanges included, pipelines in 4 splits: TE_1_8_DEFAULT;
- v1.9 to v1.13 (get_default_config, v1.9 e79d915 lines 222-236, from ade3b9bcf): the ring
  exchanges on num_sm 1, the rest as before, no margin; priced as TE_1_8_DEFAULT (a ring exchange's
  transfers run on the copy engine, cost.tp_overlap), so not named apart;
- v2.0 on (d715c836e, 2025-02-04, #1427; v2.0 e5cc6c299 line 308): set_sm_margin for pipeline and
  bulk: TE_DEFAULT.
A row selects TE_1_8_DEFAULT by naming it (tp_comm_overlap_cfg te_1.8_default) where its source
dates the run's Transformer Engine; a row that names none runs TE_DEFAULT.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

RING_EXCHANGE, PIPELINE, BULK = "ring_exchange", "pipeline", "bulk"


class UbGemm(NamedTuple):
    """One overlapped GEMM's userbuffers settings (module docstring)."""

    method: str  # RING_EXCHANGE, PIPELINE or BULK
    num_sm: int  # SMs its collective's kernel holds (a ring exchange: its margin's, module docstring)
    set_sm_margin: bool  # its GEMM runs on sm_count - num_sm SMs
    num_splits: int = 4  # a pipeline's chunks (a ring exchange runs tp chunks)
    aggregate: bool = False  # an all-gather ring exchange on 2 chunks a GEMM, after a 1X pair swap
    fp8_buf: bool = False  # a pipeline's FP8 output buffer: its reduce-scatter moves FP8


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

# TE up to v1.8 without ub_cfgs (module docstring): every GEMM's collective on 16 SMs, no margin.
_RING_AG_TE1, _PIPELINE_TE1, _BULK_TE1 = UbGemm(RING_EXCHANGE, 16, False), UbGemm(PIPELINE, 16, False, 4), \
    UbGemm(BULK, 16, False)
TE_1_8_DEFAULT = UbConfig(qkv_fprop=_RING_AG_TE1, proj_fprop=_PIPELINE_TE1, fc1_fprop=_RING_AG_TE1,
                          fc2_fprop=_PIPELINE_TE1, proj_dgrad=_RING_AG_TE1, fc2_dgrad=_RING_AG_TE1, qkv_dgrad=_BULK_TE1,
                          fc1_dgrad=_BULK_TE1, qkv_wgrad=_BULK_TE1, fc1_wgrad=_BULK_TE1)


def _bridge_fp8(qkv_dgrad: int, qkv_wgrad: int, fc1_dgrad: int, fc1_wgrad: int) -> UbConfig:
    """Megatron-Bridge's FP8 configurations: the bulk GEMMs' num_sm without SM margin
    (BulkOverlapCfg(num_sm=.., cga_size=2, set_sm_margin=False)), the reduce-scatters as ring
    exchanges with a 1-SM margin, the all-gathers' ring exchanges as TE's."""
    bulk = lambda num_sm: UbGemm(BULK, num_sm, False)  # noqa: E731
    return TE_DEFAULT._replace(proj_fprop=_RING_RS, fc2_fprop=_RING_RS, qkv_dgrad=bulk(qkv_dgrad),
                               qkv_wgrad=bulk(qkv_wgrad), fc1_dgrad=bulk(fc1_dgrad), fc1_wgrad=bulk(fc1_wgrad))


def _nemo_launcher(qkv_dgrad: int, qkv_wgrad: int, fc1_dgrad: int, fc1_wgrad: int, *, fp8_buf: bool,
                   fc2_dgrad_aggregate: bool) -> UbConfig:
    """NeMo-Framework-Launcher's H100 configurations (launcher_scripts/conf/training/tp_overlap/
    ub_cfg_h100_*.yaml at 8325688d83, 24.07): the bulk GEMMs' num_sm without SM margin (cga_size 2),
    proj_fprop a pipeline of 4 splits on a 24-SM margin and fc2_fprop on a 16-SM one (both with
    `fp8_buf` or not), the all-gathers' ring exchanges with no key but aggregate (TE's 1 SM, no
    margin), fc2_dgrad's with `fc2_dgrad_aggregate`."""
    bulk = lambda num_sm: UbGemm(BULK, num_sm, False)  # noqa: E731
    return TE_DEFAULT._replace(
        proj_fprop=UbGemm(PIPELINE, 24, True, 4, fp8_buf=fp8_buf),
        fc2_fprop=UbGemm(PIPELINE, 16, True, 4, fp8_buf=fp8_buf),
        fc2_dgrad=_RING_AG._replace(aggregate=fc2_dgrad_aggregate), qkv_dgrad=bulk(qkv_dgrad),
        qkv_wgrad=bulk(qkv_wgrad), fc1_dgrad=bulk(fc1_dgrad), fc1_wgrad=bulk(fc1_wgrad))


TE_DEFAULT_NAME: Final = "te_default"
# Megatron-Bridge training/comm_overlap.py at c81012934 (line of each instance).
UB_CONFIGS: dict[str, UbConfig] = {
    TE_DEFAULT_NAME: TE_DEFAULT,
    "te_1.8_default": TE_1_8_DEFAULT,
    "userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192": _bridge_fp8(4, 24, 2, 4),  # line 111
    "userbuffers_fp8_b200_h8192_tp2_mbs1_seqlen8192": _bridge_fp8(4, 24, 2, 4),  # line 137
    "userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192": _bridge_fp8(2, 24, 2, 2),  # line 164
    "userbuffers_fp8_b200_h16384_tp4_cp2_mbs1_seqlen8192": _bridge_fp8(8, 32, 2, 8),  # line 190
    # NeMo-Framework-Launcher 24.07 (8325688d83): examples/training/llama/h100/llama3_70b_fp8.sh
    # line 22 passes the first, launcher_scripts/conf/training/llama/llama2_70b.yaml line 3 the second.
    "ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192": _nemo_launcher(4, 24, 2, 4, fp8_buf=True, fc2_dgrad_aggregate=False),
    "ub_cfg_h100_h8192_tp4_mbs1_seqlen4096": _nemo_launcher(8, 16, 2, 4, fp8_buf=False, fc2_dgrad_aggregate=True),
}
UbConfigName = Literal[
    "te_default",
    "te_1.8_default",
    "userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192",
    "userbuffers_fp8_b200_h8192_tp2_mbs1_seqlen8192",
    "userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192",
    "userbuffers_fp8_b200_h16384_tp4_cp2_mbs1_seqlen8192",
    "ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192",
    "ub_cfg_h100_h8192_tp4_mbs1_seqlen4096",
]
