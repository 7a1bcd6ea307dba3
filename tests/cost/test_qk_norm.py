"""QK normalization (cost.qk_norm), and where its terms enter the memory and time models."""

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.gemm_work import elementwise_bytes_per_token
from sp_planner.cost.activations import activation_bytes_per_layer
from sp_planner.cost.qk_norm import (
    qk_norm_bytes_per_token,
    qk_norm_host_ops,
    qk_norm_saved_bytes,
    qk_norm_te_calls,
)
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE
from sp_planner.specs.workload import Workload

QWEN3_MOE = load_model("Qwen3-30B-A3B")  # 32 query heads and 4 KV heads of 128
PLAIN = QWEN3_MOE.model_copy(update={"qk_norm": False})


def test_the_catalog_marks_qwen3_and_gemma3_and_not_llama():
    for name in ("Qwen3-8B", "Qwen3-32B", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Gemma-3-27B"):
        assert load_model(name).qk_norm, name
    for name in ("Llama-3-8B", "Llama-4-Scout-17B-16E", "DeepSeek-V3", "Mixtral-8x7B"):
        assert not load_model(name).qk_norm, name


def test_forward_traffic_is_the_norms_read_and_write_and_the_keys_copy():
    # q 32 x 128 = 4096 and k 4 x 128 = 512 elements a token: the norms read and write 2 + 2 bytes
    # of each (4 x 4608 = 18,432), the key's contiguous copy 2 + 2 more (4 x 512 = 2,048).
    assert qk_norm_bytes_per_token(QWEN3_MOE) == 18_432 + 2_048
    assert qk_norm_bytes_per_token(PLAIN) == 0.0
    # It adds to the layer's memory-bound bytes (cost.gemm_work), nothing else there changes.
    assert elementwise_bytes_per_token(QWEN3_MOE) - elementwise_bytes_per_token(PLAIN) == 20_480


def test_saved_inputs_and_rstd_on_the_ranks_heads():
    # 4096 tokens, tp 1: 36 heads x (128 bf16 + one fp32) = 36 x 260 bytes a token.
    assert float(qk_norm_saved_bytes(QWEN3_MOE, 4096, 1)) == 4096 * 36 * 260
    # tp 8: 4 query heads and one KV head (replicated beyond 4 KV heads) a rank.
    assert float(qk_norm_saved_bytes(QWEN3_MOE, 4096, 8)) == 4096 * 5 * 260
    assert np.all(qk_norm_saved_bytes(PLAIN, np.array([4096.0]), np.array([1, 2])) == 0.0)


@pytest.mark.parametrize("recompute, kept", [(RECOMPUTE_NONE, True), (RECOMPUTE_SELECTIVE, True),
                                             (RECOMPUTE_FULL, False)])
def test_memory_holds_the_saved_inputs_unless_the_layer_is_recomputed(recompute, kept):
    workload = Workload(seq_len=4096, global_batch=64)
    kw = {"tp": 2, "ulysses": 2, "ring": 1, "micro_batch": 1, "recompute": recompute, "ep": 8}
    with_norm, _ = activation_bytes_per_layer(QWEN3_MOE, workload, **kw)
    without, _ = activation_bytes_per_layer(PLAIN, workload, **kw)
    # 2048 tokens on the rank (sequence over ulysses 2), its 16 query heads and 2 KV heads (tp 2),
    # before the Ulysses all-to-all; core-attention recompute does not cover the norm.
    expected = 2048 * (16 + 2) * 260 if kept else 0.0
    assert float(with_norm - without) == expected


def test_host_ops_and_te_calls():
    assert qk_norm_host_ops(QWEN3_MOE) == (3, 2)
    assert qk_norm_host_ops(PLAIN) == (0, 0)
    assert qk_norm_te_calls(QWEN3_MOE) == 2
    assert qk_norm_te_calls(PLAIN) == 0
