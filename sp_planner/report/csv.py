"""plans.csv: every candidate the search evaluated, one row each, in a documented column order.

The columns are the search frame's (see sp_planner.estimate), renamed only where the frame's
name lacks its unit (comm_<kind> -> comm_<kind>_bytes), plus `rank`, `cp`, `world_size` and
`simulated_step_time_s` (the event simulator's step, for the plans sp-plan --simulate K simulated;
empty for the rest and without --simulate). README.md ("Reports") documents every column;
`CSV_COLUMNS` is the single list plans.csv and `sp-plan --format csv` both follow, the latter with
`expressible` after them (PLAN_CSV_COLUMNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, PlanEstimate, TimeBreakdown, whole_byte_parts
from sp_planner.pipeline_order import priced_groups
from sp_planner.plan import ParallelPlan
from sp_planner.present.expressible import EXPRESSIBLE_COLUMN
from sp_planner.present.labels import breaks_hard_rule

# The plan's fields; vpp_group is the micro-batch group priced (pipeline_order.priced_groups: the
# search frame's is empty but where --vpp-group pins it, a candidate's being the group priced), empty
# at vpp 1.
PLAN_COLUMNS: tuple[str, ...] = tuple(ParallelPlan.model_fields)
MEMORY_COLUMNS: tuple[str, ...] = tuple(f"mem_{name}" for name in MemoryBreakdown.model_fields)
TIME_COLUMNS: tuple[str, ...] = tuple(f"time_{name}" for name in TimeBreakdown.model_fields)
COMM_KINDS: tuple[str, ...] = tuple(CommBytes.model_fields)
LINK_COLUMNS: tuple[str, ...] = tuple(f"link_{name}" for name in CommLinks.model_fields)

CSV_COLUMNS: tuple[str, ...] = (
    "rank",
    *PLAN_COLUMNS,
    "cp",
    "world_size",
    "fits",
    "reason",
    "memory_peak_bytes",
    "step_time_s",
    "simulated_step_time_s",
    "tokens_per_s",
    "model_tflops_per_gpu",
    "hardware_tflops_per_gpu",
    "mfu",
    "hardware_mfu",
    *(f"comm_{kind}_bytes" for kind in COMM_KINDS),
    *LINK_COLUMNS,
    *MEMORY_COLUMNS,
    *TIME_COLUMNS,
)

# sp-plan --format csv: the plans it ranks, in plans.csv's columns and whether --framework can
# express each (True/False; empty for --framework all).
PLAN_CSV_COLUMNS: tuple[str, ...] = (*CSV_COLUMNS, EXPRESSIBLE_COLUMN)


# The columns plans_table adds to the search frame's (simulated_step_time_s only where the frame
# lacks it: write_report gives it the simulated plans' column, with_simulated).
ADDED_COLUMNS: tuple[str, ...] = ("rank", "cp", "world_size", "simulated_step_time_s")
SIMULATED = "simulated_step_time_s"


def plans_table(frame: pd.DataFrame, *, global_batch: int) -> pd.DataFrame:
    """The search frame as plans.csv lays it out.

    Rows: plans that fit, fastest first (`rank` 1, 2, ...), then the rest in the frame's order
    with an empty `rank`. A plan that breaks a hard rule (any reason but 'oom') cannot run, so its
    metrics, bytes and links are left empty rather than printed as if they meant something.
    `simulated_step_time_s` is the frame's column of that name (with_simulated), else empty.
    `vpp_group`: the micro-batch group each interleaved plan is priced with at `global_batch`.
    """
    table = frame.rename(columns={f"comm_{kind}": f"comm_{kind}_bytes" for kind in COMM_KINDS})
    missing = [c for c in CSV_COLUMNS if c not in table.columns and c not in ADDED_COLUMNS]
    if missing:
        raise ValueError(f"search frame lacks the columns {missing}")
    fits = table["fits"].to_numpy(dtype=bool)
    fitting = np.flatnonzero(fits)
    fitting = fitting[np.argsort(table["step_time_s"].to_numpy()[fitting], kind="stable")]
    # One take of the columns plans.csv shows, in its row order (not a sort, a concat and a column
    # selection, each copying the ~200,000 rows of a 4096-GPU search).
    kept = [name for name in CSV_COLUMNS if name not in ADDED_COLUMNS or (name == SIMULATED and name in table)]
    ordered = table[kept].take(np.concatenate([fitting, np.flatnonzero(~fits)])).reset_index(drop=True)
    rank = pd.array(np.arange(1, len(ordered) + 1), dtype="Int64")
    rank[len(fitting):] = pd.NA
    ordered = ordered.assign(
        rank=rank,
        cp=ordered["ulysses"] * ordered["ring"],
        world_size=ordered["dp"] * ordered["pp"] * ordered["tp"] * ordered["ulysses"] * ordered["ring"],
    )
    m = global_batch // (ordered["dp"].to_numpy() * ordered["micro_batch"].to_numpy())
    own = ordered["vpp_group"].fillna(0).to_numpy(dtype=np.int64) if "vpp_group" in ordered else None  # --vpp-group
    groups = pd.array(priced_groups(ordered["pp"].to_numpy(), ordered["vpp"].to_numpy(), m, own), dtype="Int64")
    groups[groups == 0] = pd.NA  # vpp 1: no interleaved schedule, no group
    ordered["vpp_group"] = groups
    if SIMULATED not in ordered:
        ordered[SIMULATED] = np.nan
    ordered["reason"] = ordered["reason"].fillna("")
    ordered = ordered.loc[:, list(CSV_COLUMNS)]
    reasons = ordered["reason"]
    rule_of = {reason: breaks_hard_rule(reason) for reason in reasons.unique()}  # a few hundred distinct reasons
    broken = (~ordered["fits"].astype(bool)) & reasons.map(rule_of).astype(bool)
    # The mem_ parts as whole bytes that sum to memory_peak_bytes (each rounded alone, they missed
    # it by a byte or more).
    ordered[list(MEMORY_COLUMNS)] = whole_byte_parts(ordered[list(MEMORY_COLUMNS)].to_numpy(dtype=np.float64))
    for name in CSV_COLUMNS[CSV_COLUMNS.index("memory_peak_bytes"):]:
        column = ordered[name]
        if name.endswith("_bytes") and column.dtype == np.float64:
            column = column.round().astype("Int64")  # whole bytes, as summary.json writes them
        if pd.api.types.is_integer_dtype(column.dtype):
            column = column.astype("Int64")  # nullable, so that the emptied rows keep the rest as ints
        ordered[name] = column.mask(broken)
    return ordered


def with_simulated(frame: pd.DataFrame, ranked: Sequence[PlanEstimate]) -> pd.DataFrame:
    """`frame` with a simulated_step_time_s column for plans.csv: the event simulator's step of the
    plans in `ranked` that sp-plan --simulate K simulated, NaN (written empty) for every other row.
    The frame itself when none was simulated (plans_table then leaves the column empty)."""
    simulated = [est for est in ranked if est.simulated_step_time_s is not None]
    if not simulated:
        return frame
    column = np.full(len(frame), np.nan)
    for est in simulated:
        mask = np.ones(len(frame), dtype=bool)
        for name, value in est.plan.model_dump().items():
            values = frame[name]
            # None (an even pipeline split) is missing in the frame, where == matches nothing.
            mask &= values.isna().to_numpy() if value is None else (values == value).to_numpy(dtype=bool,
                                                                                                 na_value=False)
        column[mask] = est.simulated_step_time_s
    return frame.assign(**{SIMULATED: column})


def write_plans_csv(path: Path, frame: pd.DataFrame, *, global_batch: int) -> None:
    # Full float precision: the CSV is for analysis, the HTML rounds for reading.
    write_csv(path, plans_table(frame, global_batch=global_batch))


# Rows formatted, joined and written per block: the text of one block stays tens of MB whatever
# the row count.
_BLOCK_ROWS = 16384


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """The bytes `table.to_csv(path, index=False)` writes, in a fraction of the time: each column is
    formatted as pandas does (floats at full precision, repr; missing values empty), each distinct
    value of a block once and only where present (the rule breakers' metrics are empty), text
    quoted as the csv module's QUOTE_MINIMAL, which pandas uses, and rows joined with str.join
    (about 3x faster than csv.writer for the ~200,000 rows of a 4096-GPU search). Each column's
    values and missing cells are taken out of pandas once, not once per block."""
    columns = [_Column.of(table[name]) for name in table.columns]
    with path.open("w", newline="", encoding="utf-8") as out:
        out.write(",".join(_quoted(str(name)) for name in table.columns) + "\n")
        for start in range(0, len(table), _BLOCK_ROWS):
            cells = [column.text(start, start + _BLOCK_ROWS) for column in columns]
            out.write("\n".join(map(",".join, zip(*cells))) + "\n")


def _quoted(text: str) -> str:
    """csv.QUOTE_MINIMAL: quoted when it holds the delimiter, a quote or a line break; quotes doubled."""
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


class _Column(NamedTuple):
    """One column as numpy arrays: `keys` (equal where the text is equal), `missing` (None when no
    cell is) and the kind of text its values format to."""

    keys: np.ndarray
    missing: np.ndarray | None
    kind: str  # "float", "int" (integers and booleans: str) or "text" (quoted when needed)

    @classmethod
    def of(cls, column: pd.Series) -> _Column:
        missing = column.isna().to_numpy()
        if column.dtype == np.float64:
            # distinct by bit pattern: -0.0 is not 0.0 in the text
            keys, kind = column.to_numpy().view(np.int64), "float"
        elif pd.api.types.is_integer_dtype(column.dtype) or (pd.api.types.is_bool_dtype(column.dtype)
                                                             and not missing.any()):
            dtype = bool if pd.api.types.is_bool_dtype(column.dtype) else np.int64
            keys, kind = column.to_numpy(dtype=dtype, na_value=0), "int"
        else:
            keys, kind = column.to_numpy(dtype=object), "text"
        return cls(keys, missing if missing.any() else None, kind)

    def text(self, start: int, stop: int) -> list[str]:
        """The cells of rows start..stop as pandas writes them: each distinct present value
        formatted once (pd.factorize, a hash: no sort), missing values empty."""
        keys = self.keys[start:stop]
        missing = None if self.missing is None else self.missing[start:stop]
        if missing is None:
            codes, distinct = pd.factorize(keys)
        else:
            codes = np.full(len(keys), -1, dtype=np.int64)  # -1: the "" appended after the distinct values
            codes[~missing], distinct = pd.factorize(keys[~missing])
        values = np.asarray(distinct)
        if self.kind == "float":
            names = list(map(float.__repr__, values.view(np.float64).tolist()))
        elif self.kind == "int":
            names = [str(v) for v in values.tolist()]
        else:
            names = [_quoted(str(v)) for v in values.tolist()]
        return np.array([*names, ""], dtype=object)[codes].tolist()
