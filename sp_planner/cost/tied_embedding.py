"""The tied word embedding's gradient all-reduce between a pipeline's two ends (vectorized).

With pp > 1 a model whose output layer shares the input embedding (ModelSpec.tie_word_embeddings;
Megatron's GPT unless --untie-embeddings-and-output-weights) holds the (vocab / tp) x h table on
the first stage and a copy as the output layer on the last (cost.params). Once a step Megatron
sums the two copies' gradients over the embedding group, the first and the last rank of each
pipeline (parallel_state.py default_embedding_ranks at d98e8a6; [ranks[0], ranks[-1]] at
f2e5db402c), with one blocking all-reduce of the weight's main_grad
(finalize_model_grads.py _allreduce_word_embedding_grads / _allreduce_embedding_grad at d98e8a6,
at f2e5db402c the same call; training.py train_step at 6985e58 for the 2021 runs):
- its size: the whole table's main_grad in the gradient buffer's width (cost.states grad_bytes:
  fp32 under grad_reduce_in_fp32, the 2021 runs' fp16 buffer otherwise), the distributed
  optimizer's reduce-scatter leaving the buffer whole; Megatron-FSDP hands it the main_grad
  DTensor's local shard (`orig_grad._local_tensor` where use_megatron_fsdp, d98e8a6), 1 / (dp_shard
  x cp) of the table, where it shards gradients (ZeRO-2/3);
- when it runs: in finalize_model_grads after every chunk's finish_grad_sync (the data-parallel
  gradient sync waited for) and the TP norm all-reduce, before the optimizer step, on the compute
  stream, so nothing hides it: it is on the step's critical path, as the first stage ends its
  backward last under 1F1B and the last stage waits for it there.
The learned position table is not all-reduced: its group is the first stage alone
(default_position_embedding_ranks, d98e8a6), and at f2e5db402c
_allreduce_position_embedding_grads runs only with an encoder-decoder split rank.
Megatron-Bridge and NeMo's Llama recipes untie the output layer; torchtitan refuses weight tying
with pipeline parallelism (models/common/decoder.py at b5bcd76) and sp-plan's DeepSpeed and
yunchang plans have no pipeline, so only tied Megatron-style runs pay it.

The link: the pipeline axis is the outermost (sp_planner.layout), so the two ends are (pp - 1) x
its stride apart. Inside a node when the whole pipeline is; otherwise on different nodes, one
member a node, each end driving its own NIC (cost.links.ring_alpha_beta_s with r = 1).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.cost.fsdp import shard_group_size
from sp_planner.cost.links import INTRA, group_link, ring_collective_time_s
from sp_planner.cost.states import TrainingStates
from sp_planner.layout import axis_stride
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# The first and the last rank of a pipeline (parallel_state.default_embedding_ranks, d98e8a6).
EMBEDDING_GROUP_SIZE = 2


def tied_grad_bytes(model: ModelSpec, c, states: TrainingStates):
    """Bytes of main gradient each end of a pipeline all-reduces once a step (module docstring):
    (vocab / tp) x h x grad_bytes, a 1 / (dp_shard x cp) shard where the framework shards
    gradients; 0 for an untied model without MTP (embedding_group_syncs) or without a pipeline."""
    elements = model.vocab_size / np.asarray(c.tp, dtype=np.float64) * model.hidden_size
    sharded = np.asarray(c.zero) >= states.grad_shard_stage
    elements = elements / np.where(sharded, shard_group_size(c), 1)
    return np.where(embedding_group_syncs(model) & (np.asarray(c.pp) > 1), states.grad_bytes * elements, 0.0)


def embedding_group_syncs(model: ModelSpec) -> bool:
    """Whether the pipeline's two ends all-reduce the word embedding's gradient: a tied output
    layer, or multi-token prediction, whose depths on the last stage look up their own copy of the
    table (cost.mtp; finalize_model_grads.py lines 146 and 164-239 at d98e8a6 sum the copies
    whenever mtp_num_layers is set, tied or not)."""
    return model.tie_word_embeddings or model.mtp_layers > 0


def embedding_group_stride(c, gpus_per_node: int):
    """The stride a group of the two ends is priced at: (pp - 1) x the pipeline's stride, at least
    a node (ends on different nodes, one member each) where the pipeline leaves the node; 1 (two
    ranks of one node) where it does not."""
    pp, stride = np.asarray(c.pp), axis_stride(c, "pp")
    inside = group_link(pp, stride, gpus_per_node) == INTRA
    return np.where(inside, 1, np.maximum((pp - 1) * stride, gpus_per_node))


def tied_all_reduce_s(model: ModelSpec, hardware: HardwareProfile, c, *, gpus_per_node: int,
                      states: TrainingStates):
    """Seconds of the step's tied-embedding all-reduce on the two ends (0 where there is none): a
    ring all-reduce of tied_grad_bytes over two ranks, each sending 2 (n - 1) / n = 1 x the
    buffer (cost.collective_sizes.bus_factor), plus its ring latency."""
    if not embedding_group_syncs(model):  # the search's hot path: nothing to price
        return np.zeros(np.shape(c.pp))
    n = EMBEDDING_GROUP_SIZE
    sent = bus_factor("all_reduce", n) * tied_grad_bytes(model, c, states)
    return ring_collective_time_s(hardware, "all_reduce", sent, n, embedding_group_stride(c, gpus_per_node),
                                  gpus_per_node)
