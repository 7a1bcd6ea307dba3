"""sp-plan end to end through its real entry point: table, JSON, CSV, --explain, pinning, --out."""

from __future__ import annotations

import io
import json
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.framework_kernels import default_kernel
from sp_planner.cost.runtime import framework_runtime
from sp_planner.flags import FlagRequest, render_all, render_flags
from sp_planner.layout import rank_groups
from sp_planner.plan import RULES, ParallelPlan
from sp_planner.present.table import ring_cell, zero_cell
from sp_planner.planfile import read_plan_file
from sp_planner.planfile_layout import RankLayout
from sp_planner.estimate import PlanEstimate
from sp_planner.present.labels import plan_name
from sp_planner.search import evaluate, search
from sp_planner.specs.workload import Workload
from sp_planner.units import GIB
from tests.cli.conftest import assert_one_line_error, notes_unwrapped

README = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k"]
LLAMA3_8B = load_model("llama3-8b")
A800 = load_hardware("a800")
# The README question: 128K tokens, default global batch = 4M tokens per step = 32 sequences.
README_WORKLOAD = Workload(seq_len=128 * 1024, global_batch=32)


@lru_cache(maxsize=None)
def _json(sp_plan_main, *args: str) -> tuple[int, dict]:
    result = sp_plan_main(*args, "--format", "json")
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def plan_json(sp_plan):
    return lambda *args: _json(sp_plan, *args)


def first_expressible(framework: str, result) -> tuple[int, object]:
    """(rank from 1, estimate) of the best fitting plan `framework` has flags for, found row by row."""
    for rank, (_, row) in enumerate(result.frame.iterrows(), start=1):
        est = PlanEstimate.from_row(row)
        request = FlagRequest(model=LLAMA3_8B, workload=README_WORKLOAD, plan=est.plan, num_nodes=2, gpus_per_node=8)
        if est.fits and render_flags(framework, request).supported:
            return rank, est
    raise AssertionError(f"{framework} expresses no fitting plan")


def test_readme_example_recommends_a_plan_that_fits(sp_plan):
    result = sp_plan(*README)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    direct = search(LLAMA3_8B, A800, README_WORKLOAD, num_nodes=2, gpus_per_node=8)
    # The default framework is Megatron-LM: the overall best (ZeRO-2; ZeRO-3 only adds gathers to
    # it, cost.overlap) is one it can express (Megatron-FSDP optim_grads), so it leads and no other
    # best is named.
    rank, best = first_expressible("megatron", direct)
    assert rank == 1 and best.plan.zero == 2
    assert best.fits and best.memory_peak_bytes <= A800.hbm_bytes
    assert "Ranked plans megatron can express (best first)" in result.stdout
    assert "The best plan overall" not in result.stdout
    assert "--data-parallel-sharding-strategy optim_grads" in result.stdout
    # ZeRO-3 keeping the gathered parameters is shown apart from resharding (3k against 3)
    assert any(r.plan == best.plan.model_copy(update={"zero": 3, "reshard_after_forward": False})
               for r in direct.ranked[:10])
    assert "ZeRO 3k: parameters kept from forward to backward" in " ".join(result.stdout.split())
    assert f"Why this plan. {plan_name(best.plan)} takes" in " ".join(result.stdout.split())
    # Plan 1's row shows its memory against the memory the runtime reports on an A800 (79.3 GiB of
    # its 80 GB) and its step time.
    assert f"{best.memory_peak_bytes / GIB:.1f}/79.3" in result.stdout
    assert "Why this plan." in result.stdout
    assert "megatron flags for plan" in result.stdout


def test_json_plans_fill_the_cluster_and_match_evaluate(plan_json):
    code, doc = plan_json(*README, "--top", "5")
    assert code == 0
    assert doc["question"] == {
        "model": "Llama-3-8B", "hardware": "A800", "num_nodes": 2, "gpus_per_node": 8, "world_size": 16,
        "seq_len": 131072, "global_batch": 32, "causal": True, "hbm_bytes": A800.hbm_bytes,
        "attention_kernel": "fa2", "moe_routing": None,
    }
    # Every rule's count, zero or not, in the order the rules are checked: the same keys every time.
    assert list(doc["prune_counts"]) == [*RULES, "oom"]
    direct = search(LLAMA3_8B, A800, README_WORKLOAD, num_nodes=2, gpus_per_node=8, top_k=5)
    assert doc["candidates_evaluated"] == direct.candidates_evaluated == len(direct.frame)
    assert {rule: n for rule, n in doc["prune_counts"].items() if n} == direct.prune_counts
    assert len(doc["plans"]) == 5
    for entry in doc["plans"]:
        assert entry["tp"] * entry["pp"] * entry["dp"] * entry["ulysses"] * entry["ring"] == 16
    fitting = [e["step_time_s"] for e in doc["plans"] if e["fits"]]
    assert fitting == sorted(fitting)
    first = doc["plans"][0]
    plan = ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    alone = evaluate(LLAMA3_8B, A800, README_WORKLOAD, plan, num_nodes=2, gpus_per_node=8)
    assert first["step_time_s"] == pytest.approx(alone.step_time_s, rel=1e-12)
    assert first["memory_peak_bytes"] == pytest.approx(alone.memory_peak_bytes, rel=1e-12)
    assert first["time"] == pytest.approx(alone.time.model_dump(), rel=1e-12)
    assert "rank_groups" not in first  # the generator only, unless --rank-groups
    assert RankLayout.model_validate(first["rank_layout"]).expand() == rank_groups(plan)
    request = FlagRequest(model=LLAMA3_8B, workload=README_WORKLOAD, plan=plan, num_nodes=2, gpus_per_node=8)
    assert first["flags"] == {
        name: {"supported": f.supported, "text": f.text, "reason": f.reason, "notes": list(f.notes)}
        for name, f in render_all(request).items()
    }


