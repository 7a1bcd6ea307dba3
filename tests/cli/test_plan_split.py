"""sp-plan --first-stage-layers / --last-stage-layers: a pinned pipeline split (space.Pins), as
Megatron-Bridge's recipes name theirs, and sp-report of the plan file it writes."""

import json

import pandas as pd
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search_columns import search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.space_count import count_candidates
from sp_planner.specs import Workload
from sp_planner.cli import report_cmd
from tests.cli.conftest import README_QUESTION, assert_one_line_error, notes_unwrapped

QUESTION = ["--model", "deepseek-v3", "--hardware", "b200", "--nodes", "32", "--seq-len", "4k", "--global-batch",
            "4096", "--tp", "1", "--ep", "8"]


def test_a_pinned_split_is_every_plans_and_its_flags(sp_plan):
    # DeepSeek-V3 with its MTP depth over pp 16 as Megatron-Bridge's (16, 1) layout: 4 / 14 x 4 / 1.
    result = sp_plan(*QUESTION, "--pp", "16", "--first-stage-layers", "4", "--last-stage-layers", "1",
                     "--mtp-layers", "1", "--format", "json", "--top", "3")
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)["plans"]
    assert {(p["first_stage_layers"], p["last_stage_layers"]) for p in plans} == {(4, 1)}
    flags = plans[0]["flags"]["megatron"]["text"]
    assert "--decoder-first-pipeline-num-layers 4" in flags and "--decoder-last-pipeline-num-layers 1" in flags


def test_an_interleaved_pinned_split_runs_as_a_layout(sp_plan):
    # pp 4 x vpp 4 with 16 / 13 layers: the last stage's chunks 4, 4, 4, 1 (pipeline_chunks).
    result = sp_plan(*QUESTION, "--pp", "4", "--vpp", "4", "--first-stage-layers", "16", "--last-stage-layers",
                     "13", "--mtp-layers", "1", "--format", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    (plan,) = json.loads(result.stdout)["plans"]
    assert "--pipeline-model-parallel-layout" in plan["flags"]["megatron"]["text"]


@pytest.mark.parametrize(("args", "parts"), [
    (["--first-stage-layers", "4", "--last-stage-layers", "1"], ("--pp 2 or more",)),
    (["--pp", "16", "--first-stage-layers", "4"], ("go together",)),
    (["--pp", "16", "--first-stage-layers", "40", "--last-stage-layers", "1"], ("layers rule", "40/1")),
])
def test_a_split_that_cannot_run_is_refused_before_the_search(sp_plan, args, parts):
    assert_one_line_error(sp_plan(*QUESTION, *args), *parts)


def test_the_count_is_the_pinned_splits_candidates():
    model, workload = load_model("DeepSeek-V3"), Workload(seq_len=4096, global_batch=2048)
    axes = search_axes(model, load_hardware("B200"))
    for pins in (Pins(pp=16, first_stage_layers=4, last_stage_layers=1),
                 Pins(pp=4, vpp=4, first_stage_layers=16, last_stage_layers=13)):
        c = enumerate_candidates(workload, 256, pins, axes=axes)
        assert len(c) == count_candidates(workload, 256, pins, axes=axes) > 0
        assert set(c.first_stage_layers.tolist()) == {pins.first_stage_layers}
        assert set(c.last_stage_layers.tolist()) == {pins.last_stage_layers}


def _rows_of(report_dir, plan: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """plans.csv of an sp-report folder, and its rows of `plan` (a plan file's)."""
    frame = pd.read_csv(report_dir / "plans.csv")
    mask = pd.Series(True, index=frame.index)
    for name, value in plan.items():
        mask &= frame[name].isna() if value is None else frame[name] == value
    return frame, frame[mask]


def test_sp_report_ranks_a_pinned_split_among_plans_of_that_split(sp_plan, run_main, tmp_path):
    # Llama-3-8B's 32 layers over pp 4 split 8 each; sp-report searched 10 / 6 away (pp 1 first, the
    # plan file's plan in no row) until it pinned the split the file records (report.plan_pins).
    split, plain = tmp_path / "split.json", tmp_path / "plain.json"
    assert sp_plan(*README_QUESTION, "--pp", "4", "--first-stage-layers", "10", "--last-stage-layers", "6",
                   "--out", split).exit_code == 0
    assert sp_plan(*README_QUESTION, "--out", plain).exit_code == 0
    result = run_main(report_cmd, split, "--out", tmp_path / "split")
    assert result.exit_code == 0
    assert notes_unwrapped(result.stderr) == [
        "note: the report searches with the plan file's pp 4, first_stage_layers 10, last_stage_layers 6 pinned "
        "(values its search does not choose on its own)"]
    written = json.loads(split.read_text())
    frame, rows = _rows_of(tmp_path / "split", written["plan"])
    assert set(zip(frame.pp, frame.first_stage_layers, frame.last_stage_layers)) == {(4, 10, 6)}
    # First, as sp-plan ranked it, at the step time its plan file records.
    assert rows["rank"].tolist() == [1] and rows.step_time_s.item() == written["estimate"]["step_time_s"]
    # A plan the search reaches as it is: the whole space searched, no note.
    result = run_main(report_cmd, plain, "--out", tmp_path / "plain")
    assert (result.exit_code, result.stderr) == (0, "")
    frame, rows = _rows_of(tmp_path / "plain", json.loads(plain.read_text())["plan"])
    assert len(rows) == 1 and frame.pp.nunique() > 1


def test_a_pinned_split_that_leaves_model_chunks_empty_is_priced_and_noted(sp_plan):
    # 16/16 over pp 2 x vpp 64: Megatron parses the layout (126 "(empty stage)" chunks), so sp-plan
    # plans it, and one note says how many chunks idle and which --vpp splits the stages evenly.
    result = sp_plan(*README_QUESTION, "--pp", "2", "--vpp", "64", "--first-stage-layers", "16",
                     "--last-stage-layers", "16", "--top", "1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    (plan,) = json.loads(result.stdout)["plans"]
    assert (plan["pp"], plan["vpp"], plan["first_stage_layers"]) == (2, 64, 16)
    assert "(|)*126" in plan["flags"]["megatron"]["text"]
    notes = [line for line in notes_unwrapped(result.stderr) if "model chunks" in line]
    assert notes == ['note: the pipeline layout leaves 126 of its 128 model chunks (pp 2 x vpp 64) without a layer '
                     '(Megatron prints each as "(empty stage)"): each is still a pipeline hop and a schedule slot '
                     'doing nothing; pin --vpp 4, 8 or 16, which split the 16 layers per stage evenly']
    # Every chunk holding a layer (the same split at vpp 8): no note.
    even = sp_plan(*README_QUESTION, "--pp", "2", "--vpp", "8", "--first-stage-layers", "16", "--last-stage-layers",
                   "16", "--top", "1", "--format", "json")
    assert even.exit_code == 0 and "model chunks" not in even.stderr
