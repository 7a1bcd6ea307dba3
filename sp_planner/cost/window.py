"""Sliding-window (local) attention layers: their kernel time and executed FLOPs (vectorized).

A local layer's query attends to the `window_tokens` keys before it (Mistral 7B, arXiv
2310.06825 section 2; Gemma 2, arXiv 2408.00118 section 2). With Ulysses and TP the sequence is
whole on each rank, so a local layer is one flash call on a band of s x W (the sliding-window
kernel skips the tiles outside the band; FlashAttention's window_size): FLOPs 4*b*heads*d*s*W,
timed as a non-causal s x W block at the efficiency of a W-key call. The ring is excluded by the
plan rule window_ring. Unfused attention (cost.kernels) masks the band in its s x s scores, at a
global layer's cost. A chunked local layer (Llama 4) is s/W independent causal squares of W
tokens, one flash call over b x s/W sequences: FLOPs 2*b*heads*d*s*W. The
layer-averaged time and FLOPs blend local and global layers by the model's count of local layers
(ModelSpec.num_local_layers). Model FLOPs (MFU) keep the full-square count (cost.flops).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.attention import AttentionTimes
from sp_planner.cost.attention_kernels import kernel_head_dim
from sp_planner.cost.dropout import has_attention_dropout
from sp_planner.cost.kernels import flash_time_s
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def local_window(model: ModelSpec, seq_len: int) -> int | None:
    """The window when it is shorter than the sequence (else the local layers are full attention)."""
    if model.window is None or model.window.window_tokens >= seq_len:
        return None
    return model.window.window_tokens


def layer_is_local(model: ModelSpec, seq_len: int) -> tuple[bool, ...]:
    """Which decoder layers attend locally at this sequence length: the window's pattern from the
    first layer on, local_layers local then global_layers global (ModelSpec.num_local_layers counts
    the same), none where the window covers the sequence (local_window)."""
    w = model.window
    if w is None or local_window(model, seq_len) is None:
        return (False,) * model.num_layers
    period = w.local_layers + w.global_layers
    return tuple(i % period < w.local_layers for i in range(model.num_layers))


def windowed_attention_times(attn: AttentionTimes, hardware: HardwareProfile, model: ModelSpec, *,
                             seq_len: int, batch, tp, ulysses, ring) -> AttentionTimes:
    """`attn` (full attention per layer) averaged with the local layers' band kernels."""
    window = local_window(model, seq_len)
    # Unfused attention computes the whole square and masks the window in the scores (Transformer
    # Engine's UnfusedDotProductAttention builds the window into its mask, dpa_utils.get_full_mask,
    # backends.py at d0067d0): a local layer costs a global one's.
    if window is None or hardware.efficiency.attention_unfused:
        return attn
    share = model.num_local_layers / model.num_layers
    heads = model.num_heads / (tp * ulysses)
    if model.window is not None and model.window.kind == "chunked":
        # (b, s) -> (b * s/W, W): each chunk a causal sequence of its own.
        band = dict(batch=np.asarray(batch) * (seq_len / window), heads=heads, head_dim=model.head_dim,
                    q_tokens=window, kv_tokens=window, causal_diagonal=np.ones(np.shape(tp), dtype=bool))
    else:
        band = dict(batch=batch, heads=heads, head_dim=model.head_dim, q_tokens=seq_len, kv_tokens=window,
                    causal_diagonal=np.zeros(np.shape(tp), dtype=bool))
    tile = kernel_head_dim(hardware, model)
    drop = has_attention_dropout(model)
    fwd = flash_time_s(hardware, **band, backward=False, kernel_head_dim=tile, attention_dropout=drop)
    bwd = flash_time_s(hardware, **band, backward=True, kernel_head_dim=tile, attention_dropout=drop)
    # Rows with ring > 1 break the window_ring rule; their full-attention times stay as they are.
    sequence_whole = np.asarray(ring) == 1
    return attn._replace(
        fwd_compute_s=np.where(sequence_whole, (1 - share) * attn.fwd_compute_s + share * fwd, attn.fwd_compute_s),
        bwd_compute_s=np.where(sequence_whole, (1 - share) * attn.bwd_compute_s + share * bwd, attn.bwd_compute_s),
    )


def windowed_attention_flops_per_token(model: ModelSpec, seq_len: int, full_flops: float) -> float:
    """Layer-averaged executed attention FLOPs per token: local layers do 4*q*W per query."""
    window = local_window(model, seq_len)
    if window is None or model.window is None:
        return full_flops
    share = model.num_local_layers / model.num_layers
    # Keys per query: the band's W, or W/2 on average inside a causal chunk.
    keys = window / 2 if model.window.kind == "chunked" else window
    return (1 - share) * full_flops + share * 4.0 * model.q_size * keys
