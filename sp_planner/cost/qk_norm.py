"""QK normalization (ModelSpec.qk_norm): the per-head RMSNorm of queries and keys before RoPE, as
Megatron-Core with Transformer Engine runs it (Qwen3, Gemma 3; HF Qwen3Attention q_norm/k_norm).

What runs, per layer and micro-batch (Megatron-LM d98e8a64dd megatron/core/transformer/attention.py;
TransformerEngine d0067d0 transformer_engine/pytorch/ops/basic/rmsnorm.py):
  - get_query_key_value_tensors splits the fused QKV output (SplitAlongDim, line 1913); the query's
    reshape to [s, b, heads, head_dim] (line 1918) already copies it, the key stays a strided view.
  - q_layernorm and k_layernorm (lines 1933 and 1936) are TENorm, TE's RMSNorm over head_dim
    (line 1714). Its forward makes its input contiguous (rmsnorm.py line 189: a copy of the key
    view, none for the query), reads it and writes the normalized tensor, and saves the contiguous
    input and one fp32 reciprocal standard deviation per row, a row being one token's head (line
    209), where without the norm the query's copy and the key view are freed after RoPE (TE's fused
    RoPE saves none of its input).
  - Backward (op_backward): reads the saved input and the incoming gradient, writes the input's
    gradient (and the head_dim-sized weight gradient).

Costs added (a token's q_size query and kv_size key elements, all TP ranks together):
  HBM traffic, forward:   norm read + write of q and k (2 + 2 bytes each) and the key's copy
                          (2 + 2): 4 q + 8 k bytes; the backward is timed as twice the forward,
                          as every memory-bound op of the layer (cost.gemm_work).
  saved activations:      the bf16 inputs (q + k elements) and an fp32 value per query and key
                          head, on the rank's heads (the norm runs before Ulysses' all-to-all).
  host ops (cost.host):   forward 3 launches (two norms, the key's copy), backward 2 (the norms'
                          backward kernels, counted one a norm as the layer's other norms are);
                          two more TE module calls forward (cost.te_host). All in the attention part
                          a CUDA graph of "attn" captures.
Not counted: the norms' weights (2 x head_dim a layer, under 0.01% of any model here; their
gradients' step-end all-reduce over tp is cost.replicated_grads'); keys replicated over tp ranks
beyond the KV heads (the traffic counts each key head once).

torchtitan runs them on the same layout: v0.2.2 models/qwen3/infra/parallelize.py lines 263-264
(SequenceParallel(sequence_dim=2) on the colwise wq/wk output) and b5bcd76c models/qwen3/sharding.py
lines 82-91 (weight Replicate, input and output sharded by heads) normalize each rank's own heads,
with no collective, so the traffic and saved bytes above split over tp as Megatron's do (torch
2.13's _fused_rms_norm saves the input and an fp32 rstd a row too). Its replicated weights'
gradients are Partial over TP: FSDP2 all-reduces each, two calls a layer (cost.partial_tp_grads).
The key's copy is counted for it too: b5bcd76c's fused QKV (Qwen3's default, fuse_qkv) copies q, k
and v contiguous before the norm (models/common/attention.py lines 783-793); v0.2.2's separate wk
copies none (4 bytes a key element high there, left).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.attention_comm import kv_heads_per_tp_rank
from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.specs.model import ModelSpec

# Forward HBM bytes per element of the bf16 queries and keys: the norm reads and writes (2 + 2);
# the key's contiguous copy too.
NORM_BYTES_PER_ELEM = 2 * BF16_BYTES
COPY_BYTES_PER_ELEM = 2 * BF16_BYTES
# Host launches per layer (module docstring) and TE module calls per layer forward.
QK_NORM_FORWARD_OPS, QK_NORM_BACKWARD_OPS = 3, 2
QK_NORM_TE_CALLS = 2


def qk_norm_bytes_per_token(model: ModelSpec) -> float:
    """Forward HBM bytes of the QK norm per token of one layer, all TP ranks together (0 without it)."""
    if not model.qk_norm:
        return 0.0
    return float(NORM_BYTES_PER_ELEM * (model.q_size + model.kv_size) + COPY_BYTES_PER_ELEM * model.kv_size)


def qk_norm_saved_bytes(model: ModelSpec, tokens, tp):
    """Bytes the QK norm saves for backward per layer on one rank holding `tokens` tokens (after the
    context split) of the rank's query heads (num_heads / tp) and key heads (replicated where tp
    exceeds them): the bf16 inputs and an fp32 value per head and token."""
    if not model.qk_norm:
        return np.zeros(np.broadcast(np.asarray(tokens), np.asarray(tp)).shape)
    heads = model.num_heads / np.asarray(tp, dtype=np.float64) + kv_heads_per_tp_rank(model.num_kv_heads, tp)
    return np.asarray(tokens, dtype=np.float64) * heads * (BF16_BYTES * model.head_dim + FP32_BYTES)


def qk_norm_host_ops(model: ModelSpec) -> tuple[int, int]:
    """(forward, backward) host launches the QK norm adds to a layer (0, 0 without it)."""
    return (QK_NORM_FORWARD_OPS, QK_NORM_BACKWARD_OPS) if model.qk_norm else (0, 0)


def qk_norm_te_calls(model: ModelSpec) -> int:
    """TE module calls the QK norm adds to a layer's forward."""
    return QK_NORM_TE_CALLS if model.qk_norm else 0
