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
- PyTorch's own cross entropy as Hugging Face models call it, under DeepSpeed (ALST) and yunchang
  (transformers 4.51.3, the oldest ALST takes, and 4.57.1 alike: models/llama/modeling_llama.py
  lines 837-845 @4.51.3 return the bf16 logits in the output beside the loss; loss/loss_utils.py
  ForCausalLMLoss line 51 @4.51.3 (55 @4.57.1) makes an fp32 copy, fixed_cross_entropy line 35
  (36) runs F.cross_entropy on it). Forward: the bf16 logits, the copy and log_softmax's fp32
  output, saved for the backward, 10 B. Backward: nll_loss_backward's fp32 gradient and
  _log_softmax_backward_data's beside the saved output, 12 B fp32, and the bf16 logits, which the
  training loop keeps in the model's output until its backward (DeepSpeed's ALST tutorial loop,
  docs/_tutorials/ulysses-alst-sequence-parallelism.md @292ccd6: `outputs = model(**batch)`, the
  loss from outputs.logits, then model.backward(loss); yunchang's runs assumed alike): 14 B.
  Traced on CPU (torch 2.13 profiler allocation events, 2048 x 8192 logits, the 4.51.3 function):
  10.000 B a logit live at the forward's peak, 14.000 at _log_softmax_backward_data; 12.000 where
  the loop lets the output go first (HF Trainer.compute_loss returns the loss alone, trainer.py
  line 3836 @4.51.3).
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

