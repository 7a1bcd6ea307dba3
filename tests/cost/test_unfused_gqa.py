"""Transformer Engine's unfused attention's GQA K/V expansion (cost.unfused_gqa), by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.activations import activation_bytes_per_layer
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.cost.ring_steps import ring_step_compute
from sp_planner.cost.unfused_gqa import gqa_copy_bytes, gqa_forward_input_bytes, gqa_host_ops, gqa_saved_delta_bytes
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE
from sp_planner.specs.workload import Workload

MIB = 2**20
LLAMA = load_model("llama3-8b")  # 32 heads, 8 KV heads of 128
LLAMA_MHA = LLAMA.model_copy(update={"num_kv_heads": 32})


def test_the_expansion_moves_both_tensors_each_way_only_under_gqa():
    # 4 query heads and 1 KV head of 128 on 2048 tokens: K is 262,144 elements, expanded 1,048,576;
    # K and V each read once and written expanded: 2 x 2 x 1,310,720 = 5,242,880 bytes (5 MiB).
    q, kv = 2048 * 4 * 128, 2048 * 128
    assert gqa_copy_bytes(q_elems=q, kv_elems=kv, heads=4, kv_heads=1, elem_bytes=2) == 5 * MIB
    assert gqa_copy_bytes(q_elems=q, kv_elems=q, heads=4, kv_heads=4, elem_bytes=2) == 0
    # Saved beyond the kv-head K and V: 3 more heads each, 2 x 2 x 2048 x 3 x 128 = 3 MiB; the
    # kv-head originals held through the forward: 2 x 2 x 2048 x 128 = 1 MiB.
    assert gqa_saved_delta_bytes(tokens=2048, heads=4, kv_heads=1, head_dim=128) == 3 * MIB
    assert gqa_forward_input_bytes(tokens=2048, heads=4, kv_heads=1, head_dim=128) == 1 * MIB
    assert gqa_saved_delta_bytes(tokens=2048, heads=4, kv_heads=4, head_dim=128) == 0
    assert gqa_forward_input_bytes(tokens=2048, heads=4, kv_heads=4, head_dim=128) == 0


def test_unfused_gqa_saves_what_its_mha_twin_saves():
    # Llama 3 8B at tp 8, 2048 tokens: 4 query heads and 1 KV head a rank. Unfused, baddbmm and
    # bmm keep K and V at the 4 query heads: the same bytes as a 32-KV-head twin, 3 MiB more than
    # flash attention's kv-head K and V.
    workload = Workload(seq_len=2048, global_batch=8)
    kw = dict(tp=np.array([8, 8, 8]), ulysses=np.array([1, 1, 1]), ring=np.array([1, 1, 1]),
              micro_batch=np.array([1, 1, 1]),
              recompute=np.array([RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL]))
    gqa, gqa_work = activation_bytes_per_layer(LLAMA, workload, unfused=True, **kw)
    mha, mha_work = activation_bytes_per_layer(LLAMA_MHA, workload, unfused=True, **kw)
    flash, _ = activation_bytes_per_layer(LLAMA, workload, unfused=False, **kw)
    assert gqa[0] == mha[0]
    # Flash saves the fp32 lse (4 x 2048 x 4 heads = 32 KiB) the unfused kernel does not, and no
    # scores (2 bytes each of 4 x 2048^2, 32 MiB, at 2048 keys' fused softmax, no dropout).
    assert gqa[0] - flash[0] == 3 * MIB + 32 * MIB - 32 * 1024
    # Selective recompute saves the checkpoint's kv-head K and V (3 MiB less than the twin's) and
    # rebuilds the expanded ones beside them: 4 MiB more working than the twin's.
    assert mha[1] - gqa[1] == 3 * MIB and gqa_work[1] - mha_work[1] == 4 * MIB
    # Full recompute keeps the layer input either way and rebuilds the same expanded K and V.
    assert gqa[2] == mha[2] and gqa_work[2] == mha_work[2]
    # With nothing recomputed the forward's 1 MiB of kv-head originals hides under the backward's
    # score buffers (6 against 4 bytes a score, 16 Mi scores): the twins' working is the same.
    assert gqa_work[0] == mha_work[0]


def test_step_zero_of_unfused_attention_pays_the_copy_each_way(hardware):
    # 4 query heads and 2 KV heads of 16 on 1024 tokens: Q 65,536 elements, K 32,768; the copy
    # and the gradient's reduction each move 2 x 2 x (65,536 + 32,768) = 393,216 bytes.
    unfused = with_attention_kernel(hardware, UNFUSED)
    shape = dict(batch=np.array([1.0]), heads=4, head_dim=16, block=np.array([1024.0]), elem_bytes=2,
                 causal=True, zigzag=np.array([True]), ring_impl=YUNCHANG_RING)
    gqa = ring_step_compute(unfused, kv_heads=2, **shape)
    mha = ring_step_compute(unfused, kv_heads=4, **shape)
    copy = float(memory_pass_time_s(hardware, 393_216))
    assert gqa.first_fwd_s[0] - mha.first_fwd_s[0] == pytest.approx(copy)
    assert gqa.first_bwd_s[0] - mha.first_bwd_s[0] == pytest.approx(copy)
    # Flash attention takes the kv-head K and V as they are: no copy.
    flash_gqa = ring_step_compute(hardware, kv_heads=2, **shape)
    flash_mha = ring_step_compute(hardware, kv_heads=4, **shape)
    assert flash_gqa.first_fwd_s[0] == flash_mha.first_fwd_s[0]


def test_the_expansion_launches_a_copy_each_way_per_tensor():
    # repeat_interleave's clone forward and expand's sum backward, for K and for V: 2 + 2 launches a
    # layer under GQA on the unfused path; none at equal heads, none on a flash kernel.
    fwd, bwd = gqa_host_ops(np.array([4.0, 4.0, 4.0]), np.array([1.0, 4.0, 2.0]), unfused=True)
    assert fwd.tolist() == bwd.tolist() == [2, 0, 2]
    fwd, bwd = gqa_host_ops(4.0, 1.0, unfused=False)
    assert (int(fwd), int(bwd)) == (0, 0)
