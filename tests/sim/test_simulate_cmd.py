import json
from pathlib import Path

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cli.simulate_cmd import app
from sp_planner.cli.common import run_app
from sp_planner.errors import UserInputError
from sp_planner.figure_mark import figure_signature
from sp_planner.fileio import SIGNATURE_HEAD_BYTES
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, load_plan_file, write_plan_file
from sp_planner.sim.result import TIMELINE_SIGNATURE
from sp_planner.specs.workload import Workload
from tests.cli.conftest import notes_unwrapped


def _run(argv):
    with pytest.raises(SystemExit) as done:
        run_app(app, argv=argv, prog_name="sp-simulate")
    return done.value.code


def test_sp_simulate_prints_breakdown_and_writes_timeline_and_gantt(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=65536, global_batch=4), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, pp=2, ulysses=4, ring=2),
    ))
    out = tmp_path / "sim"
    assert _run([str(plan_file), "--out-dir", str(out), "--gantt", "svg"]) == 0
    printed = capsys.readouterr().out
    assert "simulated step" in printed and "analytic" in printed and "critical path" in printed
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["plan"]["ring"] == 2 and timeline["step_time_s"] > 0
    # Byte counts are whole bytes (the simulator computes in floats).
    assert timeline["phases"] and all(type(phase["bytes_per_rank"]) is int for phase in timeline["phases"])
    assert any(phase["bytes_per_rank"] > 0 for phase in timeline["phases"])
    assert (out / "gantt.svg").read_text().lstrip().startswith("<?xml")
    # Each file's head says whose it is, so a later run into this folder replaces them (and only them).
    assert TIMELINE_SIGNATURE == b'{\n "plan": {\n  "dp": '
    assert (out / "timeline.json").read_bytes().startswith(TIMELINE_SIGNATURE)
    assert figure_signature("svg") in (out / "gantt.svg").read_bytes()[:SIGNATURE_HEAD_BYTES]


def test_sp_simulate_on_60_columns_keeps_every_figure_whole(tmp_path, capsys, monkeypatch):
    # The communication phases had six boxed columns: at 60 columns Rich cut their headers and
    # figures ("collec…", "bytes/…"), then folded a collective's name ("reduce-scat" / "ter"). One
    # space between columns leaves every figure whole; names and the last header wrap at spaces.
    monkeypatch.setenv("COLUMNS", "60")
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=131072, global_batch=32), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, zero=2, ulysses=8, ring=2),
    ))
    assert _run([str(plan_file), "--out-dir", str(tmp_path)]) == 0
    printed, wrote = capsys.readouterr().out.split("wrote ")
    assert max(len(line) for line in printed.splitlines()) <= 60 and "…" not in printed
    # The folder whole on a line of its own, however wide (Rich had folded it mid-name).
    assert wrote.splitlines() == ["timeline.json and gantt.png in", str(tmp_path)]
    phases = printed[printed.index("communication phases"):].splitlines()
    rule = next(i for i, line in enumerate(phases) if set(line.strip()) == {"─"})
    assert phases[1].split() == ["limited"]
    assert phases[2].split() == ["collective", "bytes/rank", "time", "rate/rank", "groups", "by"] and rule == 3
    words = " ".join(phases[rule + 1:]).split()
    assert {"reduce-scatter", "all-to-all", "all-gather"} <= set(words)
    timeline = json.loads((tmp_path / "timeline.json").read_text())
    ring = next(p for p in timeline["phases"] if p["name"] == "ring K/V step")
    row = next(line for line in phases if line.startswith("ring K/V"))
    # 32 MiB a rank per ring step over the NIC, as timeline.json has it.
    assert ring["bytes_per_rank"] == 32 * 2**20 and "32.0 MiB" in row and row.split()[-1] == ring["bottleneck"]