The peak is the larger of the loss's forward and its backward, which runs at once (the saved
activations all live): torchtitan, line by line (torch 2.13 cf30153; torchtitan 0.2.2 73a0e69 and
the 0.3.0 wheel, whose components/loss.py is pytorch/torchtitan 5ab3a0f's):
- F.cross_entropy on the fp32 copy (tp 1, both releases; 0.2.2 components/loss.py lines 22-27, 0.3.0
  lines 60-65): forward the bf16 logits, the copy and log_softmax's output, 10 B; backward
  nll_loss_backward's fp32 gradient and _log_softmax_backward_data's beside the saved output, 12 B
  fp32, while 0.2.2's trainer has let the logits go (train.py line 541, `del pred`): 12 B. Under
  pipeline parallelism the stage keeps its output, the bf16 logits, until that micro-batch's
  backward (torch distributed/pipelining/stage.py lines 913-916, popped at line 966): 14 B.
- 0.2.x under TP: torch's loss_parallel (distributed/tensor/parallel/loss.py), on the fp32 copy of
  the local V/tp columns. _log_softmax forward: x - x_max (line 212), its exp (line 213) and
  shifted - logsumexp (line 218) beside the bf16 logits and the copy, 14 B; the fused backward
  (_nll_loss_and_log_softmax_backward): zeros_like of the saved log-softmax (line 470), then
  (grad_input + exp(x)) * grad_output (line 518), four fp32 tensors, 16 B, and 18 B at pp > 1.
- 0.3.x: every llama3 config function sp-plan emits (config_registry.py lines 187-191, 260-264,
  312-316; llama3_8b_mxfp8 builds on llama3_8b) wraps the loss in ChunkedLossWrapper, 8 chunks
  (components/loss.py line 610): the hidden states are split along the local sequence (line 676;
  contiguous() copies them, 2 B an element, where the micro-batch is above 1 and the split is not
  contiguous), and each chunk runs lm_head, the loss and its backward before the next (lines
  748-766), its bf16 logits held by the loop until the next chunk's replace them. The chunks'
  input gradients gather into an fp32 buffer of the whole local hidden states (GradAccumulator,
  line 498, dtype line 708; the norm's output is replicated over TP, so tokens x h on every rank),
  cast to bf16 at the end (line 777) while that buffer and the last chunk's logits are held. Per
  chunk logit: at tp 1 F.cross_entropy's backward beside the chunk's bf16 logits, 14 B; at tp > 1
  (spmd_backend "spmd_types", the default, config/configs.py lines 163-165) torchtitan's
  _LossParallelCrossEntropy (lines 52-58): forward x - max, its exp, the log-probabilities (lines
  156-161) beside the bf16 logits and the copy, 14 B; backward zeros_like (line 206) and
  (grad_input + exp(log_probs)) * grad_output (line 219) beside the saved log-probabilities and the
  bf16 logits, 18 B.
A compiled loss's fused kernels are not counted, the eager count standing for them: 0.3.0's
llama3_405b (CompileConfig.components' default ["model", "loss"], config/configs.py line 298) and
the float8/MXFP8 plans whose 0.2.x TOML compiles model and loss (flags.torchtitan_v02.compiles).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES, FP32_BYTES
from sp_planner.specs.base import FrozenModel

MEGATRON_LOGIT_BYTES = 6
MEGATRON_OUT_OF_PLACE_LOGIT_BYTES = 10
# Hugging Face's ForCausalLMLoss backward (module docstring): three fp32 tensors beside the bf16
# logits the loop holds.
TORCH_CROSS_ENTROPY_LOGIT_BYTES = 3 * FP32_BYTES + BF16_BYTES
FLASH_ATTN_FUSED_LOGIT_BYTES = 4
FLASH_ATTN_FUSED_LOSS_TRAFFIC_BYTES = 6
# Transformer Engine's fused cross entropy before v2.18 (module docstring): memory and traffic.
TE_FUSED_INPLACE_LOGIT_BYTES = 2
TE_FUSED_INPLACE_LOSS_TRAFFIC_BYTES = 10


class LossMemory(FrozenModel):
    """What a framework's cross entropy holds at its peak (module docstring)."""

    # Bytes per logit, over the loss's forward and backward: on whole-vocabulary logits (tp 1), and
    # at every tp where vocab_parallel_logit_bytes is None (Megatron's loss is vocab-parallel at tp 1).
    logit_bytes: int
    # Where tp > 1 runs another, vocab-parallel, loss (torchtitan): its bytes per logit.
    vocab_parallel_logit_bytes: int | None = None
    # More per logit at pp > 1, where the pipeline stage keeps its output, the bf16 logits, through
    # the loss's backward and the trainer without pipelining frees them before it (torchtitan 0.2.x).
    pipeline_output_logit_bytes: int = 0
    # Sequence chunks whose logits it computes and frees one at a time: torchtitan 0.3.x's
    # ChunkedLossWrapper where above 1 (the one chunked loss modelled), with its fp32 buffer of the
    # hidden states' gradient.
    num_chunks: int = 1


MEGATRON_LOSS = LossMemory(logit_bytes=MEGATRON_LOGIT_BYTES)
TORCH_CROSS_ENTROPY_LOSS = LossMemory(logit_bytes=TORCH_CROSS_ENTROPY_LOGIT_BYTES)
FLASH_ATTN_FUSED_LOSS = LossMemory(logit_bytes=FLASH_ATTN_FUSED_LOGIT_BYTES)
TE_FUSED_INPLACE_LOSS = LossMemory(logit_bytes=TE_FUSED_INPLACE_LOGIT_BYTES)
MEGATRON_OUT_OF_PLACE_LOSS = LossMemory(logit_bytes=MEGATRON_OUT_OF_PLACE_LOGIT_BYTES)
# torchtitan (module docstring): F.cross_entropy's backward, 12 B (fp32); loss_parallel's, 16 B; the
# bf16 logits beside them at pp > 1.
TORCHTITAN_V02_LOSS = LossMemory(logit_bytes=12, vocab_parallel_logit_bytes=16,
                                 pipeline_output_logit_bytes=BF16_BYTES)
# 0.3.x: each chunk's backward beside its bf16 logits, F.cross_entropy's 12 + 2 and
# _LossParallelCrossEntropy's 16 + 2, eight chunks.
CHUNKED_LOSS_CHUNKS = 8
TORCHTITAN_CHUNKED_LOSS = LossMemory(logit_bytes=14, vocab_parallel_logit_bytes=18, num_chunks=CHUNKED_LOSS_CHUNKS)
# ChunkedLossWrapper's gradient of the hidden states: an fp32 buffer, cast to bf16 at the end.
CHUNK_GRAD_BUFFER_BYTES = FP32_BYTES
CHUNK_GRAD_RESULT_BYTES = BF16_BYTES


def loss_peak_bytes(loss: LossMemory, *, tokens, vocab_size: int, hidden_size: int, tp, pp, micro_batch):
    """Bytes a loss stage's rank holds for its loss at the peak (vectorized; module docstring):
    the logits it holds at once (`tokens` (micro-batch x sequence / cp) x vocab / tp, a chunk's
    share where chunked) at the loss's bytes per logit; a chunked loss adds its fp32 gradient
    buffer of tokens x h and, at micro-batch > 1, the chunks' bf16 copies, and peaks at the larger
    of a chunk's loss and the end, where the buffer's bf16 cast and the last chunk's logits are
    held."""
    tp = np.asarray(tp, dtype=np.float64)
    per_logit = np.asarray(loss.logit_bytes)  # an array once the degrees choose (np.where)
    if loss.vocab_parallel_logit_bytes is not None:
        per_logit = np.where(tp > 1, loss.vocab_parallel_logit_bytes, per_logit)
    if loss.pipeline_output_logit_bytes:
        per_logit = per_logit + np.where(np.asarray(pp) > 1, loss.pipeline_output_logit_bytes, 0)
    held = per_logit * tokens * vocab_size / tp / loss.num_chunks
    if loss.num_chunks == 1:
        return held
    hidden = np.asarray(tokens, dtype=np.float64) * hidden_size
    copies = np.where(np.asarray(micro_batch) > 1, BF16_BYTES * hidden, 0.0)
    end = CHUNK_GRAD_RESULT_BYTES * hidden + BF16_BYTES * tokens * vocab_size / tp / loss.num_chunks
    return CHUNK_GRAD_BUFFER_BYTES * hidden + copies + np.maximum(held, end)
