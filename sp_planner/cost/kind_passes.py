"""ZeRO-3's per-layer calls and windows by layer kind, for the candidates whose single stage
mixes kinds (cost.layer_kinds): cost.dp_exposure walks their passes layer by layer
(cost.layer_walk) instead of cost.layerwise's closed forms over the average layer.

Llama 4 Maverick alternates dense and MoE MLP layers: at ep 16 over 128 H100s a MoE layer's
ZeRO-3 gather (its 1.0 G routed-expert parameters over edp 8, its shared expert and attention
over dp 128) takes ~19x a dense layer's, so the average layer's gather, which hides, stands for
one that does not, queued on the data-parallel stream behind the dense layer's reduce-scatter
(sim.layer_program runs each layer's own, sim.dp_work). Each kind's calls are priced as a model
whose every layer is of that kind (cost.layer_kinds.kind_model: its layer's dense and expert
parameters are the mixed model's layer of that kind, cost.rank_tensors.stage_tensors), its windows and
TP edges as cost.layer_times prices that kind (a MoE layer's backward lead holds its combine
all-to-all, cost.layer_times.backward_lead_s). A pipeline's stages walk their own layers, an
interleaved stage's chunk by chunk (cost.chunk_walk), each chunk its own FSDP module as Megatron's
get_model builds them and sim.layer_program runs them.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.cost.dp_times import dp_stage_tables
from sp_planner.cost.layer_kinds import chunk_global_layers, distinct_kinds, kind_indices, kind_model
from sp_planner.cost.layer_times import backward_lead_s
from sp_planner.cost.params import candidate_stage_layers
from sp_planner.cost.stage_params import dp_lightest_middle_stage, dp_middle_stage
from sp_planner.cost.states import MEGATRON_STATES, TrainingStates
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline import split_breaks
from sp_planner.candidates import Candidates
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

if TYPE_CHECKING:
    from sp_planner.cost.kind_table import KindTable


PRICED = ("gather_s", "reduce_s", "fwd_s", "bwd_s", "fwd_lead_s", "bwd_lead_s", "bwd_trail_s")


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
    # Interleaved stages (vpp > 1): (rows, chunks) each, the first, second and last stage's model
    # chunks' sequences in chunk order (-1: none), and this view's stage's (all -1 before stage()).
    stage_chunks: tuple[np.ndarray, ...] = ()
    chunk_orders: np.ndarray | None = None
    root_chunk: np.ndarray | int = 0  # this view's stage's chunk holding the root unit (chunk_walk)

    def layers(self, name: str, rows: np.ndarray, sequence: int) -> np.ndarray:
        """(layers, len(rows)): field `name` of each layer of `sequence` at the candidates `rows`."""
        return getattr(self, name)[rows][:, self.sequences[sequence]].T

    def stage(self, i: int) -> KindPasses:
        """The view of pipeline stage i of (first, middle, last): its own layers walked (its one
        chunk at vpp 1, `order`; its chunks one by one at vpp > 1, chunk_orders)."""
        chunks = self.stage_chunks[i]
        # The root unit: the first stage's chunk 0, the last stage's last chunk (the middle none).
        root = (chunks >= 0).sum(axis=1) - 1 if i == 2 else 0
        return self._replace(order=self.stage_orders[i], chunk_orders=chunks, root_chunk=root)

    def lightest(self) -> KindPasses:
        """These passes with the middle stages walking the lightest one's layers (stage_sequences'
        fourth) where a row has it."""
        if len(self.stage_orders) < 4:
            return self
        pick = tuple(x if i != 1 else np.where(self.stage_orders[3] >= 0, self.stage_orders[3], x)
                     for i, x in enumerate(self.stage_orders[:3]))
        chunks = tuple(x if i != 1 else np.where(self.stage_chunks[3][:, :1] >= 0, self.stage_chunks[3], x)
                       for i, x in enumerate(self.stage_chunks[:3]))
        return self._replace(stage_orders=pick, stage_chunks=chunks)

    def chunk(self, j) -> KindPasses:
        """The view of this stage's model chunk j (an int, or one a row) walked as one stage (-1
        where the row has no such chunk or walks no chunks)."""
        chunks = self.chunk_orders
        assert chunks is not None  # a stage's view (stage())
        at = np.broadcast_to(np.asarray(j), (len(chunks),))
        inside = (at >= 0) & (at < chunks.shape[1])
        picked = np.take_along_axis(chunks, np.where(inside, at, 0)[:, None], axis=1)[:, 0]
        return self._replace(order=np.where(inside, picked, -1), chunk_orders=None)

    def stacked(self, at: np.ndarray, orders: np.ndarray) -> KindPasses:
        """A view of rows `at` of this one (repeated as they come) walking `orders`, one a row."""
        return self._replace(order=orders, stage_orders=(), stage_chunks=(), chunk_orders=None,
                             **{name: getattr(self, name)[at] for name in PRICED})

    def lengths(self) -> np.ndarray:
        """(rows,) the layers of the sequence each row walks (0 where none)."""
        sizes = np.array([len(s) for s in self.sequences] + [0])
        return sizes[self.order]  # -1 reads the trailing 0

    def sums(self, name: str, orders: np.ndarray | None = None) -> np.ndarray:
        """Field `name` summed over the layers of the sequence each row walks (0 where none):
        (rows,) of this view's, or (rows, chunks) of `orders` (chunk_orders)."""
        at = self.order if orders is None else orders
        # (rows, sequences + 1): each row's field over every sequence (NaN where not priced, -1's 0).
        every = getattr(self, name) @ sequence_counts(self.sequences, self.gather_s.shape[1]).T
        picked = np.take_along_axis(every, at.reshape(len(at), -1), axis=1).reshape(at.shape)
        return np.where(at >= 0, picked, 0.0)