@pytest.mark.parametrize("columns", [40, 50])
def test_sp_simulate_on_a_narrow_terminal_keeps_every_name_and_figure_whole(tmp_path, capsys, monkeypatch, columns):
    # At 40 columns Rich had cut the streams ("comp…", "209.…") and the critical path's kinds
    # ("recompute_attent…"); at 50 it folded the phases' names a letter a line.
    monkeypatch.setenv("COLUMNS", str(columns))
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=131072, global_batch=32), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, zero=2, ulysses=8, ring=2, recompute="full"),
    ))
    assert _run([str(plan_file), "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split("wrote ")[0]
    assert max(len(line) for line in printed.splitlines()) <= columns and "…" not in printed
    timeline = json.loads((tmp_path / "timeline.json").read_text())
    words = set(printed.split())
    assert {"recompute_attention", "compute", "dp_comm"} <= words
    for phase in timeline["phases"]:
        if phase["duration_s"] > 0:
            assert set(phase["name"].split()) <= words and phase["bottleneck"] in words
    for stream in timeline["streams"]:
        assert any(stream["stream"] in line.split() for line in printed.splitlines())


def test_sp_simulate_bad_plan_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    assert _run([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# Plan files edited to what sp-plan refuses: the hardware cannot run them, or they break a hard rule.
REFUSED = [
    ("a800", {"plan": {"precision": "fp8"}}, "plan.precision fp8 is not available on A800"),
    ("h100-sxm", {"plan": {"precision": "mxfp8"}}, "plan.precision mxfp8 is not available on H100-SXM"),
    ("h100-sxm", {"plan": {"precision": "fp8", "fp8_attention": True}},
     "plan.fp8_attention: no published FP8 attention curve for H100-SXM"),
    ("a800", {"plan": {"micro_batch": 7}}, "plan cannot run: global_batch 32 is not divisible by dp*micro_batch"),
    ("a800", {"plan": {"vpp": 3}}, "vpp 3 (interleaved 1F1B) needs pp > 1"),
    ("a800", {"workload": {"seq_len": 1000}}, "plan cannot run: seq_len 1000 is not divisible by 32"),
    ("a800", {"plan": {"ep": 2}}, "plan cannot run: ep 2 and etp 1 need an MoE model"),
    ("a800", {"plan": {"adam_moments_bf16": True}}, "plan cannot run: adam_moments_bf16 needs zero 1"),
    # Past int64 these overflowed numpy in the split checks, a traceback (fuzzing, stop 57).
    ("a800", {"plan": {"first_stage_layers": 10**30}},
     "plan.first_stage_layers: 1e+30 is out of range: it must be at most 16,384"),
    ("a800", {"plan": {"last_stage_layers": 10**30}},
     "plan.last_stage_layers: 1e+30 is out of range: it must be at most 16,384"),
]


def edited_plan_file(path, hardware, edits):
    """sp-plan's answer for Llama-3-8B at 128K on 2 x 8 GPUs (ulysses 8 x ring 2, ZeRO-2, 32
    sequences), written as sp-plan --out does, then edited as a user might."""
    write_plan_file(path, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware(hardware),
        workload=Workload(seq_len=131072, global_batch=32), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(ulysses=8, ring=2, zero=2),
    ))
    doc = json.loads(path.read_text())
    for part, fields in edits.items():
        doc[part].update(fields)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("hardware, edits, message", REFUSED)
def test_a_plan_that_cannot_run_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, hardware, edits, message):
    plan_file = edited_plan_file(tmp_path / "plan.json", hardware, edits)
    out = tmp_path / "sim"
    assert _run([str(plan_file), "--out-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and not out.exists()


TORCHTITAN_FP8 = ("--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "32k",
                  "--precision", "fp8", "--tp", "2", "--dp", "2", "--ring", "2", "--ulysses", "1", "--pp", "1",
                  "--framework", "torchtitan")


def test_a_torchtitan_0_2_plan_is_simulated_as_sp_plan_timed_it(tmp_path, run_main):
    # torchtitan 0.2.x gathers tensorwise float8 TP inputs in FP8, 0.3.x in bf16 (cost.tp_gathers):
    # the plan file records the release, and sp-simulate times the plan as sp-plan did (it timed
    # every torchtitan file as 0.3.x).
    from sp_planner.cli import plan_cmd, simulate_cmd

    plan = tmp_path / "plan.json"
    printed = run_main(plan_cmd, *TORCHTITAN_FP8, "--framework-version", "0.2.2", "--simulate", "1", "--format",
                       "json", "--out", plan)
    assert printed.exit_code == 0, printed.stderr
    chosen = json.loads(printed.stdout)["framework_plans"][0]
    doc = json.loads(plan.read_text())
    assert doc["framework_version"] == "0.2.2" and doc["estimate"]["step_time_s"] == chosen["step_time_s"]
    newest = tmp_path / "newest.json"
    newest.write_text(json.dumps({**doc, "framework_version": "0.3.0"}))
    timelines = {}
    for name, path in (("0.2", plan), ("0.3", newest)):
        result = run_main(simulate_cmd, path, "--out-dir", tmp_path / name)
        assert result.exit_code == 0 and result.stderr == "", result.stderr
        timelines[name] = json.loads((tmp_path / name / "timeline.json").read_text())
    mine = timelines["0.2"]
    assert (mine["analytic_step_time_s"], mine["step_time_s"]) == (chosen["step_time_s"],
                                                                    chosen["simulated_step_time_s"])
    # Each TP all-gather of 0.2.x moves the FP8 input: the 32K / ring 2 = 16,384 tokens x 4,096
    # hidden x 1 byte, (tp - 1) / tp of it per rank; 0.3.x gathers it in bf16 (2 bytes), and takes longer.
    gathers = {name: {p["name"]: p["bytes_per_rank"] for p in t["phases"]} for name, t in timelines.items()}
    assert gathers["0.2"]["tp all-gather (fp8)"] == 16384 * 4096 * 1 // 2
    assert "tp all-gather (fp8)" not in gathers["0.3"] and gathers["0.3"]["tp all-gather"] == 16384 * 4096 * 2 // 2
    assert timelines["0.3"]["analytic_step_time_s"] > mine["analytic_step_time_s"]


def test_an_older_torchtitan_file_is_simulated_as_the_default_release_with_a_note(tmp_path, run_main,
                                                                                 monkeypatch):
    from sp_planner.cli import plan_cmd, simulate_cmd

    monkeypatch.chdir(tmp_path)  # a short path: the note's lines fit the 80 columns
    plan = Path("plan.json")
    assert run_main(plan_cmd, *TORCHTITAN_FP8, "--framework-version", "0.2.2", "--out", plan).exit_code == 0
    doc = json.loads(plan.read_text())
    del doc["framework_version"]  # as written before the field
    plan.write_text(json.dumps(doc))
    result = run_main(simulate_cmd, plan, "--out-dir", "sim")
    assert result.exit_code == 0
    note = load_plan_file(plan).release_note  # its text: tests/test_planfile_unrecorded.py
    assert note.startswith("plan file plan.json was written before plan files recorded the framework release")
    assert notes_unwrapped(result.stderr) == [f"note: {note}"]
    timeline = json.loads(Path("sim/timeline.json").read_text())
    assert timeline["analytic_step_time_s"] > doc["estimate"]["step_time_s"]  # timed as 0.3.x, bf16 gathers


def test_an_older_plan_whose_window_cannot_be_told_is_refused_and_writes_nothing(tmp_path, capsys):
    # It was simulated as full attention (95.5 s a step for Mistral-7B-v0.1 at 128K on 2 x 8 H100,
    # 27.6 s with its 4K window), without a word; sp-run refused it.
    from tests.catalog.hf_configs import MISTRAL_7B
    from tests.test_planfile_unrecorded import BEFORE_MLA, _hf_model, _older_file

    plan_file = _older_file(tmp_path, _hf_model(tmp_path, MISTRAL_7B), **BEFORE_MLA)
    out = tmp_path / "sim"
    assert _run([str(plan_file), "--out-dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: plan file {plan_file} was written before plan files recorded the "
                                   "attention window") and captured.err.count("\n") == 1
    assert captured.out == "" and not out.exists()


def test_timeline_json_says_what_was_simulated(tmp_path, capsys):
    # timeline.json held the plan and the cluster's size but not the model, the sequence, the hardware
    # nor --nics-per-node: two runs of one plan over another fabric could not be told apart. The keys
    # are not a plan file's ("model"), so a timeline given as a plan file is still named as another file.
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("llama3-8b"), hardware=load_hardware("a800"),
        workload=Workload(seq_len=65536, global_batch=4), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=1, pp=2, ulysses=4, ring=2),
    ))
    runs = {"profile": [], "fat_tree": ["--topology", "fat_tree", "--nics-per-node", "2"]}
    said = {}
    for name, options in runs.items():
        assert _run([str(plan_file), "--out-dir", str(tmp_path / name), *options]) == 0
        timeline = json.loads((tmp_path / name / "timeline.json").read_text())
        said[name] = {key: timeline[key] for key in ("model_name", "hardware_name", "seq_len", "global_batch",
                                                     "num_nodes", "gpus_per_node", "topology", "nics_per_node")}
    capsys.readouterr()
    common = {"model_name": "Llama-3-8B", "hardware_name": "A800", "seq_len": 65536, "global_batch": 4,
              "num_nodes": 2, "gpus_per_node": 8}
    # The A800 profile's fabric is rail-optimized; one NIC per GPU without --nics-per-node.
    assert said == {"profile": {**common, "topology": "rail_optimized", "nics_per_node": 8},
                    "fat_tree": {**common, "topology": "fat_tree", "nics_per_node": 2}}
    with pytest.raises(UserInputError, match="is not a plan file"):
        load_plan_file(tmp_path / "profile" / "timeline.json")


def test_a_sparse_attention_plan_is_simulated(tmp_path, capsys):
    # DeepSeek-V3.2's DSA (cost.dsa_times) replayed by sim.attention_steps; tests/sim/test_dsa_agreement.py
    # checks the step against the analytic model.
    path = tmp_path / "plan.json"
    write_plan_file(path, PlanFile(
        model=load_model("deepseek-v3.2-exp"), hardware=load_hardware("h800"),
        workload=Workload(seq_len=32768, global_batch=16), num_nodes=8, gpus_per_node=8,
        plan=ParallelPlan(tp=2, ring=4, cp_comm="allgather", dp=8, ep=8, zero=1, recompute="full"),
    ))
    assert _run([str(path), "--out-dir", str(tmp_path / "sim")]) == 0
    captured = capsys.readouterr()
    # 671B at ZeRO-1 on 64 GPUs cannot hold its states: sp-simulate says so and replays it all the same
    # (after the note sp-plan prints on its group-limited routing: cli.plan_notes).
    assert "cp latent key all-gather (dsa)" in captured.out
    assert "\nnote: the plan does not fit (oom: " in captured.err and "error" not in captured.err


def test_fabric_options_say_they_do_not_reach_deepep_across_nodes(tmp_path, capsys):
    # DeepEP's dispatch and combine are timed from its H800 benchmark (cost.deepep), not routed over
    # the cluster graph: --topology and --nics-per-node changed every other collective but not them,
    # silently (DeepSeek-V3 on 32 x 8 H800, ep 32: 28.92 s with either option, moe_comm 5.63 s of it).
    qwen = load_model("qwen3-30b-a3b")
    deepep = qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": "deepep"})})
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=deepep, hardware=load_hardware("h100"), workload=Workload(seq_len=8192, global_batch=16),
        num_nodes=2, gpus_per_node=8, plan=ParallelPlan(dp=16, ep=16, zero=1, recompute="full"),
    ))
    assert _run([str(plan_file), "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    assert _run([str(plan_file), "--out-dir", str(tmp_path), "--topology", "fat_tree", "--nics-per-node", "1"]) == 0
    [note] = notes_unwrapped(capsys.readouterr().err)
    assert note.startswith("note: --topology fat_tree and --nics-per-node 1 do not reach DeepEP's token dispatch "
                           "and combine across nodes (moe_comm on the critical path: ")
    assert note.endswith("not routed over the cluster graph, as the other collectives are")


def test_fabric_options_say_nothing_where_the_dispatch_rides_the_graph(tmp_path, capsys):
    # NCCL's all-to-all (Qwen3-30B-A3B's own dispatcher) runs as flows on the graph: no note.
    plan_file = tmp_path / "plan.json"
    write_plan_file(plan_file, PlanFile(
        model=load_model("qwen3-30b-a3b"), hardware=load_hardware("h100"),
        workload=Workload(seq_len=8192, global_batch=16), num_nodes=2, gpus_per_node=8,
        plan=ParallelPlan(dp=16, ep=16, zero=1, recompute="full"),
    ))
    assert _run([str(plan_file), "--out-dir", str(tmp_path), "--topology", "fat_tree"]) == 0
    assert capsys.readouterr().err == ""
