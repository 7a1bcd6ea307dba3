"""No input makes any command (the five, and sp-validate) show a Python traceback.

A corpus of bad and unusual inputs (the kinds a new user tries) and generated ones (hypothesis:
random option values, random edits of a valid plan file and run result) go through each
command's real entry point. Every answer must be an exit code (0, 1 or 2), and exit 2 exactly one
`error:` line on stderr. An internal error escapes main() as an exception and fails the test with
its traceback, which is what this test exists to catch. Launches (sp-run ranks, sp-calibrate's
measurements) are replaced by a stub: reaching it means the input was accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sp_planner.cli import calibrate_cmd, plan_cmd, report_cmd, run_cmd, simulate_cmd, validate_cmd
from tests.cli.launch_stub import Launched
from tests.conftest import run_cli_main

QUESTION = ["--model", "llama3-8b", "--hardware", "a800", "--nodes", "2", "--seq-len", "128k"]
ODD_VALUES = ["", " ", "0", "-1", "1", "3", "1.5", "1e3", "nan", "inf", "-inf", "99999999999999999999",
              "18446744073709551617", "0x10", "1_000", "128k", "1M", "1G", "k", "１２８", "٣", "abc", "None",
              "true", "../", "/dev/null", "-", "--", "\t", "é", "a" * 300]


pytestmark = pytest.mark.usefixtures("no_launches")


def check_answer(module, *args) -> None:
    """Run one command; an escaping exception other than Launched is a traceback."""
    try:
        result = run_cli_main(module, *args)
    except Launched:
        return
    assert result.exit_code in (0, 1, 2), result
    assert "Traceback" not in result.stderr, result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Valid and broken input files, shared by the corpus."""
    root = tmp_path_factory.mktemp("inputs")
    plan = root / "plan.json"
    assert run_cli_main(plan_cmd, *QUESTION, "--out", plan).exit_code == 0
    doc = json.loads(plan.read_text())
    made = {"plan": plan, "dir": root / "a-folder"}
    made["dir"].mkdir()
    texts = {
        "empty.json": "", "list.json": "[1, 2]", "null.json": "null", "binary.json": "\x00\xff\xfe",
        "bad.json": "{", "empty.yaml": "", "list.yaml": "- 1\n- 2\n", "tabs.yaml": "a:\n\t- b\n",
        "str.yaml": "just text\n", "huge.json": "9" * 5000,
        "plan_v2.json": json.dumps({**doc, "schema_version": "sp-planner.plan/2"}),
        "plan_dp0.json": json.dumps({**doc, "plan": {**doc["plan"], "dp": 0}}),
        "plan_world.json": json.dumps({**doc, "num_nodes": 3}),
        "plan_inf.json": json.dumps({**doc, "hardware": {**doc["hardware"], "hbm_bytes": 1e400}}),
        "plan_nan.json": doc_text_with(doc, ("hardware", "peak_bf16_flops"), "NaN"),
        "plan_groups.json": json.dumps({**doc, "rank_groups": {"tp": [[0, 1]]}}),
        "plan_seq0.json": json.dumps({**doc, "workload": {**doc["workload"], "seq_len": 0}}),
        "hw_inf.yaml": "name: x\nhbm_bytes: .inf\n",
        "cfg_huge.json": json.dumps({"model_type": "llama", "hidden_size": 10**15, "intermediate_size": 1,
                                     "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 1}),
        "cfg_float.json": json.dumps({"model_type": "llama", "hidden_size": 4096.5}),
        "cfg_type.json": json.dumps({"model_type": "bert"}),
    }
    for name, text in texts.items():
        path = root / name
        path.write_bytes(text.encode("latin-1") if name == "binary.json" else text.encode())
        made[name] = path
    return made


def doc_text_with(doc: dict, where: tuple[str, str], literal: str) -> str:
    """JSON text of `doc` with one nested number replaced by a literal (NaN, Infinity)."""
    marker = 123456789.125
    edited = {**doc, where[0]: {**doc[where[0]], where[1]: marker}}
    return json.dumps(edited).replace(str(marker), literal)


def corpus(files: dict[str, Path], tmp: Path) -> list[tuple[object, list[object]]]:
    f = files
    broken = [f[name] for name in f if name not in ("plan",)]
    plan_cases = [(plan_cmd, [*QUESTION, "--model", path]) for path in broken] + \
                 [(plan_cmd, [*QUESTION, "--hardware", path]) for path in broken] + [
        (plan_cmd, [*QUESTION, "--seq-len", value]) for value in ODD_VALUES] + [
        (plan_cmd, [*QUESTION, option, value]) for option in ("--nodes", "--global-batch", "--tp", "--top",
                                                               "--simulate", "--zero", "--gpus-per-node")
        for value in ("0", "-3", "99999999999999999999", "x")] + [
        (plan_cmd, [*QUESTION, "--out", "/dev/full"]),
        (plan_cmd, [*QUESTION, "--report", "/dev/null"]),
        (plan_cmd, [*QUESTION, "--out", f["dir"]]),
        (plan_cmd, [*QUESTION, "--out", tmp / "x", "--report", tmp / "x"]),
        (plan_cmd, [*QUESTION, "--hardware", "A100"]),
        (plan_cmd, [*QUESTION, "--tp", "1", "--pp", "1", "--ulysses", "1", "--ring", "1", "--out", tmp / "p.json"]),
        (plan_cmd, [*QUESTION, "--nodes", "1", "--gpus-per-node", "1", "--seq-len", "1", "--global-batch", "1"]),
        (plan_cmd, ["--model", "", "--hardware", "", "--nodes", "1", "--seq-len", "1"]),
        (plan_cmd, []),
        (plan_cmd, ["--bogus"]),
    ]
    simulate_cases = [(simulate_cmd, [path, "--out-dir", tmp]) for path in broken] + [
        (simulate_cmd, [f["plan"], "--out-dir", "/dev/null"]),
        (simulate_cmd, [f["plan"], "--out-dir", f["empty.json"]]),
        (simulate_cmd, [f["plan"], "--out-dir", tmp, "--nics-per-node", "0"]),
        (simulate_cmd, [f["plan"], "--out-dir", tmp, "--topology", "torus"]),
        (simulate_cmd, [f["plan"], "--out-dir", tmp, "--gantt", "pdf"]),
        (simulate_cmd, []),
    ]
    run_cases = [(run_cmd, ["--plan", path]) for path in broken] + [
        (run_cmd, ["--ulysses", u, "--ring", r, "--seq-len", s, "--heads", h, "--head-dim", d])
        for u, r, s, h, d in [("2", "2", "0", "4", "8"), ("3", "1", "48", "4", "8"), ("2", "2", "48", "4", "0"),
                              ("1", "1", "1M", "99999", "4096"), ("99999999999999999999", "1", "48", "4", "8"),
                              ("2", "2", "48", "4", "8.5"), ("2", "2", "x", "4", "8")]] + [
        (run_cmd, ["--plan", f["plan"], "--ring", "2"]),
        (run_cmd, ["--plan", f["plan"], "--nodes", "2"]),
        (run_cmd, ["--plan", f["plan"], "--node-rank", "0"]),
        (run_cmd, ["--plan", f["plan"], "--node-rank", "0", "--nodes", "2", "--rdzv-endpoint", "no-port"]),
        (run_cmd, ["--plan", f["plan"], "--print-launch", "--rdzv-endpoint", "a b:1"]),
        (run_cmd, ["--plan", f["plan"], "--out", f["dir"]]),
        (run_cmd, ["--plan", f["plan"], "--timeout", "0"]),
        (run_cmd, ["--plan", f["plan"], "--device", "tpu"]),
        (run_cmd, ["--ulysses", "2", "--seq-len", "48", "--heads", "3", "--kv-heads", "2", "--head-dim", "8"]),
        (run_cmd, []),
    ]
    report_cases = [(report_cmd, [path, "--out", tmp / "rep"]) for path in broken] + [
        (report_cmd, [f["plan"], "--run", path, "--out", tmp / "rep"]) for path in broken] + [
        (report_cmd, [f["plan"], "--out", f["empty.json"]]),
        (report_cmd, [f["plan"], "--out", "/dev/null"]),
        (report_cmd, [f["plan"], "--out", tmp / "rep", "--top", "0"]),
        (report_cmd, [f["plan"]]),
    ]
    calibrate_cases = [(calibrate_cmd, ["--measurements", path, "--out", tmp / "c.yaml"]) for path in broken] + [
        (calibrate_cmd, ["--out", tmp / "c.txt"]),
        (calibrate_cmd, ["--out", f["dir"]]),
        (calibrate_cmd, ["--out", "/proc/c.yaml"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--base", "nope"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--base", "A100"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--model", "nope"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--nproc-per-node", "0"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--nproc-per-node", "1"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--device", "tpu"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--timeout", "nan"]),
        (calibrate_cmd, ["--out", tmp / "c.yaml", "--save-measurements", f["dir"]]),
    ]
    validate_cases = [(validate_cmd, ["--corpus", path]) for path in broken] + [
        (validate_cmd, ["--corpus", f["list.yaml"], "--check", path]) for path in broken] + [
        (validate_cmd, ["--corpus", f["list.yaml"], "--report", "/dev/null"]),
        (validate_cmd, ["--corpus", f["list.yaml"], "--format", "xml"]),
    ]
    return plan_cases + simulate_cases + run_cases + report_cases + calibrate_cases + validate_cases


def test_corpus_of_bad_inputs_never_shows_a_traceback(files, tmp_path):
    cases = corpus(files, tmp_path)
    assert len(cases) > 150
    for module, args in cases:
        check_answer(module, *args)


# Generated inputs ---------------------------------------------------------------------------------

_values = st.one_of(
    st.integers(min_value=0, max_value=16).map(str),  # plausible values reach the search and the launch
    st.sampled_from(ODD_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
_PLAN_OPTIONS = ["--gpus-per-node", "--global-batch", "--micro-batch", "--tp", "--pp", "--dp", "--ulysses",
                 "--ring", "--zero", "--recompute", "--framework", "--launcher", "--top", "--format", "--seq-len",
                 "--model", "--hardware", "--nodes"]
_RUN_OPTIONS = ["--ulysses", "--ring", "--nproc", "--seq-len", "--batch", "--heads", "--kv-heads", "--head-dim",
                "--ring-layout", "--dtype", "--kernel", "--iters", "--timeout", "--nodes", "--nproc-per-node",
                "--node-rank", "--rdzv-endpoint", "--device"]
_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _small_nodes(pairs):
    """Keep generated questions small enough to answer fast: a valid huge cluster is a legitimate
    (slow) question, not a bad input."""
    out = []
    for option, value in pairs:
        if option in ("--nodes", "--gpus-per-node"):
            try:
                if 64 < int(value) <= 2**20:
                    value = "64"
            except ValueError:
                pass
        out += [option, value]
    return out


@_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(_PLAN_OPTIONS), _values), max_size=4))
def test_generated_sp_plan_options(pairs):
    check_answer(plan_cmd, *QUESTION, *_small_nodes(pairs), "--top", "3")


@_SETTINGS
@given(st.lists(st.tuples(st.sampled_from(_RUN_OPTIONS), _values), min_size=1, max_size=5))
def test_generated_sp_run_options(pairs):
    check_answer(run_cmd, "--seq-len", "48", "--heads", "4", "--head-dim", "8",
                 *[item for pair in pairs for item in pair])


_json_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.lists(st.integers(min_value=-3, max_value=40), max_size=3),
)


def _paths(doc, prefix=()):
    """Every (path to a leaf) of a JSON document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list) and doc and not isinstance(doc[0], (dict, list)):
        yield prefix
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))
    else:
        yield prefix


def _edited(doc, path, value):
    if not path:
        return value
    head, *rest = path
    copy = list(doc) if isinstance(doc, list) else dict(doc)
    copy[head] = _edited(doc[head], rest, value)
    return copy


@_SETTINGS
@given(data=st.data())
def test_generated_plan_file_edits(files, tmp_path, data):
    doc = json.loads(files["plan"].read_text())
    paths = sorted(_paths(doc), key=str)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        doc = _edited(doc, data.draw(st.sampled_from(paths)), data.draw(_json_values))
    plan = tmp_path / "edited.json"
    plan.write_text(json.dumps(doc))
    check_answer(simulate_cmd, plan, "--out-dir", tmp_path, "--gantt", "svg")
    check_answer(run_cmd, "--plan", plan)


@_SETTINGS
@given(data=st.data())
def test_generated_run_result_edits(files, tmp_path, data):
    from tests.report.conftest import _result_json

    doc = _result_json()
    paths = sorted(_paths(doc), key=str)
    doc = _edited(doc, data.draw(st.sampled_from(paths)), data.draw(_json_values))
    run = tmp_path / "result.json"
    run.write_text(json.dumps(doc, allow_nan=True))
    # A run of another configuration: refused before the report's search, with what differs.
    check_answer(report_cmd, files["plan"], "--run", run, "--out", tmp_path / "rep")
