"""Plan files written before plan files recorded the model's attention fields or the framework release
(sp_planner.planfile_unrecorded): files written by this sp-planner with the fields deleted, as the older
ones lack them."""

import json
from pathlib import Path

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import TORCHTITAN_RUNTIME, TORCHTITAN_RUNTIMES
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, load_plan_file, read_plan_file, write_plan_file
from sp_planner.planfile_unrecorded import LATER_FIELDS, first_difference
from sp_planner.specs import Workload
from sp_planner.specs.model import ModelSpec
from tests.catalog.hf_configs import DEEPSEEK_V3, LLAMA3_8B, MISTRAL_7B, imported

GEMMA_2_27B_SCALE = 144**-0.5  # query_pre_attn_scalar 144 (HF Gemma2Attention.scaling), head dim 128


def _older_file(tmp_path: Path, model: ModelSpec, **edits) -> Path:
    """A plan of `model` written now, its model's softmax_scale deleted (and `edits` applied to
    the model's entry: a value, or None to delete the key)."""
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(model=model, hardware=load_hardware("h100-sxm"),
                                   workload=Workload(seq_len=8192, global_batch=8), num_nodes=1, gpus_per_node=8,
                                   plan=ParallelPlan(dp=4, ulysses=2)))
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == "sp-planner.plan/1"  # the same version before and after the field
    entry = doc["model"]
    del entry["softmax_scale"]
    for key, value in edits.items():
        outer, _, inner = key.partition(".")
        target, name = (entry[outer], inner) if inner else (entry, outer)
        if value is None:
            del target[name]
        else:
            target[name] = value
    path.write_text(json.dumps(doc))
    return path


def _hf_model(tmp_path: Path, config: dict) -> ModelSpec:
    return imported(tmp_path, config, folder="")


def test_a_file_that_records_the_scale_is_read_as_written(tmp_path):
    path = _older_file(tmp_path, load_model("gemma-2-27b"))
    doc = json.loads(path.read_text())
    doc["model"]["softmax_scale"] = None  # recorded: 1/sqrt(head dim), whatever the catalog says
    path.write_text(json.dumps(doc))
    loaded = load_plan_file(path)
    assert loaded.unrecorded is None and loaded.plan_file.model.softmax_scale is None


@pytest.mark.parametrize(("name", "scale"), [("gemma-2-27b", GEMMA_2_27B_SCALE), ("gemma-3-27b", 168**-0.5),
                                             ("deepseek-v3", 0.1352337788608801)])
def test_an_older_plan_of_a_built_in_takes_its_scale_with_a_note(tmp_path, name, scale):
    path = _older_file(tmp_path, load_model(name))
    plan_file, unrecorded, *_ = load_plan_file(path)
    assert plan_file.model.softmax_scale == pytest.approx(scale, rel=1e-12)
    assert unrecorded.problem is None
    model = plan_file.model
    assert unrecorded.note == (
        f"plan file {path} was written before plan files recorded the softmax scale; its model is the built-in "
        f"{model.name}, whose scale {scale:.6g} (not 1/sqrt({model.qk_head_dim}) = {model.qk_head_dim**-0.5:.6g}) "
        "is applied")
    assert read_plan_file(path).model.softmax_scale == plan_file.model.softmax_scale  # sp-report's reading


def test_an_older_plan_of_a_built_in_at_one_over_sqrt_d_needs_no_word(tmp_path):
    loaded = load_plan_file(_older_file(tmp_path, load_model("llama3-8b")))
    assert loaded.unrecorded == (("softmax_scale",), {}, None, None, ())
    assert loaded.plan_file.model.softmax_scale is None  # 1/sqrt(128)


