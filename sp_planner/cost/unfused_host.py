"""Transformer Engine's unfused attention's host ops (cost.host): the PyTorch ops and kernel calls
UnfusedDotProductAttention issues from Python for a layer's core attention per micro-batch, in
place of the flash kernel's calls the dense count holds (vectorized over candidates).

Counted, as cost.host counts, one op per op or kernel call the host issues (views, reshapes and
torch.empty launch nothing: not counted), at TransformerEngine d0067d0
transformer_engine/pytorch/attention/dot_product_attention/ (backends.py
UnfusedDotProductAttention._forward, lines 414-788, unless named), with Megatron's bf16 causal
self-attention in sbhd, no padding mask, no bias, the vanilla softmax and no FP8 emulation:
Forward:
- utils.py get_full_mask (lines 1723-1870, every call): two int32 aranges and their difference,
  swa_left and swa_right (mask - window[0], mask + window[1]), then logical_not((swa_left <= 0) &
  ~(swa_right < 0)): <=, <, ~, &, logical_not: 10;
- the scores, torch.baddbmm (alpha the softmax scale, beta 0): 1;
- softmax.py FusedScaleMaskSoftmax (lines 271-383): where its kernel runs (cost.kernels
  te_torch_softmax false: is_kernel_available, lines 296-329: 16 < keys < 16384, keys a multiple
  of 8, b x heads on the rank a multiple of 4), scaled_masked_softmax_fwd, 1; else
  forward_torch_softmax: inp.float(), the logical_or of the mask with the cached causal one
  (_get_default_causal_mask, built once a run: not counted), masked_fill_, softmax, .bfloat16():
  5; a local (sliding-window) layer's mask is "arbitrary" (get_full_mask's change_type), so no
  logical_or: 4;
- torch Dropout, where the model's attention_dropout is above 0 (native_dropout, one kernel; at
  p = 0 it returns its input: cost.dropout): 1;
- torch.bmm with V: 1, and the output's permute(2, 0, 1, 3).contiguous(): 1.
Backward (autograd's nodes; derivatives.yaml: baddbmm's batch1 and batch2 gradients are each a
bmm then maybe_multiply by alpha, a multiply where alpha != 1; the empty input needs none):
- the output copy's and the views' gradients pass through (no kernel); bmm: 2;
- dropout (native_dropout_backward): 1, where forward ran one;
- the fused softmax's scaled_masked_softmax_bwd: 1; the torch softmax's: the casts' gradients
  (2), _softmax_backward_data, masked_fill of the gradient: 4;
- baddbmm: 2 bmm and 2 multiplies by the scale: 4.
Checked by tracing a line-by-line copy of this path on torch 2.13 (CPU, TorchDispatchMode):
forward 14 non-view aten ops (18 with the torch softmax), backward 7 (10), dropout +3 / +1 on
CPU, which splits dropout into bernoulli_, div_ and mul where CUDA launches native_dropout once.
These replace the flash kernel's calls (cost.dsa_host CORE_ATTENTION_FORWARD_KERNELS and
CORE_ATTENTION_BACKWARD_OPS: 1 forward, 3 backward), as the dense count holds them; Megatron's
query layout copy stays. GQA's K/V expansion is cost.unfused_gqa's. Not counted: the per-call
Python of TE's DotProductAttention dispatch (common to every backend).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dropout import has_attention_dropout
from sp_planner.cost.dsa_host import CORE_ATTENTION_BACKWARD_OPS, CORE_ATTENTION_FORWARD_KERNELS
from sp_planner.cost.kernels import te_torch_softmax
from sp_planner.specs.model import ModelSpec

MASK_BUILD_OPS = 10  # get_full_mask's aranges, difference, window offsets and logic
SCORE_GEMM_FORWARD_OPS, SCORE_GEMM_BACKWARD_OPS = 1, 2 + 2  # baddbmm; two bmm, two scale multiplies
CONTEXT_GEMM_FORWARD_OPS, CONTEXT_GEMM_BACKWARD_OPS = 1, 2  # bmm with V
OUTPUT_COPY_OPS = 1  # permute(...).contiguous()
DROPOUT_FORWARD_OPS, DROPOUT_BACKWARD_OPS = 1, 1
FUSED_SOFTMAX_FORWARD_OPS, FUSED_SOFTMAX_BACKWARD_OPS = 1, 1
# The torch softmax: .float(), logical_or with the causal mask, masked_fill_, softmax, .bfloat16();
# backward the two casts, softmax's and masked_fill's gradients.
TORCH_SOFTMAX_FORWARD_OPS, TORCH_SOFTMAX_BACKWARD_OPS = 5, 4
CAUSAL_MASK_OR_OPS = 1  # the logical_or a local layer's "arbitrary" mask skips


def unfused_host_ops(model: ModelSpec, *, kv_tokens, attn_batches, unfused: bool):
    """(forward, backward) host ops TE's unfused attention adds to the dense layer's count per
    micro-batch (module docstring), at `kv_tokens` keys (the whole sequence: no context parallelism
    runs it) and `attn_batches` = b x heads on the rank, the model's average layer (its local
    layers' share skipping the causal logical_or on the torch softmax); (0, 0) where `unfused` is
    False. Llama-3-8B at 8K, b x heads 32, no dropout: 10 + 1 + 1 + 1 + 1 - 1 = 13 forward, 2 + 1 +
    4 - 3 = 4 backward; at 32K, or 8K with b x heads 2, 17 and 7."""
    torch = te_torch_softmax(kv_tokens, attn_batches)
    local_share = model.num_local_layers / model.num_layers
    softmax_fwd = np.where(torch, TORCH_SOFTMAX_FORWARD_OPS - local_share * CAUSAL_MASK_OR_OPS,
                           FUSED_SOFTMAX_FORWARD_OPS)
    softmax_bwd = np.where(torch, TORCH_SOFTMAX_BACKWARD_OPS, FUSED_SOFTMAX_BACKWARD_OPS)
    drop = has_attention_dropout(model)
    fwd = (MASK_BUILD_OPS + SCORE_GEMM_FORWARD_OPS + softmax_fwd + (DROPOUT_FORWARD_OPS if drop else 0)
           + CONTEXT_GEMM_FORWARD_OPS + OUTPUT_COPY_OPS - CORE_ATTENTION_FORWARD_KERNELS)
    bwd = (CONTEXT_GEMM_BACKWARD_OPS + (DROPOUT_BACKWARD_OPS if drop else 0) + softmax_bwd
           + SCORE_GEMM_BACKWARD_OPS - CORE_ATTENTION_BACKWARD_OPS)
    on = 1.0 if unfused else 0.0
    return on * fwd, on * bwd
