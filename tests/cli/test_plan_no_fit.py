"""When no plan fits: exit 1, the closest plan, and only fixes that a new search confirms."""

from __future__ import annotations

import json
import shlex

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search import search
from sp_planner.specs.batch import default_global_batch
from sp_planner.specs.workload import Workload

# Llama-3-70B on one node of 8 x 80 GiB: even fully sharded, its 70e9 params x 16 bytes of
# weights, gradients and Adam state are 140 GB per GPU, so no plan fits at any length.
NO_FIT = ["--model", "llama3-70b", "--hardware", "a800", "--nodes", "1", "--seq-len", "128k"]


def _with_option(args: list[str], option: str) -> list[str]:
    """Apply a suggestion such as '--nodes 4' or 'without --tp --ring' to an argument list."""
    words = shlex.split(option)
    if words[0] == "without":
        drop = set(words[1:])
        kept, skip = [], False
        for arg in args:
            if skip:
                skip = False
            elif arg in drop:
                skip = True
            else:
                kept.append(arg)
        return kept
    out = list(args)
    for flag, value in zip(words[::2], words[1::2]):
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def test_no_fit_exits_1_with_checked_fixes(sp_plan):
    result = sp_plan(*NO_FIT, "--format", "json", "--top", "3")
    assert result.exit_code == 1 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["plans"] and not any(p["fits"] for p in doc["plans"])
    suggestions = doc["fit_suggestions"]
    assert any(s["change"] == "nodes" for s in suggestions)
    for suggestion in suggestions:
        rerun = sp_plan(*_with_option(NO_FIT, suggestion["option"]), "--format", "json", "--top", "1")
        assert rerun.exit_code == 0, suggestion
        best = json.loads(rerun.stdout)["plans"][0]
        assert best["fits"]
        assert best["step_time_s"] == suggestion["step_time_s"]


def test_more_nodes_suggestion_is_the_fewest_that_fit(sp_plan):
    doc = json.loads(sp_plan(*NO_FIT, "--format", "json").stdout)
    (nodes,) = [s for s in doc["fit_suggestions"] if s["change"] == "nodes"]
    count = int(nodes["option"].split()[1])
    model, hardware = load_model("llama3-70b"), load_hardware("a800")
    for fewer in range(2, count):
        # sp-plan's default global batch: 4M tokens, rounded to the GPU count.
        workload = Workload(seq_len=128 * 1024, global_batch=default_global_batch(128 * 1024, 8 * fewer))
        ranked = search(model, hardware, workload, num_nodes=fewer, gpus_per_node=8, top_k=1).ranked
        assert not ranked[0].fits, fewer


def test_no_fit_table_names_the_closest_plan_and_fixes(sp_plan):
    result = sp_plan(*NO_FIT)
    assert result.exit_code == 1
    assert "No plan fits. The closest is" in result.stdout
    assert "Each of these changes was checked by searching again and makes a plan fit:" in result.stdout
    assert "--nodes" in result.stdout
    # No flags for a plan that cannot run.
    assert "flags for plan" not in result.stdout


def test_no_fit_does_not_write_out(sp_plan, tmp_path):
    out = tmp_path / "plan.json"
    result = sp_plan(*NO_FIT, "--format", "json", "--out", out)
    assert result.exit_code == 1
    assert result.stderr == f"note: {out} not written: no plan fits\n"
    assert list(tmp_path.iterdir()) == []


def test_pinned_recompute_none_suggests_the_mildest_recompute_that_fits(sp_plan):
    args = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "1", "--seq-len", "256k", "--recompute", "none"]
    result = sp_plan(*args, "--format", "json", "--top", "1")
    doc = json.loads(result.stdout)
    if result.exit_code == 0:
        assert doc["plans"][0]["fits"] and doc["fit_suggestions"] == []
        return
    recompute = [s for s in doc["fit_suggestions"] if s["change"] == "recompute"]
    for suggestion in recompute:
        level = suggestion["option"].split()[1]
        assert suggestion["plan"]["recompute"] == level
        if level == "full":  # selective was tried first and must not fit
            milder = sp_plan(*_with_option(args, "--recompute selective"), "--format", "json", "--top", "1")
            assert milder.exit_code == 1


def test_hsdp_replicas_no_dp_can_take_are_one_line(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--hardware", "h100", "--nodes", "2", "--seq-len", "128k",
                     "--dp-replicate", "3")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("error: --dp-replicate 3 divides no data-parallel degree here: dp divides 16 (the GPUs "
                             "the other degrees leave); give a divisor of 16 (HSDP: dp = dp_replicate x dp_shard)\n")