def test_sp_plans_moe_options_and_fields_added_later_do_not_hide_a_built_in(tmp_path):
    # sp-plan --moe-dispatcher/--moe-routing write into the model's moe entry; a file written
    # between the window (f8275ed) and its kind (e27c2c5), 2026-12-02, has no window.kind: neither
    # is compared.
    deepseek = load_model("deepseek-v3")
    moe = deepseek.moe.model_copy(update={"dispatcher": "hybridep", "routing": "balanced", "expert_gemm": "grouped"})
    path = _older_file(tmp_path, deepseek.model_copy(update={"moe": moe}))
    assert load_plan_file(path).plan_file.model.softmax_scale == pytest.approx(0.135234, rel=1e-5)
    path = _older_file(tmp_path, load_model("gemma-2-27b"), **{"window.kind": None})
    assert load_plan_file(path).plan_file.model.softmax_scale == pytest.approx(GEMMA_2_27B_SCALE)


def test_a_built_in_name_on_another_architecture_is_refused(tmp_path):
    path = _older_file(tmp_path, load_model("gemma-2-27b"), num_layers=40)
    plan_file, unrecorded, *_ = load_plan_file(path)
    assert plan_file.model.softmax_scale is None and unrecorded.updates == {} and unrecorded.note is None
    assert unrecorded.problem == (
        f"plan file {path} was written before plan files recorded the softmax scale, and its model bears the name "
        "of the built-in Gemma-2-27B (scale 0.0833333) but not its architecture (num_layers 40, built-in 46): "
        "pass --softmax-scale with the model's scale, or write the plan again with sp-plan --out from the "
        "model's file")


def test_a_deepseek_import_is_the_built_in_or_refused(tmp_path):
    # deepseek-ai/DeepSeek-V3's config.json is the built-in, field for field
    same = _hf_model(tmp_path, DEEPSEEK_V3)
    assert load_plan_file(_older_file(tmp_path, same)).plan_file.model.softmax_scale == same.softmax_scale
    # another DeepSeek-V3-type config: its YaRN rope_scaling is not in the plan
    smaller = _hf_model(tmp_path, {**DEEPSEEK_V3, "_name_or_path": "my-org/DeepSeek-V3-mini", "num_hidden_layers": 8})
    unrecorded = load_plan_file(_older_file(tmp_path, smaller)).unrecorded
    assert unrecorded.problem.endswith(
        "and its model DeepSeek-V3-mini was imported from a Hugging Face config (model_type deepseek_v3) whose "
        "scale follows from rope_scaling (YaRN's mscale_all_dim), which the plan does not keep: pass "
        "--softmax-scale with the model's scale, or write the plan again with sp-plan --out from the model's file")


def test_other_models_run_at_one_over_sqrt_d_with_a_note(tmp_path):
    mine = load_model("gemma-2-27b").model_copy(update={"name": "my-gemma"})
    path = _older_file(tmp_path, mine)
    plan_file, unrecorded, *_ = load_plan_file(path)
    assert plan_file.model.softmax_scale is None and unrecorded.problem is None
    assert unrecorded.note == (f"plan file {path} was written before plan files recorded the softmax scale: its "
                               "model my-gemma runs at 1/sqrt(128) = 0.0883883, as every model did then; pass "
                               "--softmax-scale if the model's is another")
    llama = _hf_model(tmp_path, LLAMA3_8B)  # Meta-Llama-3-8B: not a built-in's name
    unrecorded = load_plan_file(_older_file(tmp_path, llama)).unrecorded
    assert "(its model_type llama config's YaRN rope_scaling, if it has one, was not read then)" in unrecorded.note


def test_first_difference_compares_the_stated_fields_only():
    theirs = {"name": "A", "num_layers": 2, "moe": {"top_k": 2, "routing": "learned"}, "qk_norm": True}
    mine = {"name": "A", "num_layers": 2, "moe": {"top_k": 2, "routing": "balanced"}, "qk_norm": False}
    stated = {"name": "A", "num_layers": 2, "moe": {"top_k": 2, "routing": "balanced"}}  # no qk_norm then
    assert first_difference(stated, mine, theirs) is None
    assert first_difference({**stated, "qk_norm": False}, mine, theirs) == "qk_norm False, built-in True"
    mine["moe"]["top_k"] = 4
    assert first_difference(stated, mine, theirs) == "moe.top_k 4, built-in 2"


