"""sp-report's work: a report for the question of a plan file, with optional sp-run results.

The search is run again for the plan file's question (model, hardware, workload, cluster) so the
figures cover the whole space, with the plan's values the search would not choose on its own
pinned (report.plan_pins: a pinned pipeline split, an FP8 precision); the plan file's plan is the
one the report recommends, estimated by this search (the file's stored estimate may come from an
older cost model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from sp_planner.destination import check_folder_destination, same_destination
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate, SearchResult
from sp_planner.plan_messages import empty_chunks_text
from sp_planner.planfile import PlanFile, load_plan_file
from sp_planner.planfile_checks import check_loaded_plan_times
from sp_planner.present.advice import suggest_fits
from sp_planner.present.expressible import expressible_plans
from sp_planner.present.summary import build_summary
from sp_planner.report.plan_pins import recorded_pins
from sp_planner.report.runs import RunRecord, read_run_record
from sp_planner.report.writer import check_report_target, write_report
from sp_planner.search import HEAD_ROWS, SearchTooLarge, evaluate, search
from sp_planner.specs.model import softmax_scale_or_default


def report_from_plan_file(plan_path: Path, *, run_paths: Sequence[Path] = (), out_dir: Path,
                          top_k: int = 10, note: Callable[[str], None] = lambda text: None) -> Path:
    """Read the plan file and run results, search again, write the report; return index.html's path.
    The search times plans with the runtime the plan file was timed with (PlanFile.runtime); `note`
    gets the line that says which release a file that predates framework_version is timed as, the
    one that says which MoE router the flags of a file that predates the router fields carry (one
    that cannot be told is refused: planfile_router), the one on a pinned split that leaves model chunks
    empty (plan_messages.empty_chunks_text) and the one that names what of the plan the search pins
    (plan_pins.recorded_pins)."""
    check_folder_destination(Path(out_dir), option="--out")
    check_report_target(Path(out_dir))
    loaded = load_plan_file(plan_path)
    plan_file = loaded.plan_file
    check_loaded_plan_times(loaded)  # a plan that cannot run or be timed, as sp-simulate refuses it
    router = loaded.router
    if router is not None and router.problem is not None:  # its flags would name another router
        raise UserInputError(router.problem)
    # Read every input before the (slower) search, so a bad --run fails at once.
    _refuse_repeated_runs(run_paths)
    runs = [read_run_record(path) for path in run_paths]
    for path, run in zip(run_paths, runs):
        differences = run_differences(plan_file, run)
        if differences:
            device = expected_run_device(plan_file)
            fix = f"run it with sp-run --plan {plan_path} --device {device}"
            if device == "cuda" and run.config.device != "cuda":
                fix += (" on the GPUs it plans for, or plan for this CPU with a profile from sp-calibrate "
                        "--device cpu")
            raise UserInputError(f"run result {path} is not a run of this plan: {'; '.join(differences)}; {fix}")
    nodes, per_node = plan_file.num_nodes, plan_file.gpus_per_node
    # A pinned split that leaves model chunks idle: the note sp-plan and sp-simulate give the same plan.
    chunks_note = empty_chunks_text(plan_file.model.num_layers, plan_file.plan)
    for line in (loaded.release_note, None if router is None else router.note, chunks_note, loaded.kernel_note):
        if line is not None:
            note(line)
    runtime, choices = plan_file.runtime, plan_file.flag_choices
    pins, pinned = recorded_pins(plan_file)
    if pinned:
        note("the report searches with the plan file's " + ", ".join(f"{name} {value}" for name, value in
             pinned.items()) + " pinned (values its search does not choose on its own)")
    try:
        result = search(plan_file.model, plan_file.hardware, plan_file.workload, num_nodes=nodes,
                        gpus_per_node=per_node, top_k=top_k, runtime=runtime, pins=pins,
                        every_row=True)  # the report reads every row: costed once, not by two more passes
    except SearchTooLarge as err:  # sp-report has no degree to pin nor a node count to change
        raise UserInputError(f"the plan file's question is too large for sp-report, which searches its whole "
                             f"space: {err.size}; write the report with sp-plan --report and a pinned degree "
                             "(e.g. --tp 8), which searches only what is pinned") from None
    fits = bool(result.ranked) and result.ranked[0].fits
    # As sp-plan does, so that summary.json is the document `sp-plan --format json --framework F`
    # prints for the plan file's framework.
    suggestions = () if fits else suggest_fits(plan_file.model, plan_file.hardware, plan_file.workload,
                                               num_nodes=nodes, gpus_per_node=per_node, pins=pins,
                                               runtime=runtime,
                                               closest=result.ranked[0].plan if result.ranked else None)
    # A file that names no framework reads as sp-plan --framework all's answer (cli.plan_file_out).
    framework = plan_file.framework or "all"
    framework_ranked = () if not fits or framework == "all" else expressible_plans(
        result, framework, model=plan_file.model, workload=plan_file.workload, num_nodes=nodes,
        gpus_per_node=per_node, top_k=top_k, choices=choices)
    summary = build_summary(model=plan_file.model, hardware=plan_file.hardware, workload=plan_file.workload,
                            num_nodes=nodes, gpus_per_node=per_node, result=result, top_k=top_k,
                            suggestions=suggestions, framework=framework,
                            framework_ranked=framework_ranked[:top_k], choices=choices,
                            attention_kernel=plan_file.attention_kernel)
    return write_report(out_dir, model=plan_file.model, hardware=plan_file.hardware,
                        workload=plan_file.workload, num_nodes=nodes, gpus_per_node=per_node, result=result,
                        summary=summary, runs=runs, framework=framework, choices=choices,
                        chosen=chosen_estimate(plan_file, result))


def _refuse_repeated_runs(run_paths: Sequence[Path]) -> None:
    """One result file named twice (the same path, or another path to it) was listed as two runs."""
    for index, path in enumerate(run_paths):
        twin = next((earlier for earlier in run_paths[:index] if same_destination(earlier, path)), None)
        if twin is not None:
            also = "" if str(twin) == str(path) else f" (as --run {twin})"
            raise UserInputError(f"--run {path} is given twice{also}: the report would list one run as two; "
                                 "give each result once")


def expected_run_device(plan_file: PlanFile) -> str:
    """'cpu' for a profile sp-calibrate measured over gloo, else 'cuda' (every built-in profile is a GPU)."""
    calibration = plan_file.hardware.calibration
    return "cpu" if calibration is not None and calibration.environment.backend == "gloo" else "cuda"


def run_differences(plan_file: PlanFile, run: RunRecord) -> list[str]:
    """What differs between an sp-run result and the attention group of the plan (as sp-run --plan
    runs it: the plan's ulysses, ring, tp, micro batch, sequence, heads and mask, on its device class)."""
    plan, model, workload, got = plan_file.plan, plan_file.model, plan_file.workload, run.config
    expected = {
        "ulysses": plan.ulysses, "ring": plan.ring, "tp": plan.tp, "batch": plan.micro_batch,
        "seq_len": workload.seq_len, "num_heads": model.num_heads, "num_kv_heads": model.num_kv_heads,
        "causal": workload.causal, "device": expected_run_device(plan_file),
    }
    if plan.ring > 1:  # the ring's layout and how it moves K/V, where the result records them
        expected |= {name: value for name, value in (("ring_layout", plan.ring_layout), ("cp_comm", plan.cp_comm))
                     if getattr(got, name) is not None}
    differences = [f"{name} {getattr(got, name)} (plan: {value})" for name, value in expected.items()
                   if getattr(got, name) != value]
    # The model's attention as sp-run --plan runs it (MLA's two head dims, its softmax scale, a
    # softcap, a local or, where the model has them, a global layer's window:
    # cli.run_model.model_attention). A result without a softmax_scale (sp-run before it had one)
    # ran 1/sqrt(head_dim).
    ran = _attention(got.head_dim, got.v_dim, got.scale, got.softcap, got.window, got.window_kind)
    variants = [_attention(f["head_dim"], f.get("v_head_dim", f["head_dim"]),
                           softmax_scale_or_default(f.get("softmax_scale"), f["head_dim"]), f.get("softcap"),
                           f.get("window"), f.get("window_kind", "sliding"))
                for f in _attention_fields(model, workload.seq_len)]
    if ran not in variants:
        differences += [f"{name} {mine} (plan: {theirs})" for name, mine, theirs
                        in zip(_ATTENTION_FIELDS, ran, variants[0]) if mine != theirs]
    return differences


_ATTENTION_FIELDS = ("head_dim", "v_head_dim", "softmax_scale", "softcap", "window", "window_kind")


def _attention(head_dim, v_head_dim, scale, softcap, window, window_kind) -> tuple:
    """The attention a run computes, in _ATTENTION_FIELDS order (no window kind without a window;
    the scale to 6 significant digits, as the report names it: one written through JSON and one
    computed agree)."""
    return head_dim, v_head_dim, float(f"{scale:.6g}"), softcap, window, window_kind if window is not None else None


def _attention_fields(model, seq_len: int) -> list[dict]:
    """RunConfig fields of the layers sp-run --plan can run for the model: the default (a local
    layer where the model has them) and, beside local layers, a global one (--layer global)."""
    from sp_planner.cli.run_model import model_attention  # torch-free; the CLI package loads on use

    variants = [model_attention(model, seq_len, None)[0]]
    w = model.window
    if w is not None and w.window_tokens < seq_len and model.num_local_layers < model.num_layers:
        variants.append(model_attention(model, seq_len, "global")[0])
    return variants


def chosen_estimate(plan_file: PlanFile, result: SearchResult) -> PlanEstimate:
    """The plan file's plan as this search estimates it (evaluated alone if the search skipped it).
    Its first row in the frame; looked for in the frame's first rows (result.head, which the search
    kept) before the whole frame of a large search, where the plan a search chose usually is."""
    plan = plan_file.plan.model_dump()
    for frame in (result.head(HEAD_ROWS), result.frame):
        mask = pd.Series(True, index=frame.index)
        for name, value in plan.items():
            if name == "vpp_group":  # a candidate's is the group priced, which a plan file's is (rule vpp)
                continue
            mask &= frame[name] == value
        rows = frame[mask]
        if len(rows):
            return PlanEstimate.from_row(rows.iloc[0])
    try:
        return evaluate(plan_file.model, plan_file.hardware, plan_file.workload, plan_file.plan,
                        num_nodes=plan_file.num_nodes, gpus_per_node=plan_file.gpus_per_node,
                        runtime=plan_file.runtime)
    except ValueError as err:
        raise UserInputError(f"the plan file's plan cannot be evaluated: {err}") from None
