"""What the sp-* commands print for people, on an 80-column terminal: every line within 80 columns
(a path wider than that alone on its line), each title on a line of its own rather than folded to its
table's width, every figure whole, and one unit for each kind of quantity in a paragraph."""

from __future__ import annotations

import re

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cli import calibrate_cmd, plan_cmd, simulate_cmd, validate_cmd
from sp_planner.cli.terminal import stdout_console
from sp_planner.executor.config import RunConfig
from sp_planner.executor.result import AttentionCommBytes, RunResult, StepTimes, TensorErrors
from sp_planner.executor.summary import COMM_TITLE, ERRORS_TITLE, PERF_TITLE, print_summary
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.specs.workload import Workload
from tests.calibration.conftest import synthetic_measurements
from tests.validation.test_validate_cmd import SMALL

# A real CPU run's figures: sp-run --ulysses 2 --seq-len 1k --heads 8 --kv-heads 2 --head-dim 64 --causal.
SENT = AttentionCommBytes(all_to_all=2_621_440, p2p=0)
RUN = RunResult(
    passed=True, config=RunConfig(ulysses=2, ring=1, seq_len=1024, num_heads=8, num_kv_heads=2, head_dim=64,
                                  causal=True),
    kernel="cpu-flash (aten._scaled_dot_product_flash_attention_for_cpu)",
    max_abs_err=TensorErrors(out=1.79e-7, dq=1.73e-6, dk=4.29e-6, dv=2.35e-6),
    tolerance=TensorErrors(out=1.1e-5, dq=2.67e-5, dk=7.19e-5, dv=9.23e-5),
    rms_err=TensorErrors(out=1.62e-8, dq=2.55e-8, dk=1.28e-7, dv=2.37e-8),
    rms_tolerance=TensorErrors(out=6.35e-7, dq=6.59e-7, dk=3.2e-6, dv=6.74e-7),
    comm_bytes_measured=SENT, comm_bytes_predicted=SENT, time_s=StepTimes(fwd=0.0561, bwd=0.1321),
    peak_memory_bytes=15_204_352, predicted_memory_bytes=15_204_352,
    memory_method="tracked tensor bytes above the step's inputs (aten dispatch mode: storages the step's ops "
                  "create, not kernels' internal scratch)",
    prediction_note="no hardware profile (pass --plan) for time", ranks=())


def within(text: str, width: int = 80) -> list[str]:
    """`text`'s lines, checked to fit `width` columns with nothing cut to '…': a longer line is one
    word alone (a path, perhaps with its punctuation), which cannot be broken."""
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > width and len(line.split()) > 1]
    assert not too_wide, too_wide
    assert "…" not in text
    return lines


@pytest.mark.parametrize("columns", [80, 50])
def test_sp_run_summary_titles_each_on_one_line_and_figures_whole(monkeypatch, capsys, columns):
    # At 80 columns the errors' title folded to its table's 54 ("...the rank nearest" / "its bound)",
    # centred), and at 50 Rich cut the errors to "1.79e-…" and "reduce-scatter" to "reduce-sca…".
    monkeypatch.setenv("COLUMNS", str(columns))
    print_summary(RUN, stdout_console())
    lines = [line.rstrip() for line in within(capsys.readouterr().out, columns)]
    if columns == 80:
        assert {ERRORS_TITLE, COMM_TITLE, PERF_TITLE} <= set(lines)
    words = " ".join(lines).split()
    for figure in ("1.79e-07", "1.1e-05", "6.74e-07", "2,621,440", "reduce-scatter", "56.1", "132.1", "14.5"):
        assert figure in words, figure
    # The out row whole: error and bound, RMS and bound (boxed at 80, compact at 50).
    rows = [line.replace("│", " ").split() for line in lines]
    assert ["out", "1.79e-07", "1.1e-05", "1.62e-08", "6.35e-07"] in rows


def test_sp_validate_report_names_a_long_folder_once(run_main, tmp_path, monkeypatch):
    # Both files' full paths on one 253-column line before; now the names, then the folder whole.
    corpus = tmp_path / "small.yaml"
    corpus.write_text(SMALL)
    out = tmp_path / ("a-report-folder-whose-name-alone-takes-up-most-of-a-line-" * 2)
    assert len(str(out)) > 80
    result = run_main(validate_cmd, "--corpus", corpus, "--report", out)
    assert result.exit_code == 0, result.stderr
    within(result.stdout)
    assert result.stderr.splitlines() == ["wrote predicted_vs_measured.png and validation.csv in", str(out)]
    assert (out / "predicted_vs_measured.png").is_file() and (out / "validation.csv").is_file()
    # A short folder: one line, as before but with the folder named once (was "wrote r/..., r/...").
    monkeypatch.chdir(tmp_path)
    short = run_main(validate_cmd, "--corpus", corpus, "--report", "r")
    assert short.stderr == "wrote predicted_vs_measured.png and validation.csv in r\n"


