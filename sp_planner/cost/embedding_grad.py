"""The word embedding's weight gradient: full-table memory passes every micro-batch (vectorized).

A micro-batch's tokens touch a few thousand rows of the (vocab / tp) x h table, but the backward
writes and reads the whole table, at the profile's memory-bound rate:
- PyTorch's embedding backward allocates the gradient as `at::zeros({num_weights, h})` in the
  gradient's dtype, bf16, before it scatters the tokens' rows into it (pytorch/pytorch
  aten/src/ATen/native/cuda/EmbeddingBackwardKernel.cu at 01b9dc5, embedding_backward_cuda_kernel;
  Embedding.cu's path for up to 3072 indices likewise): one 2-byte write per element. Megatron's
  VocabParallelEmbedding calls F.embedding on its vocab shard (megatron/core/tensor_parallel/
  layers.py at f2e5db402c and d98e8a6), so the table is vocab / tp rows.
- Megatron's DDP (and Megatron-FSDP) hook adds that bf16 gradient into the fp32 main gradient
  (distributed_data_parallel.py _make_param_hook at f2e5db402c line 224, d98e8a6 line 578:
  `param.main_grad.add_(param.grad.data)`; the layers' GEMMs accumulate into main_grad inside
  the weight-gradient GEMM and skip it): read g + 2, write g for gradient width g. NeMo's apex
  DistributedFusedAdam does the same add (cost.grad_buffer). torch FSDP copies the gradient into
  its reduce-scatter input, which cost.grad_buffer counts for every parameter already.
- Input and output tied on one stage (pp 1): the output layer's gradient meets the embedding's.
  Megatron fuses the output layer's weight gradient into main_grad and hands autograd a dummy
  `torch.zeros` of the table (zero_out_wgrad, set by LanguageModule for a shared weight on one
  stage: language_module.py at f2e5db402c line 67; layers.py lines 508-514), 2 bytes written;
  autograd then sums the two bf16 gradients of the one parameter (read 2 + 2, write 2) before the
  hook. Without the fusion (torch frameworks) the output GEMM's bf16 gradient is summed the same
  way (6 bytes). With pp > 1 the output layer holds its own copy on the last stage, whose fused
  gradient needs no dummy zeros (torch.empty) and no sum.
Where they run: the stage that holds the embedding, the first (Megatron builds it only where
pre_process, which get_model sets on the first pipeline rank's first virtual stage: training.py at
d98e8a6 line 2391, gpt_model.py line 173), once per micro-batch, after its first layer's backward (the
interleaved schedule's chunk 0). At pp 1 that stage is also the loss stage, so cost.step counts them
with the loss stage's work (cost.embedding_work, with the embedding's other passes); with pp > 1
they are the first stage's work beyond its layers, beside the embedding's TP collectives
(cost.layer_times first_tp_s): they lengthen its micro-batch where it paces and the fill and
drain (the bubble) where it does not. With pp > 1 a tied table is a copy on
each end: the first stage's takes no output gradient (12 B an element, as untied), and the last
stage's output layer fuses its weight gradient into main_grad with a torch.empty dummy
(zero_out_wgrad is set at pp 1 only; layers.py at d98e8a6 lines 737-761) that the DDP hook skips
(grad_added_to_main_grad; distributed_data_parallel.py at d98e8a6 line 576): no pass there. The
step-end all-reduce of the two copies' main_grad over the embedding group
(finalize_model_grads.py _allreduce_word_embedding_grads at d98e8a6) is cost.tied_embedding's.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

ZERO_FILL_BYTES = BF16_BYTES  # at::zeros of the table's gradient (autograd's, bf16)
TIED_SUM_BYTES = 3 * BF16_BYTES  # autograd adds the output layer's gradient: read 2 + 2, write 2
# Wrappers whose per-parameter hook adds the embedding's bf16 gradient into the main gradient.
MAIN_GRAD_ADD_WRAPPERS = frozenset({"megatron", "apex"})


def embedding_grad_bytes_per_element(*, grad_bytes: int, main_grad_add: bool, tied_on_stage, fused_output_wgrad: bool):
    """HBM bytes per table element per micro-batch (module docstring): the zero-fill, the main
    gradient's add where the wrapper makes it, and where input and output are tied on the stage the
    output's dummy zeros (Megatron's fused output gradient) and autograd's sum."""
    tied = np.asarray(tied_on_stage, dtype=bool)
    own = ZERO_FILL_BYTES + (2 * grad_bytes + BF16_BYTES if main_grad_add else 0)
    tied_extra = TIED_SUM_BYTES + (ZERO_FILL_BYTES if fused_output_wgrad else 0)
    return own + np.where(tied, tied_extra, 0)


def table_grad_bytes_per_element(*, grad_bytes: int, wrapper: str | None, tied_on_stage):
    """embedding_grad_bytes_per_element under a data-parallel `wrapper` (cost.grad_buffer.GradSync;
    None: the main gradient's add is not counted, as the wrapper's passes are not): Megatron's
    wrappers add into the main gradient and fuse the output layer's weight gradient (module
    docstring). Any embedding table's: the word table's here, a learned position table's
    (cost.embedding_work)."""
    megatron = wrapper in MAIN_GRAD_ADD_WRAPPERS
    return embedding_grad_bytes_per_element(grad_bytes=grad_bytes, main_grad_add=megatron,
                                            tied_on_stage=tied_on_stage, fused_output_wgrad=megatron)


def embedding_grad_s(model: ModelSpec, hardware: HardwareProfile, *, tp, pp, grad_bytes: int, wrapper: str | None):
    """Seconds per micro-batch of the embedding's gradient passes on the first stage (with pp 1,
    the only one), per candidate; `wrapper` as table_grad_bytes_per_element."""
    elements = model.vocab_size / np.asarray(tp, dtype=np.float64) * model.hidden_size
    per_element = table_grad_bytes_per_element(grad_bytes=grad_bytes, wrapper=wrapper,
                                               tied_on_stage=model.tie_word_embeddings & (np.asarray(pp) == 1))
    return memory_pass_time_s(hardware, per_element * elements)

