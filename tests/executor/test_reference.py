"""The chunked fp32 reference (sp_planner.executor.reference) against plain autograd attention,
its bounded workspace, and the same-dtype run of the math kernel."""

import math

import pytest
import torch

from sp_planner.executor.budget import REFERENCE_LIVE_SCORE_MATRICES, reference_chunk_rows
from sp_planner.executor.case import FP32_TOLERANCE
from sp_planner.executor.kernels import MathKernel
from sp_planner.executor.memory import TensorBytesTracker
from sp_planner.executor.reference import GlobalInputs, reference_attention, single_device_run


def _autograd_attention(inputs: GlobalInputs, causal: bool, dtype=torch.float32, scale: float | None = None):
    """Softmax attention on the full S x S scores with autograd gradients (the former reference),
    at `scale` (1/sqrt(d) when None)."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in inputs[:3])
    groups = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2)  # (b, S, h, d) -> (b, h, S, d)
    kh, vh = (t.transpose(1, 2).repeat_interleave(groups, dim=1) for t in (k, v))  # -> (b, h, S, d)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * (scale or 1 / math.sqrt(q.shape[-1]))
    if causal:
        s = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), vh).transpose(1, 2)  # (b, h, S, d) -> (b, S, h, d)
    out.backward(inputs.dout.to(dtype))
    return out.detach(), q.grad, k.grad, v.grad


def _inputs(heads, kv_heads, s=50, d=16, b=2, seed=0) -> GlobalInputs:
    gen = torch.Generator().manual_seed(seed)
    return GlobalInputs(*(torch.randn(b, s, n, d, generator=gen) for n in (heads, kv_heads, kv_heads, heads)))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("rows", [None, 1, 7, 50], ids=["budget", "1", "7", "50"])
def test_matches_autograd_reference(causal, heads, kv_heads, rows):
    """S = 50: 7-row chunks leave a last chunk of 1 row; the budget gives one chunk here."""
    inputs = _inputs(heads, kv_heads)
    got = reference_attention(inputs, causal=causal, rows_per_chunk=rows)
    want = _autograd_attention(inputs, causal)
    # Both are fp32 with different summation orders; the results are O(1) to O(10).
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-6, msg=name)
    # Against fp64: well inside the 1e-5 an fp32 run is held to (case.FP32_TOLERANCE), so the
    # reference's own rounding cannot decide a check.
    exact = _autograd_attention(inputs, causal, torch.float64)
    for a, e in zip(got, exact):
        torch.testing.assert_close(a.double(), e, atol=FP32_TOLERANCE / 10, rtol=FP32_TOLERANCE / 10)


@pytest.mark.parametrize("causal", [False, True])
def test_a_given_softmax_scale_replaces_one_over_sqrt_d(causal):
    """Gemma-2-27B's 144**-0.5 where d = 128 would give 128**-0.5; here 0.6 against 1/sqrt(16) = 0.25."""
    inputs = _inputs(8, 2)
    got = reference_attention(inputs, causal=causal, rows_per_chunk=7, scale=0.6)
    exact = _autograd_attention(inputs, causal, torch.float64, scale=0.6)
    for a, e in zip(got, exact):  # the scores are 2.4x larger than at 0.25: fp32 rounding reaches 4e-6
        torch.testing.assert_close(a.double(), e, atol=FP32_TOLERANCE, rtol=0)
    default = reference_attention(inputs, causal=causal, rows_per_chunk=7)
    assert float((default.out - got.out).abs().max()) > 0.1  # the scale is not lost on the way
    math_out = single_device_run(inputs, causal=causal, kernel=MathKernel(), dtype=torch.float32, scale=0.6)
    torch.testing.assert_close(math_out.out, got.out, atol=FP32_TOLERANCE / 10, rtol=0)  # other chunks


