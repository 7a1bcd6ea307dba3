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

from sp_planner.columns import take_rows
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
    then read the same) and, for the MTP depths' kind when the model trains them, every row."""
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


def mtp_layer_times(table: KindTable, model: ModelSpec, seq_len: int, average: LayerTimes) -> LayerTimes:
    """The MTP depths' layer (cost.mtp: the last decoder layer's kind) on every row: `average`
    where every layer is alike (the model's own average layer is it) or the model trains none."""
    if len(table.kinds) == 1 or not model.mtp_layers:
        return average
    k = table.kinds.index(mtp_kind(model, seq_len))
    return table.at(k, table.rows[k])
