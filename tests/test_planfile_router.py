"""Plan files written before plan files recorded the MoE router (sp_planner.planfile_router): files
written by this sp-planner with model.moe's router keys deleted, as the older ones lack them."""

import json
from pathlib import Path

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.catalog.hf_config import origin_model_type
from sp_planner.cli import plan_cmd, report_cmd, simulate_cmd
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, load_plan_file, write_plan_file
from sp_planner.planfile_router import _FROM_CONFIG, _OF_MODEL_TYPE, router_timing_note
from sp_planner.specs import Workload
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import ROUTER_FIELDS, MoESpec
from tests.catalog.hf_configs import (DEEPSEEK_V3, GPT_OSS_120B, LLAMA4_MAVERICK_TEXT, LLAMA4_SCOUT, MIXTRAL_8X7B,
                                      QWEN3_30B_A3B, imported)
from tests.catalog.test_hf_glm import GLM_45

DEFAULT_ROUTER = {key: MoESpec.model_fields[key].default for key in ROUTER_FIELDS}
# DeepSeek-V3's router as its config.json gives it (n_group 8, topk_group 4, routed_scaling_factor 2.5,
# sigmoid scores with e_score_correction_bias) and Megatron's flags for it (flags.megatron_moe).
DEEPSEEK_V3_ROUTER = {**DEFAULT_ROUTER, "score_correction_bias": True, "routed_scaling_factor": 2.5,
                      "router_groups": 8, "router_group_topk": 4}
DEEPSEEK_V3_FLAGS = ("--moe-router-enable-expert-bias --moe-router-topk-scaling-factor 2.5 --moe-router-num-groups 8 "
                     "--moe-router-group-topk 4")
OLDER = "was written before plan files recorded the MoE router (model.moe's router fields)"
REWRITE = "write the plan again with sp-plan --out from the model's file"


def _router(moe: MoESpec) -> dict:
    return {key: getattr(moe, key) for key in ROUTER_FIELDS}


def _without_router(path: Path, **edits) -> Path:
    """The plan file at `path` with its model.moe's router keys deleted (and `edits` set in model.moe)."""
    doc = json.loads(path.read_text())
    moe = doc["model"]["moe"]
    for key in ROUTER_FIELDS:
        del moe[key]
    moe.update(edits)
    path.write_text(json.dumps(doc))
    return path


def _plan_file(tmp_path: Path, model: ModelSpec) -> Path:
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(model=model, hardware=load_hardware("h100-sxm"),
                                   workload=Workload(seq_len=8192, global_batch=8), num_nodes=1, gpus_per_node=8,
                                   plan=ParallelPlan(dp=4, ulysses=2)))
    return path


def _hf_model(tmp_path: Path, config: dict) -> ModelSpec:
    return imported(tmp_path, config, folder="")


def test_a_file_that_records_every_router_field_but_router_topk_norm_is_older_too(tmp_path):
    # Written between 423906e and router_topk_norm: the built-in's value (True) is applied.
    path = _plan_file(tmp_path, load_model("deepseek-v3"))
    doc = json.loads(path.read_text())
    del doc["model"]["moe"]["router_topk_norm"]
    path.write_text(json.dumps(doc))
    loaded = load_plan_file(path)
    assert loaded.router.missing == ("router_topk_norm",) and loaded.router.updates == {"router_topk_norm": True}
    assert loaded.plan_file.model == load_model("deepseek-v3") and "the built-in DeepSeek-V3" in loaded.router.note


def test_an_older_deepseek_v3_plan_takes_the_built_ins_router(tmp_path):
    path = _without_router(_plan_file(tmp_path, load_model("deepseek-v3")))
    loaded = load_plan_file(path)
    assert _router(loaded.plan_file.model.moe) == DEEPSEEK_V3_ROUTER == _router(load_model("deepseek-v3").moe)
    assert loaded.router.problem is None
    assert loaded.router.note == (f"plan file {path} {OLDER}; its model is the built-in DeepSeek-V3, whose router "
                                  f"(Megatron {DEEPSEEK_V3_FLAGS}) is applied")