def test_json_rank_groups_of_a_usp_plan_match_the_hand_layout(plan_json):
    # global rank = tp_r + 2*(ulysses_r + 4*ring_r) (Megatron tp-cp order, Ulysses adjacent in CP).
    code, doc = plan_json(*README, "--tp", "2", "--ulysses", "4", "--ring", "2", "--top", "1", "--rank-groups")
    assert code == 0
    groups = doc["plans"][0]["rank_groups"]
    assert RankLayout.model_validate(doc["plans"][0]["rank_layout"]).expand() == groups
    assert groups["tp"] == [[2 * i, 2 * i + 1] for i in range(8)]
    assert groups["ulysses"] == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
    assert groups["ring"] == [[i, i + 8] for i in range(8)]
    assert groups["cp"] == [list(range(0, 16, 2)), list(range(1, 16, 2))]
    assert groups["dp"] == [[r] for r in range(16)]
    assert groups["pp"] == [[r] for r in range(16)]
    if doc["plans"][0]["flags"]["megatron"]["supported"]:
        assert "--hierarchical-context-parallel-sizes 4 2" in doc["plans"][0]["flags"]["megatron"]["text"]


def test_csv_lists_the_top_plans_with_the_report_columns(sp_plan, plan_json):
    from sp_planner.report.csv import CSV_COLUMNS

    result = sp_plan(*README, "--format", "csv", "--top", "4")
    assert result.exit_code == 0 and result.stderr == ""
    table = pd.read_csv(io.StringIO(result.stdout))
    # plans.csv's columns, then whether Megatron-LM (the default --framework) expresses the plan.
    assert tuple(table.columns) == (*CSV_COLUMNS, "expressible")
    assert table["expressible"].tolist() == [True] * 4
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert (table["world_size"] == 16).all()
    assert (table["cp"] == table["ulysses"] * table["ring"]).all()
    _, doc = plan_json(*README, "--top", "4")
    assert table["step_time_s"].tolist() == pytest.approx([p["step_time_s"] for p in doc["plans"]], rel=1e-12)
    assert table["comm_ring_p2p_bytes"].tolist() == [p["comm_bytes"]["ring_p2p"] for p in doc["plans"]]


def test_explain_shows_breakdowns_and_prune_counts(sp_plan):
    result = sp_plan(*README, "--explain")
    assert result.exit_code == 0
    direct = search(LLAMA3_8B, A800, README_WORKLOAD, num_nodes=2, gpus_per_node=8)
    out = result.stdout
    assert "Memory per GPU of the first plan" in out and "Step time of the first plan" in out
    assert f"Pruned candidates (of {direct.candidates_evaluated:,} evaluated)" in out
    for rule, count in direct.prune_counts.items():
        assert any(rule in line and f"{count:,}" in line for line in out.splitlines()), rule
    peak_line = next(line for line in out.splitlines() if line.strip("│ ").startswith("peak"))
    assert f"{first_expressible('megatron', direct)[1].memory_peak_bytes / GIB:.1f} GiB" in peak_line


def test_pinned_degree_narrows_the_search(plan_json):
    code, doc = plan_json(*README, "--tp", "2", "--zero", "1")
    assert code == 0
    assert doc["plans"] and all(p["tp"] == 2 and p["zero"] == 1 for p in doc["plans"])


def test_every_degree_pinned_is_evaluated_even_when_it_does_not_fit(sp_plan, plan_json, tmp_path):
    # tp=pp=ulysses=ring=1 puts all 128K tokens' activations on each GPU: far over 80 GiB.
    args = (*README, "--tp", "1", "--pp", "1", "--ulysses", "1", "--ring", "1", "--zero", "1",
            "--recompute", "none", "--micro-batch", "1")
    code, doc = plan_json(*args)
    assert code == 1  # as an unpinned search that finds nothing
    assert doc["candidates_evaluated"] == 1
    (only,) = doc["plans"]
    assert (only["dp"], only["fits"]) == (16, False)
    assert only["reason"].startswith("oom")
    plan = ParallelPlan(dp=16, zero=1, recompute="none")
    alone = evaluate(LLAMA3_8B, A800, README_WORKLOAD, plan, num_nodes=2, gpus_per_node=8)
    assert only["memory_peak_bytes"] == pytest.approx(alone.memory_peak_bytes, rel=1e-12)
    out = tmp_path / "plan.json"
    table = sp_plan(*args, "--out", out)
    assert table.exit_code == 1
    assert "The pinned plan does not fit." in table.stdout
    assert "flags for plan 1" not in table.stdout  # no flags for a plan sp-run would refuse
    assert not out.exists()  # plan.json with fits false is never written
    assert table.stderr == f"note: {out} not written: the pinned plan does not fit\n"


def test_out_round_trips_the_first_plan(sp_plan, plan_json, tmp_path):
    out = tmp_path / "plan.json"
    result = sp_plan(*README, "--out", out)
    assert result.exit_code == 0
    assert result.stderr == f"wrote {out}\n"
    plan_file = read_plan_file(out)
    _, doc = plan_json(*README)
    # The first plan Megatron-LM (the default framework) can run; JSON keeps every plan, flagged.
    first = next(p for p in doc["plans"] if p["flags"]["megatron"]["supported"])
    assert plan_file.plan == ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    assert (plan_file.model, plan_file.hardware, plan_file.workload) == (LLAMA3_8B, A800, README_WORKLOAD)
    assert (plan_file.num_nodes, plan_file.gpus_per_node, plan_file.framework) == (2, 8, "megatron")
    alone = evaluate(LLAMA3_8B, A800, README_WORKLOAD, plan_file.plan, num_nodes=2, gpus_per_node=8)
    assert plan_file.estimate == alone
    assert plan_file.rank_groups == {}  # full lists only on request
    assert plan_file.rank_layout is not None and plan_file.rank_layout.expand() == rank_groups(plan_file.plan)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_out_lists_rank_groups_in_full_on_request(sp_plan, tmp_path):
    out = tmp_path / "plan.json"
    assert sp_plan(*README, "--out", out, "--rank-groups").exit_code == 0
    plan_file = read_plan_file(out)
    assert plan_file.rank_groups == rank_groups(plan_file.plan) == plan_file.rank_layout.expand()


