"""Softcap, windows and MLA's two head dims in the local pieces (sp_planner.executor.score_mod,
kernels.MathKernel, head_dims.PaddedHeadDims, the reference, the byte contract), each against
dense autograd attention written out here."""

import math

import pytest
import torch

from sp_planner.cost.attention_comm import (
    allgather_bytes_per_layer,
    allgather_reduce_scatter_bytes_per_layer,
    ring_bytes_per_layer,
    ulysses_bytes_per_layer,
)
from sp_planner.executor.config import RunConfig, config_problems
from sp_planner.executor.head_dims import PaddedHeadDims
from sp_planner.executor.kernels import (
    CpuFlashKernel,
    CudaEfficientKernel,
    CudaFlashKernel,
    MathKernel,
    check_kernel,
    select_kernel,
)
from sp_planner.executor.merge import merge_partial
from sp_planner.executor.reference import GlobalInputs, reference_attention, single_device_run
from sp_planner.executor.score_mod import ScoreMods

from .cuda_standins import cuda_ops_on_cpu

S = 24


def _inputs(heads=4, kv_heads=2, d_qk=12, d_v=8, s=S, b=2, seed=0) -> GlobalInputs:
    gen = torch.Generator().manual_seed(seed)
    shapes = ((heads, d_qk), (kv_heads, d_qk), (kv_heads, d_v), (heads, d_v))
    return GlobalInputs(*(torch.randn(b, s, n, d, generator=gen) for n, d in shapes))


def _dense(inputs: GlobalInputs, mods: ScoreMods, dtype=torch.float64):
    """Softmax attention with autograd on the full scores: s -> c*tanh(s/c), causal and window
    masks by position (sliding: q - W < k <= q; chunked: k // W == q // W, k <= q)."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in inputs[:3])
    groups = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2)  # (b, S, h, d) -> (b, h, S, d)
    kh, vh = (t.transpose(1, 2).repeat_interleave(groups, dim=1) for t in (k, v))
    scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mods.softcap is not None:
        scores = mods.softcap * torch.tanh(scores / mods.softcap)
    pos = torch.arange(q.shape[1])
    hidden = pos[None, :] > pos[:, None]
    if mods.window is not None and mods.window_kind == "chunked":
        hidden |= (pos[None, :] // mods.window) != (pos[:, None] // mods.window)
    elif mods.window is not None:
        hidden |= (pos[:, None] - pos[None, :]) >= mods.window
    out = torch.matmul(torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1), vh).transpose(1, 2)
    out.backward(inputs.dout.to(dtype))
    return out.detach(), q.grad, k.grad, v.grad


MODS = {
    "mla": ScoreMods(),
    "softcap": ScoreMods(softcap=1.5),
    "sliding": ScoreMods(window=5),
    "chunked": ScoreMods(window=7, window_kind="chunked"),
    "all": ScoreMods(softcap=2.0, window=3),
}


@pytest.mark.parametrize("rows", [None, 5], ids=["one-chunk", "5-row-chunks"])
@pytest.mark.parametrize("name", sorted(MODS))
def test_reference_matches_dense_autograd(name, rows):
    inputs = _inputs()
    got = reference_attention(inputs, causal=True, rows_per_chunk=rows, mods=MODS[name])
    want = _dense(inputs, MODS[name])
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.shape == b.shape, label  # out, dv at d_v = 8; dq, dk at d_qk = 12
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5, msg=label)


def test_softcap_changes_the_result():
    """The cap is not a no-op at these scales: a run ignoring it would be caught."""
    inputs = _inputs()
    capped = reference_attention(inputs, causal=True, mods=ScoreMods(softcap=1.5))
    plain = reference_attention(inputs, causal=True)
    assert float((capped.dq - plain.dq).abs().max()) > 0.1


@pytest.mark.parametrize("name", sorted(MODS))
def test_math_kernel_with_block_mod_matches_dense_autograd(name):
    inputs = _inputs()
    mods = MODS[name]
    pos = torch.arange(S)
    mod = mods.block(pos, pos)
    scale = 1 / math.sqrt(12)
    out, lse = MathKernel().forward(*inputs[:3], causal=True, scale=scale, mod=mod)
    grads = MathKernel().backward(inputs.dout, *inputs[:3], out, lse, causal=True, scale=scale, mod=mod)
    for label, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), _dense(inputs, mods)):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5, msg=label)


def test_rows_a_window_hides_from_a_block_give_zero_output_and_minus_infinite_lse():
    """A ring block of keys 0..7 seen by queries 8..15 through a 4-token window: rows 8..10 see
    keys 5..7, rows 11..15 none (lse -inf, out 0, not NaN), and the merge keeps the other block's."""
    inputs = _inputs(s=8)
    mod = ScoreMods(window=4).block(torch.arange(8, 16), torch.arange(8))
    out, lse = MathKernel().forward(*inputs[:3], causal=False, scale=0.3, mod=mod)
    assert torch.isfinite(lse[..., :3]).all() and torch.isneginf(lse[..., 3:]).all()
    assert torch.isfinite(out).all() and (out[:, 3:] == 0).all()
    own_out, own_lse = MathKernel().forward(*inputs[:3], causal=True, scale=0.3)  # the diagonal block
    merged_out, merged_lse = merge_partial(own_out, own_lse, out, lse)
    torch.testing.assert_close(merged_out[:, 3:], own_out[:, 3:], atol=0, rtol=0)
    torch.testing.assert_close(merged_lse[..., 3:], own_lse[..., 3:], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d_qk,d_v", [(12, 8), (8, 12)])
def test_cpu_flash_with_padded_head_dims_passes_the_guard(dtype, d_qk, d_v):
    """aten's CPU flash kernel refuses q/k and v of different head dims; zero-padded to one it
    agrees with the math kernel (check_kernel compares forward, LSE and backward)."""
    with pytest.raises(RuntimeError, match="same head size"):
        check_kernel(CpuFlashKernel(), "cpu", dtype, d_qk, d_v)
    check_kernel(PaddedHeadDims(CpuFlashKernel(), d_qk, d_v), "cpu", dtype, d_qk, d_v)


@pytest.mark.parametrize("kernel_type", [CudaFlashKernel, CudaEfficientKernel])
def test_cuda_kernels_take_deepseek_head_dims_zero_padded(kernel_type):
    """The CUDA call paths (on CPU stand-ins for the ops): q/k 192 and v 128 padded to 192, a head
    dim FlashAttention-2 takes; the run's kernel rules check that padded width."""
    with cuda_ops_on_cpu():
        check_kernel(PaddedHeadDims(kernel_type(), 192, 128), "cpu", torch.bfloat16, 192, 128)
    mla = dict(ulysses=1, ring=2, seq_len=64, num_heads=4, num_kv_heads=4, device="cuda", dtype="bfloat16")
    assert config_problems(RunConfig(head_dim=192, v_head_dim=128, **mla)) == []
    assert "head dim 264" in config_problems(RunConfig(head_dim=264, v_head_dim=128, **mla))[0]
    assert config_problems(RunConfig(head_dim=264, softcap=30.0, causal=True, **mla)) == []  # the math kernel


def test_padded_single_device_run_matches_the_reference():
    inputs = _inputs()
    kernel, _ = select_kernel("cpu", torch.float32, "auto", qk_dim=12, v_dim=8)
    got = single_device_run(inputs, causal=True, kernel=kernel, dtype=torch.float32)
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, _dense(inputs, ScoreMods())):
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=1e-5, msg=label)


