"""cli.plan_output: what the table says about the plans the framework cannot express, the CSV's
ranks and the runner-up under --top 1."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from sp_planner.cli import plan_output, simulate_cmd
from sp_planner.flags import render_flags

QUESTION = ["--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "2", "--seq-len", "131000",
            "--framework", "torchtitan", "--framework-version", "0.2.2"]


def test_best_overall_reason_is_asked_of_the_release_the_user_named(sp_plan, monkeypatch):
    """The "best plan overall" line explains the refusal of the release asked for, not the newest."""
    asked = []

    def recording(framework, request, *args, **kwargs):
        asked.append(request)
        return render_flags(framework, request, *args, **kwargs)

    monkeypatch.setattr(plan_output, "render_flags", recording)
    result = sp_plan(*QUESTION)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "The best plan overall, tp 1 x ulysses 4 x ring 1 x dp 4" in text
    best = [r for r in asked if r.plan.ulysses == 4 and r.plan.dp == 4 and r.plan.ring == 1]
    assert best and all(r.framework_version == "0.2.2" for r in best)
    reason = render_flags("torchtitan", best[0]).reason
    assert reason and " ".join(reason.split()) in text


# Llama-3-70B pinned to tp 8 x pp 4 without recompute on 4 x 8 A800 at 8K: 8 of its 32 plans fit.
PINNED_FEW_FIT = ["--model", "llama3-70b", "--hardware", "a800", "--nodes", "4", "--seq-len", "8k",
                  "--tp", "8", "--pp", "4", "--ulysses", "1", "--ring", "1", "--recompute", "none", "--zero", "3",
                  "--framework", "all", "--top", "100"]


def test_csv_leaves_rank_empty_for_plans_that_do_not_fit(sp_plan):
    """As plans.csv (and the README's column table): `rank` 1, 2, ... for the plans that fit, empty
    for those listed after them. sp-plan --format csv numbered every row, so a plan that runs out
    of memory read as ranked 9th."""
    result = sp_plan(*PINNED_FEW_FIT, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout), dtype={"rank": "Int64"})
    fits = table["fits"].tolist()
    assert fits == [True] * 8 + [False] * 24
    assert table["rank"].iloc[:8].tolist() == list(range(1, 9))
    assert table["rank"].iloc[8:].isna().all()
    # Whole numbers beside the empty cells, not 1.0, 2.0, ...
    assert [line.split(",", 1)[0] for line in result.stdout.splitlines()[1:10]] == [*map(str, range(1, 9)), ""]


# Llama-3-8B on 1 x 3 H100s, pp 1 and 2 sequences: dp 3 breaks the batch rule and tp, ulysses or
# ring 3 the head or sequence rules, so every plan shown breaks a hard rule.
NONE_RUNS = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--gpus-per-node", "3", "--seq-len", "4k",
             "--global-batch", "2", "--pp", "1", "--top", "3"]


def test_csv_leaves_the_numbers_of_a_plan_that_cannot_run_empty(sp_plan):
    """As plans.csv (README: a plan that breaks a hard rule has empty metric, byte, link and
    breakdown columns). sp-plan --format csv printed a step time, MFU and memory for them."""
    from sp_planner.report.csv import CSV_COLUMNS

    result = sp_plan(*NONE_RUNS, "--format", "csv")
    assert result.exit_code == 1, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout), keep_default_na=False, na_values=[""])
    assert len(table) == 3 and not table["fits"].any()
    assert table["reason"].str.startswith("heads: ").all()
    metrics = list(CSV_COLUMNS[CSV_COLUMNS.index("memory_peak_bytes"):])
    assert table[metrics].isna().all().all()
    assert table["tp"].tolist() == [3, 3, 3] and table["world_size"].tolist() == [3, 3, 3]


def test_top_1_still_compares_the_winner_with_the_runner_up(sp_plan):
    """--top 1 said "No other candidate was ranked." of a search that ranked thousands; the
    paragraph now names the runner-up as --top 2 does."""
    readme = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k"]
    one, two = sp_plan(*readme, "--top", "1"), sp_plan(*readme, "--top", "2")
    assert one.exit_code == two.exit_code == 0

    def why(out: str) -> str:
        text = " ".join(out.split())
        start = text.index("Why this plan.")
        return text[start:text.index(" megatron flags", start)]

    assert "No other candidate was ranked." not in why(one.stdout)
    assert "The runner-up (" in why(one.stdout)
    # The same comparison as --top 2, only the tie sentence naming plan 2 of the table is left out.
    runner_up = why(two.stdout)[why(two.stdout).index("The runner-up"):]
    assert why(one.stdout).endswith(runner_up)


def test_heading_groups_the_node_count_like_its_other_counts(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "2048", "--seq-len", "8k",
                     "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert " on 2,048 x 8 H100-SXM: " in result.stdout.splitlines()[0]


@pytest.mark.parametrize(("pins", "group"), [
    # m 9 at pp 2: Megatron's default N = pp leaves a last group of 1 < pp; sp-plan prices N = 3,
    # the flag sets it, and JSON and CSV gave null.
    (("--pp", "2", "--vpp", "8", "--tp", "4", "--global-batch", "9"), 3),
    # m 8 at pp 4: N = pp, Megatron's default (no flag), named too.
    (("--pp", "4", "--vpp", "2", "--tp", "2", "--global-batch", "8"), 4),
])
def test_every_interleaved_plan_carries_the_group_priced_in_json_csv_and_the_plan_file(
        sp_plan, run_main, tmp_path, pins, group):
    question = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "8k", "--dp", "1",
                "--micro-batch", "1", *pins)
    plan_file, report = tmp_path / "plan.json", tmp_path / "report"
    result = sp_plan(*question, "--format", "json", "--out", plan_file, "--report", report)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert {p["vpp_group"] for p in document["plans"] + document["framework_plans"]} == {group}
    assert {p["vpp_group"] for p in json.loads((report / "summary.json").read_text())["plans"]} == {group}
    assert pd.read_csv(report / "plans.csv")["vpp_group"].tolist() == [group] * 15
    listed = sp_plan(*question, "--format", "csv")
    assert listed.exit_code == 0, listed.stderr
    assert pd.read_csv(io.StringIO(listed.stdout))["vpp_group"].tolist() == [group] * 10
    assert json.loads(plan_file.read_text())["plan"]["vpp_group"] == group
    # The plan file's group, pp included, is the one priced: sp-simulate takes it (plan rule vpp).
    simulated = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    flags = document["plans"][0]["flags"]["megatron"]["text"]
    assert (f"--microbatch-group-size-per-virtual-pipeline-stage {group}" in flags) == (group != int(pins[1]))


def test_json_says_which_frameworks_express_each_plan_with_their_own_fp8_recipe(sp_plan):
    # Qwen3-30B-A3B on 2 x 8 H200 at 16K, dp 16 x ep 8, --precision fp8 --framework all: the plans are
    # ranked with Megatron's delayed scaling; each plan's flags.NAME.supported asks torchtitan with its
    # own tensorwise where --fp8-recipe was not given (flags.own_recipe), as its printed flags and the
    # plan file do, so it expresses both plans; given delayed, it expresses neither. The CSV's
    # `expressible` is empty under --framework all.
    question = ["--model", "qwen3-30b-a3b", "--hardware", "h200", "--nodes", "2", "--seq-len", "16k", "--tp", "1",
                "--pp", "1", "--ulysses", "1", "--ring", "1", "--dp", "16", "--ep", "8", "--zero", "3",
                "--no-reshard-after-forward", "--micro-batch", "2", "--recompute", "full", "--framework-version",
                "0.2.2", "--precision", "fp8", "--framework", "all"]
    for given, expressed in (((), True), (("--fp8-recipe", "delayed"), False)):
        result = sp_plan(*question, *given, "--format", "json")
        assert result.exit_code == 0, result.stderr
        plans = json.loads(result.stdout)["framework_plans"]
        assert [p["fp8_recipe"] for p in plans] == ["delayed", "delayed"]
        assert [p["flags"]["torchtitan"]["supported"] for p in plans] == [expressed, expressed]
        assert not any(p["flags"][name]["supported"] for p in plans for name in ("megatron", "mindspeed"))
    frame = pd.read_csv(io.StringIO(sp_plan(*question, "--format", "csv").stdout))
    assert frame["expressible"].isna().all() and len(frame) == 2