def test_framework_flags_and_launcher(sp_plan):
    pins = ("--tp", "2", "--zero", "1", "--cp-comm", "p2p")  # MindSpeed has no dense all-gather CP
    result = sp_plan(*README, *pins, "--framework", "mindspeed", "--launcher", "torchrun")
    assert result.exit_code == 0
    ranked = sp_plan(*README, *pins, "--framework", "mindspeed", "--format", "json")  # as MindSpeed runs them
    # MindSpeed on an A800 (test_a_framework_for_other_chips_is_said_in_one_note): its one note.
    assert notes_unwrapped(ranked.stderr) == ["note: MindSpeed runs on Ascend NPUs (torch_npu) only and A800 is no "
                                              "NPU: the plans are ranked by MindSpeed's rules; for GPUs plan with "
                                              "--framework megatron"]
    first = json.loads(ranked.stdout)["plans"][0]
    plan = ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    flags = render_flags("mindspeed", FlagRequest(model=LLAMA3_8B, workload=README_WORKLOAD, plan=plan,
                                                  num_nodes=2, gpus_per_node=8))
    assert flags.supported
    assert flags.text in result.stdout
    assert "torchrun --nnodes 2 --nproc-per-node 8" in result.stdout
    assert 'pretrain_gpt.py "${MINDSPEED_ARGS[@]}"' in result.stdout


def test_framework_that_cannot_express_any_fitting_plan_says_so(sp_plan):
    # Transformer Engine has no a2a + all_gather CP, so pinning Ulysses with all-gather CP leaves
    # Megatron-LM nothing to express.
    result = sp_plan(*README, "--ulysses", "4", "--ring", "4", "--cp-comm", "allgather")
    assert result.exit_code == 1  # no plan the framework can run: no answer, as when nothing fits
    assert "megatron cannot express plan 1: ulysses 4 x all-gather ring 4 cannot be expressed" in result.stdout
    assert "No plan that fits can be expressed in megatron; --framework all ranks every plan." in result.stdout
    assert "Ranked plans (best first)" in result.stdout  # nothing to filter: every plan is shown


def test_no_expressible_plan_writes_no_plan_file_and_exits_1(sp_plan, tmp_path):
    # torchtitan has no Ulysses: a pinned ulysses 2 leaves it nothing to run, so there is no plan
    # file for sp-run and the exit code says so (a script chaining sp-run must not go on).
    out = tmp_path / "plan.json"
    result = sp_plan(*README, "--ulysses", "2", "--framework", "torchtitan", "--out", str(out))
    assert result.exit_code == 1
    assert "torchtitan cannot express plan 1: ulysses 2 cannot be expressed" in result.stdout
    assert f"note: {out} not written: no plan that fits can be expressed in torchtitan" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("framework,expert_gemm", [("megatron", "per_expert"), ("torchtitan", "grouped")])
def test_moe_plans_are_timed_with_the_frameworks_expert_gemms(sp_plan, tmp_path, framework, expert_gemm):
    # Megatron-LM's --moe-grouped-gemm runs one GEMM per expert (TE GroupedLinear); torchtitan's
    # torch._grouped_mm one kernel (cost.grouped_gemm). The plan file keeps the choice.
    out = tmp_path / "plan.json"
    args = ["--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--nodes", "2", "--seq-len", "4k",
            "--framework", framework, "--out", str(out)]
    if framework == "torchtitan":
        args += ["--framework-version", "0.2.2"]  # 0.3.0 has no config function for this model
    assert sp_plan(*args).exit_code == 0
    assert read_plan_file(out).model.moe.expert_gemm == expert_gemm


def test_framework_ranks_only_its_plans(sp_plan):
    columns = ("tp", "pp", "dp", "ulysses", "ring", "zero", "recompute", "micro_batch")
    for framework in ("deepspeed", "torchtitan"):
        # The plans as the framework runs them: its runtime and its attention kernel, as sp-plan
        # times them under --framework.
        hardware = with_attention_kernel(A800, default_kernel(framework, A800))
        direct = search(LLAMA3_8B, hardware, README_WORKLOAD, num_nodes=2, gpus_per_node=8,
                        runtime=framework_runtime(framework))
        result = sp_plan(*README, "--framework", framework, "--top", "3")
        assert result.exit_code == 0, result.stderr
        assert f"Ranked plans {framework} can express (best first)" in result.stdout
        rows = [line.split()[1:9] for line in result.stdout.splitlines() if line[:3].strip() in ("1", "2", "3")][:3]
        assert len(rows) == 3
        for row in rows:  # each row is a plan the framework has flags for
            shown = dict(zip(columns, row))
            matches = [PlanEstimate.from_row(r) for _, r in direct.frame.iterrows()
                       if all(str(r[name]) == value for name, value in shown.items() if name not in ("zero", "ring"))
                       and zero_cell(PlanEstimate.from_row(r).plan) == shown["zero"]
                       and ring_cell(PlanEstimate.from_row(r).plan) == shown["ring"]]
            assert any(render_flags(framework, FlagRequest(model=LLAMA3_8B, workload=README_WORKLOAD, plan=m.plan,
                                                           num_nodes=2, gpus_per_node=8)).supported for m in matches)
        best = first_expressible(framework, direct)[1].plan
        cells = {"zero": zero_cell(best), "ring": ring_cell(best)}
        assert rows[0] == [cells.get(name, str(getattr(best, name))) for name in columns]