@cache
def sequence_counts(sequences: tuple[tuple[int, ...], ...], kinds: int) -> np.ndarray:
    """(sequences + 1, kinds) each sequence's layers of each kind; the last row (index -1) none."""
    counts = np.zeros((len(sequences) + 1, kinds))
    for k, sequence in enumerate(sequences):
        np.add.at(counts[k], list(sequence), 1.0)
    return counts


class KindWalks(NamedTuple):
    """The layer sequences the ZeRO-3 candidates walk where the model's layers differ (kind_walks)."""

    order: np.ndarray  # (rows,) a single stage's sequence (-1: none)
    stage_orders: tuple[np.ndarray, ...]  # (rows,) each: the first, second and last stage's (-1: none)
    stage_chunks: tuple[np.ndarray, ...]  # (rows, chunks) each: those stages' chunks' at vpp > 1
    sequences: tuple[tuple[int, ...], ...]  # each layer's kind (its column) in a sequence
    rows: np.ndarray  # the candidates that walk one (ascending): the kinds are priced on these


def kind_walks(model: ModelSpec, seq_len: int, c: Candidates) -> KindWalks | None:
    """The sequences kind_passes walks on the ZeRO-3 candidates where the model has more than one
    kind (None where none is walked): a single stage walks the model's layers, a pipeline's stages
    (placed splits) their own, chunk by chunk where interleaved (stage_sequences)."""
    if len(distinct_kinds(model, seq_len)) == 1:
        return None
    n = len(c.pp)
    pp, vpp, zero = (np.broadcast_to(np.asarray(v), (n,)) for v in (c.pp, c.vpp, c.zero))
    priced = (zero == 3) & ((vpp == 1) | (pp > 1))
    if not np.any(priced):
        return None
    sequences = [kind_indices(model, seq_len)]
    order = np.where(priced & (pp == 1), 0, -1)
    stage_orders, stage_chunks = stage_sequences(model, seq_len, c, priced & (pp > 1), sequences)
    walked = np.flatnonzero((order >= 0) | (stage_orders[0] >= 0) | (stage_chunks[0][:, 0] >= 0))
    if not len(walked):
        return None
    return KindWalks(order, stage_orders, stage_chunks, tuple(sequences), walked)


