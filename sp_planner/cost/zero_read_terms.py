"""The terms of cost.step.time_parts before the data-parallel passes that read a data-parallel
choice column (cost.step.DP_CHOICE_COLUMNS: ZeRO's stage, and the weight casts reshard), which
cost.step_bound adds row by row to the rest, priced once per distinct row of the other columns."""

from __future__ import annotations

from typing import Any

from sp_planner.candidates import Candidates
from sp_planner.cost.fp8_params import weight_cast_s
from sp_planner.cost.overlap import MEGATRON_OVERLAP, Overlap
from sp_planner.cost.partial_tp_grads import partial_grad_all_reduce_s
from sp_planner.cost.replicated_grads import replicated_all_reduce_s
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.cost.tied_embedding import tied_all_reduce_s
from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TpGathers
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def zero_read_terms(model: ModelSpec, hardware: HardwareProfile, c: Candidates, layers, micro_batches, *,
                    gpus_per_node: int, seq_len: int, states: TrainingStates = MEGATRON_STATES,
                    tp_gathers: TpGathers = TE_TP_GATHERS, sequence_parallel: bool = True,
                    sums_sequence_parallel_grads: bool = True, partial_tp_grads: bool = False,
                    overlap: Overlap = MEGATRON_OVERLAP, **_: Any) -> tuple:
    """(the weight casts' seconds, the tied table's all-reduce, the replicated gradients' TP
    all-reduces), per candidate: the only terms of cost.step.time_parts before the data-parallel
    passes that read c.zero (cost.step_bound).
    FP8 weights are cast (with their transpose) once per step (TE is_first_microbatch caching);
    FP8 primary weights need less, Megatron-FSDP's rebuild their transpose twice a micro-batch,
    torchao's linears cast theirs every micro-batch, as TE's do under torch FSDP2 (ZeRO-3 keeping
    its parameters; cost.fp8_params, cost.tp_gathers). A tied
    table's gradient all-reduce runs between the pipeline's ends, after the gradient sync and
    before the optimizer, exposed whole (cost.tied_embedding); a ZeRO-0/1 middle stage whose sync
    ends later runs beside it (cost.pipeline_tails takes that off). The gradients of the
    parameters whole on every TP rank, the sequence-parallel ones' (where the framework sums them,
    `sums_sequence_parallel_grads`) and DSA's indexer's, are all-reduced over TP then too, exposed
    whole, Megatron-FSDP's shard under ZeRO-2/3 (cost.replicated_grads; `seq_len` places the MoE
    layers). Where the framework's FSDP2 all-reduces Partial gradients one parameter at a time
    (`partial_tp_grads`, torchtitan's), those calls, exposed whole on the compute stream, join
    the last term (cost.partial_tp_grads; `overlap` says where PP syncs a stage once)."""
    return (weight_cast_s(hardware, model, states, c, layers, micro_batches, tp_gathers),
            tied_all_reduce_s(model, hardware, c, gpus_per_node=gpus_per_node, states=states),
            replicated_all_reduce_s(model, hardware, c, gpus_per_node=gpus_per_node, states=states, seq_len=seq_len,
                                    sums_sequence_parallel=sums_sequence_parallel_grads,
                                    sequence_parallel=sequence_parallel)
            + (partial_grad_all_reduce_s(model, hardware, c, micro_batches, gpus_per_node=gpus_per_node,
                                         pp_stage_grad_sync=overlap.pp_stage_grad_sync)
               if partial_tp_grads else 0.0))
