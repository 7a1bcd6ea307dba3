"""Bytes per logit a framework's cross entropy holds at its peak (the last stage's logits memory).

The output layer writes bf16 logits (tokens x vocab / tp on a rank); how many more bytes each logit
costs while the loss runs depends on the framework's loss code, read in each source:
- Megatron-Core since 9634c0e (2024-06-13, "Reduce logit memory pressure by using in-place
  operation"; in core_r0.8.0 and later): VocabParallelCrossEntropy.calculate_logits_max makes one
  fp32 copy (.float()), then subtracts the max, exponentiates and normalizes it in place
  (megatron/core/tensor_parallel/cross_entropy.py), and the backward writes the gradient into it:
  bf16 logits + one fp32 copy, 6 B. Megatron-LM before 55817ec (2022-09-27) did the same
  (megatron/mpu/cross_entropy.py: vocab_parallel_logits.sub_(...) on the caller's output.float()).
- Megatron between 55817ec (2022-09-27, "Correct some merge errors": the subtraction became
  `vocab_parallel_logits = vocab_parallel_logits - logits_max...`) and 9634c0e: the caller's fp32
  copy (compute_language_model_loss: logits.float()) and the subtraction's fp32 result coexist in
  the forward: 10 B (e.g. Megatron-LM 2196398, 2024-04-12, which the USP paper ran).
- PyTorch's own cross entropy as torchtitan (loss_fn: F.cross_entropy(pred.flatten(0, 1).float(),
  ...)) and Hugging Face models (transformers loss_utils ForCausalLMLoss: logits.float(), then
  F.cross_entropy) call it: the bf16 logits, their fp32 copy and log_softmax's fp32 output, which
  it saves for the backward: 10 B.
- flash-attn's fused cross entropy (flash_attn.losses.cross_entropy.CrossEntropyLoss, llm-foundry's
  default loss_fn 'fused_crossentropy' for MPT): the kernel reads the bf16 logits and keeps them
  with an fp32 log-sum-exp per row; its backward writes a new bf16 gradient (inplace_backward
  False by default): 4 B.
"""

from __future__ import annotations

MEGATRON_LOGIT_BYTES = 6
MEGATRON_OUT_OF_PLACE_LOGIT_BYTES = 10
TORCH_CROSS_ENTROPY_LOGIT_BYTES = 10
FLASH_ATTN_FUSED_LOGIT_BYTES = 4