def test_kernel_selection_for_mods_and_split_head_dims():
    kernel, note = select_kernel("cpu", torch.bfloat16, "auto", qk_dim=192, v_dim=128)
    assert isinstance(kernel, PaddedHeadDims) and "zero-padded to 192" in kernel.name and note is None
    kernel, note = select_kernel("cuda", torch.bfloat16, "auto", qk_dim=128, v_dim=128, mods=True)
    assert isinstance(kernel, MathKernel) and "no logit softcap or local-attention window" in note
    kernel, _ = select_kernel("cpu", torch.float32, "auto", qk_dim=64, v_dim=64)
    assert isinstance(kernel, CpuFlashKernel)


def test_single_device_run_refuses_mods_on_a_kernel_without_them():
    with pytest.raises(ValueError, match="only the math kernel"):
        single_device_run(_inputs(d_v=12), causal=True, kernel=CpuFlashKernel(), dtype=torch.float32,
                          mods=ScoreMods(softcap=30.0))


SHAPE = dict(batch=2, seq_len=96, tp=2, ulysses=2, ring=3)


@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 2), (8, 1)])
def test_byte_contract_moves_k_at_d_qk_and_v_at_d_v(heads, kv_heads):
    """Each tensor's bytes counted on its own, as the executor's call sites do: Q, K at 192, V, O
    at 128. The planner's single MLA head dim (their mean, 160) gives the same totals."""
    eb, b, s, tp, u, r = 2, 2, 96, 2, 2, 3
    q_local, kv_u = heads // tp, max(max(kv_heads // tp, 1), u)  # KV heads replicated up to U
    tokens = b * s // (u * r)
    per_pass = sum(tokens * n * d // u * (u - 1) for n, d in ((q_local, 192), (kv_u, 192), (kv_u, 128),
                                                              (q_local, 128)))
    a2a = ulysses_bytes_per_layer(num_heads=heads, num_kv_heads=kv_heads, head_dim=192, v_head_dim=128,
                                  elem_bytes=eb, **SHAPE)
    assert a2a == 2 * per_pass * eb
    block = b * (s // r) * (kv_u // u)  # one K or V block's tokens x heads on the ring axis
    k_bytes, v_bytes = block * 192, block * 128
    p2p = ring_bytes_per_layer(num_kv_heads=kv_heads, head_dim=192, v_head_dim=128, elem_bytes=eb, **SHAPE)
    assert p2p == 2 * (r - 1) * (k_bytes + v_bytes) * eb + r * (k_bytes + v_bytes) * 4
    gather = allgather_bytes_per_layer(num_kv_heads=kv_heads, head_dim=192, v_head_dim=128, elem_bytes=eb, **SHAPE)
    assert gather == 2 * (r - 1) * (k_bytes + v_bytes) * eb
    scatter = allgather_reduce_scatter_bytes_per_layer(num_kv_heads=kv_heads, head_dim=192, v_head_dim=128, **SHAPE)
    assert scatter == (r - 1) * (k_bytes + v_bytes) * 4
    mean = dict(num_kv_heads=kv_heads, head_dim=160, **SHAPE)
    assert a2a == ulysses_bytes_per_layer(num_heads=heads, elem_bytes=eb, **mean)
    assert p2p == ring_bytes_per_layer(elem_bytes=eb, **mean)
    assert gather == allgather_bytes_per_layer(elem_bytes=eb, **mean)
    assert scatter == allgather_reduce_scatter_bytes_per_layer(**mean)