# A file of 2026-11-22 to 12-01, before ModelSpec.mla (2281d5a): no mla, window, qk_norm or
# softmax_scale key in its model entry.
BEFORE_MLA = {"mla": None, "window": None, "qk_norm": None}


def test_an_older_gemma_2_plan_takes_its_window_softcap_and_scale(tmp_path):
    # Before the window, Gemma-2-27B ran every layer as full attention, uncapped, at 1/sqrt(128).
    path = _older_file(tmp_path, load_model("gemma-2-27b"), **BEFORE_MLA)
    plan_file, unrecorded, *_ = load_plan_file(path)
    window = plan_file.model.window
    assert (window.window_tokens, window.local_layers, window.global_layers, window.logit_softcapping) == (
        4096, 1, 1, 50.0)
    assert plan_file.model.softmax_scale == pytest.approx(GEMMA_2_27B_SCALE) and plan_file.model.mla is None
    assert unrecorded.missing == ("mla", "window", "softmax_scale") and unrecorded.problem is None
    assert unrecorded.note == (
        f"plan file {path} was written before plan files recorded the attention window and logit softcap (window) "
        "and the softmax scale; its model is the built-in Gemma-2-27B, whose window (sliding, 4K tokens, 1 local : "
        "1 global layers, logit softcap 50) and scale 0.0833333 (not 1/sqrt(128) = 0.0883883) are applied")
    assert read_plan_file(path).model == load_model("gemma-2-27b")  # sp-report's and sp-simulate's reading


def test_built_ins_whose_value_is_the_default_say_only_what_they_change(tmp_path):
    # Gemma-2-9B: query_pre_attn_scalar 256 = head_dim, 1/sqrt(d); Mistral-7B: a window on every layer
    unrecorded = load_plan_file(_older_file(tmp_path, load_model("gemma-2-9b"), **BEFORE_MLA)).unrecorded
    assert unrecorded.note.endswith(
        "recorded the attention window and logit softcap (window); its model is the built-in Gemma-2-9B, whose "
        "window (sliding, 4K tokens, 1 local : 1 global layers, logit softcap 50) is applied")
    loaded = load_plan_file(_older_file(tmp_path, load_model("mistral-7b"), **BEFORE_MLA))
    assert loaded.plan_file.model.window.window_tokens == 4096
    assert loaded.unrecorded.note.endswith("whose window (sliding, 4K tokens, every layer) is applied")
    loaded = load_plan_file(_older_file(tmp_path, load_model("llama3-8b"), **BEFORE_MLA))
    assert loaded.unrecorded == (("mla", "window", "softmax_scale"), {}, None, None, ())


def test_an_mla_entry_missing_takes_the_built_ins_head_dims(tmp_path):
    loaded = load_plan_file(_older_file(tmp_path, load_model("deepseek-v3"), mla=None))
    assert loaded.plan_file.model == load_model("deepseek-v3") and loaded.plan_file.model.qk_head_dim == 192
    assert loaded.unrecorded.note.endswith(
        "recorded the MLA head dims (mla) and the softmax scale; its model is the built-in DeepSeek-V3, whose MLA "
        "head dims (q/k 192, v 128) and scale 0.135234 (not 1/sqrt(192) = 0.0721688) are applied")


