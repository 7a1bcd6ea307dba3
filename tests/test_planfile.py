"""plan.json's rank groups: a generator at any scale, full lists on request, both checked on read."""

import json

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import MEGATRON_RUNTIME, TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.errors import UserInputError
from sp_planner.flags import FlagChoices
from sp_planner.layout import GRID_ORDER, rank_groups
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, load_plan_file, read_plan_file, write_plan_file
from sp_planner.planfile_layout import RankLayout
from sp_planner.present.summary import SUMMARY_SCHEMA
from sp_planner.specs import Workload

PLAN = ParallelPlan(dp=2, pp=2, tp=2, ulysses=2, ring=2)  # 32 ranks


def _plan_file(plan: ParallelPlan = PLAN, **fields) -> PlanFile:
    fields = {"model": load_model("llama3-8b"), "hardware": load_hardware("h100-sxm"), **fields}
    return PlanFile(workload=Workload(seq_len=8192, global_batch=8), num_nodes=plan.world_size // 8,
                    gpus_per_node=8, plan=plan, **fields)


def test_the_generator_expands_to_the_executor_layout():
    layout = RankLayout.of(PLAN)
    assert layout.order == GRID_ORDER == ("pp", "dp", "ring", "ulysses", "tp")
    full = layout.expand()
    assert full == rank_groups(PLAN)
    # by hand: tp adjacent, ulysses stride 2, ring stride 4 (cp = ring x ulysses), dp stride 8, pp 16
    assert full["tp"][:2] == [[0, 1], [2, 3]]
    assert full["ulysses"][:2] == [[0, 2], [1, 3]]
    assert full["cp"][0] == [0, 2, 4, 6]
    assert full["dp"][0] == [0, 8] and full["pp"][0] == [0, 16]


def test_a_plan_file_stays_small_at_scale(tmp_path):
    big = ParallelPlan(dp=128, pp=1, tp=1, ulysses=64, ring=16)  # 131,072 GPUs
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(big, rank_layout=RankLayout.of(big)))
    assert path.stat().st_size < 50_000
    assert read_plan_file(path).rank_layout == RankLayout.of(big)


@pytest.mark.parametrize("full", [False, True])
def test_round_trip(tmp_path, full):
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(rank_layout=RankLayout.of(PLAN), rank_groups=rank_groups(PLAN) if full else {}))
    read = read_plan_file(path)
    assert read.rank_layout.expand() == rank_groups(PLAN)
    assert read.rank_groups == (rank_groups(PLAN) if full else {})


def test_old_files_with_full_lists_only_are_read(tmp_path):
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(rank_groups=rank_groups(PLAN)))
    doc = json.loads(path.read_text())
    del doc["rank_layout"]  # as written before the generator existed
    path.write_text(json.dumps(doc))
    assert read_plan_file(path).rank_groups == rank_groups(PLAN)


def test_the_position_embedding_round_trips_and_older_files_read_as_rope(tmp_path):
    path = tmp_path / "plan.json"
    learned = load_model("llama3-8b").model_copy(update={"position_embedding": "learned_absolute"})
    write_plan_file(path, _plan_file().model_copy(update={"model": learned}))
    assert read_plan_file(path).model == learned
    doc = json.loads(path.read_text())
    del doc["model"]["position_embedding"]  # as written before the field existed
    path.write_text(json.dumps(doc))
    assert read_plan_file(path).model.position_embedding == "rope"


def _load_refusal(path, doc) -> str:
    """The one-line refusal load_plan_file gives for `doc` written at `path`."""
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError) as err:
        load_plan_file(path)
    return str(err.value)


def _edited(tmp_path, edit) -> str:
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(rank_layout=RankLayout.of(PLAN), rank_groups=rank_groups(PLAN)))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError) as err:
        read_plan_file(path)
    return str(err.value)


