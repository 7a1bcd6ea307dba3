"""Userbuffers' chunk GEMMs: each split GEMM's slowdown and an all-gather ring exchange's last chunk
run alone, from cost.gemm_outputs' H100 rows by hand."""

import math

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.tp_overlap_cfg import UB_CONFIGS
from sp_planner.cost.tp_overlap_chunks import (
    ChunkFactors,
    LastChunks,
    chunk_factors,
    last_chunk_factors,
    qkv_width_per_rank,
)

NEMO_70B_4K = UB_CONFIGS["ub_cfg_h100_h8192_tp4_mbs1_seqlen4096"]

H100_K4096 = (311.9, 462.2, 663.2, 749.1, 742.1, 774.9, 803.2)  # cost.gemm_outputs, 2^19 .. 2^25 outputs
H100_K1024 = (145.5, 249.1, 382.0, 497.0, 598.9, 682.7, 690.1)


def _h100_ratio(outputs, row=H100_K4096):
    """One of cost.gemm_outputs' H100 rows, linear in log2(outputs), over its 2^25 value (1 above)."""
    x = min(math.log2(outputs) - 19, 6.0)
    i = min(int(x), 5)
    return (row[i] + (x - i) * (row[i + 1] - row[i])) / row[-1]


def test_llama3_70b_qkv_width_per_rank_by_hand():
    # 64 query heads and 8 KV heads of 128: at tp 8 a rank's 8 query heads and 1 K and 1 V head; at
    # tp 16 its 4 query heads and the K and V head Megatron replicates over 2 ranks.
    llama = load_model("Llama-3-70B")
    assert qkv_width_per_rank(llama, 8) == 8 * 128 + 2 * 128 == 1280
    assert qkv_width_per_rank(llama, 16) == 4 * 128 + 2 * 128


def test_llama3_70b_tp8_qkv_chunks_by_hand():
    # 4096 tokens at tp 8: QKV 1280 wide (8 query heads and 1 KV head of 128 x 3) over K 8192
    # (the table's k 4096 row). Ring exchange splits it in 8 chunks of 512 rows, 3 at once on TE's
    # compute streams: 1536 x 1280 outputs against 4096 x 1280.
    factors = chunk_factors(load_hardware("h100-sxm"), load_model("Llama-3-70B"), tokens=4096, tp=8)
    expected = _h100_ratio(4096 * 1280) / _h100_ratio(1536 * 1280)
    assert float(factors.qkv) == pytest.approx(expected, rel=1e-9)
    assert float(factors.qkv) == pytest.approx(1.159, abs=1e-3)
    # The projection's pipeline over K = 1024 (8 query heads): 4 chunks of 1024 rows x 8192, 3 at
    # once (3072 x 8192 outputs) against the whole 4096 x 8192 (2^25: the row's top).
    assert float(factors.proj) == pytest.approx(1.0 / _h100_ratio(3072 * 8192, H100_K1024), rel=1e-9)


def test_chunks_of_moe_layers_and_unknown_gpus_run_whole():
    moe = chunk_factors(load_hardware("h100-sxm"), load_model("Qwen3-235B-A22B"), tokens=4096, tp=8)
    assert (float(moe.fc1), float(moe.fc2), float(moe.fc2_dgrad)) == (1.0, 1.0, 1.0)
    assert float(moe.qkv) > 1.0
    # A100 has no output-size table (cost.gemm_outputs): every factor 1.
    a100 = chunk_factors(load_hardware("a100-80gb"), load_model("Llama-3-70B"), tokens=4096, tp=8)
    assert np.allclose(np.array(a100, dtype=float), 1.0) and isinstance(a100, ChunkFactors)


def test_llama3_70b_tp8_last_chunks_by_hand():
    # 4096 tokens at tp 8, bf16 ratios: QKV's last chunk is 512 x 1280 outputs (2^19.32) against the
    # whole 4096 x 1280, the projection's data gradient 512 x 1024 against 4096 x 1024 (K 8192: the
    # table's k 4096 row each).
    last = last_chunk_factors(load_hardware("h100-sxm"), load_model("Llama-3-70B"), tokens=4096, tp=8)
    assert float(last.qkv) == pytest.approx(_h100_ratio(4096 * 1280) / _h100_ratio(512 * 1280), rel=1e-9)
    assert float(last.qkv) == pytest.approx(2.073, abs=1e-3)
    assert float(last.proj_dgrad) == pytest.approx(_h100_ratio(4096 * 1024) / _h100_ratio(512 * 1024), rel=1e-9)
    # MoE experts are not split; A100 has no output-size table.
    moe = last_chunk_factors(load_hardware("h100-sxm"), load_model("Qwen3-235B-A22B"), tokens=4096, tp=8)
    assert (float(moe.fc1), float(moe.fc2_dgrad)) == (1.0, 1.0) and float(moe.qkv) > 1.0
    a100 = last_chunk_factors(load_hardware("a100-80gb"), load_model("Llama-3-70B"), tokens=4096, tp=8)
    assert np.allclose(np.array(a100, dtype=float), 1.0) and isinstance(a100, LastChunks)


def test_ring_exchange_reduce_scatter_chunks_by_tp():
    # Llama-3-70B at tp 8 on 4096 tokens, the projection run as a ring exchange: 8 chunks of 512
    # rows, 3 at once (1536 x 8192 outputs, K 1024) against the whole 4096 x 8192.
    factors = chunk_factors(load_hardware("h100-sxm"), load_model("Llama-3-70B"), tokens=4096, tp=8,
                            cfg=UB_CONFIGS["userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192"])
    assert float(factors.proj) == pytest.approx(1.0 / _h100_ratio(1536 * 8192, H100_K1024), rel=1e-9)


def test_aggregated_fc2_dgrad_runs_whole_at_tp4():
    # Llama-2-70B at tp 4 on 4096 tokens, FC2's dgrad (28672 / 4 = 7168 wide, K 8192: the k 4096 row):
    # aggregated, 2 GEMMs of 2048 rows, both at once = the whole 4096 rows: no slowdown. TE's
    # default ring exchange: 4 chunks of 1024 rows, 3 at once (3072 x 7168 outputs).
    h100, llama2 = load_hardware("h100-sxm"), load_model("Llama-2-70B")
    aggregated = chunk_factors(h100, llama2, tokens=4096, tp=4, cfg=NEMO_70B_4K)
    default = chunk_factors(h100, llama2, tokens=4096, tp=4)
    assert float(aggregated.fc2_dgrad) == 1.0
    assert float(default.fc2_dgrad) == pytest.approx(_h100_ratio(4096 * 7168) / _h100_ratio(3072 * 7168), rel=1e-9)
    assert (aggregated.qkv, aggregated.proj_dgrad) == (default.qkv, default.proj_dgrad)  # not aggregated