def test_causal_first_row_sees_only_the_first_key():
    inputs = _inputs(4, 2, s=9)
    out = reference_attention(inputs, causal=True, rows_per_chunk=4).out
    # query head h uses KV head h // 2; row 0 attends to key 0 only, so O[0] = V[0].
    torch.testing.assert_close(out[:, 0], inputs.v[:, 0].repeat_interleave(2, dim=1), atol=0, rtol=0)


def test_inputs_are_not_modified():
    inputs = _inputs(2, 1, s=5, b=1)
    before = [t.clone() for t in inputs]
    reference_attention(inputs, causal=True, rows_per_chunk=1)  # 1-row chunks reshape to views
    for a, b in zip(inputs, before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_workspace_is_bounded_by_the_budget(causal):
    """S = 2048, 4 heads: one full score matrix is 64 MiB; a 1 MiB budget gives 16-row chunks."""
    b, s, heads, d = 1, 2048, 4, 16
    budget = 2**20
    rows = reference_chunk_rows(batch=b, heads=heads, seq_len=s, budget_bytes=budget)
    assert rows == 2**20 // (REFERENCE_LIVE_SCORE_MATRICES * 4 * 2048 * 4) == 16
    with TensorBytesTracker() as tracker:
        inputs = _inputs(heads, heads, s=s, d=d, b=b)  # created inside, so tracked (the tracker counts
        reference_attention(inputs, causal=causal, rows_per_chunk=rows)  # views of older storages too)
    q_bytes = kv_bytes = b * s * heads * d * 4  # 512 KiB each (MHA)
    inputs_bytes = 2 * q_bytes + 2 * kv_bytes  # Q, K, V, dO: 2 MiB
    # O and dQ; fp32 K, V copies, dK, dV accumulators and one K-sized matmul result before it is added.
    results_bytes = 2 * q_bytes + 5 * kv_bytes
    chunk_rows = 6 * b * rows * heads * d * 4
    assert tracker.peak_bytes <= inputs_bytes + results_bytes + budget + chunk_rows + 2**16  # + the mask
    assert tracker.peak_bytes < 8 * 2**20  # versus 64 MiB for one S x S score matrix


def test_chunk_rows_for_long_sequences():
    # 128K tokens, 32 heads: one score row of a chunk is 32 x 128K x 4 B = 16 MiB, two live: 16 rows.
    assert reference_chunk_rows(batch=1, heads=32, seq_len=131072) == 16
    assert reference_chunk_rows(batch=1, heads=32, seq_len=16384) == 128
    assert reference_chunk_rows(batch=1, heads=4, seq_len=64) == 64  # small shapes: one chunk
    assert reference_chunk_rows(batch=8, heads=64, seq_len=4 * 2**20) == 1  # never zero


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_single_device_math_run_is_the_math_kernel_in_the_run_dtype(dtype):
    """The tolerance path of the math kernel runs the chunked code on the rounded inputs instead
    of materializing S x S scores; it must give the math kernel's results and so its error."""
    inputs = _inputs(8, 2, s=24)
    got = single_device_run(inputs, causal=True, kernel=MathKernel(), dtype=dtype)
    q, k, v, dout = (t.to(dtype) for t in inputs)
    scale = 1 / math.sqrt(q.shape[-1])
    out, lse = MathKernel().forward(q, k, v, causal=True, scale=scale)
    want = (out, *MathKernel().backward(dout, q, k, v, out, lse, causal=True, scale=scale))
    reference = reference_attention(inputs, causal=True)
    for name, a, b, ref in zip(("out", "dq", "dk", "dv"), got, want, reference):
        assert a.dtype == dtype, name
        # An O that rounds the other way changes D = rowsum(dO * O) and so the gradients: one ulp
        # at the largest value (the ulp term of case._tolerances) bounds the difference.
        ulp = torch.finfo(dtype).eps * float(ref.abs().max())
        torch.testing.assert_close(a.float(), b.float(), atol=ulp, rtol=0, msg=name)
        err_got, err_want = (float((x.float() - ref).abs().max()) for x in (a, b))
        assert abs(err_got - err_want) <= ulp, name
