"""The embedding's work on the first pipeline stage per micro-batch, beyond its TP collectives
(vectorized): what cost.step and the simulator (sim.step_work) count there, forward and backward.

- The word table's gradient passes (cost.embedding_grad), backward.
- A learned position table (ModelSpec.position_embedding "learned_absolute"; cost.rope):
  forward, the add of the looked-up positions to the word embedding, read 2 + 2 and write 2 bytes
  an element of the rank's tokens x h (megatron/model/language_model.py Embedding.forward at
  6985e58 line 183; megatron/core/models/common/embeddings/language_model_embedding.py at
  f2e5db402c line 103), on every TP rank whole (before any scatter to the sequence-parallel
  region); its backward passes the gradient through. Backward, the table's gradient passes as the
  word table's (cost.embedding_grad: PyTorch's zero-fill and the DDP hook's main_grad add) over
  its max_position_embeddings x h elements, whole on every TP rank (a torch.nn.Embedding, not
  vocab-parallel: language_model_embedding.py line 58), never tied. The table is taken at the
  sequence length: Megatron requires max_position_embeddings >= seq_length (arguments.py at
  d98e8a64dd line 1354) and the corpus's scripts set them equal (examples/sc21/CONFIG.sh at
  6985e58: both 2048; examples/gpt3/train_gpt3_175b_distributed.sh at f2e5db402c: both 2048), as
  sp-plan's Megatron flags do. The lookups themselves are not counted, as the word embedding's
  is not.
- The embedding dropout (cost.dropout), forward and backward.
Where they run: the first stage, once per micro-batch (the embedding's forward before the first
layer, its backward after the first layer's; cost.embedding_grad); at pp 1 that stage is also the
loss stage and its work counts with the loss stage's (stage_embedding_s).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sp_planner.cost.activations import sequence_parallel_region_tokens
from sp_planner.cost.dropout import embedding_dropout_bytes_per_token
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.embedding_grad import embedding_grad_s, table_grad_bytes_per_element
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import LEARNED_ABSOLUTE, ModelSpec

# The position add: read the word and the position embedding, write the sum.
POSITION_ADD_BYTES = 3 * BF16_BYTES


class EmbeddingWork(NamedTuple):
    """Seconds per micro-batch on the first stage, per candidate."""

    fwd_s: np.ndarray  # the position add and the embedding dropout
    bwd_s: np.ndarray  # the word and position tables' gradient passes and the dropout's backward


def position_table_bytes(model: ModelSpec, *, seq_len: int, grad_bytes: int, wrapper: str | None) -> float:
    """HBM bytes of the learned position table's gradient passes per micro-batch (0 without one):
    its seq_len x h elements at the word table's untied bytes an element (module docstring)."""
    if model.position_embedding != LEARNED_ABSOLUTE:
        return 0.0
    per_element = table_grad_bytes_per_element(grad_bytes=grad_bytes, wrapper=wrapper, tied_on_stage=False)
    return float(per_element * seq_len * model.hidden_size)


def embedding_work(model: ModelSpec, hardware: HardwareProfile, *, tp, pp, tokens, seq_len: int, grad_bytes: int,
                   wrapper: str | None, sequence_parallel: bool = True) -> EmbeddingWork:
    """The first stage's embedding work per micro-batch (module docstring); `tokens`: the rank's
    tokens of a micro-batch (micro-batch x sequence / cp), `wrapper` as cost.embedding_grad."""
    h = model.hidden_size
    tokens = np.asarray(tokens, dtype=np.float64)
    add = POSITION_ADD_BYTES * tokens * h if model.position_embedding == LEARNED_ABSOLUTE else 0.0
    drop_fwd, drop_bwd = embedding_dropout_bytes_per_token(model)
    region = sequence_parallel_region_tokens(tokens, tp, sequence_parallel)  # after the scatter, with SP
    fwd = memory_pass_time_s(hardware, add + drop_fwd * region)
    table = position_table_bytes(model, seq_len=seq_len, grad_bytes=grad_bytes, wrapper=wrapper)
    word = embedding_grad_s(model, hardware, tp=tp, pp=pp, grad_bytes=grad_bytes, wrapper=wrapper)
    bwd = word + memory_pass_time_s(hardware, table + drop_bwd * region)
    shape = np.broadcast_shapes(np.shape(tp), np.shape(pp), np.shape(tokens))
    return EmbeddingWork(fwd_s=np.broadcast_to(fwd, shape), bwd_s=np.broadcast_to(bwd, shape))


def stage_embedding_s(work: EmbeddingWork, pp) -> tuple[np.ndarray, np.ndarray]:
    """The embedding's work each way together, split as cost.step and the simulator count it: (the
    loss stage's, at pp 1 where it is the only stage; the first stage's, with pp > 1), 0 in the other."""
    both = work.fwd_s + work.bwd_s
    single = np.asarray(pp) == 1
    return np.where(single, both, 0.0), np.where(single, 0.0, both)
