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
from sp_planner.cost.layer_kinds import chunk_global_layers, distinct_kinds, kind_indices, kind_model
from sp_planner.cost.layer_times import LayerTimes, backward_lead_s
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline import split_breaks
from sp_planner.space import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


class KindPasses(NamedTuple):
    """A layer of each of the model's K kinds, (rows, K) per candidate (NaN where not priced), and
    the layer sequences a view walks: a single stage's (the model's layers) or, through stage(i),
    one pipeline stage's own."""

    order: np.ndarray  # (rows,) the sequence this view walks on each candidate (-1: none)
    gather_s: np.ndarray  # ZeRO-3's all-gather of one layer of the kind ...
    reduce_s: np.ndarray  # ... and its reduce-scatter (+ HSDP's replica all-reduce)
    fwd_s: np.ndarray  # the layer's forward window of one micro-batch ...
    bwd_s: np.ndarray  # ... and backward (with its recompute)
    fwd_lead_s: np.ndarray  # the TP collectives before its first forward GEMM (cost.dp_exposure.Edges) ...
    bwd_lead_s: np.ndarray  # ... before its first backward GEMM ...
    bwd_trail_s: np.ndarray  # ... and after its last
    stage_orders: tuple[np.ndarray, ...]  # (rows,) each: the first, second and last stage's sequence (-1: none)
    sequences: tuple[tuple[int, ...], ...]  # each layer's kind (its column) in a sequence, first layer first

    def layers(self, name: str, rows: np.ndarray, sequence: int) -> np.ndarray:
        """(layers, len(rows)): field `name` of each layer of `sequence` at the candidates `rows`."""
        return getattr(self, name)[rows][:, self.sequences[sequence]].T

    def stage(self, i: int) -> KindPasses:
        """The view of pipeline stage i of (first, middle, last): its own layers walked."""
        return self._replace(order=self.stage_orders[i])


def kind_passes(model: ModelSpec, hardware: HardwareProfile, c: Candidates, *, seq_len: int, gpus_per_node: int,
                price: Callable[[ModelSpec, Candidates], LayerTimes],
                states: TrainingStates = MEGATRON_STATES) -> KindPasses | None:
    """The kinds' layers on the ZeRO-3 candidates at vpp 1 where the model has more than one kind
    (None where none is walked): a single stage walks the model's layers, a pipeline's stages
    (placed splits) their own (stage_sequences). `price(model, rows)`: cost.layer_times of
    another model on some of the rows (cost.step's candidate_layer_times with its runtime)."""
    kinds = distinct_kinds(model, seq_len)
    if len(kinds) == 1:
        return None
    n = len(c.pp)
    pp, vpp, zero = (np.broadcast_to(np.asarray(v), (n,)) for v in (c.pp, c.vpp, c.zero))
    priced = (zero == 3) & (vpp == 1)
    if not np.any(priced):
        return None
    sequences = [kind_indices(model, seq_len)]
    order = np.where(priced & (pp == 1), 0, -1)
    stage_orders = stage_sequences(model, seq_len, c, priced & (pp > 1), sequences)
    walked = np.flatnonzero((order >= 0) | (stage_orders[0] >= 0))
    if not len(walked):
        return None
    rows = c.take(walked)
    stages = candidate_stage_layers(model, rows)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in KindPasses._fields[1:-2]}
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
    return KindPasses(order, **spread, stage_orders=stage_orders, sequences=tuple(sequences))


def stage_sequences(model: ModelSpec, seq_len: int, c: Candidates, piped: np.ndarray,
                    sequences: list[tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    """(first, middle, last) stage's layer sequence on each `piped` candidate (pp > 1, vpp 1) whose
    split Megatron places, as an index into `sequences` (appended to; -1 elsewhere): each stage's
    own layers in Megatron's order (cost.layer_kinds.chunk_global_layers), the middle stages' the
    second stage's (the one cost.memory prices; none at pp 2)."""
    n = len(piped)
    orders = tuple(np.full(n, -1) for _ in range(3))
    columns = [np.broadcast_to(np.asarray(v), (n,)) for v in (c.pp, c.first_stage_layers, c.last_stage_layers)]
    ones = np.ones(n, dtype=np.int64)
    placed = np.flatnonzero(piped & ~split_breaks(model.num_layers, columns[0], ones, columns[1], columns[2]))
    if not len(placed):
        return orders
    kinds = sequences[0]
    index = {kinds: 0}
    for row, at in distinct_groups([column[placed] for column in columns]):
        pp, first_n, last_n = (int(column[placed[row]]) for column in columns)
        held = chunk_global_layers(model.num_layers, pp, 1, first_n, last_n)
        for i, (order, stage) in enumerate(zip(orders, (0, 1, pp - 1))):
            if i == 1 and pp == 2:  # no middle stage
                continue
            sequence = tuple(kinds[layer] for layer in held[stage][0])
            order[placed[at]] = index.setdefault(sequence, len(index))
    sequences[:] = list(index)
    return orders