def test_a_built_in_name_on_another_architecture_names_each_field_it_cannot_tell(tmp_path):
    path = _older_file(tmp_path, load_model("gemma-2-9b"), num_layers=40, **BEFORE_MLA)
    plan_file, unrecorded, *_ = load_plan_file(path)
    assert plan_file.model.window is None and unrecorded.updates == {} and unrecorded.note is None
    assert unrecorded.problem == (
        f"plan file {path} was written before plan files recorded the attention window and logit softcap (window), "
        "and its model bears the name of the built-in Gemma-2-9B (window (sliding, 4K tokens, 1 local : 1 global "
        "layers, logit softcap 50)) but not its architecture (num_layers 40, built-in 42): write the plan again "
        "with sp-plan --out from the model's file (sp-run gives the window by --window, --window-kind and "
        "--softcap only without --plan)")
    problem = load_plan_file(_older_file(tmp_path, load_model("gemma-2-27b"), num_layers=40, **BEFORE_MLA)
                             ).unrecorded.problem
    assert ("recorded the attention window and logit softcap (window) and the softmax scale, and its model bears "
            "the name of the built-in Gemma-2-27B (window (sliding, 4K tokens, 1 local : 1 global layers, logit "
            "softcap 50), scale 0.0833333) but not its architecture (num_layers 40, built-in 46): write the plan "
            "again") in problem
    # --softmax-scale gives the scale; the window stays unknown
    given = load_plan_file(_older_file(tmp_path, load_model("gemma-2-27b"), num_layers=40, **BEFORE_MLA),
                           {"softmax_scale": 0.08}).unrecorded
    assert given.updates == {"softmax_scale": 0.08}
    assert "recorded the attention window and logit softcap (window), and its model bears" in given.problem


def test_a_mistral_import_before_the_window_is_refused(tmp_path):
    mistral = _hf_model(tmp_path, MISTRAL_7B)  # Mistral-7B-v0.1: sliding_window 4096, not a built-in's name
    assert mistral.window.window_tokens == 4096
    unrecorded = load_plan_file(_older_file(tmp_path, mistral, **BEFORE_MLA)).unrecorded
    assert unrecorded.unsettled == ("window",)  # mla and the scale: a Mistral's are the defaults
    assert unrecorded.problem.endswith(
        "recorded the attention window and logit softcap (window), and its model Mistral-7B-v0.1 was imported from "
        "a Hugging Face config (model_type mistral) whose window follows from sliding_window, which the plan does "
        "not keep: write the plan again with sp-plan --out from the model's file (sp-run gives the window by "
        "--window, --window-kind and --softcap only without --plan)")


def test_other_models_run_as_every_model_did_then_with_one_note(tmp_path):
    mine = load_model("llama3-8b").model_copy(update={"name": "my-llama"})
    path = _older_file(tmp_path, mine, **BEFORE_MLA)
    plan_file, unrecorded, *_ = load_plan_file(path)
    assert plan_file.model == mine and unrecorded.problem is None
    assert unrecorded.note == (
        f"plan file {path} was written before plan files recorded the MLA head dims (mla), the attention window "
        "and logit softcap (window) and the softmax scale: its model my-llama runs q, k and v at head dim 128, "
        "every layer as full attention without a logit softcap and at 1/sqrt(128) = 0.0883883, as every model did "
        "then; pass --softmax-scale if the model's is another; write the plan again with sp-plan --out from the "
        "model's file if it is an MLA model or it has local-attention layers or a logit softcap")


def test_later_fields_default_to_what_every_model_ran_before_them():
    # A missing key reads as the default: None, the attention every model had before the field.
    assert [f.key for f in LATER_FIELDS] == ["mla", "window", "softmax_scale"]
    assert all(ModelSpec.model_fields[f.key].default is None for f in LATER_FIELDS)


def _older_release_file(tmp_path: Path, framework: str, version: str | None, **plan) -> Path:
    """A plan file of Llama-3-8B on 8 H100s written now for `framework` at `version`, its
    framework_version deleted."""
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"),
                                   workload=Workload(seq_len=32768, global_batch=8), num_nodes=1, gpus_per_node=8,
                                   framework=framework, framework_version=version, plan=ParallelPlan(**plan)))
    doc = json.loads(path.read_text())
    del doc["framework_version"]
    path.write_text(json.dumps(doc))
    return path