def test_json_and_csv_rank_the_tables_plans(sp_plan):
    """JSON: `plans` ranks every plan (with each framework's flags), `framework_plans` what the
    table ranks; CSV is the table's ranking."""
    args = (*README, "--framework", "deepspeed", "--top", "3")
    table = [line.split()[1:9] for line in sp_plan(*args).stdout.splitlines() if line[:3].strip() in ("1", "2", "3")]
    doc = json.loads(sp_plan(*args, "--format", "json").stdout)
    assert doc["framework"] == "deepspeed" and len(doc["framework_plans"]) == 3
    assert all(p["flags"]["deepspeed"]["supported"] for p in doc["framework_plans"])
    assert [[str(p["tp"]), str(p["pp"]), str(p["dp"]), str(p["ulysses"])] for p in doc["framework_plans"]] == [
        row[:4] for row in table[:3]]
    csv_rows = sp_plan(*args, "--format", "csv").stdout.splitlines()
    header = csv_rows[0].split(",")
    for line, plan in zip(csv_rows[1:], doc["framework_plans"], strict=True):
        cells = dict(zip(header, line.split(",")))
        assert [int(cells[k]) for k in ("tp", "pp", "dp", "ulysses", "ring", "zero")] == [
            plan[k] for k in ("tp", "pp", "dp", "ulysses", "ring", "zero")]
    everything = json.loads(sp_plan(*README, "--framework", "all", "--format", "json").stdout)
    assert everything["framework"] == "all" and everything["framework_plans"] == everything["plans"]
    # --framework all filters nothing: `expressible` has no framework to answer for.
    assert pd.read_csv(io.StringIO(sp_plan(*README, "--framework", "all", "--format", "csv", "--top", "2").stdout))[
        "expressible"].isna().all()


# DeepSpeed's sequence parallelism is Ulysses only: with --ring 2 pinned no plan is its.
NOT_DEEPSPEED = (*README, "--ring", "2", "--framework", "deepspeed", "--top", "3")


def test_csv_marks_the_best_plans_overall_where_the_framework_expresses_none(sp_plan):
    result = sp_plan(*NOT_DEEPSPEED, "--format", "csv")
    assert result.exit_code == 1
    assert notes_unwrapped(result.stderr) == [
        "note: no plan that fits can be expressed in deepspeed: the rows are the best plans overall (expressible "
        "False); --framework all ranks every plan"]
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["expressible"].tolist() == [False, False, False] and table["fits"].all()
    # The same plans, and the same answer, as the JSON's every-framework ranking.
    doc = json.loads(sp_plan(*NOT_DEEPSPEED, "--format", "json").stdout)
    assert doc["framework_plans"] == []
    assert table["step_time_s"].tolist() == [p["step_time_s"] for p in doc["plans"]]
    assert table["expressible"].tolist() == [p["flags"]["deepspeed"]["supported"] for p in doc["plans"]]


def test_json_says_on_stderr_that_the_framework_expresses_no_plan(sp_plan):
    result = sp_plan(*NOT_DEEPSPEED, "--format", "json")
    assert result.exit_code == 1
    assert notes_unwrapped(result.stderr) == [
        "note: no plan that fits can be expressed in deepspeed: framework_plans is empty and plans holds the best "
        "plans overall (flags.deepspeed.supported false); --framework all ranks every plan"]


def test_help_has_examples(sp_plan):
    result = sp_plan("--help")
    assert result.exit_code == 0
    assert "sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k" in result.stdout
    assert "--global-batch" in result.stdout and "Exit codes" in result.stdout
    # --attention-kernel also chooses the flags' kernel (flags.kernel_choice), which its help says.
    help_text = re.sub(r"[\s│]+", "", result.stdout)  # however the terminal wraps it
    assert "Megatron's--attention-backend,yunchang'sattn_type" in help_text


def test_report_folder_holds_the_json_document(sp_plan, plan_json, tmp_path):
    report = tmp_path / "report"
    result = sp_plan(*README, "--tp", "2", "--zero", "1", "--report", report)
    assert result.exit_code == 0
    assert result.stderr == f"wrote {report / 'index.html'}\n"
    assert sorted(p.name for p in report.iterdir()) == ["index.html", "plans.csv", "summary.json"]
    _, doc = plan_json(*README, "--tp", "2", "--zero", "1")
    assert json.loads((report / "summary.json").read_text()) == doc