def test_a_generator_that_is_not_the_plans_layout_is_refused(tmp_path):
    def reorder(doc):
        doc["rank_layout"]["order"] = ["pp", "dp", "ulysses", "ring", "tp"]  # Ulysses outside ring
    assert ("rank_layout is not the plan's layout: order ['pp', 'dp', 'ulysses', 'ring', 'tp'] (the plan's: "
            "['pp', 'dp', 'ring', 'ulysses', 'tp']); remove rank_layout or write the plan again with sp-plan --out"
            in _edited(tmp_path, reorder))

    # Only what differs is named (the whole of both layouts, every group included, ran to 600 characters).
    def degrees(doc):
        doc["rank_layout"]["degrees"]["ring"] = 4
        del doc["rank_layout"]["groups"]["cp"]
    assert _edited(tmp_path, degrees).endswith(
        "rank_layout is not the plan's layout: degrees.ring 4 (the plan's: 2), groups.cp missing (the plan's: "
        "['ring', 'ulysses']); remove rank_layout or write the plan again with sp-plan --out")


def test_full_lists_that_differ_from_the_layout_are_refused(tmp_path):
    def swap(doc):
        doc["rank_groups"]["ulysses"][0] = [0, 1]
    message = _edited(tmp_path, swap)
    assert "rank_groups['ulysses'] [[0, 1]" in message and "disagree with the degrees" in message
    assert "\n" not in message

    def unknown(doc):
        doc["rank_groups"]["expert"] = [[0]]
    assert "rank_groups has axes" in _edited(tmp_path, unknown)


def test_hardware_byte_counts_are_whole_in_the_file_and_read_back(tmp_path):
    path = tmp_path / "plan.json"
    written = _plan_file(rank_layout=RankLayout.of(PLAN))
    write_plan_file(path, written)
    hardware = json.loads(path.read_text())["hardware"]
    for name in ("hbm_bytes", "memory_reserve_bytes"):
        assert type(hardware[name]) is int and hardware[name] == round(getattr(written.hardware, name))
    read = read_plan_file(path)
    assert read == written and type(read.hardware.hbm_bytes) is float  # ints read back as the floats declared


@pytest.mark.parametrize("hardware, plan, message", [
    ("a800", {"precision": "fp8"}, "plan.precision fp8 is not available on A800: its profile gives no FP8 peak"),
    ("h100-sxm", {"precision": "mxfp8"}, "plan.precision mxfp8 is not available on H100-SXM: MXFP8 runs on "
                                         "Blackwell GPUs only; use one of bf16, fp8"),
    ("h100-sxm", {"precision": "fp8", "fp8_attention": True},
     "plan.fp8_attention: no published FP8 attention curve for H100-SXM"),
    ("a800", {"precision": "fp8", "fp8_recipe": "blockwise"}, "plan.precision fp8 is not available on A800"),
])
def test_a_plan_its_hardware_cannot_run_is_refused_on_read(tmp_path, hardware, plan, message):
    # sp-plan refuses these options; a plan file edited to them is refused by every reader, in one
    # line, instead of a ValueError deep in the cost model.
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file().model_copy(update={"hardware": load_hardware(hardware)}))
    doc = json.loads(path.read_text())
    doc["plan"].update(plan)
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError) as err:
        read_plan_file(path)
    assert str(err.value).startswith(f"plan file {path} is invalid: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_megatron_plan_file_round_trips_with_a_null_framework_version(tmp_path):
    # The release is recorded for every framework (null: Megatron has one); the rest of the file is
    # what it was before the field, and a file without the key reads back as the same plan file.
    path = tmp_path / "plan.json"
    written = _plan_file(rank_layout=RankLayout.of(PLAN))
    write_plan_file(path, written)
    text = path.read_text()
    doc = json.loads(text)
    assert list(doc)[list(doc).index("framework") + 1] == "framework_version" and doc["framework_version"] is None
    loaded = load_plan_file(path)
    assert loaded == (written, None, None, None, None) and loaded.plan_file.runtime == MEGATRON_RUNTIME
    del doc["framework_version"]  # as written before the field
    older = tmp_path / "older.json"
    older.write_text(json.dumps(doc, indent=2) + "\n")
    assert load_plan_file(older) == (written, None, None, None, None)
    write_plan_file(older, read_plan_file(older))
    assert older.read_text() == text


@pytest.mark.parametrize("version, runtime", [
    ("0.2.2", TORCHTITAN_V02_RUNTIME), ("0.2.x", TORCHTITAN_V02_RUNTIME), ("0.3.0", TORCHTITAN_RUNTIME),
    (None, TORCHTITAN_RUNTIME),  # null: the newest, as sp-plan without --framework-version
])
def test_a_torchtitan_plan_file_is_timed_by_its_release(tmp_path, version, runtime):
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(framework="torchtitan", framework_version=version))
    read = read_plan_file(path)
    assert read.framework_version == version and read.runtime == runtime
    assert read.flag_choices == FlagChoices(framework_version=version)  # the release its flags are rendered for


