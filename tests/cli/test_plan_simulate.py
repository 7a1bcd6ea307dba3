"""`sp-plan --simulate K` shows the simulated step time beside the analytic one."""

from __future__ import annotations

import json


def test_sp_plan_simulate_shows_both_times(sp_plan):
    args = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", 2, "--seq-len", "64k", "--global-batch", 16,
            "--top", 5, "--simulate", 3)
    table = sp_plan(*args)
    assert table.exit_code == 0, table.stderr
    assert "sim step" in table.stdout
    doc = json.loads(sp_plan(*args, "--format", "json").stdout)
    simulated = [plan["simulated_step_time_s"] for plan in doc["plans"]]
    assert all(t is not None and t > 0 for t in simulated[:3])
    assert simulated[:3] == sorted(simulated[:3])
    assert simulated[3:] == [None, None]


def test_sp_plan_csv_has_the_simulated_step_and_the_same_columns_without_it(sp_plan):
    import io

    import pandas as pd

    from sp_planner.report.csv import CSV_COLUMNS

    args = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", 2, "--seq-len", "64k", "--global-batch", 16,
            "--top", 4)
    simulated = sp_plan(*args, "--simulate", 2, "--format", "csv")
    assert simulated.exit_code == 0, simulated.stderr
    table = pd.read_csv(io.StringIO(simulated.stdout))
    assert tuple(table.columns) == (*CSV_COLUMNS, "expressible")
    doc = json.loads(sp_plan(*args, "--simulate", 2, "--format", "json").stdout)
    # The rank order follows the simulated step, which the CSV now shows (empty past the two simulated).
    assert table["simulated_step_time_s"][:2].tolist() == [p["simulated_step_time_s"] for p in doc["plans"][:2]]
    assert table["simulated_step_time_s"][:2].is_monotonic_increasing
    assert table["simulated_step_time_s"][2:].isna().all()
    plain = sp_plan(*args, "--format", "csv")
    table = pd.read_csv(io.StringIO(plain.stdout))
    assert tuple(table.columns) == (*CSV_COLUMNS, "expressible") and table["simulated_step_time_s"].isna().all()


def test_a_plan_in_both_rankings_has_one_simulated_step(sp_plan):
    # --framework torchtitan: its ranking and every framework's are simulated apart; a plan the one
    # simulated and the other lists past its head had a value in one and null in the other.
    doc = json.loads(sp_plan("--model", "llama3-70b", "--hardware", "h100", "--nodes", 4, "--seq-len", "128k",
                             "--framework", "torchtitan", "--simulate", 3, "--format", "json").stdout)
    fields = ("tp", "pp", "dp", "ulysses", "ring", "zero", "recompute", "micro_batch", "ring_layout", "cp_comm",
              "dp_replicate", "reshard_after_forward", "vpp", "precision")

    def by_plan(entries):
        return {tuple(entry[f] for f in fields): entry["simulated_step_time_s"] for entry in entries}

    every, torchtitan = by_plan(doc["plans"]), by_plan(doc["framework_plans"])
    shared = set(every) & set(torchtitan)
    assert any(every[plan] is not None for plan in shared)
    assert all(every[plan] == torchtitan[plan] for plan in shared)


def test_the_overall_best_differs_from_the_frameworks_only_by_a_plan_it_cannot_express(sp_plan):
    # Gemma 3 27B at 128K over pp 8: the simulator puts plain 1F1B (9th by the analytic model among
    # Megatron's plans, past the first 10 of every plan) ahead of the interleaved ones; sp-plan
    # said Megatron "cannot express" the interleaved plan every plan's ranking kept first.
    args = ("--model", "Gemma-3-27B", "--hardware", "h100", "--nodes", 8, "--seq-len", "128k", "--pp", 8,
            "--simulate", 10)
    table = sp_plan(*args)
    assert table.exit_code == 0, table.stderr
    assert "cannot express" not in table.stdout
    doc = json.loads(sp_plan(*args, "--format", "json").stdout)
    best, mine = doc["plans"][0], doc["framework_plans"][0]
    assert best["vpp"] == mine["vpp"] == 1
    assert best["simulated_step_time_s"] == mine["simulated_step_time_s"]
    assert mine["simulated_step_time_s"] < min(p["simulated_step_time_s"] for p in doc["framework_plans"][1:10])


def test_simulate_with_no_plan_that_fits_says_it_simulated_none(sp_plan):
    # Llama-3-70B on one H100: 18 B x 70.55e9 parameters of states = 1,182.7 GiB against 79.2 GiB, so
    # no plan fits and rerank_by_simulation (fitting plans only) simulated nothing, without a word.
    unpinned = sp_plan("--model", "llama3-70b", "--hardware", "h100", "--nodes", 1, "--gpus-per-node", 1,
                       "--seq-len", "4k", "--top", 1, "--simulate", 2)
    assert unpinned.exit_code == 1 and "sim step" not in unpinned.stdout
    assert "note: --simulate 2 simulated no plan: no plan fits\n" in unpinned.stderr
    # Llama-3-8B unsharded over dp 8 (ZeRO-0): 18 B x 8.03e9 = 134.6 GiB of states per GPU.
    pinned = sp_plan("--model", "llama3-8b", "--hardware", "h100", "--nodes", 1, "--seq-len", "32k", "--tp", 1,
                     "--pp", 1, "--dp", 8, "--ulysses", 1, "--ring", 1, "--zero", 0, "--top", 1, "--simulate", 2)
    assert pinned.exit_code == 1
    assert "note: --simulate 2 simulated no plan: the pinned plan does not fit\n" in pinned.stderr