def test_sp_report_flags_the_router_an_older_plan_file_did_not_record(tmp_path, run_main):
    # GLM-4.5-Air (e_score_correction_bias, scaling factor 1.0) rather than DeepSeek-V3, whose
    # sp-plan and sp-report searches take ~45 s on a CI core; the rule is the same.
    path = tmp_path / "plan.json"
    assert run_main(plan_cmd, "--model", "glm-4.5-air", "--hardware", "h100", "--nodes", "4", "--seq-len", "4k",
                    "--out", path).exit_code == 0
    note = load_plan_file(_without_router(path)).router.note
    assert note is not None and "the built-in GLM-4.5-Air" in note
    # sp-report renders the flags from the file's model: before, without the expert bias
    report = run_main(report_cmd, path, "--out", tmp_path / "r")
    assert report.exit_code == 0 and note in " ".join(report.stderr.split())
    flags = json.loads((tmp_path / "r" / "summary.json").read_text())["framework_plans"][0]["flags"]
    assert "--moe-router-enable-expert-bias" in flags["megatron"]["text"]
    html = (tmp_path / "r" / "index.html").read_text()
    shown = html[html.index("<h3>megatron flags</h3>"):]
    assert "--moe-router-enable-expert-bias" in shown[:shown.index("</pre>")]


def test_a_current_file_and_a_dense_model_are_read_as_written(tmp_path):
    deepseek = load_model("deepseek-v3")
    loaded = load_plan_file(_plan_file(tmp_path, deepseek))
    assert loaded.router is None and loaded.plan_file.model == deepseek
    dense = load_model("llama3-8b")
    assert load_plan_file(_plan_file(tmp_path, dense)).router is None  # no moe: no router


def test_a_built_in_with_the_default_router_needs_no_word(tmp_path):
    mixtral = load_model("mixtral-8x7b")
    loaded = load_plan_file(_without_router(_plan_file(tmp_path, mixtral)))
    assert loaded.router == (ROUTER_FIELDS, DEFAULT_ROUTER, None, None)
    assert loaded.plan_file.model == mixtral


def test_an_older_llama_4_plan_scales_the_experts_input(tmp_path):
    path = _without_router(_plan_file(tmp_path, load_model("llama-4-scout-17b-16e")))
    loaded = load_plan_file(path)
    assert loaded.plan_file.model.moe.probs_on_input
    assert loaded.router.note == (f"plan file {path} {OLDER}; its model is the built-in Llama-4-Scout-17B-16E, whose "
                                  "router (Megatron --moe-apply-probs-on-input) is applied")


def test_an_import_whose_router_the_plan_does_not_keep_is_refused_by_sp_report(tmp_path, run_main):
    # deepseek-ai/DeepSeek-V3's config.json is the built-in, field for field
    same = load_plan_file(_without_router(_plan_file(tmp_path, _hf_model(tmp_path, DEEPSEEK_V3))))
    assert _router(same.plan_file.model.moe) == DEEPSEEK_V3_ROUTER
    smaller = _hf_model(tmp_path, {**DEEPSEEK_V3, "_name_or_path": "my-org/DeepSeek-V3-mini", "num_hidden_layers": 8})
    path = _without_router(_plan_file(tmp_path, smaller))
    loaded = load_plan_file(path)
    assert _router(loaded.plan_file.model.moe) == DEFAULT_ROUTER and loaded.router.note is None
    assert loaded.router.problem == (
        f"plan file {path} {OLDER}, and its model DeepSeek-V3-mini was imported from a Hugging Face config "
        "(model_type deepseek_v3) whose router follows from routed_scaling_factor, n_group, topk_group and "
        f"norm_topk_prob, which the plan does not keep: its flags would train another router; {REWRITE}")
    report = run_main(report_cmd, path, "--out", tmp_path / "r")
    assert report.exit_code != 0 and " ".join(report.stderr.split()) == f"error: {loaded.router.problem}"
    assert not (tmp_path / "r").exists()


def test_sp_simulate_says_an_unsettled_router_times_the_dispatch_among_all_experts(tmp_path, run_main):
    # The groups set the HybridEP/DeepEP dispatch's reach (cost.group_routing): an older imported
    # file that cannot say them was simulated with the default router and said nothing.
    smaller = _hf_model(tmp_path, {**DEEPSEEK_V3, "_name_or_path": "my-org/DeepSeek-V3-mini", "num_hidden_layers": 8})
    hybridep = smaller.model_copy(update={"moe": smaller.moe.model_copy(update={"dispatcher": "hybridep"})})
    path = _without_router(_plan_file(tmp_path, hybridep))
    loaded = load_plan_file(path)
    note = router_timing_note(loaded.router, loaded.plan_file.model, source=f"plan file {path}")
    assert note == (f"plan file {path} {OLDER}: its hybridep dispatch is timed routing among all experts, an upper "
                    f"bound where DeepSeek-V3-mini routes within expert groups; {REWRITE}")
    result = run_main(simulate_cmd, path, "--out-dir", tmp_path / "sim")
    assert result.exit_code == 0 and note in " ".join(result.stderr.split())
    # settled (a current file) or sent as copies (alltoall): nothing to say
    assert router_timing_note(None, hybridep, source="x") is None
    alltoall = load_plan_file(_without_router(_plan_file(tmp_path, smaller)))
    assert router_timing_note(alltoall.router, alltoall.plan_file.model, source="x") is None