def test_a_plan_file_that_names_no_framework_is_timed_as_sp_plan_framework_all_timed_it(tmp_path):
    # framework null: no framework's flags run the plan (cli.plan_file_out); its readers time it with
    # the runtime --framework all ranked it with, Megatron's, and it reads back as written.
    path = tmp_path / "plan.json"
    written = _plan_file(framework=None)
    write_plan_file(path, written)
    assert json.loads(path.read_text())["framework"] is None
    loaded = load_plan_file(path)
    assert loaded == (written, None, None, None, None) and loaded.plan_file.runtime == MEGATRON_RUNTIME


def test_a_plan_file_that_names_no_framework_keeps_torchtitans_release_for_its_flags(tmp_path):
    # sp-plan --framework all --framework-version 0.2.2 writing a file that names no framework: the
    # release times nothing (Megatron's runtime, as with null) but the report renders torchtitan's
    # flags for it (PlanFile.flag_choices), as sp-plan printed them.
    path = tmp_path / "plan.json"
    written = _plan_file(framework=None, framework_version="0.2.2")
    write_plan_file(path, written)
    doc = json.loads(path.read_text())
    assert (doc["framework"], doc["framework_version"]) == (None, "0.2.2")
    read = read_plan_file(path)
    assert read == written and read.runtime == MEGATRON_RUNTIME == _plan_file(framework=None).runtime
    assert read.flag_choices == FlagChoices(framework_version="0.2.2")


@pytest.mark.parametrize("framework, version, message", [
    ("megatron", "0.2.2", "framework_version '0.2.2': sp-planner times one megatron release; remove "
                          "framework_version"),
    ("torchtitan", "0.1.0", "framework_version '0.1.0' is not a torchtitan release sp-planner times; give one of "
                            "0.3.0, 0.3, 0.3.x, 0.2.2, 0.2, 0.2.x"),
    # A file naming no framework holds torchtitan's release for its flags: one sp-plan takes, or none.
    (None, "0.1.0", "framework_version '0.1.0' is not a torchtitan release sp-planner times; give one of "
                    "0.3.0, 0.3, 0.3.x, 0.2.2, 0.2, 0.2.x"),
])
def test_a_release_sp_plan_never_writes_is_refused_on_read(tmp_path, framework, version, message):
    def edit(doc):
        doc["framework"], doc["framework_version"] = framework, version
    assert _edited(tmp_path, edit).endswith(message)