def kind_passes(model: ModelSpec, hardware: HardwareProfile, c: Candidates, table: KindTable, *, seq_len: int,
                gpus_per_node: int, states: TrainingStates = MEGATRON_STATES) -> KindPasses | None:
    """The kinds' layers on the rows `table.walks` walks (None where none): their ZeRO-3 calls
    (cost.dp_times of each kind's model) and their layers' windows and TP edges, read from the
    evaluation's one table of the kinds' layer times (cost.kind_table)."""
    walks = table.walks
    if walks is None:
        return None
    n, walked = len(c.pp), walks.rows
    rows = c.take(walked)
    stages = candidate_stage_layers(model, rows)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in PRICED}
    for k, kind in enumerate(table.kinds):
        one = kind_model(model, kind)
        times = dp_stage_tables(one, hardware, rows, stages=stages, gpus_per_node=gpus_per_node, seq_len=seq_len,
                                states=states)[0].at()
        lt = table.at(k, walked)
        values = dict(gather_s=times.layer_gather_s, reduce_s=times.layer_reduce_s, fwd_s=lt.fwd_s, bwd_s=lt.bwd_s,
                      fwd_lead_s=lt.tp_all_gather_s, bwd_lead_s=backward_lead_s(lt, rows.recompute),
                      bwd_trail_s=lt.tp_reduce_scatter_s)
        for name, value in values.items():
            columns[name].append(np.broadcast_to(np.asarray(value, dtype=np.float64), (len(walked),)))
    spread = {}
    for name, parts in columns.items():
        out = np.full((n, len(table.kinds)), np.nan)
        out[walked] = np.stack(parts, axis=1)  # (walked, K)
        spread[name] = out
    return KindPasses(walks.order, **spread, stage_orders=walks.stage_orders, sequences=walks.sequences,
                      stage_chunks=walks.stage_chunks)


def stage_sequences(model: ModelSpec, seq_len: int, c: Candidates, piped: np.ndarray,
                    sequences: list[tuple[int, ...]]) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """((first, middle, last) stage's layer sequence, the same stages' chunks' sequences (rows,
    chunks)) on each `piped` candidate (pp > 1) whose split Megatron places, as indices into
    `sequences` (appended to; -1 elsewhere): at vpp 1 each stage's own layers, at vpp > 1 each of
    its chunks' (sim.layer_program runs each chunk as its own forward and backward), in Megatron's
    order (cost.layer_kinds.chunk_global_layers); the middle stages' that of the one whose calls
    cost.dp_times prices for them (cost.stage_params.dp_middle_stage: the most MoE layers, the
    second stage where they hold as many; none at pp 2), and a fourth: the middle stage's with the
    fewest MoE layers (cost.stage_params.dp_lightest_middle_stage; the second's where they hold as
    many). DeepSeek-V3 over pp 16 x vpp 2 at 3 / 2 deals dense layers 1-2 to stage 1's chunk 0:
    walking stage 1's layers with stage 2's calls had hidden a MoE layer's gathers behind each
    dense one (ZeRO-3 analytic 43.28 s against the simulator's 61.49 s)."""
    n = len(piped)
    names = (c.pp, c.vpp, c.first_stage_layers, c.last_stage_layers)
    columns = [np.broadcast_to(np.asarray(v), (n,)) for v in names]
    placed = np.flatnonzero(piped & ~split_breaks(model.num_layers, *columns))
    widest = int(columns[1][placed].max()) if len(placed) else 1
    orders = tuple(np.full(n, -1) for _ in range(4))
    chunks = tuple(np.full((n, widest), -1) for _ in range(4))
    if not len(placed):
        return orders, chunks
    kinds = sequences[0]
    index = {kinds: 0}
    for row, at in distinct_groups([column[placed] for column in columns]):
        pp, vpp, first_n, last_n = (int(column[placed[row]]) for column in columns)
        held = chunk_global_layers(model.num_layers, pp, vpp, first_n, last_n)
        # The middle stages walk the one whose calls (cost.dp_times) stand for them.
        middle = dp_middle_stage(model, pp, vpp, first_n, last_n)[0]
        lightest = dp_lightest_middle_stage(model, pp, vpp, first_n, last_n)[0]
        for i, stage in enumerate((0, middle, pp - 1, lightest)):
            if i in (1, 3) and pp == 2:  # no middle stage
                continue
            found = [index.setdefault(tuple(kinds[layer] for layer in layers), len(index)) for layers in held[stage]]
            if vpp == 1:
                orders[i][placed[at]] = found[0]
            else:
                chunks[i][placed[at], :vpp] = found
    sequences[:] = list(index)
    return orders, chunks