def test_a_report_recommends_the_plan_the_framework_answers_with(sp_plan, tmp_path):
    # DeepSpeed cannot express the search's first plan (a ring): sp-plan answers with, and writes
    # to --out, the best plan it can; the report recommends that plan too, not the one it refuses.
    report, out = tmp_path / "report", tmp_path / "plan.json"
    result = sp_plan(*README, "--framework", "deepspeed", "--report", report, "--out", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads((report / "summary.json").read_text())
    answer, best = doc["framework_plans"][0], doc["plans"][0]
    assert answer["ring"] == 1 and best["ring"] > 1  # the case this test is about
    assert read_plan_file(out).plan.model_dump() == {k: answer[k] for k in ParallelPlan.model_fields}
    page = (report / "index.html").read_text()
    callout = re.search(r'class="callout"><strong>(.*?)</strong>', page).group(1)
    assert callout == plan_name(ParallelPlan(**{k: answer[k] for k in ParallelPlan.model_fields}))
    assert "This is the best plan deepspeed can express." in page


def test_a_report_has_the_search_keep_every_row_and_a_plain_answer_does_not(sp_plan, tmp_path, monkeypatch):
    # --report reads every candidate's row: the search costs each once and keeps it (every_row);
    # without a report it keeps only the best rows, so memory stays bounded.
    from sp_planner.cli import plan_solve

    asked = []
    real = plan_solve.search
    monkeypatch.setattr(plan_solve, "search", lambda *a, **k: asked.append(k["every_row"]) or real(*a, **k))
    assert sp_plan(*README, "--tp", "2", "--zero", "1").exit_code == 0
    report = tmp_path / "report"
    assert sp_plan(*README, "--tp", "2", "--zero", "1", "--report", report).exit_code == 0
    assert asked == [False, True]
    assert len(pd.read_csv(report / "plans.csv")) > 10


@pytest.mark.parametrize(("hardware", "gpus_per_node"), [("b300", 8), ("gb300-nvl72", 4)])
def test_blackwell_ultra_profiles_plan_the_readme_question(plan_json, hardware, gpus_per_node):
    # HGX/DGX B300: 8 GPUs per node; GB300 NVL72: compute trays of 4 (one 72-GPU NVLink domain).
    code, doc = plan_json("--model", "llama3-8b", "--hardware", hardware, "--nodes", "2", "--seq-len", "128k",
                          "--top", "3")
    profile = load_hardware(hardware)
    assert code == 0
    assert doc["question"]["hardware"] == profile.name
    assert (doc["question"]["gpus_per_node"], doc["question"]["world_size"]) == (gpus_per_node, 2 * gpus_per_node)
    first = doc["plans"][0]
    assert first["fits"] and first["memory_peak_bytes"] <= profile.hbm_bytes
    plan = ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    alone = evaluate(LLAMA3_8B, profile, README_WORKLOAD, plan, num_nodes=2, gpus_per_node=gpus_per_node)
    assert first["step_time_s"] == pytest.approx(alone.step_time_s, rel=1e-12)
    # Blackwell: MXFP8 is a precision these profiles run.
    code, doc = plan_json("--model", "llama3-8b", "--hardware", hardware, "--nodes", "2", "--seq-len", "128k",
                          "--precision", "mxfp8", "--top", "1")
    assert code == 0 and doc["plans"][0]["precision"] == "mxfp8"


def test_fp8_tables_say_their_share_is_of_the_bf16_peak(sp_plan):
    result = sp_plan("--model", "llama3-70b", "--hardware", "h100", "--nodes", "8", "--seq-len", "8k",
                     "--precision", "fp8", "--zero", "3", "--top", "2")
    assert result.exit_code == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "% peak: executed FLOPs over the BF16 peak (FP8 GEMMs: up to 2x)" in flat
    assert "of the BF16 peak in executed FLOPs" in flat
    bf16 = sp_plan(*README, "--top", "2")
    assert "over the BF16 peak" not in " ".join(bf16.stdout.split())


OFFLOAD = ["--model", "llama3-70b", "--hardware", "gb200-nvl72", "--nodes", "16", "--gpus-per-node", "4",
           "--seq-len", "8k", "--global-batch", "256", "--precision", "fp8", "--top", "3"]


def test_cpu_offload_pins_pp_and_recompute_and_emits_the_flag(plan_json, sp_plan, tmp_path):
    code, doc = plan_json(*OFFLOAD, "--cpu-offload-layers", "40")
    assert code == 0
    assert all(p["cpu_offload_layers"] == 40 and p["pp"] == 1 and p["recompute"] == "none" for p in doc["plans"])
    first = doc["plans"][0]
    assert "--cpu-offloading-num-layers 40" in first["flags"]["megatron"]["text"]
    # Half the layers' activations stay on the GPU (cost.offload): the same plan without offloading.
    plan = ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    workload = Workload(seq_len=8192, global_batch=256)
    gb200 = with_attention_kernel(load_hardware("gb200-nvl72"), "cudnn")
    model = load_model("llama3-70b")
    kept = evaluate(model, gb200, workload, plan.model_copy(update={"cpu_offload_layers": 0}),
                    num_nodes=16, gpus_per_node=4)
    assert first["memory"]["activations_bytes"] == pytest.approx(kept.memory.activations_bytes / 2)
    out = tmp_path / "plan.json"
    assert sp_plan(*OFFLOAD, "--cpu-offload-layers", "40", "--out", out).exit_code == 0
    assert read_plan_file(out).plan.cpu_offload_layers == 40


@pytest.mark.parametrize(("args", "message"), [
    (["--cpu-offload-layers", "40", "--pp", "2"], "needs --pp 1 and --recompute none"),
    (["--cpu-offload-layers", "40", "--recompute", "full"], "needs --pp 1 and --recompute none"),
    (["--cpu-offload-layers", "80"], "must be from 1 to 79"),
    (["--cpu-offload-layers", "40", "--framework", "torchtitan"], "does not emit for torchtitan"),
])
def test_cpu_offload_bad_input_is_one_line(sp_plan, args, message):
    result = sp_plan(*OFFLOAD, *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_cpu_offload_needs_a_measured_host_link(sp_plan):
    result = sp_plan("--model", "llama3-70b", "--hardware", "b300", "--nodes", "8", "--seq-len", "8k",
                     "--cpu-offload-layers", "40")
    assert result.exit_code == 2 and "no host_link_bytes_per_s" in result.stderr


def test_fp8_blockwise_plans_on_hopper_and_is_refused_elsewhere(plan_json, sp_plan):
    args = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "8k", "--precision", "fp8",
            "--top", "2"]
    code, doc = plan_json(*args, "--fp8-recipe", "blockwise")
    assert code == 0 and all(p["fp8_recipe"] == "blockwise" for p in doc["plans"])
    text = doc["plans"][0]["flags"]["megatron"]["text"]
    assert "--fp8-format e4m3" in text and "--fp8-recipe blockwise" in text
    _, tensorwise = plan_json(*args, "--fp8-recipe", "tensorwise")
    plan = ParallelPlan(**{name: doc["plans"][0][name] for name in ParallelPlan.model_fields})
    same = next(p for p in tensorwise["plans"]
                if ParallelPlan(**{n: p[n] for n in ParallelPlan.model_fields}) == plan.model_copy(
                    update={"fp8_recipe": "tensorwise"}))
    # Block-scaled GEMMs run at 0.83 of per-tensor FP8's (cost.precision), without the amax pass.
    assert doc["plans"][0]["time"]["gemm_s"] > 0.9 * same["time"]["gemm_s"]
    refused = sp_plan("--model", "llama3-8b", "--hardware", "b200", "--nodes", "1", "--seq-len", "8k", "--precision",
                      "fp8", "--fp8-recipe", "blockwise")
    assert refused.exit_code == 2 and "Hopper only" in refused.stderr and refused.stderr.count("\n") == 1


def test_bf16_adam_moments_halve_megatrons_optimizer_states_and_pin_zero_1(plan_json, sp_plan):
    args = ["--model", "llama3-70b", "--hardware", "h100", "--nodes", "8", "--seq-len", "8k", "--top", "2"]
    code, doc = plan_json(*args, "--bf16-adam-moments")
    assert code == 0 and all(p["adam_moments_bf16"] and p["zero"] == 1 for p in doc["plans"])
    first = doc["plans"][0]
    assert "--use-precision-aware-optimizer" in first["flags"]["megatron"]["text"]
    # bf16 plan: the fp32 master kept as a 16-bit remainder, moments in bf16: 6 B a parameter, not 12.
    plan = ParallelPlan(**{name: first[name] for name in ParallelPlan.model_fields})
    hw = with_attention_kernel(load_hardware("h100"), "cudnn")
    plain = evaluate(load_model("llama3-70b"), hw, Workload(seq_len=8192, global_batch=doc["question"]["global_batch"]),
                     plan.model_copy(update={"adam_moments_bf16": False}), num_nodes=8, gpus_per_node=8)
    assert first["memory"]["optimizer_bytes"] == pytest.approx(plain.memory.optimizer_bytes / 2)
    for extra, message in ((["--zero", "3"], "needs --zero 1"), (["--framework", "torchtitan"], "does not emit")):
        refused = sp_plan(*args, "--bf16-adam-moments", *extra)
        assert refused.exit_code == 2 and message in refused.stderr and refused.stderr.count("\n") == 1


def test_full_square_model_mfu_past_the_peak_is_not_shown_as_a_percentage(sp_plan):
    """Mistral-7B's 4K window at 1M tokens: the full-square count of the 1M x 1M attention square
    is several times what the GPU runs; the table says '-' and why, the JSON keeps the figure."""
    args = ("--model", "mistral-7b", "--hardware", "h100", "--nodes", "8", "--seq-len", "1M", "--top", "1")
    doc = json.loads(sp_plan(*args, "--format", "json").stdout)
    assert doc["plans"][0]["mfu"] > 1 and doc["plans"][0]["hardware_mfu"] < 0.6
    out = sp_plan(*args, "--wide", "--explain").stdout
    assert "model MFU -: the full attention square counted (Megatron-LM to core_v0.11)" in " ".join(out.split())
    assert "passes 100%: it counts the full attention square" in " ".join(out.split())
    # Plan 1's row of the table holding the column (the wide table, or the throughput table under it).
    row = next(line.split() for line in out.split("model MFU (full square)", 1)[1].splitlines()
               if line.split()[:1] == ["1"])
    assert "-" in row and all(float(cell[:-1]) <= 100 for cell in row if re.fullmatch(r"[\d.]+%", cell)), row


def test_json_flags_follow_the_framework_version(sp_plan):
    """torchtitan 0.3.x has no config function for Qwen2.5-72B; --framework-version 0.2.2 prints its
    TOML, in the JSON as in the table."""
    args = ("--model", "qwen2.5-72b", "--hardware", "h100", "--nodes", "8", "--seq-len", "16k", "--pp", "4",
            "--framework", "torchtitan", "--top", "1")
    table = sp_plan(*args, "--framework-version", "0.2.2").stdout
    doc = json.loads(sp_plan(*args, "--framework-version", "0.2.2", "--format", "json").stdout)
    titan = doc["framework_plans"][0]["flags"]["torchtitan"]
    assert titan["supported"] and "[parallelism]" in titan["text"] and titan["text"].splitlines()[1] in table
    newest = json.loads(sp_plan(*args, "--format", "json").stdout)["plans"][0]["flags"]["torchtitan"]
    assert not newest["supported"] and "--framework-version 0.2.2" in newest["reason"]


def test_launcher_with_tool_output_is_refused(sp_plan):
    result = sp_plan(*README, "--launcher", "slurm", "--format", "csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --launcher prints a launch script under the table; --format csv")


@pytest.mark.parametrize("given, said", [(("--explain",), "--explain shapes"), (("--wide", "--explain"),
                                                                             "--explain and --wide shape")])
def test_table_options_with_tool_output_are_refused_not_ignored(sp_plan, given, said):
    # --explain and --wide change only the table; with --format csv/json they did nothing, silently.
    result = sp_plan(*README, *given, "--format", "json")
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {said} the table for people; --format json is for tools")


@pytest.mark.parametrize("output_format", ["table", "csv"])
def test_rank_groups_without_a_document_to_hold_them_is_refused_not_ignored(sp_plan, output_format):
    # The table and the CSV list no rank groups: --rank-groups with neither --out nor --report did nothing.
    result = sp_plan(*README, "--rank-groups", "--format", output_format)
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: --rank-groups lists the rank groups in plan.json (--out), --format json "
                                    f"or the report's summary.json (--report); --format {output_format} shows no")


