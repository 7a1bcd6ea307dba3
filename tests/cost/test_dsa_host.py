"""DeepSeek Sparse Attention's host ops (cost.dsa_host), counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.cuda_graphs import ATTN
from sp_planner.cost.dsa_host import dsa_host_ops
from sp_planner.cost.host import layer_host_ops

V32 = load_model("deepseek-v3.2-exp")  # 128 heads; indexer blocks of 8,192 queries
DENSE = load_model("Llama-3-70B")


def _ops(model=V32, **kw):
    args = dict(seq_len=32768, micro_batch=1, tp=8, ring=1) | kw
    fwd, bwd = dsa_host_ops(model, **args)
    return float(fwd), float(bwd)


def test_deepseek_v32_at_32k_by_hand():
    # Indexer: 3 GEMMs, 2 RoPE calls of 12 ops and their cat (26), k_norm, 2 Hadamards, 2 scalar
    # products: 34; tp 8 under sequence parallelism gathers x and qr: 2. The rows' key bounds:
    # zeros, arange and clamp, then the keys' arange and the two bounds' int32 casts: 6. Top-k: the
    # weights' cast, then 32,768 / 8,192 = 4 blocks of 10: 41. Sparse MLA: 8, 16 heads a rank (no
    # pad), the V up-projection weight's copy (16 heads: a strided slice), less the dense core
    # attention's kernel: 34 + 2 + 6 + 41 + 8 + 1 - 1 = 91. Backward: 14 in place of 3: 11.
    assert _ops() == (91, 11)
    # Without sequence parallelism the indexer's inputs are whole: no gathers.
    assert _ops(sequence_parallel=False) == (89, 11)
    # A model without DSA adds none.
    assert _ops(DENSE) == (0, 0)


def test_batches_heads_and_context_parallelism_by_hand():
    # b 2 at 8K, tp 16 (8 heads a rank): per sequence the cast, q's and k's copies and 1 block of
    # 10 (13, 26 for two); sparse MLA's 8, its 3 permute copies and the pad to 16 heads: 12; the
    # up_v weight's copy: 1. 34 + 2 + 6 + 26 + 12 + 1 - 1 = 80; backward 14 + grad_output's copy - 3 = 12.
    assert _ops(seq_len=8192, micro_batch=2, tp=16) == (80, 12)
    # CP 2 at 32K: 16,384 local queries, 2 blocks (21 for top-k); the two keys' all-gathers and
    # reorders (4) and the zigzag query positions' two aranges and cat and the keys' arange (4)
    # forward, the latent key's reduce-scatter and index_select backward (3).
    assert _ops(ring=2) == (34 + 2 + 6 + 21 + 8 + 1 - 1 + 4 + 4, 11 + 3)
    # Vectorized over candidates.
    fwd, bwd = dsa_host_ops(V32, seq_len=32768, micro_batch=np.array([1, 1]), tp=np.array([8, 8]),
                            ring=np.array([1, 2]))
    assert list(fwd) == [91, 79] and list(bwd) == [11, 14]


def test_the_v_up_weight_copies_only_with_more_than_one_head_a_rank():
    # tp 128: one head a rank, the slice kv_up_weight[:, 128:, :] of a (1, 256, 512) view is
    # contiguous and .contiguous() returns it (no op); tp 64: two heads, a strided slice, one copy.
    # Both under the 16-head tile (the pad op each).
    assert _ops(tp=64)[0] - _ops(tp=128)[0] == 1


def test_layer_ops_carry_them_in_the_attention_part():
    args = dict(tp=8, ep=8, etp=1, low_precision=False, full_recompute=False)
    dsa = dsa_host_ops(V32, seq_len=32768, micro_batch=1, tp=8, ring=1)
    base = [float(x) for x in layer_host_ops(V32, **args)]
    plus = [float(x) for x in layer_host_ops(V32, dsa_ops=dsa, **args)]
    assert [p - b for p, b in zip(plus, base)] == pytest.approx([91, 11], rel=1e-12)
    # Full recompute issues the forward again in the backward: 91 + 11.
    full = [float(x) for x in layer_host_ops(V32, dsa_ops=dsa, **(args | dict(full_recompute=True)))]
    full_base = [float(x) for x in layer_host_ops(V32, **(args | dict(full_recompute=True)))]
    assert [p - b for p, b in zip(full, full_base)] == pytest.approx([91, 102], rel=1e-12)
    # A graph of the attention captures them: one replay either way (the MoE layers' share
    # leaves float rounding).
    graphed = dict(args, cuda_graphs=frozenset({ATTN}))
    assert [float(x) for x in layer_host_ops(V32, dsa_ops=dsa, **graphed)] == pytest.approx(
        [float(x) for x in layer_host_ops(V32, **graphed)], rel=1e-12)
