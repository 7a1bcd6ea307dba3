"""cli.plan_file_out: the framework plan.json names under --framework all, and the time it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cli import plan_file_out, report_cmd, simulate_cmd
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.cost.runtime import DEEPSPEED_RUNTIME, MEGATRON_RUNTIME
from sp_planner.planfile import read_plan_file
from sp_planner.search import evaluate
from tests.cli.conftest import README_QUESTION, notes_unwrapped


def _written(sp_plan, tmp_path, *pins: str, question=README_QUESTION):
    """(plan file, sp-plan's notes) for the README's question under --framework all with `pins`,
    written as plan.json in the working directory `tmp_path` (a short path: the notes name it, and a
    long temporary folder's name would not fit 80 columns on one line)."""
    assert Path.cwd() == tmp_path
    out = Path("plan.json")
    result = sp_plan(*question, *pins, "--framework", "all", "--top", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines(keepends=True) if line != f"wrote {out}\n"]
    return read_plan_file(out), " ".join(notes_unwrapped("".join(lines)))


def test_a_plan_only_deepspeed_runs_is_written_as_deepspeeds_and_timed_so(sp_plan, tmp_path, monkeypatch):
    # Llama-3-8B (32 query, 8 KV heads) at 128K on 2 x 8 A800 with ulysses 16: plan 1 is ZeRO-2, which
    # Megatron's a2a cannot split (8 KV heads over 16) nor MindSpeed express; DeepSpeed-Ulysses runs it. The
    # file named megatron; it names deepspeed and holds the plan as DeepSpeed's runtime times it (221.40 s,
    # where Megatron's runtime ranked it at 220.02 s), as sp-simulate and sp-report time it again.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--tp", "1", "--ulysses", "16")
    assert (pf.plan.ulysses, pf.plan.zero, pf.framework, pf.runtime) == (16, 2, "deepspeed", DEEPSPEED_RUNTIME)
    where = dict(num_nodes=2, gpus_per_node=8)
    deepspeed = evaluate(pf.model, pf.hardware, pf.workload, pf.plan, **where, runtime=DEEPSPEED_RUNTIME)
    megatron = evaluate(pf.model, pf.hardware, pf.workload, pf.plan, **where, runtime=MEGATRON_RUNTIME)
    assert pf.estimate == deepspeed and round(deepspeed.step_time_s, 2) == 221.40
    assert round(megatron.step_time_s, 2) == 220.02
    assert ("note: plan.json names deepspeed, the first framework whose flags run plan 1, and holds "
            "its time as deepspeed runs it, 221.40 s per step (Megatron's runtime ranked it at 220.02 s)") in notes


def test_deepspeeds_plan_file_is_timed_with_deepspeeds_attention_kernel(sp_plan, tmp_path, monkeypatch):
    # The same question on 2 x 8 H100s: --framework all ranks with Megatron's kernel there, cuDNN through
    # TE (83.37 s); DeepSpeed-Ulysses runs HF's flash_attention_2, FA2 (cost.attention_kernels), as
    # sp-plan --framework deepspeed times it. The file held DeepSpeed's runtime with cuDNN's curves
    # (84.37 s, attention_kernel cudnn); it holds FA2's curves and its time, 120.48 s, and still fits.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    h100 = ["--model", "llama3-8b", "--hardware", "h100", "--nodes", "2", "--seq-len", "128k"]
    pf, notes = _written(sp_plan, tmp_path, "--tp", "1", "--ulysses", "16", question=h100)
    assert (pf.plan.ulysses, pf.plan.zero, pf.framework, pf.attention_kernel) == (16, 2, "deepspeed", "fa2")
    where = dict(num_nodes=2, gpus_per_node=8)
    fa2, cudnn = (with_attention_kernel(load_hardware("h100"), kernel) for kernel in ("fa2", "cudnn"))
    assert pf.hardware == fa2
    deepspeed = evaluate(pf.model, fa2, pf.workload, pf.plan, **where, runtime=DEEPSPEED_RUNTIME)
    assert pf.estimate == deepspeed and deepspeed.fits and round(deepspeed.step_time_s, 2) == 120.48
    megatron = evaluate(pf.model, cudnn, pf.workload, pf.plan, **where, runtime=MEGATRON_RUNTIME)
    assert round(megatron.step_time_s, 2) == 83.37
    was = evaluate(pf.model, cudnn, pf.workload, pf.plan, **where, runtime=DEEPSPEED_RUNTIME)
    assert round(was.step_time_s, 2) == 84.37
    assert ("holds its time as deepspeed runs it with its attention kernel fa2, 120.48 s per step (Megatron's "
            "runtime and cudnn ranked it at 83.37 s)") in notes


def test_a_plan_that_fits_as_no_runner_runs_it_names_none_and_says_why(sp_plan, tmp_path, monkeypatch):
    # Where the plan does not fit as a framework whose flags run it runs it, the file names the next
    # such framework, else none (timed as --framework all timed it), and the note names those it did
    # not fit in. Here every re-timing is made not to fit.
    real = plan_file_out.evaluate
    monkeypatch.setattr(plan_file_out, "evaluate",
                        lambda *args, **kwargs: real(*args, **kwargs).model_copy(update={"fits": False}))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--tp", "1", "--ulysses", "16")
    assert (pf.framework, pf.runtime, pf.attention_kernel) == (None, MEGATRON_RUNTIME, "fa2")
    assert pf.estimate is not None and round(pf.estimate.step_time_s, 2) == 220.02
    assert ("no framework's flags run plan 1 (each one's flags above are for another plan or none); deepspeed "
            "runs it but it does not fit in memory as it runs it; sp-simulate") in notes


def test_a_plan_no_framework_runs_names_none(sp_plan, run_main, tmp_path, monkeypatch):
    # tp 4 x ulysses 4 on A800s: Megatron's a2a cannot split 2 KV heads per TP rank over 4, DeepSpeed-Ulysses
    # and yunchang take no TP with it, torchtitan no Ulysses, and MindSpeed's flags (which express it) are
    # for Ascend NPUs. The file named megatron; it names none, timed as --framework all timed it.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--tp", "4", "--ulysses", "4")
    assert (pf.plan.tp, pf.plan.ulysses, pf.framework, pf.runtime) == (4, 4, None, MEGATRON_RUNTIME)
    # MindSpeed's flags, printed for plan 1, are named as for other chips, not as for another plan.
    assert ("names no framework (framework null): no framework's flags run plan 1 (mindspeed expresses it, "
            "but for other chips than A800's; the others' flags above are for another plan or none);") in notes
    plan_file = tmp_path / "plan.json"
    simulated = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert pf.estimate is not None and timeline["analytic_step_time_s"] == pf.estimate.step_time_s
    # sp-report reads it as sp-plan --framework all's answer: every plan ranked, none framework's own.
    reported = run_main(report_cmd, plan_file, "--out", tmp_path / "report")
    assert reported.exit_code == 0, reported.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["framework"] == "all" and summary["framework_plans"] == summary["plans"]


@pytest.mark.parametrize("pins", [(), ("--ulysses", "2", "--ring", "4")])
def test_a_plan_megatron_runs_is_written_as_before(sp_plan, tmp_path, monkeypatch, pins):
    # Megatron's flags express the README's plan 1 (and a2a+p2p USP): the file names megatron, with the
    # estimate the table ranks, and sp-plan says nothing more.
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, *pins)
    assert pf.framework == "megatron" and pf.runtime == MEGATRON_RUNTIME and "names" not in notes
    assert pf.estimate == evaluate(pf.model, pf.hardware, pf.workload, pf.plan, num_nodes=2, gpus_per_node=8)


# Qwen3-30B-A3B on 2 x 8 H200s at 16K, FSDP without reshard after forward at ep 8: Megatron refuses it
# (--torch-fsdp2-no-reshard-after-forward with expert parallelism), MindSpeed has ZeRO-1 only, DeepSpeed
# and yunchang no expert parallelism beside their SP; torchtitan 0.2.2 runs it, micro batch 2 pinned so
# that it fits as torchtitan runs it.
TORCHTITAN_MOE = ["--model", "qwen3-30b-a3b", "--hardware", "h200", "--nodes", "2", "--seq-len", "16k",
                  "--tp", "1", "--pp", "1", "--ulysses", "1", "--ring", "1", "--dp", "16", "--ep", "8", "--zero", "3",
                  "--no-reshard-after-forward", "--micro-batch", "2", "--recompute", "full",
                  "--framework-version", "0.2.2"]


def _torchtitans(sp_plan, *pins: str):
    """The plan file sp-plan --framework torchtitan writes for TORCHTITAN_MOE with `pins`."""
    out = Path("torchtitan.json")
    result = sp_plan(*TORCHTITAN_MOE, *pins, "--framework", "torchtitan", "--top", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    return read_plan_file(out)


def test_torchtitans_plan_file_runs_its_grouped_expert_gemms(sp_plan, run_main, tmp_path, monkeypatch):
    # --framework all times Megatron's per-expert GEMMs (TE GroupedLinear's loop, 38.31 s); torchtitan
    # runs one torch._grouped_mm (cost.grouped_gemm.FRAMEWORK_EXPERT_GEMM). The file named torchtitan with
    # the per-expert model and 38.31 s; it holds the grouped model and 37.88 s, as --framework torchtitan.
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, question=TORCHTITAN_MOE)
    titan = _torchtitans(sp_plan)
    assert pf.model.moe is not None and (pf.framework, pf.model.moe.expert_gemm) == ("torchtitan", "grouped")
    assert (pf.plan, pf.model, pf.hardware, pf.runtime) == (titan.plan, titan.model, titan.hardware, titan.runtime)
    assert pf.estimate == titan.estimate and pf.estimate is not None
    assert round(pf.estimate.step_time_s, 2) == 37.88
    assert ("holds its time as torchtitan runs it with its grouped expert GEMM, 37.88 s per step (Megatron's "
            "runtime and per-expert GEMMs ranked it at 38.31 s)") in notes
    # sp-simulate times the file as it says: the grouped model's analytic step.
    simulated = run_main(simulate_cmd, tmp_path / "plan.json", "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    timeline = json.loads((tmp_path / "sim" / "timeline.json").read_text())
    assert timeline["analytic_step_time_s"] == pf.estimate.step_time_s


def test_torchtitans_plan_file_takes_its_fp8_recipe(sp_plan, tmp_path, monkeypatch):
    # The same under --precision fp8 without --fp8-recipe: --framework all pins Megatron's delayed
    # scaling (36.98 s); torchtitan's torchao float8 has only current (tensorwise) scaling, which
    # sp-plan --framework torchtitan pins (cli.option_checks.resolve_fp8_recipe). The file held delayed
    # at 37.63 s; it holds tensorwise and 37.34 s.
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--precision", "fp8", question=TORCHTITAN_MOE)
    titan = _torchtitans(sp_plan, "--precision", "fp8")
    assert (pf.framework, pf.plan.fp8_recipe) == ("torchtitan", "tensorwise")
    assert (pf.plan, pf.model, pf.estimate) == (titan.plan, titan.model, titan.estimate)
    assert pf.estimate is not None and round(pf.estimate.step_time_s, 2) == 37.34
    assert ("with its grouped expert GEMM and its tensorwise FP8 scaling, 37.34 s per step (Megatron's runtime, "
            "per-expert GEMMs and delayed FP8 scaling ranked it at 36.98 s)") in notes


def test_torchtitans_flags_for_plan_1_take_its_fp8_recipe(sp_plan, tmp_path, monkeypatch):
    # Printed as the file names it: torchtitan's flags refuse the delayed scaling --framework all
    # ranked with, so they are asked with its own tensorwise (cli.plan_output.print_flags), and say so.
    monkeypatch.setenv("COLUMNS", "80")
    result = sp_plan(*TORCHTITAN_MOE, "--precision", "fp8", "--framework", "all", "--top", "2")
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "torchtitan flags for plan 1" in out and 'recipe_name = "tensorwise"' in out
    assert ("note: torchtitan runs tensorwise FP8 scaling, its own, where the plans were ranked with delayed "
            "scaling; sp-plan --framework torchtitan times them so.") in out
    # Megatron-LM's flags are asked with the plan's delayed scaling: no such note.
    assert "megatron runs" not in out


def test_a_delayed_scaling_plan_names_no_torchtitan(sp_plan, tmp_path, monkeypatch):
    # The same with --fp8-recipe delayed given: torchtitan's float8 (torchao) has no delayed scaling,
    # so its flags refuse plan 1 (flags.torchtitan_v02.failures). The file named torchtitan with
    # delayed scaling at 37.20 s, a recipe torchtitan cannot run; no other framework runs the plan
    # (Megatron-LM and MindSpeed refuse its ZeRO-3, DeepSpeed FP8, yunchang a plan without SP), so it
    # names none and holds --framework all's 36.98 s.
    monkeypatch.chdir(tmp_path)
    pf, notes = _written(sp_plan, tmp_path, "--precision", "fp8", "--fp8-recipe", "delayed", question=TORCHTITAN_MOE)
    assert (pf.framework, pf.plan.fp8_recipe) == (None, "delayed")
    assert pf.estimate is not None and round(pf.estimate.step_time_s, 2) == 36.98
    assert "names no framework (framework null)" in notes
    refused = sp_plan(*TORCHTITAN_MOE, "--precision", "fp8", "--fp8-recipe", "delayed", "--framework", "torchtitan")
    assert refused.exit_code == 2 and "torchtitan's float8 (torchao) has no delayed scaling" in refused.stderr


def test_a_plan_file_naming_no_framework_keeps_the_torchtitan_release_its_flags_were_printed_for(
        sp_plan, run_main, tmp_path, monkeypatch):
    # The same at micro-batch 4 under --precision fp8: torchtitan 0.2.2's flags run plan 1 (tensorwise)
    # but it does not fit as torchtitan 0.2.2 runs it (its loss holds the whole logits), and no other
    # framework's flags run it, so the file names none. It recorded no release, so sp-report rendered
    # torchtitan's flags for 0.3.0, which has no config function for the model in fp8; it records the
    # 0.2.2 sp-plan was asked with, and the report renders 0.2.2's TOML sections, as sp-plan printed them.
    monkeypatch.chdir(tmp_path)
    question = [*TORCHTITAN_MOE[:TORCHTITAN_MOE.index("--micro-batch")], "--micro-batch", "4",
                *TORCHTITAN_MOE[TORCHTITAN_MOE.index("--micro-batch") + 2:]]
    pf, notes = _written(sp_plan, tmp_path, "--precision", "fp8", question=question)
    assert (pf.framework, pf.framework_version) == (None, "0.2.2")
    # The release times nothing there: Megatron's runtime (with its FP8 router padding), as without it.
    assert pf.runtime == pf.model_copy(update={"framework_version": None}).runtime
    assert pf.runtime.overlap == MEGATRON_RUNTIME.overlap
    assert "torchtitan runs it but it does not fit in memory as it runs it" in notes
    reported = run_main(report_cmd, "plan.json", "--out", tmp_path / "report")
    assert reported.exit_code == 0, reported.stderr
    titan = json.loads((tmp_path / "report" / "summary.json").read_text())["plans"][0]["flags"]["torchtitan"]
    assert titan["supported"] and "[quantize.linear.float8]" in titan["text"]
    assert any(note.startswith("Keys are torchtitan v0.2.2's TOML job config") for note in titan["notes"])
    assert "torchtitan v0.2.2&#x27;s TOML job config" in (tmp_path / "report" / "index.html").read_text()


def test_an_fp8_attention_plan_names_no_framework(sp_plan, tmp_path, monkeypatch):
    # Llama-3-8B at 128K on 2 x 8 B200s, ulysses 8, FP8 GEMMs and attention: only --framework all times FP8
    # attention (sp-plan --framework X refuses --fp8-attention), and no framework's flags run it:
    # Megatron-LM and MindSpeed have no flag, DeepSpeed no FP8, torchtitan converts linear layers only,
    # yunchang trains flash-attn's bf16 kernels. The file named yunchang with FA2's curves scaled by
    # cuDNN's FP8 ratio, 83.83 s; it names none and holds --framework all's 31.47 s (cuDNN FP8 SDPA).
    monkeypatch.chdir(tmp_path)
    b200 = ["--model", "llama3-8b", "--hardware", "b200", "--nodes", "2", "--seq-len", "128k", "--tp", "1",
            "--ulysses", "8", "--ring", "1", "--pp", "1"]
    pf, notes = _written(sp_plan, tmp_path, "--precision", "fp8", "--fp8-attention", question=b200)
    assert (pf.framework, pf.runtime, pf.attention_kernel, pf.plan.fp8_attention) == (None, MEGATRON_RUNTIME,
                                                                                      "cudnn", True)
    assert pf.hardware.efficiency.attention_fp8
    where = dict(num_nodes=2, gpus_per_node=8)
    assert pf.estimate == evaluate(pf.model, pf.hardware, pf.workload, pf.plan, **where)
    assert round(pf.estimate.step_time_s, 2) == 31.47
    assert "names no framework (framework null)" in notes
    refused = sp_plan(*b200, "--precision", "fp8", "--fp8-attention", "--framework", "yunchang")
    assert refused.exit_code == 2 and "--fp8-attention: no command-line flag of yunchang" in refused.stderr
