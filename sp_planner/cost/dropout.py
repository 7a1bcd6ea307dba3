"""Dropout (ModelSpec.hidden_dropout, attention_dropout): the HBM passes and saved masks of a model
trained with it, as Megatron-LM runs it. A probability of 0 runs none of them: PyTorch's dropout
returns its input untouched at p = 0 and takes its fused kernel only for 0 < p < 1
(aten/src/ATen/native/Dropout.cpp at 92426d6, `_dropout_impl` and `is_fused_kernel_acceptable`).

Hidden dropout, twice a layer: Megatron's fused bias-dropout-add (--bias-dropout-fusion, on by
default) scripts `residual + dropout(x + bias)` into one kernel (megatron/model/transformer.py
bias_dropout_add_fused_train at 6985e58 and d898a8991d; megatron/core/fusions/fused_bias_dropout.py
at f2e5db402c). TorchScript differentiates dropout on CUDA as `mask = rand_like(input) < 1 - p`, a
bool drawn inside the fused kernel, and `grad * mask / (1 - p)` in backward (torch/csrc/jit/runtime/
symbolic_script.cpp `dropout`, `AD_fused_dropout_backward`); torch.compile, Megatron's jit_fuser
from torch 2.2 (megatron/core/jit.py at f2e5db402c), is taken to keep the same bool mask, as its
partitioner does not recompute random ops by default. Beyond the residual add the layer
already counts (cost.gemm_work): forward, the mask written (1 B an element); backward, a kernel of
its own where the add's gradient would pass through: read the gradient and the mask, write the
gradient (2 + 1 + 2 B). They run on the hidden state after the TP reduce-scatter: split over the TP
ranks with sequence parallelism, on every token of each TP rank without (Korthikanti et al. 2022,
arXiv 2205.05198, section 4.2.2).

Embedding dropout, once per micro-batch on the first stage: Megatron's embedding applies
torch.nn.Dropout(hidden_dropout) to its output (megatron/model/language_model.py Embedding at
6985e58 line 191; megatron/core/models/common/embeddings/language_model_embedding.py at
f2e5db402c lines 123-135, after the scatter to the sequence-parallel region where there is one).
Eager PyTorch's fused dropout reads the input and writes the output and a bool mask (2 + 2 + 1 B);
its backward reads the gradient and the mask and writes the gradient (2 + 1 + 2 B).

Attention dropout: unfused core attention's passes over the probabilities are cost.kernels'
(UNFUSED_DROPOUT_*). FlashAttention and cuDNN draw the mask inside the kernel and draw it again in
backward (Philox state saved, no mask): nothing stored, and their time with dropout is not
modelled, for want of a benchmark of either kernel with dropout against itself without on the
GPUs the corpus runs (the profiles' curves are measured without dropout).

Saved for backward (Korthikanti et al. 2022 section 4.1, 34sbh + 5as^2b a layer: the two hidden
dropouts' masks are sbh of the 34, the attention dropout's mask as^2b and output 2as^2b of the
5): the hidden masks (1 B an element each) with the layer's activations, kept under selective
recompute and freed under full recompute (Megatron's checkpoint restores the RNG state and draws
them again); the embedding's mask on the first stage for each micro-batch in flight
(megatron/training/theoretical_memory_usage.py at d98e8a64dd, "Dropout in embedding layer").
"""

from __future__ import annotations

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.specs.model import ModelSpec

MASK_BYTES = 1  # a bool (TorchScript's `rand_like < 1 - p`; native_dropout's mask)
HIDDEN_DROPOUTS_PER_LAYER = 2  # after the attention's out-projection and after the MLP
# The fused bias-dropout-add beyond its residual add (module docstring), bytes an element.
BIAS_DROPOUT_ADD_FWD_BYTES = MASK_BYTES
BIAS_DROPOUT_ADD_BWD_BYTES = BF16_BYTES + MASK_BYTES + BF16_BYTES
# Eager torch dropout on the embedding's output, bytes an element.
EMBEDDING_DROPOUT_FWD_BYTES = BF16_BYTES + BF16_BYTES + MASK_BYTES
EMBEDDING_DROPOUT_BWD_BYTES = BF16_BYTES + MASK_BYTES + BF16_BYTES


def has_hidden_dropout(model: ModelSpec) -> bool:
    return model.hidden_dropout > 0


def has_attention_dropout(model: ModelSpec) -> bool:
    return model.attention_dropout > 0


def hidden_dropout_bytes_per_token(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) HBM bytes of one layer's hidden dropouts per token of the hidden state
    (0, 0 without): the caller spreads the tokens as the sequence-parallel region runs them."""
    if not has_hidden_dropout(model):
        return 0.0, 0.0
    elements = HIDDEN_DROPOUTS_PER_LAYER * model.hidden_size
    return float(BIAS_DROPOUT_ADD_FWD_BYTES * elements), float(BIAS_DROPOUT_ADD_BWD_BYTES * elements)


def hidden_dropout_saved_bytes_per_token(model: ModelSpec) -> float:
    """Bytes of one layer's hidden dropout masks per token of the hidden state (0 without)."""
    return float(HIDDEN_DROPOUTS_PER_LAYER * MASK_BYTES * model.hidden_size) if has_hidden_dropout(model) else 0.0


def embedding_dropout_bytes_per_token(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) HBM bytes of the embedding's dropout per token (0, 0 without)."""
    if not has_hidden_dropout(model):
        return 0.0, 0.0
    h = model.hidden_size
    return float(EMBEDDING_DROPOUT_FWD_BYTES * h), float(EMBEDDING_DROPOUT_BWD_BYTES * h)


def embedding_dropout_saved_bytes_per_token(model: ModelSpec) -> float:
    """Bytes of the embedding dropout's mask per token (0 without)."""
    return float(MASK_BYTES * model.hidden_size) if has_hidden_dropout(model) else 0.0