# The GPU of a user profile (base_profile): a renamed copy of a built-in profile predicts as the built-in.
RENAMED_QUESTION = ("--model", "llama3-8b", "--nodes", "4", "--seq-len", "256k", "--top", "1")


def _renamed_h100(tmp_path, base_profile: str | None = None) -> Path:
    """A copy of hardware_profiles/h100-sxm.yaml with only its name changed (and base_profile set)."""
    text = (Path(__file__).resolve().parents[2] / "hardware_profiles" / "h100-sxm.yaml").read_text()
    named = "name: my-h100\n" + (f"base_profile: {base_profile}\n" if base_profile else "")
    assert "\nname: H100-SXM\n" in text
    path = tmp_path / "my-h100.yaml"
    path.write_text(text.replace("\nname: H100-SXM\n", "\n" + named, 1))
    return path


def _first_step_s(result) -> float:
    assert result.exit_code == 0, result
    return json.loads(result.stdout)["plans"][0]["step_time_s"]


def test_a_renamed_profile_that_names_its_gpu_predicts_as_the_builtin(sp_plan, tmp_path):
    builtin = sp_plan(*RENAMED_QUESTION, "--hardware", "h100-sxm", "--format", "json")
    renamed = sp_plan(*RENAMED_QUESTION, "--hardware", _renamed_h100(tmp_path, base_profile="H100-SXM"),
                      "--format", "json")
    assert _first_step_s(renamed) == _first_step_s(builtin)
    ours, theirs = json.loads(renamed.stdout), json.loads(builtin.stdout)
    assert (ours["plans"], ours["prediction_band"]) == (theirs["plans"], theirs["prediction_band"])
    assert builtin.stderr == renamed.stderr == ""


