"""Seeded global inputs and the fp32 single-device reference every rank checks its shard against.

The reference is exact softmax attention in fp32 with explicit gradients, computed in chunks of
query rows so that its memory is bounded at any sequence length: one chunk's score-sized fp32
matrices stay within a byte budget (sp_planner.executor.budget). Per chunk, with S the scaled
scores of the chunk's rows against every key it may see:
  lse = logsumexp(S);  P = exp(S - lse);  O = P V
  D = rowsum(dO * O);  dP = dO V^T;  dS = P * (dP - D)
  dQ = dS K * scale;   dK += dS^T Q * scale;   dV += P^T dO
(FlashAttention-2, Dao 2023, Alg. 1-2: the same formulas; here in plain fp32 matmuls, no kernel
under test is called). A chunk's rows are complete once their whole key range is seen, so the
forward and backward of a chunk run in one pass. GQA: each KV head's query group is stacked into
the row dimension, so the matmuls with K and V sum the group's gradients directly.

Score modifications (sp_planner.executor.score_mod): a logit softcap c replaces S by
c * tanh(S / c) and multiplies dS by 1 - tanh^2(S / c); a window masks keys by global position
beside the causal mask. MLA: Q, K and dQ, dK have head dim d_qk, V, O, dO and dV d_v. The scale is
the run's (RunConfig.scale: Gemma 2/3's query_pre_attn_scalar**-0.5, DeepSeek-V3's YaRN one),
1/sqrt(d_qk) when none is given.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sp_planner.executor.budget import REFERENCE_WORKSPACE_BYTES, reference_chunk_rows
from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernels import AttentionKernel, MathKernel
from sp_planner.executor.score_mod import ScoreMods

NO_MODS = ScoreMods()


class Tensors(NamedTuple):
    out: torch.Tensor
    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor


class GlobalInputs(NamedTuple):
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor


def global_inputs(cfg: RunConfig, device: torch.device) -> GlobalInputs:
    """Full (b, S, heads, d) fp32 tensors, identical on every rank (CPU generator, then moved):
    q, k at head_dim, v and dout at v_dim (MLA's v_head_dim)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (cfg.batch, cfg.seq_len)
    heads, kv, d_qk, d_v = cfg.heads_per_tp_rank, cfg.kv_heads_per_tp_rank, cfg.head_dim, cfg.v_dim
    q, k, v, dout = (torch.randn(*shape, n, d, generator=gen) for n, d in ((heads, d_qk), (kv, d_qk), (kv, d_v),
                                                                           (heads, d_v)))
    return GlobalInputs(*(t.to(device) for t in (q, k, v, dout)))


def _grouped(x: torch.Tensor, kv_heads: int, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a (b, S, h, d) tensor as fp32 (b, h_kv, g*c, d): query head
    j*g + i (which uses KV head j, as repeat_interleave) is row block i of KV head j."""
    b, _, h, d = x.shape
    c = stop - start
    x = x[:, start:stop].float().reshape(b, c, kv_heads, h // kv_heads, d)  # (b, c, h, d) -> (b, c, h_kv, g, d)
    return x.permute(0, 2, 3, 1, 4).reshape(b, kv_heads, (h // kv_heads) * c, d)  # -> (b, h_kv, g*c, d)


def _ungrouped(x: torch.Tensor, heads: int, rows: int) -> torch.Tensor:
    """Inverse of _grouped: (b, h_kv, g*c, d) -> (b, c, h, d)."""
    b, kv_heads, _, d = x.shape
    x = x.reshape(b, kv_heads, heads // kv_heads, rows, d)  # (b, h_kv, g*c, d) -> (b, h_kv, g, c, d)
    return x.permute(0, 3, 1, 2, 4).reshape(b, rows, heads, d)  # -> (b, c, h, d)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, *, causal: bool,
                      rows_per_chunk: int | None = None, budget_bytes: int = REFERENCE_WORKSPACE_BYTES,
                      out_dtype: torch.dtype = torch.float32, mods: ScoreMods = NO_MODS,
                      scale: float | None = None) -> Tensors:
    """Attention forward and backward of (b, S, h, d_qk) q, (b, S, h_kv, d_qk) k, (b, S, h_kv, d_v)
    v and (b, S, h, d_v) dout in fp32 math, query rows in chunks (rows_per_chunk, else the most
    that fit budget_bytes), with the score modifications `mods` and softmax scale `scale`
    (1/sqrt(d_qk) when None).

    out_dtype other than fp32 mimics a same-dtype run: O is rounded to it before D = rowsum(dO*O)
    (the kernel's backward sees the stored output) and all results are returned in it.
    """
    b, s, heads, d = q.shape
    kv_heads, groups, d_v = k.shape[2], heads // k.shape[2], v.shape[-1]
    rows = rows_per_chunk or reference_chunk_rows(batch=b, heads=heads, seq_len=s, budget_bytes=budget_bytes,
                                                  softcap=mods.softcap is not None)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kh, vh = (x.float().transpose(1, 2).contiguous() for x in (k, v))  # (b, S, h_kv, d) -> (b, h_kv, S, d)
    out = torch.empty(b, s, heads, d_v, dtype=out_dtype, device=q.device)
    dq = torch.empty(b, s, heads, d, dtype=out_dtype, device=q.device)
    dk, dv = torch.zeros_like(kh), torch.zeros_like(vh)  # fp32 accumulators, (b, h_kv, S, d)
    for start in range(0, s, rows):
        stop = min(start + rows, s)
        keys = stop if causal else s  # later keys are masked for every row of the chunk
        k_c, v_c = kh[:, :, :keys], vh[:, :, :keys]
        # Out of place: _grouped may return a view of the caller's tensor.
        q_c = _grouped(q, kv_heads, start, stop) * scale  # S = (Q*scale) K^T: scaled rows, not scaled S
        exps = torch.matmul(q_c, k_c.transpose(-1, -2))  # S: (b, h_kv, g*c, keys)
        tanh = None
        if mods.softcap is not None:  # written out here, not score_mod's (the kernels'), to stay independent
            tanh = exps.div_(mods.softcap).tanh_()  # tanh(S / c), kept for the backward
            exps = tanh * mods.softcap  # the capped scores
        query_pos = torch.arange(start, stop, device=q.device).repeat(groups)  # row -> position, (g*c,)
        if causal:  # only the chunk's diagonal block has keys after a row's position
            later = torch.arange(start, keys, device=q.device) > query_pos[:, None]  # (g*c, keys - start)
            exps[..., start:].masked_fill_(later, float("-inf"))
        outside = mods.window_mask(query_pos, torch.arange(keys, device=q.device))  # (g*c, keys) or None
        if outside is not None:
            exps.masked_fill_(outside, float("-inf"))
        exps.sub_(exps.amax(dim=-1, keepdim=True)).exp_()  # E = exp(S - m): every row sees its own key, m finite
        inv_sum = exps.sum(dim=-1, keepdim=True).reciprocal_()  # 1/l, so P = E / l and lse = m + log(l)
        o_c = torch.matmul(exps, v_c).mul_(inv_sum)  # O = P V: (b, h_kv, g*c, d_v)
        o_seen = o_c.to(out_dtype).float()
        # 1/l is folded into dO (c x d) instead of P (c x keys): with dO' = dO / l,
        # dV += E^T dO' = P^T dO and dS = E * (dO' V^T - rowsum(dO' * O)) = P * (dP - D).
        do_c = _grouped(dout, kv_heads, start, stop) * inv_sum
        delta = (do_c * o_seen).sum(dim=-1, keepdim=True)  # D / l: (b, h_kv, g*c, 1)
        dv[:, :, :keys] += torch.matmul(exps.transpose(-1, -2), do_c)  # sums the query group
        dscores = torch.matmul(do_c, v_c.transpose(-1, -2))  # dP / l: (b, h_kv, g*c, keys)
        dscores.sub_(delta).mul_(exps)  # dS of the capped scores
        if tanh is not None:
            dscores.mul_(tanh.square_().neg_().add_(1))  # dS_raw = dS_capped * (1 - tanh^2(S / c))
        del exps, tanh
        dk[:, :, :keys] += torch.matmul(dscores.transpose(-1, -2), q_c)  # q_c already holds Q * scale
        dq_c = torch.matmul(dscores, k_c).mul_(scale)
        del dscores
        out[:, start:stop] = _ungrouped(o_seen, heads, stop - start)
        dq[:, start:stop] = _ungrouped(dq_c, heads, stop - start)
    dk, dv = (x.transpose(1, 2).to(out_dtype) for x in (dk, dv))  # (b, h_kv, S, d) -> (b, S, h_kv, d)
    return Tensors(out, dq, dk, dv)


def reference_attention(inputs: GlobalInputs, *, causal: bool, rows_per_chunk: int | None = None,
                        mods: ScoreMods = NO_MODS, scale: float | None = None) -> Tensors:
    """Exact softmax attention and its gradients in fp32 (independent of the kernels under test)."""
    return chunked_attention(*inputs, causal=causal, rows_per_chunk=rows_per_chunk, mods=mods, scale=scale)


def single_device_run(inputs: GlobalInputs, *, causal: bool, kernel: AttentionKernel,
                      dtype: torch.dtype, mods: ScoreMods = NO_MODS, scale: float | None = None) -> Tensors:
    """The same kernel on the full tensors in the run dtype: the error a bf16/fp16 run may have.

    The math kernel materializes S x S scores, so it is replaced here by the chunked code on the
    same dtype-rounded inputs with the same fp32 arithmetic and dtype-rounded stored output (the
    only kernel a run with score modifications uses)."""
    q, k, v, dout = (t.to(dtype) for t in inputs)
    if isinstance(kernel, MathKernel):
        return chunked_attention(q, k, v, dout, causal=causal, out_dtype=dtype, mods=mods, scale=scale)
    if mods.active:
        raise ValueError(f"kernel {kernel.name} takes no score modifications; only the math kernel does")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    out, lse = kernel.forward(q, k, v, causal=causal, scale=scale)
    dq, dk, dv = kernel.backward(dout, q, k, v, out, lse, causal=causal, scale=scale)
    return Tensors(out, dq, dk, dv)
