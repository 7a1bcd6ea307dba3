"""Each pipeline stage's average layer: the kinds of its own layers (cost.layer_kinds) blended by
its counts of each, where the model's layers are not all alike (vectorized over candidates).

cost.layer_times prices the model's average layer. A stage holds its own layers: Gemma 3 27B over
8 stages (7/8/.../7 layers, 8 virtual stages) puts 3 of its 10 global layers on stages 4 and 6 and
none on the odd ones; DeepSeek-V3's first stage holds its 3 dense layers. The first and the last
stage are priced from their own layers; the middle stages (cost.step prices pp - 2 alike) as the
slowest of them, which paces the pipeline when a middle stage does (Narayanan et al. 2021, arXiv
2104.04473 section 2.2.1): the pace and the pacing stage's parts. The pipeline's path walks every
chunk's own layers (cost.chunk_path, from KindTimes), as the simulator places each layer
(sim.layer_program). A single stage holds every layer: the model's average, priced as it is.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.cost.layer_kinds import chunk_kind_counts, distinct_kinds, stage_kind_counts
from sp_planner.columns import held_rows, take_rows
from sp_planner.cost.layer_times import LayerTimes
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline import SPLIT_EXPLICIT, StagePace, interleave_breaks, split_breaks, split_kind
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec

if TYPE_CHECKING:
    from sp_planner.cost.kind_table import KindTable

# LayerTimes' fields of the work beside the layers (the output layer's, the embedding's), the
# same whatever the layers' kinds: kept as the average's.
BESIDE_LAYERS = frozenset({"logits_s", "out_tp_fwd_s", "out_tp_bwd_s", "emb_tp_fwd_s", "emb_tp_bwd_s", "pp"})


class KindTimes(NamedTuple):
    """Each of the model's layer kinds' forward and backward, on the pipelined rows."""

    rows: np.ndarray  # the candidates' indices
    fwd_s: np.ndarray  # (K, rows): a layer of each kind's forward ...
    bwd_s: np.ndarray  # ... and backward (with its recompute)


class StageLayerTimes(NamedTuple):
    """The average layer of the first, the slowest middle and the last stage, per candidate, and
    the kinds' own where the model has more than one (cost.chunk_path places them)."""

    first: LayerTimes
    middle: LayerTimes
    last: LayerTimes
    kinds: KindTimes | None = None

    @property
    def by_stage(self) -> tuple[LayerTimes, LayerTimes, LayerTimes]:
        """(first, middle, last)."""
        return self.first, self.middle, self.last

    @property
    def uniform(self) -> bool:
        """Every stage's average layer is the model's (one object: nothing was blended)."""
        return self.first is self.middle is self.last


def piped_rows(model: ModelSpec, seq_len: int, c: Candidates, micro_batches) -> np.ndarray:
    """The candidates (ascending) whose stages stage_layer_times prices from their own layers: the
    pipelined rows Megatron can run (a whole number of `micro_batches`, a valid layer split and
    interleaving: the others, which the search prices only to say why they fail, keep the average
    layer); where the layers are alike, only an explicit split's interleaved ones."""
    n = len(c.pp)
    m = np.broadcast_to(np.asarray(micro_batches, dtype=np.float64), (n,))
    split = (c.pp, c.vpp, c.first_stage_layers, c.last_stage_layers)
    walked = np.asarray(c.pp) > 1
    if len(distinct_kinds(model, seq_len)) == 1:
        # Alike layers: cost.pipeline_path's closed forms are the path, but with an explicit split's
        # interleaved stages (Gemma-2-9B over pp 8, vpp 2, 4/6/2 layers: its last stage's second
        # chunk one layer and the 256K-vocabulary logits; 9% short of the simulator), where
        # cost.chunk_path walks them: the search's hot path checks those rows alone.
        walked &= (np.asarray(c.vpp) > 1) & (split_kind(model.num_layers, *split) >= SPLIT_EXPLICIT)
    runs = walked & (m >= 1) & (m == np.floor(m))
    if np.any(runs):
        runs &= ~split_breaks(model.num_layers, *split) & ~interleave_breaks(c.pp, c.vpp, m)
    return np.flatnonzero(runs)