@pytest.mark.parametrize("other", [
    {"name": "my-cluster", "peak_bf16_flops": 1e15, "hbm_bytes": 8e10},  # a hardware profile
    {"passed": True, "config": {"ulysses": 2}, "comm_bytes_measured": {}},  # an sp-run result
    # sp-simulate's timeline.json holds the plan's degrees but no model: before, its 735-column
    # message listed three fields missing and thirteen extra
    {"plan": {"dp": 1, "tp": 8}, "num_nodes": 2, "step_time_s": 1.5, "events": []},
])
def test_another_kind_of_file_is_named_in_one_short_line(tmp_path, other):
    # Given a profile or a result.json, the message listed every field missing and every field extra:
    # one line of about 1,000 columns.
    path = tmp_path / "other.json"
    assert _load_refusal(path, other) == (
        f"plan file {path} is not a plan file (no schema_version or model); give a plan.json written by sp-plan --out")


@pytest.mark.parametrize(("doc", "holds"), [
    (["tp", "pp", "dp"], "a list"), ("tp,pp,dp", "a string"), (None, "nothing (an empty file or null)"),
])
def test_a_document_that_is_not_a_mapping_is_named_as_no_plan_file(tmp_path, doc, holds):
    # A CSV or a list given as the plan file got "must hold a mapping, got a string", with no word of
    # which file to give instead.
    path = tmp_path / "plan.json"
    assert _load_refusal(path, doc) == (
        f"plan file {path} is not a plan file (it holds {holds}, not a mapping); give a plan.json written by "
        "sp-plan --out")


def test_sp_plans_json_summary_is_not_read_as_a_plan_file_of_another_release(tmp_path):
    # `sp-plan --format json > plan.json` (or sp-report's summary.json) given where a plan file goes
    # was refused as a version mismatch, "has schema_version 'sp-planner.summary/3'; this sp-planner
    # reads 'sp-planner.plan/1'", as if a newer sp-planner could read it.
    path = tmp_path / "plan.json"
    summary = {"schema_version": SUMMARY_SCHEMA, "question": {}, "plans": []}
    assert _load_refusal(path, summary) == (
        f"plan file {path} is not a plan file but {SUMMARY_SCHEMA!r} (as sp-plan --format json prints); give a "
        "plan.json written by sp-plan --out")


def test_a_plan_file_of_another_release_names_both_versions(tmp_path):
    path = tmp_path / "plan.json"
    newer = {"schema_version": "sp-planner.plan/99", "model": {}, "plan": {}}
    assert _load_refusal(path, newer) == (
        f"plan file {path} has schema_version 'sp-planner.plan/99'; this sp-planner reads 'sp-planner.plan/1'")


@pytest.mark.parametrize("where, value, expected", [
    ("plan.tp", 2.0, "a whole number, got 2.0"),
    ("plan.tp", "2", 'a whole number, got "2"'),
    ("plan.adam_moments_bf16", "yes", 'true or false, got "yes"'),
    ("plan.reshard_after_forward", 1, "true or false, got 1"),
    ("num_nodes", 4.0, "a whole number, got 4.0"),
    ("rank_layout.degrees.tp", 2.0, "a whole number, got 2.0"),
    ("rank_groups.tp.0.0", 0.0, "a whole number, got 0.0"),
])
def test_a_hand_edit_lax_mode_would_coerce_is_refused_naming_the_field(tmp_path, where, value, expected):
    # pydantic's lax mode read 2.0 and "2" as 2, and "yes" and 1 as true: the plan run was not the one written.
    def edit(doc):
        *parents, leaf = where.split(".")
        for part in parents:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        doc[int(leaf) if isinstance(doc, list) else leaf] = value

    assert _edited(tmp_path, edit) == f"plan file {tmp_path / 'plan.json'} is invalid: {where}: expected {expected}"


def test_a_float_field_still_takes_a_whole_number(tmp_path):
    path = tmp_path / "plan.json"
    written = _plan_file(rank_layout=RankLayout.of(PLAN))
    write_plan_file(path, written)
    doc = json.loads(path.read_text())
    doc["hardware"]["efficiency"]["gemm"] = 1
    doc["hardware"]["peak_bf16_flops"] = int(written.hardware.peak_bf16_flops)
    path.write_text(json.dumps(doc))
    hardware = read_plan_file(path).hardware
    assert hardware.efficiency.gemm == 1.0 and type(hardware.efficiency.gemm) is float
    assert hardware.peak_bf16_flops == written.hardware.peak_bf16_flops == 989e12


