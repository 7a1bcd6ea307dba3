"""The gradient all-reduces a simulated step runs at its end, beside the data-parallel ones.

The gradients of the parameters whole on every TP rank (the sequence-parallel ones summed, DSA's
indexer's averaged: cost.replicated_grads), torchtitan's per-parameter TP all-reduces of Partial
gradients (cost.partial_tp_grads) and the embedding table's over each pipeline's two ends
(cost.tied_embedding): each run as a phase on the cluster graph over every group of its axis at
once (sim.step_work's `phase`), the calls and bytes the analytic model counts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sp_planner.candidates import Candidates
from sp_planner.cost.collective_sizes import bus_factor
from sp_planner.cost.fsdp import grad_reduces_per_step
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.partial_tp_grads import partial_grad_calls, partial_grad_elem_bytes
from sp_planner.cost.replicated_grads import replicated_sent_bytes
from sp_planner.cost.runtime import Runtime
from sp_planner.cost.tied_embedding import tied_grad_bytes
from sp_planner.specs.model import ModelSpec


def step_end_all_reduces(phase: Callable[..., float], model: ModelSpec, one: Candidates, runtime: Runtime, *,
                         tp_groups: np.ndarray, pp_groups: np.ndarray, micro_batches: int,
                         seq_len: int) -> tuple[float, float]:
    """(replicated, tied) seconds of the step-end all-reduces of the plan `one` (one-entry
    candidate columns) over its TP groups and its pipelines' two ends; 0.0 for a call it makes not."""
    # The gradients of the parameters whole on every TP rank, all-reduced over each TP group at step
    # end in two calls, the sequence-parallel ones' (SUM) then DSA's indexer's (AVG)
    # (cost.replicated_grads; each rank sends 2 (n - 1) / n x a buffer in the ring's two rounds).
    calls = replicated_sent_bytes(model, one, runtime.states, seq_len=seq_len,
                                  sums_sequence_parallel=runtime.sums_sequence_parallel_grads,
                                  sequence_parallel=runtime.sequence_parallel)
    replicated = sum((phase(name, tp_groups, float(sent[0]), "ring", "all_reduce", rounds=2)
                      for name, sent in (("sequence-parallel grad all-reduce (tp)", calls.summed),
                                         ("indexer grad all-reduce (tp)", calls.averaged)) if float(sent[0]) > 0), 0.0)
    if runtime.partial_tp_grads and int(one.tp[0]) > 1:  # torchtitan's per-parameter calls (cost.partial_tp_grads)
        replicated += _partial_grad_all_reduces(phase, model, one, tp_groups, micro_batches,
                                                runtime.overlap.pp_stage_grad_sync)
    # The embedding table's gradient all-reduce over each pipeline's two ends (a tied output layer's,
    # or MTP's copy on the last stage; cost.tied_embedding): each sends 2 (n - 1) / n = 1 x its
    # buffer in the ring's two rounds.
    tied_bytes = float(tied_grad_bytes(model, one, runtime.states)[0])
    tied = phase("embedding grad all-reduce (pipeline ends)", pp_groups[:, [0, -1]], tied_bytes, "ring",
                 "all_reduce", rounds=2) if tied_bytes > 0 else 0.0
    return replicated, tied


def _partial_grad_all_reduces(phase, model: ModelSpec, one, tp_groups, m: int, pp_stage_grad_sync: bool) -> float:
    """Seconds a step of FSDP2's per-parameter TP all-reduces of Partial gradients, exposed on the
    compute stream (cost.partial_tp_grads): one phase per parameter size, times its calls."""
    share = bus_factor("all_reduce", int(one.tp[0]))
    elem = float(partial_grad_elem_bytes(one, pp_stage_grad_sync)[0])
    rounds = float(grad_reduces_per_step(one, m, pp_stage_grad_sync)[0])
    calls = partial_grad_calls(model, candidate_stage_layers(model, one).first, one.pp)
    return rounds * sum(float(count[0]) * phase("norm grad all-reduce (tp, per parameter)", tp_groups,
                                                share * n * elem, "ring", "all_reduce", rounds=2)
                        for n, count in calls.items())
