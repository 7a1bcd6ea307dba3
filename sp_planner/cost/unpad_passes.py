"""llm-foundry's flash-attn path (attn_impl flash): the unpad and pad passes its flash_attn_fn
runs around flash-attn's variable-length kernel even when nothing is padded, memory-bound HBM
traffic beside the layer's other memory-bound ops (cost.gemm_work.elementwise_bytes_per_token).

What runs, per layer and micro-batch (llm-foundry 5e85bd6, 2024-01-06, the MPT large-scale
benchmarks' commit, llmfoundry/models/layers/attention.py; flash-attn v2.4.2, 1a2c3e8c,
flash_attn/bert_padding.py):
  - GroupedQueryAttention.forward (lines 606-618) splits the fused Wqkv output into query, key and
    value views (qkv.split on dim 2: rows of q_size and kv_size elements, strided, no copy; MPT's
    defaults run no clip_qkv and no qk_ln, layers/blocks.py lines 24-25, and the benchmark YAMLs
    set neither). With flash-attn 2 it passes should_repeat_kv_for_gqa False (line 671): K and V
    are not repeated.
  - flash_attn_fn (lines 216-370): no sequence ids (attn_uses_sequence_id False, blocks.py line
    28: attention_mask_in_length None), so it takes the all-ones key_padding_mask (lines 271-273,
    or the batch's all-ones attention_mask, modeling_mpt.py lines 378-379) and calls
    bert_padding.unpad_input on the query, the key and the value (lines 280-289), then
    flash_attn_varlen_func (lines 349-362), then bert_padding.pad_input on its output (lines
    367-369). The rearranges between them are views.
  - unpad_input (bert_padding.py lines 98-122): `(b s) ...` is a view of the split (its batch
    stride is s x its row stride); IndexFirstAxis.forward (lines 10-19) torch.gathers every row:
    reads the tensor and writes a contiguous copy (2 + 2 bytes an element). Its backward (lines
    22-35) writes torch.zeros of the full size, then scatter_ reads the gradient and writes it in
    (2 + 2 + 2).
  - pad_input (lines 197-209): IndexPutFirstAxis.forward (lines 43-53) writes torch.zeros of the
    output, then `output[indices] = values` reads the kernel's output and writes it in (2 + 2 + 2);
    its backward (lines 56-61) gathers the gradient's rows, `grad_output[indices]` (2 + 2).

Bytes per token of one layer (bf16; q_size = heads x head_dim, kv_size = KV heads x head_dim):
  forward:  gathers of q, k, v 4 (q_size + 2 kv_size), pad 6 q_size
  backward: zeros and scatters of dq, dk, dv 6 (q_size + 2 kv_size), pad's gather 4 q_size
(MPT, q_size = kv_size = h: 18h forward, 22h backward). Where a padded kernel (every other path
here) would take the split views and write its output in place, these passes are all extra. The
forward ones run again in backward under full recompute (Composer checkpoints whole MPT blocks),
as the layer's other memory-bound ops (cost.gemm_work): they ride with the forward.

Not counted: the int64 indices and the bool mask: per token and layer 1 B for the mask, about
10 B per unpad_input (the mask read by sum and nonzero, the index written) and 8 B per index
read by each gather, scatter and index_put, about 63 B forward and 32 B backward, 0.17% and 0.07%
of the counted bytes at MPT-1B's h = 2048 (less for wider models). Their host syncs: unpad_input
calls torch.nonzero (which syncs with the host on CUDA, torch.nonzero's documentation) and
`.max().item()` (line 110), two syncs a call, six a layer forward, six more under full recompute;
cost.host has no per-sync cost to price them with (docs/cost-model.md, stop 49). Nor the extra
activation the layer keeps without recompute (flash-attn saves its unpadded output, out_proj the
padded copy: one more q_size of bf16 a token).

llm-foundry's attn_impl triton (the Triton port, cost.attention_kernels.TRITON_PORT; v0.3.0
attention.py lines 300-421, flash_attn_triton.py lines 800-835) takes the split views as they are
(`stride(-1) == 1`, no copy) and writes its output in place: nothing here. Its backward's
`dq.copy_(dq_accum)` (flash_attn_triton.py line 720) is the kernel's own fp32 accumulator
conversion, as flash-attn's, inside the kernel's measured time.
"""

from __future__ import annotations

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.specs.model import ModelSpec

# Bytes each pass moves per element of the bf16 tensor (module docstring): a gather (IndexFirstAxis
# forward, IndexPutFirstAxis backward) reads the rows and writes the copy; a padded buffer is
# written as zeros, then the rows are scattered into it (scatter_, index_put_: read, write).
GATHER_BYTES_PER_ELEM = 2 * BF16_BYTES
PAD_BYTES_PER_ELEM = BF16_BYTES + 2 * BF16_BYTES


def unpad_bytes_per_token(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) HBM bytes of flash_attn_fn's unpad and pad passes per token of one layer,
    all TP ranks together (module docstring)."""
    qkv = model.q_size + 2 * model.kv_size
    out = model.q_size  # the kernel's output, heads x head_dim a token
    return (float(GATHER_BYTES_PER_ELEM * qkv + PAD_BYTES_PER_ELEM * out),
            float(PAD_BYTES_PER_ELEM * qkv + GATHER_BYTES_PER_ELEM * out))