@pytest.mark.parametrize("hardware, message", [
    ("a800", "model.moe.dispatcher deepep: the DeepEP dispatcher has no published benchmark on A800"),
    ("gb200-nvl72", "Megatron's DeepEP backend does not run it; use --moe-dispatcher hybridep"),
])
def test_a_deepep_plan_on_hardware_deepep_does_not_run_is_refused_on_read(tmp_path, hardware, message):
    # sp-plan refuses --moe-dispatcher deepep there (cost.deepep.deepep_refusal); a plan file edited to
    # it is refused by every reader in one line, where the cost model would have no DeepEP speed.
    plan = ParallelPlan(dp=8, ep=8)
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(model=load_model("Qwen3-30B-A3B"), hardware=load_hardware(hardware),
                                   workload=Workload(seq_len=4096, global_batch=8), num_nodes=1,
                                   gpus_per_node=8, plan=plan))
    read_plan_file(path)  # the alltoall dispatcher runs there
    doc = json.loads(path.read_text())
    doc["model"]["moe"]["dispatcher"] = "deepep"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError) as err:
        read_plan_file(path)
    assert str(err.value).startswith(f"plan file {path} is invalid: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_attention_kernel_is_recorded_and_older_files_read_it_as_null(tmp_path):
    # plan.json names the kernel whose curves (in `hardware`) timed the plan; a file written before
    # the field reads as unnamed (null), its hardware's curves unchanged.
    path = tmp_path / "plan.json"
    written = _plan_file(attention_kernel="cudnn")
    write_plan_file(path, written)
    doc = json.loads(path.read_text())
    assert doc["attention_kernel"] == "cudnn" and read_plan_file(path) == written
    del doc["attention_kernel"]
    path.write_text(json.dumps(doc))
    assert read_plan_file(path) == written.model_copy(update={"attention_kernel": None})
    doc["attention_kernel"] = "fa4"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError, match="attention_kernel"):
        read_plan_file(path)


def test_whether_the_user_chose_the_kernel_is_recorded_and_older_files_read_it_as_not(tmp_path):
    # The flags select the kernel only where the user chose it (sp-plan --attention-kernel): the file
    # says so, and a file written before the field (or with the framework's default) selects none.
    path = tmp_path / "plan.json"
    chosen = _plan_file(attention_kernel="fa3", attention_kernel_chosen=True)
    write_plan_file(path, chosen)
    doc = json.loads(path.read_text())
    assert doc["attention_kernel_chosen"] is True
    assert read_plan_file(path).flag_choices == FlagChoices(attention_kernel="fa3")
    del doc["attention_kernel_chosen"]
    path.write_text(json.dumps(doc))
    older = read_plan_file(path)
    assert older == chosen.model_copy(update={"attention_kernel_chosen": False}) and older.flag_choices == FlagChoices()
    assert _plan_file(attention_kernel="cudnn").flag_choices.attention_kernel is None
    assert _plan_file(attention_kernel_chosen=True).flag_choices.attention_kernel is None  # none named, none selected


def test_the_flags_of_a_plan_file_know_where_transformer_engine_runs_its_unfused_attention():
    # Gemma-2's head dim 256 on an L40S (sm89): no fused backend trains it, so Megatron's flags of the
    # file's plan (sp-report, sp-simulate) refuse context parallelism as sp-plan's do.
    gemma = _plan_file(model=load_model("gemma-2-9b"), hardware=load_hardware("l40s"))
    assert gemma.flag_choices == FlagChoices(te_unfused_attention=True)
    assert _plan_file().flag_choices == FlagChoices()