def test_a_profile_of_no_builtin_gpu_is_planned_generic_with_one_note(sp_plan, tmp_path):
    result = sp_plan(*RENAMED_QUESTION, "--hardware", _renamed_h100(tmp_path), "--format", "json")
    # Without the H100's kernel curves, MFU ceiling and tables the step differs (the reported bug).
    assert _first_step_s(result) != _first_step_s(sp_plan(*RENAMED_QUESTION, "--hardware", "h100-sxm",
                                                          "--format", "json"))
    assert notes_unwrapped(result.stderr) == [
        "note: hardware profile 'my-h100' names no built-in GPU (base_profile); kernel curves, best published "
        "MFU, GEMM and host tables fall back to generic values; its peak and memory are those of H100-SXM and "
        "H800: if its GPU is one, add base_profile: NAME"]


def test_an_unknown_base_profile_is_one_line(sp_plan, tmp_path):
    result = sp_plan(*RENAMED_QUESTION, "--hardware", _renamed_h100(tmp_path, base_profile="H99"))
    assert_one_line_error(result, "my-h100.yaml is invalid: base_profile: 'H99' names no built-in hardware "
                                  "profile; one of A100-40GB, ", "H100-SXM")
    assert result.stdout == ""


@pytest.mark.parametrize("hardware, gpus, note", [
    # HardwareProfile.link_domain_gpus keeps a multi-host NVLink domain only for the profile's own
    # host size: on 2-GPU nodes the plans lost GB200's 72-GPU domain without a word.
    ("gb200-nvl72", "2", "note: --gpus-per-node 2 is not GB200-NVL72's 4-GPU host, so its 72-GPU NVLink domain is "
                         "not used: each node's 2 GPUs are one nvlink domain and nodes talk over infiniband"),
    ("a800", "16", "note: --gpus-per-node 16 is more than A800's 8 GPUs per node: the plans assume its intra-node "
                   "links (nvlink) join all 16"),
    ("a800", "4", None),  # part of a node: its links as they are
    ("gb200-nvl72", "4", None),
])
def test_a_node_size_that_changes_the_links_is_said_in_one_note(sp_plan, hardware, gpus, note):
    result = sp_plan("--model", "llama3-8b", "--hardware", hardware, "--nodes", "2", "--gpus-per-node", gpus,
                     "--seq-len", "32k", "--format", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert notes_unwrapped(result.stderr) == ([] if note is None else [note])


@pytest.mark.parametrize("nodes, note", [
    # 76 GB200 GPUs split into no whole racks: HardwareProfile.link_domain_gpus costs them as 19
    # domains of one host each, which the plans used to assume without a word.
    ("19", "note: 76 GPUs fill no whole number of GB200-NVL72's 72-GPU NVLink domains: the plans assume 19 "
           "domains of 4 GPUs each, groups wider than 4 GPUs on infiniband"),
    ("20", "note: 80 GPUs fill no whole number of GB200-NVL72's 72-GPU NVLink domains: the plans assume 2 "
           "domains of 40 GPUs each, groups wider than 40 GPUs on infiniband"),
    ("18", None),  # one whole rack
    ("36", None),  # two whole racks
    ("2", None),  # inside one rack
])
def test_gpus_that_fill_no_whole_nvlink_domains_are_said_in_one_note(sp_plan, nodes, note):
    result = sp_plan("--model", "llama3-8b", "--hardware", "gb200-nvl72", "--nodes", nodes,
                     "--seq-len", "32k", "--format", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert notes_unwrapped(result.stderr) == ([] if note is None else [note])


@pytest.mark.parametrize("hardware, framework, note", [
    # MindSpeed needs torch_npu, and Megatron-LM reaches Ascend only through it: each pairing with
    # the other kind of chip was planned and its flags printed without a word.
    ("h100", "mindspeed", "note: MindSpeed runs on Ascend NPUs (torch_npu) only and H100-SXM is no NPU: the plans "
                          "are ranked by MindSpeed's rules; for GPUs plan with --framework megatron"),
    ("ascend-910b", "megatron", "note: Megatron-LM runs on Ascend NPUs through MindSpeed: for Ascend-910B plan with "
                                "--framework mindspeed; the megatron flags and notes assume CUDA GPUs (Transformer "
                                "Engine, NCCL)"),
    ("ascend-910b", "torchtitan", "note: the torchtitan flags and notes assume CUDA GPUs (NCCL, flash-attn); on "
                                  "Ascend-910B run its Ascend port (torch_npu, HCCL) and check each flag there"),
    ("ascend-910b", "all", "note: on Ascend-910B only MindSpeed's flags are for Ascend NPUs; the other frameworks' "
                           "assume CUDA GPUs (NCCL, Transformer Engine, flash-attn)"),
    ("ascend-910b", "mindspeed", None),
    ("h100", "megatron", None),
    ("h100", "all", None),
])
def test_a_framework_for_other_chips_is_said_in_one_note(sp_plan, hardware, framework, note):
    result = sp_plan("--model", "llama3-8b", "--hardware", hardware, "--framework", framework, "--nodes", "1",
                     "--seq-len", "32k", "--format", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert notes_unwrapped(result.stderr) == ([] if note is None else [note])


def test_a_best_plan_overall_as_fast_as_the_frameworks_says_so():
    # A framework's best and the best overall that tie to the shown digits (203.92 s against
    # 203.93 s on Ascend at stop 52) read "(0.0% less)"; a real saving keeps its figure.
    from sp_planner.cli.plan_output import time_saved_text

    assert time_saved_text(203.92, 203.93) == "the same time to 0.1%"
    assert time_saved_text(203.92, 203.92) == "the same time to 0.1%"
    assert time_saved_text(200.0, 204.0) == "2.0% less"
    assert time_saved_text(203.0, 203.3) == "0.1% less"


def test_the_flags_select_the_attention_kernel_the_plans_were_timed_with(sp_plan, tmp_path):
    # The plans were timed with FA3 while Megatron's flags left Transformer Engine to run cuDNN on
    # Hopper (its default, auto): the flags now carry --attention-backend, in the table, in every
    # plan's JSON flags and in the report; the note keeps what the flag cannot say (which flash-attn
    # runs). The framework's own kernel, chosen, gets its flag and no note; no choice, no flag.
    question = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "4k", "--top", "2"]
    fa3 = sp_plan(*question, "--attention-kernel", "fa3", "--report", tmp_path / "report")
    assert fa3.exit_code == 0, fa3.stderr
    assert "    # attention kernel the plan was timed with\n    --attention-backend flash\n)" in fa3.stdout
    assert ("note: the plans are timed with fa3 attention (--attention-kernel), which megatron's flags select with "
            "--attention-backend flash: Transformer Engine runs flash-attn 3 only where it is installed") in " ".join(
        notes_unwrapped("\n".join(line for line in fa3.stderr.splitlines() if not line.startswith("wrote "))))
    assert "--attention-backend flash" in (tmp_path / "report" / "index.html").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert all("--attention-backend flash" in plan["flags"]["megatron"]["text"] for plan in summary["plans"])
    cudnn = sp_plan(*question, "--attention-kernel", "cudnn", "--format", "json")
    assert "--attention-kernel" not in cudnn.stderr
    plans = json.loads(cudnn.stdout)["plans"]
    assert all("--attention-backend fused" in plan["flags"]["megatron"]["text"] for plan in plans)
    # The other frameworks' flags have no such option (yunchang's FA3 type drops the causal mask).
    assert all(plan["flags"][name] == unchosen["flags"][name] for plan, unchosen in zip(
        plans, json.loads(sp_plan(*question, "--format", "json").stdout)["plans"], strict=True)
        for name in ("mindspeed", "deepspeed", "yunchang", "torchtitan"))
    assert "--attention-backend" not in sp_plan(*question).stdout


def test_no_attention_kernel_note_where_the_framework_does_not_run_on_the_device(sp_plan):
    # Megatron-LM on Ascend: the device note sends the user to MindSpeed; no note about what
    # Megatron's flags would run there.
    result = sp_plan("--model", "llama3-8b", "--hardware", "ascend-910b", "--nodes", "1", "--seq-len", "4k",
                     "--top", "1", "--attention-kernel", "npu")
    assert result.exit_code == 0
    notes = notes_unwrapped(result.stderr)
    assert any("Megatron-LM runs on Ascend NPUs through MindSpeed" in note for note in notes)
    assert not any("--attention-kernel" in note for note in notes)


def test_every_help_example_on_built_ins_answers(sp_plan, tmp_path, monkeypatch):
    # The third example pinned tp 8 x ulysses 4 on Llama-3-70B (1 KV head per TP rank, which
    # Transformer Engine's a2a cannot split 4 ways): exit 1, no Megatron plan, from sp-plan --help.
    from sp_planner.cli.help_format import epilog_commands
    from sp_planner.cli.plan_cmd import EPILOG

    monkeypatch.chdir(tmp_path)  # --out plan.json
    examples = [line.split()[1:] for line in epilog_commands(EPILOG) if line.startswith("sp-plan ")]
    built_in = [args for args in examples if not any(word.startswith("./") for word in args)]
    assert len(built_in) == len(examples) - 1  # all but the config.json / cluster YAML one
    for args in built_in:
        result = sp_plan(*args)
        assert result.exit_code == 0, (args, result.stdout[-600:])


def test_the_timing_attention_kernel_is_named_in_the_json_the_plan_file_and_the_report(sp_plan, tmp_path):
    # Tools read which kernel's curves timed the plans by name: Megatron's cuDNN on an H100 by
    # default, the one --attention-kernel picks, and null for a profile whose attention sp-calibrate
    # measured (the user's kernel, unnamed). The key is there on every answer.
    question = ["--model", "llama3-8b", "--nodes", "1", "--seq-len", "4k", "--top", "1", "--format", "json"]
    out, report = tmp_path / "plan.json", tmp_path / "report"
    default = sp_plan(*question, "--hardware", "h100", "--out", out, "--report", report)
    assert default.exit_code == 0, default.stderr
    assert json.loads(default.stdout)["question"]["attention_kernel"] == "cudnn"
    assert read_plan_file(out).attention_kernel == "cudnn"
    assert json.loads((report / "summary.json").read_text())["question"]["attention_kernel"] == "cudnn"
    fa3 = sp_plan(*question, "--hardware", "h100", "--attention-kernel", "fa3")
    assert json.loads(fa3.stdout)["question"]["attention_kernel"] == "fa3"
    measured = sp_plan(*question, "--hardware", "hardware_profiles/measured/h200-2026-12-04.yaml", "--nodes", "8",
                       "--out", out)
    assert measured.exit_code == 0, measured.stderr
    assert json.loads(measured.stdout)["question"]["attention_kernel"] is None
    assert read_plan_file(out).attention_kernel is None
