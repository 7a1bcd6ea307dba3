from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import CommBytes, plain
from sp_planner.pipeline_order import priced_group
from sp_planner.report.csv import CSV_COLUMNS, PLAN_COLUMNS, plans_table, with_simulated, write_csv, write_plans_csv
from sp_planner.search import search
from sp_planner.specs.workload import Workload


def test_csv_has_every_candidate_in_the_documented_columns(question, tmp_path):
    path = tmp_path / "plans.csv"
    write_plans_csv(path, question.result.frame, global_batch=question.workload.global_batch)
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    assert list(table.columns) == list(CSV_COLUMNS)
    assert len(table) == question.result.candidates_evaluated == len(question.result.frame)
    # 2 nodes x 8 GPUs: every candidate uses all 16, and cp is ulysses x ring.
    assert (table["world_size"] == 16).all()
    assert (table["cp"] == table["ulysses"] * table["ring"]).all()
    assert {f"comm_{kind}_bytes" for kind in CommBytes.model_fields} <= set(table.columns)


def test_csv_ranks_fitting_plans_by_step_time_then_lists_the_rest(question):
    table = plans_table(question.result.frame, global_batch=question.workload.global_batch)
    fits = table["fits"].astype(bool)
    assert fits.any() and (~fits).any()
    # Fitting rows first, ranked 1..n by step time; the rest unranked and with a reason.
    assert fits.iloc[: fits.sum()].all()
    ranked = table[fits]
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["step_time_s"].is_monotonic_increasing
    assert table.loc[~fits, "rank"].isna().all()
    assert (table.loc[~fits, "reason"] != "").all()
    assert (table.loc[fits, "reason"] == "").all()


def test_csv_first_row_is_the_search_best_plan(question):
    best = question.result.ranked[0]
    table = plans_table(question.result.frame, global_batch=question.workload.global_batch)
    row = table.iloc[0]
    plan = best.plan.model_dump()
    # A candidate's vpp_group is None (the group priced); plans.csv names it (empty at vpp 1).
    assert plan["vpp_group"] is None
    plan["vpp_group"] = priced_group(best.plan.pp, best.plan.vpp, best.plan.num_micro_batches(question.workload))
    for name in PLAN_COLUMNS:
        assert plain(row[name]) == plan[name]  # an even pipeline split is NA in the CSV, None in the plan
    assert math.isclose(row["step_time_s"], best.step_time_s, rel_tol=1e-12)
    assert row["memory_peak_bytes"] == round(best.memory_peak_bytes)  # whole bytes, as summary.json
    assert all(pd.api.types.is_integer_dtype(table[name]) for name in table.columns if name.endswith("_bytes"))
    assert math.isclose(row["mfu"], best.mfu, rel_tol=1e-12)
    for kind, sent in best.comm_bytes.model_dump().items():
        assert row[f"comm_{kind}_bytes"] == sent
        assert row[f"link_{kind}"] == getattr(best.comm_links, kind)


def test_csv_memory_parts_sum_to_the_peak_on_every_row():
    """Qwen3-8B at 200K on 5 x 8 H100s: the mem_ columns, each rounded alone, missed
    memory_peak_bytes by a byte on most rows; now every costed row's parts add up to it."""
    result = search(load_model("qwen3-8b"), load_hardware("h100"), Workload(seq_len=200 * 1024, global_batch=20),
                    num_nodes=5, gpus_per_node=8, top_k=3)
    table = plans_table(result.frame, global_batch=20)
    costed = table[table["memory_peak_bytes"].notna()]
    assert len(costed) > 1000
    parts = costed[[c for c in table.columns if c.startswith("mem_")]].astype("int64").sum(axis=1)
    assert (parts == costed["memory_peak_bytes"].astype("int64")).all()
    assert (table.loc[costed.index[0], "memory_peak_bytes"] == round(result.ranked[0].memory_peak_bytes))


def test_csv_refuses_a_frame_without_a_documented_column(question):
    frame = question.result.frame.drop(columns=["mfu"])
    with pytest.raises(ValueError, match="mfu"):
        plans_table(frame, global_batch=question.workload.global_batch)


def test_fast_writer_writes_the_bytes_pandas_writes(question, tmp_path):
    # The search's table, and the awkward cases: missing values of every dtype, -0.0, inf, tiny
    # and huge floats, text that needs quoting.
    awkward = pd.DataFrame({
        "f": [0.1, -0.0, 0.0, math.nan, math.inf, 1e-300, 123456789012345.67, 2.0],
        "i": [1, -2, 3, 4, 5, 6, 7, 2**62],
        "n": pd.array([1, None, 3, None, 5, 6, 7, 8], dtype="Int64"),
        "b": [True, False, True, True, False, False, True, False],
        "s": ["plain", "a, comma", 'a "quote"', "", None, "line\nbreak", "ünï", "x"],
    })
    plans = plans_table(question.result.frame, global_batch=question.workload.global_batch)
    for name, table in (("plans", plans), ("awkward", awkward)):
        ours, theirs = tmp_path / f"{name}.csv", tmp_path / f"{name}-pandas.csv"
        write_csv(ours, table)
        table.to_csv(theirs, index=False)
        assert ours.read_bytes() == theirs.read_bytes(), name
    assert np.isnan(pd.read_csv(tmp_path / "awkward.csv")["f"][3])


def test_fast_writer_joins_blocks_of_rows_without_losing_or_repeating_one(question, tmp_path, monkeypatch):
    import sp_planner.report.csv as csv_module

    table = plans_table(question.result.frame, global_batch=question.workload.global_batch).iloc[:10]
    monkeypatch.setattr(csv_module, "_BLOCK_ROWS", 3)  # blocks of 3, 3, 3 and 1 rows
    ours, theirs = tmp_path / "ours.csv", tmp_path / "pandas.csv"
    write_csv(ours, table)
    table.to_csv(theirs, index=False)
    assert ours.read_bytes() == theirs.read_bytes()
    empty = tmp_path / "empty.csv"
    write_csv(empty, table.iloc[:0])
    table.iloc[:0].to_csv(theirs, index=False)
    assert empty.read_bytes() == theirs.read_bytes()


def test_csv_shows_the_simulated_step_of_the_simulated_plans_only(question):
    # Without sp-plan --simulate the column is there, empty: the same columns every time.
    frame = question.result.frame
    assert plans_table(frame, global_batch=question.workload.global_batch)["simulated_step_time_s"].isna().all()
    assert with_simulated(frame, question.result.ranked) is frame
    best, second = question.result.ranked[:2]
    ranked = [best.model_copy(update={"simulated_step_time_s": 1.5}), second]
    table = plans_table(with_simulated(frame, ranked), global_batch=question.workload.global_batch)
    assert list(table.columns) == list(CSV_COLUMNS)
    assert table["simulated_step_time_s"].notna().sum() == 1
    assert table.loc[table["rank"] == 1, "simulated_step_time_s"].tolist() == [1.5]
