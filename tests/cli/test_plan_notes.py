"""cli.plan_notes: the notes on a plan's timing, which sp-plan prints for its question and
sp-simulate for the plan file it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sp_planner.cli import simulate_cmd
from tests.cli.conftest import notes_unwrapped


def _notes(stderr: str) -> list[str]:
    """The notes of a command's stderr, its "wrote FILE" lines left out."""
    return notes_unwrapped("".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("wrote ")))


@pytest.mark.parametrize("question, said", [
    # Gemma-2-9B's head dim 256 on L40S: Transformer Engine runs its unfused attention, which times the plan.
    (["--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "8k"],
     "so it runs its unfused attention, which times the plans, its s x s scores in memory; it takes no context "
     "parallelism, so the plans have ulysses x ring 1"),
    # DeepSeek-V3's group-limited routing, priced in the dispatch's reach (the catalog's "modelled:" line).
    (["--model", "deepseek-v3", "--hardware", "h100", "--nodes", "32", "--seq-len", "4k", "--tp", "2", "--pp", "8",
      "--ep", "16"],
     "note: group-limited routing (each token's experts within 4 of 8 expert groups, Megatron "
     "--moe-router-num-groups 8 --moe-router-group-topk 4, which sp-plan's Megatron flags carry) is priced"),
])
def test_sp_simulate_says_every_note_sp_plan_said_on_the_plan(sp_plan, run_main, tmp_path, monkeypatch, question,
                                                              said):
    # sp-simulate dropped both: it printed only the notes of its own making.
    monkeypatch.setenv("COLUMNS", "80")
    plan_file = tmp_path / "plan.json"
    planned = sp_plan(*question, "--top", "1", "--out", plan_file)
    assert planned.exit_code == 0, planned.stderr
    plan_notes = _notes(planned.stderr)
    assert any(said in note for note in plan_notes), plan_notes
    simulated = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    assert plan_notes == _notes(simulated.stderr)


def test_a_file_not_timed_with_tes_unfused_attention_says_so_once(sp_plan, run_main, tmp_path, monkeypatch):
    # Gemma-2-9B on L40S timed with FA2's curve (as --framework all wrote it before it refused --out there):
    # the file's own note (planfile_unrecorded.unfused_untimed_note) stands in the place of sp-plan's on
    # TE's unfused attention, which would say it again ("while the plans are timed with FA2"). The file
    # is plan.json in the working directory: the note names it, and a long temporary path would not
    # fit 80 columns on one line.
    monkeypatch.chdir(tmp_path)
    plan_file = Path("plan.json")
    assert sp_plan("--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "8k", "--top", "1",
                   "--out", plan_file).exit_code == 0
    doc = json.loads(plan_file.read_text())
    doc["attention_kernel"] = "fa2"
    plan_file.write_text(json.dumps(doc))
    simulated = run_main(simulate_cmd, plan_file, "--out-dir", tmp_path / "sim")
    assert simulated.exit_code == 0, simulated.stderr
    notes = _notes(simulated.stderr)
    assert [note for note in notes if "unfused" in note] == [
        f"note: plan file {plan_file} was timed with fa2's attention curve, but Transformer Engine runs Gemma-2-9B's "
        "attention unfused on L40S, which Megatron's time and memory follow: these figures are not Megatron's; write "
        "it again with sp-plan --framework megatron --out"]