def test_an_older_torchtitan_fp8_tp_plan_is_timed_as_the_default_release_with_a_note(tmp_path):
    # An FP8 plan at tp 2: torchtitan 0.2.x gathers its TP inputs in FP8, 0.3.x in bf16
    # (cost.tp_gathers), so the release the file does not record changes its timing.
    path = _older_release_file(tmp_path, "torchtitan", "0.2.2", dp=2, tp=2, ring=2, precision="fp8")
    loaded = load_plan_file(path)
    assert loaded.plan_file.framework_version == "0.3.0" and loaded.plan_file.runtime == TORCHTITAN_RUNTIME
    assert loaded.unrecorded is None
    assert loaded.release_note == (
        f"plan file {path} was written before plan files recorded the framework release (framework_version): its "
        "plan is timed and sized as torchtitan 0.3.0 (sp-plan's default) runs it, whose TP all-gathers move other "
        "bytes for this plan than torchtitan 0.2.x's and whose loss, run in sequence chunks, holds other bytes at "
        "its peak than 0.2.x's on the whole logits; write the plan again with sp-plan --out --framework torchtitan "
        "--framework-version 0.2.2 if it was made for 0.2.x")
    assert read_plan_file(path).framework_version == "0.3.0"  # sp-simulate's and sp-report's reading


@pytest.mark.parametrize("framework, version, version_read, plan", [
    ("torchtitan", "0.3.0", "0.3.0", dict(dp=2, tp=2, ring=2)),  # bf16: every release gathers bf16
    ("torchtitan", "0.2.2", "0.3.0", dict(dp=4, ring=2, precision="fp8")),  # tp 1: no TP gathers
    ("megatron", None, None, dict(dp=2, tp=2, ring=2, precision="fp8")),  # one release
])
def test_an_older_plan_its_releases_time_alike_is_told_of_the_loss_alone(tmp_path, framework, version,
                                                                          version_read, plan):
    # torchtitan's releases gather these plans alike, but 0.3.x's loss runs in chunks (cost.loss_memory),
    # so its peak is sized otherwise for every plan; Megatron has one release.
    path = _older_release_file(tmp_path, framework, version, **plan)
    loaded = load_plan_file(path)
    note = None if framework == "megatron" else (
        f"plan file {path} was written before plan files recorded the framework release (framework_version): its "
        "plan is sized as torchtitan 0.3.0 (sp-plan's default) runs it, whose loss, run in sequence chunks, holds "
        "other bytes at its peak than 0.2.x's on the whole logits; write the plan again with sp-plan --out "
        "--framework torchtitan --framework-version 0.2.2 if it was made for 0.2.x")
    assert (loaded.plan_file.framework_version, loaded.release_note) == (version_read, note)


def test_torchtitans_releases_differ_in_their_tp_gathers_and_loss_only():
    # planfile_unrecorded tells where an older torchtitan file's release changes its timing or size by
    # the TP gathers and the loss alone: a runtime field added that differs by release needs telling too.
    # Which plans compile differs (0.2.x runs MXFP8 with TP eagerly) in their activations only, a size
    # the loss already has every older file told of.
    exclude = {"tp_gathers", "loss_memory", "compiled_layers"}
    dumps = [runtime.model_dump(exclude=exclude) for runtime in TORCHTITAN_RUNTIMES.values()]
    assert len(dumps) == 2 and dumps[0] == dumps[1]
    assert [r.compiled_layers.eager_with_tp for r in TORCHTITAN_RUNTIMES.values()] == [frozenset(), {"mxfp8"}]
    assert len({runtime.tp_gathers for runtime in TORCHTITAN_RUNTIMES.values()}) == 2
    assert len({runtime.loss_memory for runtime in TORCHTITAN_RUNTIMES.values()}) == 2
