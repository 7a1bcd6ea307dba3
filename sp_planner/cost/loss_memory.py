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
  False by default): 4 B, and 6 B of HBM traffic a logit (the forward kernel reads the logits; the
  backward kernel reads them and writes the gradient: flash_attn/ops/triton/cross_entropy.py).
- Transformer Engine's fused cross entropy (parallel_cross_entropy, Megatron
  --cross-entropy-loss-fusion --cross-entropy-fusion-impl te; NVIDIA/TransformerEngine v2.9
  pytorch/cross_entropy.py and pytorch/triton/cross_entropy.py): an online-softmax kernel reads the
  bf16 logits and keeps three fp32 numbers a row, a second kernel reads them again and writes the
  gradient into the same bf16 tensor, which the function saves; its backward scales it in place.
  2 B a logit, and 10 B of HBM traffic a logit (read; read and write; read and write), against the
  unfused loss's 60 (cost.gemm_work), timed at the profile's memory-bound rate: Liger-Kernel's
  benchmark of the same online-softmax kernel (linkedin/Liger-Kernel benchmark/data/
  all_benchmark_data.csv, A100-SXM4-80GB, 16384 x 131072 fp32 logits, 12 B a logit forward in
  15.01 ms) moves 0.84 of HBM. So up to v2.17: 01bbe3e ("Fix the numerical issue with the Fused CE
  loss", 2026-07-09, in v2.18) keeps the gradient in a new fp32 tensor, 6 B a logit.
"""

from __future__ import annotations

MEGATRON_LOGIT_BYTES = 6
MEGATRON_OUT_OF_PLACE_LOGIT_BYTES = 10
TORCH_CROSS_ENTROPY_LOGIT_BYTES = 10
FLASH_ATTN_FUSED_LOGIT_BYTES = 4
FLASH_ATTN_FUSED_LOSS_TRAFFIC_BYTES = 6
# Transformer Engine's fused cross entropy before v2.18 (module docstring): memory and traffic.
TE_FUSED_INPLACE_LOGIT_BYTES = 2
TE_FUSED_INPLACE_LOSS_TRAFFIC_BYTES = 10
