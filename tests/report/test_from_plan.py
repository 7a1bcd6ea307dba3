from __future__ import annotations

from sp_planner.planfile import PlanFile
from sp_planner.plan import ParallelPlan
from sp_planner.report.from_plan import chosen_estimate


def _plan_file(question, plan):
    return PlanFile(model=question.model, hardware=question.hardware, workload=question.workload,
                    num_nodes=question.num_nodes, gpus_per_node=question.gpus_per_node, plan=plan)


def test_chosen_estimate_is_the_search_row_of_the_plan_file_plan(question):
    third = question.result.ranked[2]
    assert chosen_estimate(_plan_file(question, third.plan), question.result) == third


def test_a_plan_past_the_rows_looked_at_first_is_found_in_the_whole_frame(question, monkeypatch):
    # chosen_estimate looks in the frame's first HEAD_ROWS rows, then in all of them.
    from sp_planner.report import from_plan

    third = question.result.ranked[2]
    monkeypatch.setattr(from_plan, "HEAD_ROWS", 2)
    assert chosen_estimate(_plan_file(question, third.plan), question.result) == third


def test_a_plan_the_search_does_not_list_is_evaluated_alone(question):
    # The search enumerates zigzag rings only; a contiguous ring is a legal plan it skips.
    best = question.result.ranked[0].plan
    assert best.ring > 1
    contiguous = best.model_copy(update={"ring_layout": "contiguous"})
    estimate = chosen_estimate(_plan_file(question, contiguous), question.result)
    assert estimate.plan == contiguous
    # Same degrees, same bytes sent: zigzag and contiguous rings exchange the same blocks.
    assert estimate.comm_bytes == question.result.ranked[0].comm_bytes


def test_an_fp8_plan_is_reported_among_fp8_plans_as_sp_plan_documents_it(tmp_path, run_main):
    # sp-plan searches FP8 only when asked; the report of an FP8 plan file ranks FP8 plans (before
    # stop 42 it searched bf16 and called the plan file's plan 18% faster than "the best"), and its
    # summary.json is sp-plan --format json's document, the framework's plans included.
    import json

    from sp_planner.cli import plan_cmd, report_cmd

    plan = tmp_path / "fp8.json"
    assert run_main(plan_cmd, "--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "32k",
                    "--precision", "fp8", "--out", plan).exit_code == 0
    assert run_main(report_cmd, plan, "--out", tmp_path / "r").exit_code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {p["precision"] for p in summary["plans"]} == {"fp8"}
    assert summary["framework"] == "megatron" and summary["framework_plans"]
    # The kernel the plan file records as timing it (Megatron's cuDNN on an H100), as sp-plan named it.
    assert summary["question"]["attention_kernel"] == json.loads(plan.read_text())["attention_kernel"] == "cudnn"
    chosen = json.loads(plan.read_text())["estimate"]["step_time_s"]
    assert summary["plans"][0]["step_time_s"] == chosen


def test_the_report_of_a_plan_file_selects_the_kernel_sp_plan_was_told_to_time(tmp_path, run_main):
    # sp-plan --attention-kernel fa3 prints Megatron flags with --attention-backend flash; the
    # report of its plan file re-renders the flags from the file, which before recorded only the
    # kernel (chosen or default), so they lacked the flag. Without the option neither has one.
    import json

    from sp_planner.cli import plan_cmd, report_cmd

    question = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", "1", "--seq-len", "4k", "--top", "2")
    for kernel, backend in (("fa3", "--attention-backend flash"), (None, None)):
        chosen = () if kernel is None else ("--attention-kernel", kernel)
        plan, report = tmp_path / f"{kernel}.json", tmp_path / f"{kernel}-report"
        planned = run_main(plan_cmd, *question, *chosen, "--format", "json", "--out", plan)
        assert planned.exit_code == 0, planned.stderr
        assert json.loads(plan.read_text())["attention_kernel_chosen"] is (kernel is not None)
        assert run_main(report_cmd, plan, "--out", report).exit_code == 0
        printed = json.loads(planned.stdout)["framework_plans"][0]["flags"]["megatron"]["text"]
        summary = json.loads((report / "summary.json").read_text())
        reported = summary["framework_plans"][0]["flags"]["megatron"]["text"]
        assert reported == printed
        assert ((backend or "--attention-backend") in reported) is (backend is not None)
        assert ((backend or "--attention-backend") in (report / "index.html").read_text()) is (backend is not None)


