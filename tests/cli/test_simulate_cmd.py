"""sp-simulate's notes on the plan file it simulates (its summary: tests/cli/test_output_width.py)."""

from __future__ import annotations

import json

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cli import simulate_cmd
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.specs.workload import Workload


def test_a_pinned_split_with_empty_model_chunks_is_noted(monkeypatch, tmp_path, run_main):
    # Llama-3-8B's 32 layers pinned 8/8 over pp 4 x vpp 16: each stage holds its 8 layers in one chunk
    # and leaves 15 empty (pipeline_chunks.chunk_shape: 8 - 15 x 1 < 0, so full chunks of 0 and an end
    # chunk of 8), 60 of 64 (plan_messages.empty_chunks_text, the note sp-plan prints for the same plan).
    # An even split gets no such note.
    monkeypatch.setenv("COLUMNS", "80")
    plan_file = tmp_path / "plan.json"
    question = dict(model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"),
                    workload=Workload(seq_len=32768, global_batch=16), num_nodes=2, gpus_per_node=8)
    write_plan_file(plan_file, PlanFile(**question, plan=ParallelPlan(
        ring=4, pp=4, vpp=16, first_stage_layers=8, last_stage_layers=8)))
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    note = " ".join(line.strip() for line in result.stderr.splitlines())
    assert ("note: the pipeline layout leaves 60 of its 64 model chunks (pp 4 x vpp 16) without a layer (Megatron "
            "prints each as \"(empty stage)\"): each is still a pipeline hop and a schedule slot doing nothing; pin "
            "--vpp 2, 4 or 8, which split the 8 layers per stage evenly") in note
    assert all(len(line) <= 80 for line in result.stderr.splitlines())
    write_plan_file(plan_file, PlanFile(**question, plan=ParallelPlan(ring=4, pp=4, vpp=2)))
    even = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert even.exit_code == 0 and "model chunks" not in even.stderr


def test_a_plan_timed_with_transformer_engines_unfused_attention_is_simulated_with_it(sp_plan, run_main, tmp_path):
    # Gemma-2-9B on 8 L40S at 16K: sp-plan --framework megatron times it with TE's unfused attention
    # (attention_kernel "unfused" in the file), and sp-simulate reads it back so: its step agrees with
    # the analytic one (1,544.29 s, 1,541.95 s before Stop 65 priced the GQA K/V expansion,
    # cost.unfused_gqa; at 32K no plan fits beside that attention's buffers, cost.unfused_memory).
    plan_file = tmp_path / "plan.json"
    planned = sp_plan("--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "16k",
                      "--top", "1", "--format", "json", "--out", plan_file)
    assert planned.exit_code == 0, planned.stderr
    estimate = json.loads(plan_file.read_text())["estimate"]
    assert json.loads(plan_file.read_text())["attention_kernel"] == "unfused"
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert timeline["analytic_step_time_s"] == pytest.approx(estimate["step_time_s"], rel=1e-12)
    assert timeline["step_time_s"] == pytest.approx(1544.29, abs=0.01)
    # The same file timed with FA2's curve (as --framework all wrote it): replayed, and said not Megatron's.
    doc = json.loads(plan_file.read_text())
    doc["attention_kernel"] = "fa2"
    plan_file.write_text(json.dumps(doc))
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    assert "Megatron's time and memory follow: these figures are not Megatron's" in " ".join(result.stderr.split())


def test_a_plan_that_does_not_fit_is_said_not_timed_silently(monkeypatch, tmp_path, run_main):
    # Llama-3-8B unsharded (ZeRO-0, tp = pp = 1) over 1 x 8 H100: its states alone, bf16 weights (2 B),
    # fp32 main gradients (4 B), fp32 master weights and two Adam moments (12 B), are 18 B x 8.03e9
    # parameters = 134.6 GiB per GPU against 79.2 GiB. sp-report shows no timeline of it; sp-simulate
    # simulated it without a word (a plan file edited by hand). ZeRO-3 over dp 8 (16.8 GiB) fits.
    monkeypatch.setenv("COLUMNS", "80")
    plan_file = tmp_path / "plan.json"
    question = dict(model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"),
                    workload=Workload(seq_len=4096, global_batch=8), num_nodes=1, gpus_per_node=8)
    write_plan_file(plan_file, PlanFile(**question, plan=ParallelPlan(dp=8, zero=0, recompute="full")))
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    note = " ".join(line.strip() for line in result.stderr.splitlines())
    needed_gib = float(note.split("oom: needs ", 1)[1].split(" GiB", 1)[0])
    assert needed_gib > 18 * 8.03e9 / 2**30 > 134.6
    assert note.startswith("note: the plan does not fit (oom: needs ") and ("GiB per GPU, 79.2 GiB available); its "
                                                                           "step is simulated all the same") in note
    assert all(len(line) <= 80 for line in result.stderr.splitlines())
    write_plan_file(plan_file, PlanFile(**question, plan=ParallelPlan(dp=8, zero=3, recompute="full")))
    fits = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert fits.exit_code == 0 and "does not fit" not in fits.stderr


def test_the_plan_is_timed_once_by_the_analytic_model(monkeypatch, tmp_path, run_main):
    # sp-simulate evaluates the plan for its fit (search.evaluate) and the simulator sets its step beside
    # the analytic one: one run of cost.step.time_columns serves both (it ran twice, about 20 ms more).
    import importlib

    from sp_planner import search_columns

    sim_module = importlib.import_module("sp_planner.sim.simulate")  # the module, not sim's function
    calls = []

    def counted(real):
        def timed(*args, **kwargs):
            calls.append(real.__module__)
            return real(*args, **kwargs)
        return timed

    monkeypatch.setattr(search_columns, "time_columns", counted(search_columns.time_columns))
    monkeypatch.setattr(sim_module, "time_columns", counted(sim_module.time_columns))
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"),
                                        workload=Workload(seq_len=8192, global_batch=16), num_nodes=1, gpus_per_node=8,
                                        plan=ParallelPlan(dp=8, zero=1, cpu_offload_layers=31)))
    result = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0, result.stderr
    assert len(calls) == 1
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert timeline["analytic_step_time_s"] > timeline["critical_path_by_kind_s"]["activation_offload"] > 0