def test_the_flags_of_a_plan_file_know_when_its_chips_are_ascend_npus():
    # sp-report renders MindSpeed's refusals with the advice sp-plan gave (flags.base._group_fix).
    npu = _plan_file(hardware=load_hardware("ascend-910b"))
    assert npu.flag_choices == FlagChoices(on_npu=True)


def test_a_plan_timed_with_transformer_engines_unfused_attention_reads_back_timed_with_it(tmp_path):
    # No profile may hold efficiency.attention_unfused: the file records the kernel ("unfused") and
    # its profile without the setting, and reading it sets it again, so sp-simulate and sp-report
    # time the plan as sp-plan did.
    from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel

    l40s = load_hardware("l40s")
    plan = ParallelPlan(dp=2, tp=4)
    path = tmp_path / "plan.json"
    unfused = with_attention_kernel(l40s, UNFUSED)
    write_plan_file(path, _plan_file(plan, model=load_model("gemma-2-9b"), hardware=unfused, attention_kernel=UNFUSED))
    doc = json.loads(path.read_text())
    assert doc["attention_kernel"] == "unfused" and doc["hardware"]["efficiency"]["attention_unfused"] is False
    loaded = read_plan_file(path)
    assert loaded.hardware.efficiency.attention_unfused and loaded.hardware == with_attention_kernel(l40s, UNFUSED)
    # A context-parallel plan is refused: TE's unfused attention takes none.
    doc["plan"]["ulysses"], doc["plan"]["dp"] = 2, 1
    doc.pop("rank_layout", None)
    path.write_text(json.dumps(doc))
    with pytest.raises(UserInputError, match="attention_kernel unfused with ulysses x ring 2: Transformer Engine"):
        read_plan_file(path)


def test_a_megatron_file_timed_with_a_curve_where_te_runs_unfused_says_its_figures_are_not_megatrons(tmp_path):
    # sp-plan --framework all (before it refused --out there) wrote Megatron files timed with FA2's
    # curve on L40S; sp-simulate and sp-report replayed them without a word (389.62 s for Gemma-2-9B
    # 32K on 8 L40S, where --framework megatron's best is 3,079.86 s).
    from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel

    l40s, gemma = load_hardware("l40s"), load_model("gemma-2-9b")
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(ParallelPlan(dp=2, tp=4), model=gemma, hardware=with_attention_kernel(l40s, "fa2"),
                                     attention_kernel="fa2"))
    note = load_plan_file(path).kernel_note
    assert note == (f"plan file {path} was timed with fa2's attention curve, but Transformer Engine runs Gemma-2-9B's "
                    "attention unfused on L40S, which Megatron's time and memory follow: these figures are not "
                    "Megatron's; write it again with sp-plan --framework megatron --out")
    # Timed with the unfused attention, another framework's file, or a GPU where TE does not run it: no note.
    write_plan_file(path, _plan_file(ParallelPlan(dp=2, tp=4), model=gemma,
                                     hardware=with_attention_kernel(l40s, UNFUSED), attention_kernel=UNFUSED))
    assert load_plan_file(path).kernel_note is None
    write_plan_file(path, _plan_file(ParallelPlan(dp=2, tp=4), model=gemma, hardware=l40s, framework="yunchang"))
    assert load_plan_file(path).kernel_note is None
    write_plan_file(path, _plan_file(ParallelPlan(dp=2, tp=4), model=gemma))
    assert load_plan_file(path).kernel_note is None