def stage_layer_times(model: ModelSpec, seq_len: int, c: Candidates, average: LayerTimes,
                      table: KindTable) -> StageLayerTimes:
    """`average`: cost.layer_times of the model for the candidates `c`; `table`: the evaluation's
    kinds' layer times (cost.kind_table), read on its pipelined rows (piped_rows)."""
    n, piped = len(c.pp), table.piped
    if len(table.kinds) == 1:
        whole = KindTimes(piped, *(np.broadcast_to(v, (n,))[piped][None, :] for v in (average.fwd_s, average.bwd_s)))
        return StageLayerTimes(average, average, average, whole if len(piped) else None)
    if not len(piped):
        return StageLayerTimes(average, average, average)
    rows = c.take(piped)
    by_kind = [table.at(k, piped) for k in range(len(table.kinds))]
    per_layer = np.stack([np.broadcast_to(lt.per_layer_s, (len(piped),)) for lt in by_kind])  # (K, rows)
    shares = _stage_shares(model, seq_len, rows, per_layer)
    kinds_times = KindTimes(piped, *(np.stack([np.broadcast_to(getattr(lt, name), (len(piped),)) for lt in by_kind])
                                     for name in ("fwd_s", "bwd_s")))
    first, middle, last = (_blend(average, by_kind, w, piped) for w in shares)
    return StageLayerTimes(first, middle, last, kinds_times)


def take_stage_layer_times(stage: StageLayerTimes, index: np.ndarray, num_rows: int) -> StageLayerTimes:
    """`stage`'s rows at `index` (of `num_rows` candidates), as stage_layer_times prices those
    candidates alone (it works row by row): uniform where none of them is blended (none of the
    kinds' rows among them; those rows' stages hold the average layer)."""
    kinds = None
    if stage.kinds is not None:
        at, found = held_rows(stage.kinds.rows, index)
        kinds = KindTimes(at, stage.kinds.fwd_s[:, found], stage.kinds.bwd_s[:, found]) if len(at) else None
    if stage.uniform or kinds is None:
        average = take_rows(stage.first, index, num_rows)
        return StageLayerTimes(average, average, average, kinds)
    first, middle, last = (take_rows(s, index, num_rows) for s in stage.by_stage)
    return StageLayerTimes(first, middle, last, kinds)


def pacing_layer_times(stage: StageLayerTimes, pace: StagePace) -> LayerTimes:
    """The pacing stage's average layer (pipeline.stage_pace's choice), per candidate."""
    if stage.uniform:
        return stage.first
    return _select(pace.last_paces, stage.last, _select(pace.first_paces, stage.first, stage.middle))


def _stage_shares(model: ModelSpec, seq_len: int, rows: Candidates, per_layer) -> tuple[np.ndarray, ...]:
    """(first, middle, last) stage's share of its layers of each kind, (rows, K) each: the
    middle stage the slowest middle one by its layers' time (`per_layer` (K, rows): each kind's
    layer); at pp 2, where no stage is in the middle, the end stage with more layers (cost.step's
    middle stage then holds max(first, last) layers and never paces alone)."""
    n, k = len(rows), per_layer.shape[0]
    first, middle, last = np.zeros((n, k)), np.zeros((n, k)), np.zeros((n, k))
    columns = [rows.pp, rows.vpp, rows.first_stage_layers, rows.last_stage_layers]
    for row, at in distinct_groups(columns):
        pp, vpp, first_n, last_n = (int(column[row]) for column in columns)
        counts = stage_kind_counts(model, seq_len, pp, vpp, first_n, last_n)  # (pp, K)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        first[at], last[at] = share[0], share[-1]
        if pp > 2:
            heaviest = np.argmax(counts[1:-1] @ per_layer[:, at], axis=0)  # (pp - 2, rows) -> rows
            middle[at] = share[1 + heaviest]
        else:
            middle[at] = share[0] if counts[0].sum() > counts[-1].sum() else share[-1]
    return first, middle, last


def _blend(average: LayerTimes, by_kind: list[LayerTimes], weights: np.ndarray, piped: np.ndarray) -> LayerTimes:
    """`average` with its layer fields, on the `piped` rows, the kinds' blended by `weights`
    (rows, K): what cost.layer_times' blend by the model's shares would give at these shares."""
    def blend(name: str, field, parts):
        if isinstance(field, tuple):  # AttentionTimes
            return type(field)(*(blend(name, f, [p[j] for p in parts]) for j, f in enumerate(field)))
        if name in BESIDE_LAYERS:
            return field
        mixed = sum(weights[:, j] * np.broadcast_to(np.asarray(p, dtype=np.float64), (len(piped),))
                    for j, p in enumerate(parts))
        out = np.array(np.broadcast_to(np.asarray(field, dtype=np.float64), (len(average.pp),)))
        out[piped] = mixed
        return out

    return LayerTimes(*(blend(name, getattr(average, name), [getattr(lt, name) for lt in by_kind])
                        for name in LayerTimes._fields))