def test_an_import_whose_router_follows_from_its_model_type_takes_it(tmp_path):
    scout = _hf_model(tmp_path, {**LLAMA4_SCOUT, "_name_or_path": "my-org/Scout-tuned"})
    path = _without_router(_plan_file(tmp_path, scout))
    loaded = load_plan_file(path)
    assert _router(loaded.plan_file.model.moe) == {**DEFAULT_ROUTER, "probs_on_input": True}
    assert loaded.router.note == (
        f"plan file {path} {OLDER}; its model Scout-tuned was imported from a Hugging Face config (model_type "
        "llama4_text), whose router (Megatron --moe-apply-probs-on-input) is applied")
    # top-2 (sp-plan imported it before Llama 4's top-1 rule): no router of Llama 4's routes it
    path = _without_router(_plan_file(tmp_path, scout), top_k=2)
    loaded = load_plan_file(path)
    assert loaded.plan_file.model.moe.top_k == 2 and not loaded.plan_file.model.moe.probs_on_input
    assert loaded.router.problem.startswith(f"plan file {path} {OLDER}, and its model Scout-tuned was imported")
    assert "probs_on_input needs top-1 routing, got top_k 2" in loaded.router.problem
    assert loaded.router.problem.endswith(REWRITE)


def test_an_import_of_the_default_router_needs_no_word(tmp_path):
    mixtral = _hf_model(tmp_path, {**MIXTRAL_8X7B, "_name_or_path": "my-org/Mixtral-tuned"})
    assert load_plan_file(_without_router(_plan_file(tmp_path, mixtral))).router == (ROUTER_FIELDS, {}, None, None)


def test_other_models_keep_the_default_router_with_a_note(tmp_path):
    mine = load_model("mixtral-8x7b").model_copy(update={"name": "my-moe"})
    path = _without_router(_plan_file(tmp_path, mine))
    loaded = load_plan_file(path)
    assert loaded.router == (ROUTER_FIELDS, {}, (
        f"plan file {path} {OLDER}: its model my-moe's flags carry Megatron's default router, as every model's did "
        f"then; {REWRITE} if its router is another"), None)
    path = _plan_file(tmp_path, load_model("deepseek-v3"))
    doc = json.loads(path.read_text())
    doc["model"]["num_layers"] = 40
    path.write_text(json.dumps(doc))
    loaded = load_plan_file(_without_router(path))
    assert _router(loaded.plan_file.model.moe) == DEFAULT_ROUTER and loaded.router.problem is None
    assert loaded.router.note == (
        f"plan file {path} {OLDER}: its model DeepSeek-V3's flags carry Megatron's default router (it bears the name "
        f"of the built-in DeepSeek-V3, whose router is Megatron {DEEPSEEK_V3_FLAGS}, but not its architecture: "
        f"num_layers 40, built-in 61), as every model's did then; {REWRITE} if its router is another")


KIMI_K2 = {**DEEPSEEK_V3, "model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]}


@pytest.mark.parametrize(("config", "field", "value"), [
    (DEEPSEEK_V3, "routed_scaling_factor", 1.0), (KIMI_K2, "topk_group", 8), (GLM_45, "n_group", 4),
    (QWEN3_30B_A3B, "norm_topk_prob", False), (GLM_45, "norm_topk_prob", False),
])
def test_the_imports_router_follows_from_the_config_fields_named(tmp_path, config, field, value):
    assert field in _FROM_CONFIG[config["model_type"]]
    before, after = (_hf_model(tmp_path, {**config, field: v}).moe for v in (config[field], value))
    assert _router(before) != _router(after)


@pytest.mark.parametrize("config", [LLAMA4_SCOUT, LLAMA4_MAVERICK_TEXT, MIXTRAL_8X7B, GPT_OSS_120B])
def test_every_other_imports_router_follows_from_its_model_type(tmp_path, config):
    model = _hf_model(tmp_path, config)
    model_type = origin_model_type(model)  # llama4 is recorded as llama4_text, which it is read as
    assert model_type not in _FROM_CONFIG
    assert _router(model.moe) == {**DEFAULT_ROUTER, **_OF_MODEL_TYPE.get(model_type, {})}