def test_the_report_of_a_plan_timed_with_transformer_engines_unfused_attention_times_it_so(tmp_path, run_main):
    # Gemma-2-9B on 8 L40S at 16K: the file records attention_kernel "unfused", and the report's
    # search times and sizes every plan with it, as sp-plan's did: the same plans, steps and memory.
    import json

    from sp_planner.cli import plan_cmd, report_cmd

    plan, report = tmp_path / "plan.json", tmp_path / "report"
    planned = run_main(plan_cmd, "--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "16k",
                       "--top", "2", "--format", "json", "--out", plan)
    assert planned.exit_code == 0, planned.stderr
    assert run_main(report_cmd, plan, "--out", report).exit_code == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["question"]["attention_kernel"] == "unfused"
    printed = json.loads(planned.stdout)["framework_plans"][0]
    reported = summary["framework_plans"][0]
    for key in ("tp", "ulysses", "ring", "step_time_s", "memory_peak_bytes"):
        assert reported[key] == printed[key], key


def _run(model, plan, seq_len, **attention):
    from sp_planner.report.runs import RunConfigView, RunRecord

    config = RunConfigView(ulysses=plan.ulysses, ring=plan.ring, tp=plan.tp, batch=plan.micro_batch, seq_len=seq_len,
                           num_heads=model.num_heads, num_kv_heads=model.num_kv_heads, causal=True, dtype="bfloat16",
                           device="cuda", **attention)
    return RunRecord.model_construct(config=config)


def test_a_run_of_the_models_own_attention_is_a_run_of_its_plan():
    # sp-run --plan runs MLA at its q/k and v head dims (192/128), not the plan's mean (160): such a
    # run was refused as "head_dim 192 (plan: 160)". A windowed model's run without its window
    # (plain attention) is not a run of its plan; a global layer's (no window) is, beside its local
    # ones.
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.report.from_plan import run_differences
    from sp_planner.specs.workload import Workload

    h100, plan = load_hardware("h100"), ParallelPlan(ring=8, dp=1)
    workload = Workload(seq_len=32768, global_batch=1)

    def plan_file(model):
        return PlanFile(model=model, hardware=h100, workload=workload, num_nodes=1, gpus_per_node=8, plan=plan)

    deepseek = load_model("DeepSeek-V3")
    assert deepseek.head_dim == 160
    mla = dict(head_dim=192, v_head_dim=128, softmax_scale=deepseek.softmax_scale)
    assert run_differences(plan_file(deepseek), _run(deepseek, plan, 32768, **mla)) == []
    # 1/sqrt(160) = 0.0790569, the plan's YaRN scale 1.3689^2 / sqrt(192) = 0.135234
    assert run_differences(plan_file(deepseek), _run(deepseek, plan, 32768, head_dim=160)) == [
        "head_dim 160 (plan: 192)", "v_head_dim 160 (plan: 128)", "softmax_scale 0.0790569 (plan: 0.135234)"]
    # A run at 1/sqrt(192) (sp-run before the model had its scale) ran another attention.
    assert run_differences(plan_file(deepseek), _run(deepseek, plan, 32768, head_dim=192, v_head_dim=128)) == [
        "softmax_scale 0.0721688 (plan: 0.135234)"]
    gemma27 = load_model("Gemma-2-27B")
    local27 = dict(head_dim=128, softcap=50.0, window=4096)
    assert run_differences(plan_file(gemma27), _run(gemma27, plan, 32768, **local27, softmax_scale=1 / 12)) == []
    assert run_differences(plan_file(gemma27), _run(gemma27, plan, 32768, **local27)) == [
        "softmax_scale 0.0883883 (plan: 0.0833333)"]  # 1/sqrt(128) against 144**-0.5
    gemma = load_model("Gemma-2-9B")
    local = dict(head_dim=gemma.head_dim, softcap=gemma.window.logit_softcapping, window=gemma.window.window_tokens)
    assert run_differences(plan_file(gemma), _run(gemma, plan, 32768, **local)) == []
    assert run_differences(plan_file(gemma), _run(gemma, plan, 32768, **{**local, "window": None})) == []  # global
    plain = run_differences(plan_file(gemma), _run(gemma, plan, 32768, head_dim=gemma.head_dim))
    assert plain == [f"softcap None (plan: {gemma.window.logit_softcapping})",
                     f"window None (plan: {gemma.window.window_tokens})", "window_kind None (plan: sliding)"]


def test_a_run_of_another_ring_layout_or_cp_comm_is_not_a_run_of_the_plan():
    # An all-gather CP zigzag plan was compared with a P2P contiguous ring run of the same shapes.
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.report.from_plan import run_differences
    from sp_planner.specs.workload import Workload

    model = load_model("llama3-8b")
    plan = ParallelPlan(ring=8, dp=1, ring_layout="zigzag", cp_comm="allgather")
    plan_file = PlanFile(model=model, hardware=load_hardware("h100"), workload=Workload(seq_len=32768, global_batch=1),
                         num_nodes=1, gpus_per_node=8, plan=plan)
    run = _run(model, plan, 32768, head_dim=model.head_dim)
    assert run_differences(plan_file, run) == []  # a result that does not record them
    same = run.config.model_copy(update={"ring_layout": "zigzag", "cp_comm": "allgather"})
    assert run_differences(plan_file, run.model_copy(update={"config": same})) == []
    other = run.config.model_copy(update={"ring_layout": "contiguous", "cp_comm": "p2p"})
    assert run_differences(plan_file, run.model_copy(update={"config": other})) == [
        "ring_layout contiguous (plan: zigzag)", "cp_comm p2p (plan: allgather)"]


