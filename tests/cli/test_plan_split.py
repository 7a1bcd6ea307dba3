"""sp-plan --first-stage-layers / --last-stage-layers: a pinned pipeline split (space.Pins), as
Megatron-Bridge's recipes name theirs."""

import json

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.search_columns import search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.space_count import count_candidates
from sp_planner.specs import Workload
from tests.cli.conftest import assert_one_line_error

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