def test_sp_simulate_names_its_folder_once(monkeypatch, tmp_path, run_main):
    monkeypatch.setenv("COLUMNS", "80")
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=65536, global_batch=4), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, ulysses=4, ring=4)))
    out = tmp_path / ("a-simulation-folder-with-a-name-long-enough-" * 2)
    result = run_main(simulate_cmd, plan_file, "--out-dir", out)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["wrote timeline.json and gantt.png in", str(out)]
    within("\n".join(lines[:-1]))
    assert (out / "timeline.json").is_file() and (out / "gantt.png").is_file()


def _why(stdout: str) -> str:
    """The 'Why this plan.' paragraph, joined into one line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Why this plan."))
    end = next(i for i in range(start, len(lines)) if lines[i].endswith("per GPU.") or lines[i].endswith("ranked."))
    return " ".join(line.strip() for line in lines[start:end + 1])


@pytest.mark.parametrize("args, said", [
    # README: the runner-up was "318.4 ms (0.1%) slower ... (+169.4 ms)" after a 258.99 s step.
    (["--model", "llama3-70b", "--hardware", "h100", "--nodes", "8", "--seq-len", "256k", "--tp", "8"],
     r"is 0\.\d\d s \(0\.\d%\) slower per step, mostly from exposed DP gradient sync \(\+0\.\d\d s\)"),
    # README's Llama 3 405B: "48.0 MiB more memory" beside "79.2 GiB" of HBM.
    (["--model", "llama3.1-405b", "--hardware", "h100", "--nodes", "2048", "--seq-len", "128k",
      "--global-batch", "128", "--tp", "8", "--ring", "16", "--ulysses", "1", "--pp", "16", "--vpp", "4",
      "--zero", "1", "--micro-batch", "1"],
     r"and needs 0\.0\d\d GiB more memory per GPU"),
])
def test_sp_plan_explains_in_one_unit_a_quantity(monkeypatch, run_main, args, said):
    monkeypatch.setenv("COLUMNS", "80")
    result = run_main(plan_cmd, *args, "--explain")
    assert result.exit_code == 0, result.stderr
    lines = within(result.stdout.split(" flags for plan 1 ")[0])  # the flags are shell code, pasted whole
    why = _why(result.stdout)
    assert re.search(said, why), why  # the figures move with the cost model; their units must not
    # Seconds and GiB throughout; the validation runs' spread in percent, as their median error.
    assert " ms" not in why and "MiB" not in why and "x the predicted" not in why
    assert "% off the predicted one; their median error is" in why
    # A title longer than its table is a line of its own (was "...by the first" / "plan").
    assert "Bytes sent per GPU per step by the first plan" in [line.rstrip() for line in lines]


def test_sp_calibrate_names_each_figure_on_one_line(monkeypatch, run_main, tmp_path):
    # Rich gave the figures 25 columns beside a 20-column "measured / predicted" header:
    # "attention fwd causal @" / "512" on two lines.
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "raw.json"
    raw.write_text(synthetic_measurements().model_dump_json())
    result = run_main(calibrate_cmd, "--measurements", raw, "--base", "H100-SXM", "--out", "p.yaml")
    assert result.exit_code == 0, result.stderr
    lines = within(result.stdout)
    assert lines[-2:] == ["Wrote p.yaml. Plan with it:",
                          "  sp-plan --hardware p.yaml --model ... --nodes ... --seq-len ..."]
    for figure in ("attention fwd causal @ 8K", "GEMM, layer shapes (bfloat16)", "memory copy (read + write)"):
        assert any(figure in line for line in lines), figure
    title = "Collectives (nccl-tests busbw at large messages, alpha = fitted latency)"
    assert title in [line.rstrip() for line in lines]
    within(result.stderr)


def test_sp_calibrate_wraps_its_next_command_as_one_to_paste(monkeypatch, run_main, tmp_path):
    # A long --out: its path whole on a line, the sp-plan command joined by backslashes (it was one
    # line as long as the path and the command together).
    monkeypatch.setenv("COLUMNS", "80")
    raw = tmp_path / "raw.json"
    raw.write_text(synthetic_measurements(skip=("collectives",)).model_dump_json())
    out = tmp_path / ("a-profile-name-long-enough-to-fill-half-a-line-" * 2 + ".yaml")
    result = run_main(calibrate_cmd, "--measurements", raw, "--out", out)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Wrote")
    assert lines[start + 1:start + 3] == [f"{out}.", "Plan with it:"]
    command = lines[start + 3:]
    assert all(line.endswith(" \\") for line in command[:-1]) and len(command) > 1
    assert " ".join(line.rstrip("\\").strip() for line in command).split() == [
        "sp-plan", "--hardware", str(out), "--model", "...", "--nodes", "...", "--seq-len", "..."]
    within("\n".join(line for line in lines if str(out) not in line))