def test_an_older_file_is_refused_for_timing_only_where_a_timed_field_cannot_be_told(tmp_path):
    # sp-report and sp-simulate timed an older plan of an imported Mistral (no window key) as full
    # attention, 3x its windowed step at 128K, and said nothing; sp-run refused it.
    from tests.catalog.hf_configs import GEMMA2_27B, MISTRAL_7B
    from tests.test_planfile_unrecorded import BEFORE_MLA, _hf_model, _older_file

    mistral = load_plan_file(_older_file(tmp_path, _hf_model(tmp_path, MISTRAL_7B), **BEFORE_MLA))
    assert mistral.timing_problem() == mistral.unrecorded.problem is not None
    # Gemma 2 imported after the window came: only its softmax scale is unknown, which times nothing.
    gemma = load_plan_file(_older_file(tmp_path, _hf_model(tmp_path, GEMMA2_27B)))
    assert gemma.unrecorded.unsettled == ("softmax_scale",) and gemma.timing_problem() is None
    # A built-in's window is the catalog's.
    assert load_plan_file(_older_file(tmp_path, load_model("gemma-2-27b"), **BEFORE_MLA)).timing_problem() is None


def test_a_plan_file_keeps_whether_the_dsa_indexer_trains(tmp_path):
    from sp_planner.specs.attention import DSASpec

    path = tmp_path / "plan.json"
    dsa = DSASpec(index_n_heads=64, index_head_dim=128, index_topk=2048, indexer_loss="sparse")
    v32 = load_model("DeepSeek-V3").model_copy(update={"name": "DeepSeek-V3.2-Exp", "dsa": dsa})
    write_plan_file(path, _plan_file(ParallelPlan(dp=4, tp=2, ring=2, cp_comm="allgather")).model_copy(
        update={"model": v32}))
    assert load_plan_file(path).plan_file.model.dsa.indexer_loss == "sparse"
    # A file written before the field reads as Megatron's default, the indexer untrained.
    doc = json.loads(path.read_text())
    del doc["model"]["dsa"]["indexer_loss"]
    path.write_text(json.dumps(doc))
    assert load_plan_file(path).plan_file.model.dsa.indexer_loss == "none"


HSDP = ParallelPlan(tp=2, dp=4, zero=3, dp_replicate=2)  # 8 ranks: 2 replicas of dp_shard 2


def test_hsdp_groups_round_trip_and_older_files_without_them_are_read(tmp_path):
    path = tmp_path / "plan.json"
    write_plan_file(path, _plan_file(HSDP, rank_layout=RankLayout.of(HSDP), rank_groups=rank_groups(HSDP)))
    read = read_plan_file(path)
    assert read.rank_layout.expand() == read.rank_groups == rank_groups(HSDP)
    # by hand: rank = tp_r + 2 dp_r, dp_r = 2 replica + shard
    assert read.rank_groups["dp_shard_cp"] == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert read.rank_groups["dp_replicate"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    doc = json.loads(path.read_text())  # as written before the HSDP groups were (stop 63)
    doc["rank_layout"] = RankLayout.of(HSDP, hsdp=False).model_dump(mode="json")
    doc["rank_groups"] = {name: groups for name, groups in doc["rank_groups"].items()
                          if name not in ("dp_shard_cp", "dp_replicate", "edp_shard", "edp_replicate")}
    path.write_text(json.dumps(doc))
    old = read_plan_file(path)
    assert "dp_replicate" not in old.rank_groups and old.rank_layout == RankLayout.of(HSDP, hsdp=False)


def test_whether_an_fp8_recipe_was_given_is_recorded_and_older_files_read_it_as_given(tmp_path):
    # Where sp-plan was given no --fp8-recipe, the report asks each framework's flags with its own recipe
    # (flags.own_recipe); a file written before the field reads as given: the plan's recipe, as ranked.
    path = tmp_path / "plan.json"
    own = _plan_file(fp8_recipe_given=False)
    write_plan_file(path, own)
    doc = json.loads(path.read_text())
    assert doc["fp8_recipe_given"] is False
    assert read_plan_file(path).flag_choices == FlagChoices(fp8_recipe_given=False)
    del doc["fp8_recipe_given"]
    path.write_text(json.dumps(doc))
    older = read_plan_file(path)
    assert older == own.model_copy(update={"fp8_recipe_given": True}) and older.flag_choices == FlagChoices()