def _select(mask, if_true: LayerTimes, if_false: LayerTimes) -> LayerTimes:
    """Field by field, `if_true`'s where `mask`, else `if_false`'s."""
    def pick(a, b):
        if isinstance(a, tuple):
            return type(a)(*(pick(x, y) for x, y in zip(a, b)))
        return np.where(mask, a, b)

    return LayerTimes(*(pick(a, b) for a, b in zip(if_true, if_false)))


def middle_drain_s(model: ModelSpec, seq_len: int, c: Candidates, kinds: KindTimes | None, rank) -> np.ndarray | float:
    """Per candidate, the drain's chunk-0 backwards of the middle ranks 1 to `rank` - 1, each its
    own layers' kinds (cost.layer_kinds.chunk_kind_counts): how much earlier than stage 1's the
    last backward of middle rank `rank` ends (cost.stage_params.dp_middle_stage's; each rank's
    last backward follows the one above's, Megatron's cooldown, schedules.py d98e8a6). 0 where
    `rank` is 1 or the layers are alike. DeepSeek-V3 over pp 8 x vpp 3 at 7 / 6: stage 2 ends its
    last backward 19 ms before stage 1 (dense layers 1-2 and MoE layer 3 in its chunk 0), as
    sim.pipeline runs it."""
    rank = np.asarray(rank)
    if kinds is None or not np.any(rank > 1):
        return 0.0
    out = np.zeros(len(c.pp))
    for split, rows, bwd in _by_split(c, kinds, np.flatnonzero(rank[kinds.rows] > 1), rank):
        out[rows] = np.asarray(_drain_kind_counts(model, seq_len, *split)) @ bwd
    return out


@lru_cache(maxsize=1024)
def _drain_kind_counts(model: ModelSpec, seq_len: int, pp: int, vpp: int, first_stage_layers: int,
                       last_stage_layers: int, rank: int) -> tuple[float, ...]:
    """Layers of each kind in the chunk 0 of the middle ranks 1 to `rank` - 1 (middle_drain_s)."""
    counts = chunk_kind_counts(model, seq_len, pp, vpp, first_stage_layers, last_stage_layers)  # (pp, vpp, K)
    return tuple(counts[1:rank, 0].sum(axis=0))


def first_chunks_bwd_s(model: ModelSpec, seq_len: int, c: Candidates, kinds: KindTimes | None
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Per candidate, the first stage's chunk 0 and last chunk's layers' backward, each its own
    layers' kinds (cost.layer_kinds.chunk_kind_counts), on interleaved rows whose layers differ
    (NaN elsewhere; None where none): DeepSeek-V3 over pp 8 x vpp 2 at 9 / 4 holds its 3 dense
    layers and 2 MoE ones in the first stage's chunk 0 (35 ms in sim.pipeline with the embedding's),
    4 MoE ones in its chunk 1 (34 ms), where the stage's mean layer reads 39 ms and 29 ms
    (cost.pipeline_tails' finish lags, which then read the first stage as the slower)."""
    if kinds is None:
        return None
    picked = np.flatnonzero(np.asarray(c.vpp)[kinds.rows] > 1)
    if not len(picked):
        return None
    n = len(c.pp)
    chunk0, last = np.full(n, np.nan), np.full(n, np.nan)
    for split, rows, bwd in _by_split(c, kinds, picked):
        counts = chunk_kind_counts(model, seq_len, *split)  # (pp, vpp, K)
        chunk0[rows] = counts[0, 0] @ bwd
        last[rows] = counts[0, -1] @ bwd
    return chunk0, last


def _by_split(c: Candidates, kinds: KindTimes, picked: np.ndarray, *extra):
    """The `picked` columns of `kinds` (indices into kinds.rows) grouped by their candidates'
    (pp, vpp, first_stage_layers, last_stage_layers, *`extra` per-candidate columns): each group's
    values (ints), its candidates' indices and its kinds' backwards (K, len(group))."""
    at_rows = kinds.rows[picked]
    columns = [np.asarray(v)[at_rows] for v in (c.pp, c.vpp, c.first_stage_layers, c.last_stage_layers, *extra)]
    for row, at in distinct_groups(columns):
        yield tuple(int(column[row]) for column in columns), at_rows[at], kinds.bwd_s[:, picked[at]]