def test_a_pinned_split_with_empty_model_chunks_is_noted_as_sp_plan_and_sp_simulate_note_it(tmp_path):
    # Llama-3-8B's 32 layers pinned 8/8 over pp 4 x vpp 16 leave 60 of the 64 chunks empty
    # (plan_messages.empty_chunks_text, tests/test_plan_messages.py); sp-report said nothing of it.
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.planfile import write_plan_file
    from sp_planner.report.from_plan import report_from_plan_file
    from sp_planner.specs.workload import Workload

    question = dict(model=load_model("llama3-8b"), hardware=load_hardware("h100-sxm"),
                    workload=Workload(seq_len=32768, global_batch=16), num_nodes=2, gpus_per_node=8)
    plan_path = tmp_path / "plan.json"
    notes: dict[str, list[str]] = {}
    for name, plan in (("empty", ParallelPlan(ring=4, pp=4, vpp=16, first_stage_layers=8, last_stage_layers=8)),
                       ("even", ParallelPlan(ring=4, pp=4, vpp=2))):
        write_plan_file(plan_path, PlanFile(**question, plan=plan))
        notes[name] = []
        report_from_plan_file(plan_path, out_dir=tmp_path / name, note=notes[name].append)
    assert notes["empty"][0] == (
        "the pipeline layout leaves 60 of its 64 model chunks (pp 4 x vpp 16) without a layer (Megatron prints "
        "each as \"(empty stage)\"): each is still a pipeline hop and a schedule slot doing nothing; pin --vpp 2, "
        "4 or 8, which split the 8 layers per stage evenly")
    assert not any("model chunks" in line for line in notes["even"])


def test_the_report_of_a_plan_file_asks_each_framework_with_its_own_recipe_where_none_was_given(tmp_path, run_main):
    # Qwen3-30B-A3B on 2 x 8 H200 at 16K, dp 16 x ep 8, --framework all --fp8-recipe delayed: the file
    # names no framework (torchtitan's flags refuse delayed scaling) and records the recipe as given, as
    # does a file written before the field, so the report shows torchtitan refusing plan 1 for it. The
    # same file recording no recipe given (sp-plan ranked with Megatron's delayed default) asks
    # torchtitan with its own tensorwise, with sp-plan's note (flags.own_recipe): its flags then run
    # plan 1 for the release the file records, 0.2.2's TOML (it recorded none, and 0.3's refused it).
    import json
    from html import escape

    from sp_planner.cli import plan_cmd, report_cmd

    question = ("--model", "qwen3-30b-a3b", "--hardware", "h200", "--nodes", "2", "--seq-len", "16k", "--tp", "1",
                "--pp", "1", "--ulysses", "1", "--ring", "1", "--dp", "16", "--ep", "8", "--zero", "3",
                "--no-reshard-after-forward", "--micro-batch", "2", "--recompute", "full", "--framework-version",
                "0.2.2", "--precision", "fp8", "--fp8-recipe", "delayed", "--framework", "all", "--top", "2")
    plan = tmp_path / "plan.json"
    assert run_main(plan_cmd, *question, "--out", plan).exit_code == 0
    doc = json.loads(plan.read_text())
    assert (doc["framework"], doc["plan"]["fp8_recipe"], doc["fp8_recipe_given"]) == (None, "delayed", True)
    assert doc["framework_version"] == "0.2.2"
    note = ("torchtitan runs tensorwise FP8 scaling, its own, where the plans were ranked with delayed scaling; "
            "sp-plan --framework torchtitan times them so.")
    refused = "fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao)"
    older = {key: value for key, value in doc.items() if key != "fp8_recipe_given"}
    for name, written, own in (("own", doc | {"fp8_recipe_given": False}, True), ("older", older, False)):
        path, report = tmp_path / f"{name}.json", tmp_path / name
        path.write_text(json.dumps(written))
        reported = run_main(report_cmd, path, "--out", report)
        assert reported.exit_code == 0, reported.stderr
        titan = json.loads((report / "summary.json").read_text())["plans"][0]["flags"]["torchtitan"]
        assert titan["supported"] is own and (note in titan["notes"]) is own, name
        assert (titan["reason"] is None if own else refused in titan["reason"]), name
        assert any(n.startswith("Keys are torchtitan v0.2.2's TOML job config") for n in titan["notes"]) is own, name
        assert (escape(refused) in (report / "index.html").read_text()) is not own, name
