"""Userbuffers configurations as their sources write them."""

import typing

from sp_planner.cost.tp_overlap_cfg import (
    BULK,
    PIPELINE,
    RING_EXCHANGE,
    TE_1_8_DEFAULT,
    TE_DEFAULT,
    UB_CONFIGS,
    UbConfigName,
    UbGemm,
)

NEMO_FP8_70B = UB_CONFIGS["ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192"]
NEMO_70B_4K = UB_CONFIGS["ub_cfg_h100_h8192_tp4_mbs1_seqlen4096"]


def test_nemo_launcher_configs_as_their_source():
    # NeMo-Framework-Launcher 24.07 (8325688d83) launcher_scripts/conf/training/tp_overlap/
    # ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192.yaml and ub_cfg_h100_h8192_tp4_mbs1_seqlen4096.yaml:
    # bulk qkv_dgrad, qkv_wgrad, fc1_dgrad, fc1_wgrad num_sm 4, 24, 2, 4 and 8, 16, 2, 4, all
    # set_sm_margin 0; proj_fprop and fc2_fprop pipelines of num_splits 4 on num_sm 24 and 16 with
    # set_sm_margin 1, fp8_buf 1 in the FP8 file only; the ring exchanges set method and aggregate
    # alone (TE v1.8 base.py lines 229-232: num_sm 1, set_sm_margin 0), aggregate 1 for the 4K
    # file's fc2_dgrad.
    for cfg, bulk_sms, fp8_buf in ((NEMO_FP8_70B, (4, 24, 2, 4), True), (NEMO_70B_4K, (8, 16, 2, 4), False)):
        bulk = (cfg.qkv_dgrad, cfg.qkv_wgrad, cfg.fc1_dgrad, cfg.fc1_wgrad)
        assert bulk == tuple(UbGemm(BULK, sms, False) for sms in bulk_sms)
        assert cfg.proj_fprop == UbGemm(PIPELINE, 24, True, 4, fp8_buf=fp8_buf)
        assert cfg.fc2_fprop == UbGemm(PIPELINE, 16, True, 4, fp8_buf=fp8_buf)
        assert cfg.qkv_fprop == cfg.fc1_fprop == cfg.proj_dgrad == UbGemm(RING_EXCHANGE, 1, False)
    assert NEMO_FP8_70B.fc2_dgrad == UbGemm(RING_EXCHANGE, 1, False)
    assert NEMO_70B_4K.fc2_dgrad == UbGemm(RING_EXCHANGE, 1, False, aggregate=True)


def test_only_the_nemo_launcher_configs_set_aggregate_or_fp8_buf():
    # TE's defaults and Megatron-Bridge's configurations leave both keys False.
    for name, cfg in UB_CONFIGS.items():
        flags = {(g.aggregate, g.fp8_buf) for g in cfg}
        assert (flags == {(False, False)}) == (not name.startswith("ub_cfg_")), name
    assert set(typing.get_args(UbConfigName)) == set(UB_CONFIGS)
    assert UB_CONFIGS["te_default"] is TE_DEFAULT


def test_te_1_8_defaults_as_their_source():
    # TE v1.8 (3ec998e) module/base.py initialize_ub without ub_cfgs: add_ub(name, method,
    # num_splits=4 for pipeline) with add_ub's defaults num_sm 16, set_sm_margin 0 (lines 117-123,
    # 254-262): every GEMM 16 SMs, none with the margin; the methods TE 2.x's (lines 99-103).
    assert UB_CONFIGS["te_1.8_default"] is TE_1_8_DEFAULT
    for te1, te2 in zip(TE_1_8_DEFAULT, TE_DEFAULT, strict=True):
        assert (te1.method, te1.num_sm, te1.set_sm_margin) == (te2.method, 16, False)
    assert TE_1_8_DEFAULT.proj_fprop.num_splits == TE_1_8_DEFAULT.fc2_fprop.num_splits == 4
