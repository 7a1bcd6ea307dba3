"""ZeRO-3's per-layer calls and windows by layer kind, for the candidates whose single stage
mixes kinds (cost.layer_kinds): cost.dp_exposure walks their passes layer by layer
(cost.layer_walk) instead of cost.layerwise's closed forms over the average layer.

Llama 4 Maverick alternates dense and MoE MLP layers: at ep 16 over 128 H100s a MoE layer's
ZeRO-3 gather (its 1.0 G routed-expert parameters over edp 8, its shared expert and attention
over dp 128) takes ~19x a dense layer's, so the average layer's gather, which hides, stands for
one that does not, queued on the data-parallel stream behind the dense layer's reduce-scatter
(sim.layer_program runs each layer's own, sim.dp_work). Each kind's calls are priced as a model
whose every layer is of that kind (cost.layer_kinds.kind_model: its layer's dense and expert
parameters are the mixed model's layer of that kind, cost.buckets.stage_tensors), its windows and
TP edges as cost.layer_times prices that kind (a MoE layer's backward lead holds its combine
all-to-all, cost.layer_times.backward_lead_s). Pipelined stages keep the closed forms over their
own layers' average (cost.dp_times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from sp_planner.cost.dp_times import dp_stage_tables
from sp_planner.cost.layer_kinds import distinct_kinds, kind_indices, kind_model
from sp_planner.cost.layer_times import LayerTimes, backward_lead_s
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.space import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class KindPasses(NamedTuple):
    """A layer of each of the model's K kinds, (rows, K) per candidate (NaN where not walked)."""

    walked: np.ndarray  # (rows,) the candidates walked layer by layer
    gather_s: np.ndarray  # ZeRO-3's all-gather of one layer of the kind ...
    reduce_s: np.ndarray  # ... and its reduce-scatter (+ HSDP's replica all-reduce)
    fwd_s: np.ndarray  # the layer's forward window of one micro-batch ...
    bwd_s: np.ndarray  # ... and backward (with its recompute)
    fwd_lead_s: np.ndarray  # the TP collectives before its first forward GEMM (cost.dp_exposure.Edges) ...
    bwd_lead_s: np.ndarray  # ... before its first backward GEMM ...
    bwd_trail_s: np.ndarray  # ... and after its last
    kinds: tuple[int, ...]  # each decoder layer's kind (its column), first layer first

    def layers(self, name: str, rows: np.ndarray) -> np.ndarray:
        """(layers, len(rows)): field `name` of each decoder layer at the candidates `rows`."""
        return getattr(self, name)[rows][:, self.kinds].T


def kind_passes(model: ModelSpec, hardware: HardwareProfile, c: Candidates, *, seq_len: int, gpus_per_node: int,
                price: Callable[[ModelSpec, Candidates], LayerTimes],
                states: TrainingStates = MEGATRON_STATES) -> KindPasses | None:
    """The kinds' layers on the ZeRO-3 candidates of a single stage (pp 1, vpp 1) where the model
    has more than one kind (None where none is walked). `price(model, rows)`: cost.layer_times of
    another model on some of the rows (cost.step's candidate_layer_times with its runtime)."""
    kinds = distinct_kinds(model, seq_len)
    if len(kinds) == 1:
        return None
    n = len(c.pp)
    single = (np.broadcast_to(c.zero, (n,)) == 3) & (np.broadcast_to(c.pp, (n,)) == 1) & (
        np.broadcast_to(c.vpp, (n,)) == 1)
    walked = np.flatnonzero(single)
    if not len(walked):
        return None
    rows = c.take(walked)
    stages = candidate_stage_layers(model, rows)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in KindPasses._fields[1:-1]}
    for kind in kinds:
        one = kind_model(model, kind)
        times = dp_stage_tables(one, hardware, rows, stages=stages, gpus_per_node=gpus_per_node, seq_len=seq_len,
                                states=states)[0].at()
        lt = price(one, rows)
        values = dict(gather_s=times.layer_gather_s, reduce_s=times.layer_reduce_s, fwd_s=lt.fwd_s, bwd_s=lt.bwd_s,
                      fwd_lead_s=lt.tp_all_gather_s, bwd_lead_s=backward_lead_s(lt, rows.recompute),
                      bwd_trail_s=lt.tp_reduce_scatter_s)
        for name, value in values.items():
            columns[name].append(np.broadcast_to(np.asarray(value, dtype=np.float64), (len(walked),)))
    spread = {}
    for name, parts in columns.items():
        out = np.full((n, len(kinds)), np.nan)
        out[walked] = np.stack(parts, axis=1)  # (walked, K)
        spread[name] = out
    return KindPasses(single, **spread, kinds=kind_indices(model, seq_len))
