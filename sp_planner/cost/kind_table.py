"""One table of the model's layer kinds' times for one evaluation (cost.step's), priced once per
kind on every row any reader needs.

Where the layers differ (cost.layer_kinds), a kind's layer is priced as a model whose every layer
is of that kind (kind_model) in three places: each pipeline stage's blend of its own layers
(cost.stage_layer_times, on the pipelined rows), ZeRO-3's layer-by-layer walk (cost.kind_passes,
on the walked rows) and the MTP depths' layer (cost.mtp, the last layer's kind, on every row).
Each kind is priced here once, on the union of its readers' rows, and each reader takes its rows
of it (columns.take_rows: the pricing works row by row, so a row reads what pricing it alone
gives), so every reader reads the same seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import NamedTuple

import numpy as np

from sp_planner.columns import held_rows, take_rows
from sp_planner.cost.kind_passes import KindWalks, kind_walks
from sp_planner.cost.layer_kinds import LayerKind, distinct_kinds, kind_model
from sp_planner.cost.layer_times import LayerTimes
from sp_planner.cost.mtp import mtp_kind
from sp_planner.cost.stage_layer_times import piped_rows
from sp_planner.candidates import Candidates
from sp_planner.specs.model import ModelSpec


class KindTable(NamedTuple):
    """Each of the model's kinds' layer times on the rows its readers need, and those rows."""

    kinds: tuple[LayerKind, ...]  # cost.layer_kinds.distinct_kinds
    piped: np.ndarray  # the rows cost.stage_layer_times blends (stage_layer_times.piped_rows)
    walks: KindWalks | None  # the ZeRO-3 walks cost.kind_passes prices (kind_passes.kind_walks)
    rows: tuple[np.ndarray, ...]  # each kind's priced candidates (ascending; none with one kind)
    times: tuple[LayerTimes | None, ...]  # each kind's layer times on its rows (None: not priced)

    def at(self, k: int, rows: np.ndarray) -> LayerTimes:
        """Kind k's layer times on the candidates `rows` (ascending, among those it was priced on)."""
        priced, times = self.rows[k], self.times[k]
        assert times is not None, (self.kinds[k], len(rows))
        if len(rows) == len(priced):  # its readers' rows all (the same, ascending)
            return times
        return take_rows(times, np.searchsorted(priced, rows), len(priced))


def kind_table(model: ModelSpec, seq_len: int, c: Candidates, micro_batches,
               price: Callable[[ModelSpec, Candidates], LayerTimes], walked: bool = True) -> KindTable:
    """The table of the candidates `c` (`micro_batches` a step each): where the model has more than
    one kind, `price(model, rows)` (cost.layer_times of another model on some rows: cost.step's
    candidate_layer_times with its runtime) called once per kind, on the pipelined rows, the
    walked ZeRO-3 rows (`walked` False: none, for a reader without cost.kind_passes, whose rows
    then read the same: cost.step_bound; with_walks adds them) and, for the MTP depths' kind when
    the model trains them, every row."""
    kinds = distinct_kinds(model, seq_len)
    piped = piped_rows(model, seq_len, c, micro_batches)
    if len(kinds) == 1:
        return KindTable(kinds, piped, None, (), ())
    walks = kind_walks(model, seq_len, c) if walked else None
    every = reduce(np.union1d, [piped] + ([] if walks is None else [walks.rows]))
    everything = np.arange(len(c.pp))
    mtp = mtp_kind(model, seq_len) if model.mtp_layers else None
    rows = tuple(everything if kind == mtp else every for kind in kinds)
    # A kind no reader needs is not priced; the MTP kind is, on every row (none too: its readers read them).
    times = tuple(price(kind_model(model, kind), c if len(at) == len(c.pp) else c.take(at))
                  if len(at) or kind == mtp else None for kind, at in zip(kinds, rows))
    return KindTable(kinds, piped, walks, rows, times)


def take_kind_table(table: KindTable, index: np.ndarray) -> KindTable:
    """`table`'s rows at `index` (candidates' indices), as kind_table prices those candidates
    alone (it works row by row), but its walks, left None (with_walks adds the rows' own)."""
    rows, times = [], []
    for priced, kind_times in zip(table.rows, table.times):
        at, found = held_rows(priced, index)
        rows.append(at)
        times.append(None if kind_times is None else take_rows(kind_times, found, len(priced)))
    return KindTable(table.kinds, held_rows(table.piped, index)[0], None, tuple(rows), tuple(times))


def with_walks(table: KindTable, model: ModelSpec, seq_len: int, c: Candidates, micro_batches,
               price: Callable[[ModelSpec, Candidates], LayerTimes]) -> KindTable:
    """kind_table of the candidates `c` from `table` (theirs without walks: take_kind_table of
    cost.step_bound's): their ZeRO-3 walks (they read the rows' ZeRO stage) added where every kind
    is priced on the rows they walk, else the table priced again (`price` as kind_table's)."""
    walks = kind_walks(model, seq_len, c)
    if walks is None:
        return table
    if all(times is not None and len(held_rows(rows, walks.rows)[0]) == len(walks.rows)
           for rows, times in zip(table.rows, table.times)):
        return table._replace(walks=walks)
    return kind_table(model, seq_len, c, micro_batches, price)


def mtp_layer_times(table: KindTable, model: ModelSpec, seq_len: int, average: LayerTimes) -> LayerTimes:
    """The MTP depths' layer (cost.mtp: the last decoder layer's kind) on every row: `average`
    where every layer is alike (the model's own average layer is it) or the model trains none."""
    if len(table.kinds) == 1 or not model.mtp_layers:
        return average
    k = table.kinds.index(mtp_kind(model, seq_len))
    return table.at(k, table.rows[k])
