"""How many TP collectives a layer, the embedding and the output layer make per micro-batch (the
counts cost.comm sizes, cost.layer_times and cost.host time, and the simulator's layer program runs).

TP with Megatron sequence parallelism, per layer (USP paper Table 2, "TP-sp": 6 all-gathers +
4 reduce-scatters): forward gathers before QKV and fc1 and reduce-scatters after the output
projection and fc2 (2 + 2); backward does the conjugates (2 RS + 2 AG) and gathers the saved
sharded inputs again for the weight gradients (2 AG; Megatron's
LinearWithGradAccumulationAndAsyncCommunication). Each moves b*s/cp*h bf16 elements, but a
layer's all-gathers move low-precision data where the framework gathers it (cost.tp_gathers,
cost.gathered_transpose). Per micro-batch, the embedding's 2 (first stage) and the output layer's
3 (last stage) move as many, in bf16 (EMBEDDING_TP_*, OUTPUT_TP_*). These are Megatron's counts.
torchtitan's DTensor TP keeps the gathered inputs for the weight gradients (cost.tp_gathers,
TpGathers.regathers_saved_inputs False): a layer's 2 saved-input gathers and the output layer's
backward one are not made (`regathers` below; cost.activations keeps the gathered inputs instead).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# TP collectives per layer per micro-batch (module docstring): forward 2 AG + 2 RS, backward
# the conjugates (2 RS + 2 AG) plus 2 AG of the saved inputs for the weight gradients. The cost
# model (step, comm, layer_times) and the simulator's layer program (sim.layer_program) use these counts.
TP_FORWARD_ALL_GATHERS, TP_FORWARD_REDUCE_SCATTERS = 2, 2
TP_BACKWARD_ALL_GATHERS, TP_BACKWARD_REDUCE_SCATTERS = 4, 2
TP_ALL_GATHERS_PER_LAYER = TP_FORWARD_ALL_GATHERS + TP_BACKWARD_ALL_GATHERS
TP_REDUCE_SCATTERS_PER_LAYER = TP_FORWARD_REDUCE_SCATTERS + TP_BACKWARD_REDUCE_SCATTERS
# The embedding's and the output layer's, once per micro-batch, each the size of a layer's
# (Megatron-Core with sequence parallel, megatron/core at d98e8a6): VocabParallelEmbedding
# reduce-scatters its output into the sequence-parallel region (tensor_parallel/layers.py lines
# 367-376, reduce_scatter_embeddings: models without learned position embeddings,
# language_model_embedding.py lines 51-56), all-gathered in backward; the output layer, a
# ColumnParallelLinear, all-gathers its input forward and, backward, gathers it again for the
# weight gradient and reduce-scatters the input gradient (layers.py, the linear's autograd
# function). The embedding is on the first stage, the output layer on the last.
EMBEDDING_TP_REDUCE_SCATTERS, EMBEDDING_TP_ALL_GATHERS = 1, 1  # forward, backward
# A learned position table turns that reduce-scatter into an all-reduce and a split: with
# position_embedding learned_absolute, reduce_scatter_embeddings is False
# (language_model_embedding.py at d98e8a64dd lines 51-56), so VocabParallelEmbedding all-reduces its
# whole output over TP (layers.py line 383, reduce_from_tensor_model_parallel_region: backward, an
# identity) and, after the position add, scatter_to_sequence_parallel_region takes the rank's
# sequence shard (lines 147-150; mappings.py: a split forward, an all-gather backward). Forward:
# one all-gather's worth more; backward: the same all-gather.
LEARNED_POSITION_EMBEDDING_TP_FORWARD_ALL_GATHERS = 1
OUTPUT_TP_FORWARD_ALL_GATHERS = 1
OUTPUT_TP_BACKWARD_ALL_GATHERS, OUTPUT_TP_BACKWARD_REDUCE_SCATTERS = 1, 1
# Without sequence parallelism (Runtime.sequence_parallel False; Shoeybi et al. 2019, section 3):
# a layer all-reduces twice forward (after the attention projection and FC2, RowParallelLinear's
# reduce region) and twice backward (the QKV and FC1 input gradients, ColumnParallelLinear's copy
# region), each a reduce-scatter's and an all-gather's worth of bytes, and the weight gradients read
# the whole saved inputs: the 2 backward input all-gathers above are not made. The output layer's
# input is whole already (no forward all-gather); its input gradient is all-reduced backward, and
# the embedding's output all-reduced forward: the counts of sequence parallelism without a learned
# position table.
TP_INPUT_ALL_GATHERS = 2  # of TP_BACKWARD_ALL_GATHERS: the saved inputs gathered again (SP only)
TP_GRAD_ALL_GATHERS = TP_BACKWARD_ALL_GATHERS - TP_INPUT_ALL_GATHERS  # the output gradients'


def tp_backward_all_gathers(sequence_parallel: bool, regathers: bool = True) -> int:
    """A layer's backward all-gathers (or all-reduces' gather halves) per micro-batch."""
    return TP_GRAD_ALL_GATHERS + tp_input_all_gathers(sequence_parallel, regathers)


def tp_input_all_gathers(sequence_parallel: bool, regathers: bool = True) -> int:
    """A layer's backward all-gathers of its saved inputs per micro-batch: sequence parallelism only,
    and only where the linears saved their shard (`regathers`, TpGathers.regathers_saved_inputs)."""
    return TP_INPUT_ALL_GATHERS if sequence_parallel and regathers else 0


def embedding_tp_forward_all_gathers(position_embedding: str, sequence_parallel: bool) -> int:
    """The embedding's forward all-gathers per micro-batch beside its reduce-scatter: the all-reduce's
    second half with a learned position table under sequence parallelism (without it the all-reduce
    counts as the reduce-scatter forward and the all-gather backward already)."""
    learned = position_embedding == "learned_absolute"
    return LEARNED_POSITION_EMBEDDING_TP_FORWARD_ALL_GATHERS if learned and sequence_parallel else 0


def output_tp_forward_all_gathers(sequence_parallel: bool) -> int:
    return OUTPUT_TP_FORWARD_ALL_GATHERS if sequence_parallel else 0


def output_tp_backward_all_gathers(sequence_parallel: bool, regathers: bool = True) -> int:
    """The output layer's backward all-gathers per micro-batch: under sequence parallelism its saved
    input again, where the framework gathers it again (`regathers`); without, its input gradient's
    all-reduce's second half."""
    return OUTPUT_TP_BACKWARD_ALL_GATHERS if regathers or not sequence_parallel else 0