def test_fixes_skip_clusters_the_pinned_replicas_cannot_use(sp_plan):
    """16 replicas need dp 16, all 16 GPUs: a smaller cluster has no candidate, which is not a fix
    (and used to fail an assertion inside the search)."""
    args = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "2", "--seq-len", "128k", "--dp-replicate", "16"]
    result = sp_plan(*args, "--format", "json")
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["plans"][0]["dp_replicate"] == 16 and not doc["plans"][0]["fits"]
    assert doc["fit_suggestions"]
    for suggestion in doc["fit_suggestions"]:
        assert sp_plan(*_with_option(args, suggestion["option"]), "--format", "json").exit_code == 0


def test_a_thousand_nodes_get_a_batch_their_plans_can_split(sp_plan):
    """8000 GPUs = 64 x 125: at 128K the 4M-token budget is 32 sequences, which no dp of 8000
    divides while its model-parallel part takes the 125; the default batch is 125 sequences."""
    result = sp_plan("--model", "llama3-8b", "--hardware", "h100", "--nodes", "1000", "--seq-len", "128k",
                     "--format", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["question"]["global_batch"] == 125
    assert doc["plans"][0]["fits"] and doc["plans"][0]["dp"] % 125 == 0


def test_offloading_keeps_its_pins_in_the_fixes_it_checks(sp_plan):
    # --cpu-offload-layers pins pp 1 and no recompute; the fixes tried --recompute selective and
    # "without --pp" beside it, and sp-plan exited 2 on its own ParallelPlan (fuzzing, stop 57).
    args = ["--model", "llama3-70b", "--hardware", "h100", "--nodes", "1", "--seq-len", "32k", "--tp", "8",
            "--cpu-offload-layers", "40"]
    result = sp_plan(*args, "--format", "json", "--top", "1")
    assert result.exit_code == 1 and result.stderr == "", result
    doc = json.loads(result.stdout)
    # "without --tp" (pp 1 kept) was checked and fits no better
    assert [(s["change"], s["option"]) for s in doc["fit_suggestions"]] == [("nodes", "--nodes 4")]
    for suggestion in doc["fit_suggestions"]:
        assert (suggestion["plan"]["pp"], suggestion["plan"]["recompute"]) == (1, "none")
        assert suggestion["plan"]["cpu_offload_layers"] == 40
        rerun = sp_plan(*_with_option(args, suggestion["option"]), "--format", "json", "--top", "1")
        assert rerun.exit_code == 0, suggestion


def test_where_a_rule_refuses_every_plan_the_answer_names_the_rule_not_memory(sp_plan, monkeypatch):
    # pp 4 x vpp 2 with 3 micro-batches: the vpp rule refuses all 15 plans at 26.5 GiB of 79.2; the
    # answer said "26.5 GiB per GPU against 79.2 GiB" as if memory were why.
    monkeypatch.setenv("COLUMNS", "80")
    result = sp_plan("--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "8k", "--pp", "4",
                     "--vpp", "2", "--tp", "2", "--global-batch", "3")
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "No plan can run: each breaks a rule, whatever its memory. The first, tp 2 x ulysses 1" in text
    assert ("breaks the vpp rule: vpp 2 (interleaved 1F1B) needs at least pp 4 micro-batches per step, has 3 "
            "(Megatron schedules.py: the micro-batch group size lies in [pp, m]); use a global batch of 4 or more "
            "(m 4).") in text
    assert "GiB per GPU against" not in text and "The closest" not in text


def test_interleaved_suggestions_carry_the_group_priced_at_their_own_batch(sp_plan):
    # fit_suggestions[].plan.vpp_group was null for interleaved plans (every other plan entry carries
    # the priced group). "--global-batch 4" changes m from 3 to 4: pp 4 prices groups of 4; "without
    # --tp --pp" keeps batch 3 at dp 1: pp 2 prices m 3 in one group of 3 (pipeline_order.priced_group).
    args = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "8k", "--pp", "4", "--vpp",
            "2", "--tp", "2", "--global-batch", "3"]
    result = sp_plan(*args, "--format", "json")
    assert result.exit_code == 1
    suggestions = json.loads(result.stdout)["fit_suggestions"]
    assert [(s["option"], s["plan"]["pp"], s["plan"]["vpp"], s["plan"]["dp"], s["plan"]["vpp_group"])
            for s in suggestions] == [("without --tp --pp", 2, 2, 1, 3), ("--global-batch 4", 4, 2, 1, 4)]
    for suggestion in suggestions:  # the plan that sp-plan with the change prints, group and all
        rerun = sp_plan(*_with_option(args, suggestion["option"]), "--format", "json", "--top", "1")
        assert json.loads(rerun.stdout)["plans"][0]["vpp_group"] == suggestion["plan"]["vpp_group"]
