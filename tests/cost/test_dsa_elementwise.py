"""cost.dsa_elementwise: the lightning indexer's element-wise HBM traffic, by hand for DeepSeek-V3.2-Exp
(indexer 64 heads x 128, RoPE on the first 64 dims, top 2,048), untrained and with its sparse loss."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dsa_elementwise import (indexer_elementwise_bytes, indexer_elementwise_times,
                                             query_bwd_bytes_per_token, query_bytes_per_token)

H800 = load_hardware("h800")
V32 = load_model("deepseek-v3.2-exp")
TRAINED = V32.model_copy(update={"dsa": V32.dsa.model_copy(update={"indexer_loss": "sparse"})})


def test_the_built_in_shape():
    assert (V32.dsa.index_n_heads, V32.dsa.index_head_dim, V32.dsa.index_topk, V32.mla.qk_rope_head_dim) == (
        64, 128, 2048, 64)


def test_a_tokens_ops_forward_and_backward():
    # q: 64 heads x (unfused RoPE 24 bytes x 64 + cat and Hadamard 2 x 4 x 128) = 163,840; cos and sin
    # built for the q and k calls, 2 x 44 x 64 = 5,632; k: LayerNorm 4 x 128 + 8 (fp32 mean, rsigma),
    # RoPE 24 x 64, cat and Hadamard 2 x 4 x 128 = 3,080; the weights' two products (4 + 4) and fp32
    # cast (2 + 4) on 64 = 896.
    assert query_bytes_per_token(V32) == 163_840 + 5_632 + 3_080 + 896 == 173_448
    # Backward: RoPE's 26 bytes an element, no cos and sin, LayerNorm's 6 bytes an element:
    # 64 x (26 x 64 + 1,024) + (6 x 128 + 8 + 26 x 64 + 1,024) + 896.
    assert query_bwd_bytes_per_token(V32) == 172_032 + 3_464 + 896 == 176_392


def test_untrained_at_128k_on_32_cp_ranks():
    # 4,096 local queries: 173,448 + 2,048 slots x 56 bytes (top-k values and indices, int32 cast,
    # row mask, copy) = 288,136 each; 131,072 gathered keys reordered (4 x 128 + the 8-byte index).
    moved = indexer_elementwise_bytes(V32, seq_len=131072, batch=1, ring=np.array([32, 1]))
    assert moved.fwd[0] == 4096 * 288_136 + 131_072 * 520 == 1_248_362_496
    # Without CP: 131,072 local queries, no reorder.
    assert moved.fwd[1] == 131_072 * 288_136
    assert moved.bwd[0] == moved.bwd[1] == 0.0  # the indexer runs under no_grad
    fwd, bwd = indexer_elementwise_times(H800, V32, seq_len=131072, batch=1, ring=32)
    memory = H800.hbm_bandwidth_bytes_per_s * H800.efficiency.memory_bound
    assert fwd == pytest.approx(1_248_362_496 / memory, rel=1e-12)
    assert bwd == 0.0


def test_trained_with_two_sequences_on_4_cp_ranks():
    # 32K tokens x 2 sequences, cp 4: 16,384 local queries, 65,536 gathered keys, one 8,192-query
    # block a sequence.
    moved = indexer_elementwise_bytes(TRAINED, seq_len=32768, batch=2, ring=4)
    # Forward a query: 173,448, q[:, bi]'s copy (4 x 8,192) and 2,048 slots x 79 (the trained
    # top-k's masks) = 368,008; a key: the reorder 520 and k[:, bi]'s copy 512.
    assert moved.fwd == 16_384 * 368_008 + 65_536 * 1_032 == 6_097_076_224
    # Backward a query: 176,392 and the zeroed slice gradients of q (8 bytes x 8,192) and the fp32
    # weights (16 x 64) for its block, 66,560, and of q and the bf16 weights for 2 selects,
    # 2 x 8 x 8,256; a key: 2 selects x 8 bytes and index_add's 8 on 128.
    assert moved.bwd == 16_384 * (176_392 + 66_560 + 132_096) + 65_536 * 3_072 == 6_346_113_024