def layer_tp_all_gathers(*, layers, full_recompute, sequence_parallel: bool = True, regathers: bool = True):
    """The all-gathers of `layers` layers per micro-batch (the forward's again under full recompute)."""
    per_layer = TP_FORWARD_ALL_GATHERS + tp_backward_all_gathers(sequence_parallel, regathers)
    return layers * (per_layer + np.where(np.asarray(full_recompute, dtype=bool), TP_FORWARD_ALL_GATHERS, 0))


class TpCalls(NamedTuple):
    """The TP collectives a step makes on the first stage's GPU (tp_calls_per_step)."""

    all_gathers: np.ndarray  # the layers', the embedding's and at pp 1 the output layer's
    reduce_scatters: np.ndarray
    layer_all_gathers: np.ndarray  # the layers' of all_gathers (low precision: cost.tp_gathers)


def tp_calls_per_step(*, layers, micro_batches, full_recompute, pp, position_embedding: str,
                      sequence_parallel: bool = True, regathers: bool = True, mlp_recomputes=0) -> TpCalls:
    """The TP group's calls a step makes on the first stage's GPU: its layers' per micro-batch
    (layer_tp_all_gathers), the embedding's (embedding_tp_forward_all_gathers for a learned position
    table) and, at pp 1, the output layer's; without sequence parallelism an all-reduce counts as
    one of each; `regathers` False: the saved inputs are not gathered again (cost.tp_gathers). Every
    call moves the same elements; the layers' gathers move the framework's low precision where it
    gathers one (cost.tp_gathers), the others bf16. `mlp_recomputes`: the layers whose dense MLP
    re-runs in backward, each its forward all-gather and reduce-scatter again (cost.mlp_recompute)."""
    full = np.asarray(full_recompute, dtype=bool)
    layer_ag = layer_tp_all_gathers(layers=layers, full_recompute=full, sequence_parallel=sequence_parallel,
                                    regathers=regathers) + mlp_recomputes
    output_ag = output_tp_forward_all_gathers(sequence_parallel) \
        + output_tp_backward_all_gathers(sequence_parallel, regathers)
    ag = layer_ag \
        + EMBEDDING_TP_ALL_GATHERS + embedding_tp_forward_all_gathers(position_embedding, sequence_parallel) \
        + np.where(pp == 1, output_ag, 0)
    rs = layers * (TP_REDUCE_SCATTERS_PER_LAYER + np.where(full, TP_FORWARD_REDUCE_SCATTERS, 0)) \
        + EMBEDDING_TP_REDUCE_SCATTERS + np.where(pp == 1, OUTPUT_TP_BACKWARD_REDUCE_SCATTERS, 0) + mlp_recomputes
    return TpCalls(ag * micro_batches, rs * micro_batches, layer_ag * micro_batches)
