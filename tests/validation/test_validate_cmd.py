"""sp-validate: the table fits 80 columns, the JSON shape, the report files, bad input exits 2."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

from sp_planner.cli import validate_cmd
from sp_planner.figure_mark import figure_signature
from sp_planner.fileio import SIGNATURE_HEAD_BYTES
from sp_planner.validation.corpus import load_corpus
from sp_planner.validation.report import draw_figure
from sp_planner.validation.score import score_corpus
from tests.validation.corpus_text import FIRST_ROW, SOURCE_AND_DEFAULTS

SMALL = SOURCE_AND_DEFAULTS + FIRST_ROW + """\
  - {id: b, table: T5 r2, tp: 8, ulysses: 1, measured: 238.9}
  - {id: c, table: T5 r3, tp: 2, ulysses: 4, measured: 250.0}
  - {id: d, table: T5 r4, tp: 8, ulysses: 1, measured: 1, precision: fp8, expressible: false, reason: FP8 run}
  - {id: e, table: T5 r5, tp: 8, ulysses: 1, measured: 2, regression: "issue 9 calls this run a regression"}
"""


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture
def shipped_json(run_main):
    result = run_main(validate_cmd, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_shape(shipped_json):
    doc = shipped_json
    assert {"rows", "mape_percent", "groups", "skipped", "sources", "num_rows"} <= set(doc)
    assert doc["num_rows"] == doc["num_scored"] + doc["num_skipped"] == len(doc["rows"]) + len(doc["skipped"])
    for row in doc["rows"]:
        assert {"source", "predicted", "measured", "error_percent", "id", "table", "figure", "fits"} <= set(row)
        assert row["error_percent"] == pytest.approx(100 * (row["predicted"] - row["measured"]) / row["measured"])
    for group in doc["groups"]:
        assert set(group) == {"name", "spearman", "rows", "mape_percent"}
        if group["rows"] < 3:
            assert group["spearman"] is None
        elif group["spearman"] is None:  # every prediction equal (held at the MFU ceiling)
            rows = [r for r in doc["rows"] if r["group"] == group["name"]]
            assert len({r["predicted"] for r in rows}) == 1, group
        else:
            assert -1 <= group["spearman"] <= 1
    assert doc["mape_percent"] == pytest.approx(
        sum(abs(r["error_percent"]) for r in doc["rows"]) / len(doc["rows"]))
    assert all(s["reason"] for s in doc["skipped"])


def test_table_fits_80_columns_and_names_every_row(run_main, shipped_json):
    result = run_main(validate_cmd)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for row in shipped_json["rows"]:
        assert any(line.startswith(row["id"] + " ") for line in lines)
    assert f"MAPE over {shipped_json['num_scored']} scored rows: {shipped_json['mape_percent']:.1f}%" in lines


def test_small_corpus_scores_and_skips(run_main, small_corpus):
    result = run_main(validate_cmd, "--corpus", small_corpus, "--format", "json")
    doc = json.loads(result.stdout)
    assert [r["id"] for r in doc["rows"]] == ["a", "b", "c"]
    assert doc["skipped"] == [{
        "id": "d", "source": "src", "table": "T5 r4", "model": "Llama-2-7B", "hardware": "A800", "num_gpus": 8,
        "seq_len": 65536, "figure": "model_tflops_per_gpu", "convention": "megatron_full_square",
        "measured": 1.0, "reason": "FP8 run", "kind": "not_expressible"}, {
        "id": "e", "source": "src", "table": "T5 r5", "model": "Llama-2-7B", "hardware": "A800", "num_gpus": 8,
        "seq_len": 65536, "figure": "model_tflops_per_gpu", "convention": "megatron_full_square",
        "measured": 2.0, "reason": "issue 9 calls this run a regression", "kind": "regression"}]
    (group,) = doc["groups"]
    assert group["name"] == "src 64K" and group["rows"] == 3 and group["spearman"] is not None


def test_report_writes_figure_and_csv(run_main, small_corpus, tmp_path):
    out = tmp_path / "report"
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["predicted_vs_measured.png", "validation.csv"]
    figure = (out / "predicted_vs_measured.png").read_bytes()
    assert figure[:8] == b"\x89PNG\r\n\x1a\n"
    # The tools' mark, within the head a later run reads to know the figure for its own.
    assert figure_signature("png") == b"tEXtSoftware\0sp-planner"
    assert figure_signature("png") in figure[:SIGNATURE_HEAD_BYTES]
    table = pd.read_csv(out / "validation.csv")
    assert list(table["id"]) == ["a", "b", "c", "d", "e"]
    assert table["predicted"].isna().tolist() == [False, False, False, True, True]
    assert table.loc[3, "skipped_reason"] == "FP8 run" and table.loc[3, "skipped_kind"] == "not_expressible"
    assert table.loc[4, "skipped_kind"] == "regression"
    assert table["num_gpus"].tolist() == [8] * 5 and table["num_gpus"].dtype.kind == "i"
    # Byte counts the skipped rows leave empty are still written whole on the scored rows.
    lines = (out / "validation.csv").read_text().splitlines()
    column = lines[0].split(",").index("predicted_memory_peak_bytes")
    cells = [line.split(",")[column] for line in lines[1:4]]
    assert all(cell.isdigit() for cell in cells), cells
    # Writing again over an earlier report is allowed.
    assert run_main(validate_cmd, "--corpus", small_corpus, "--report", out).exit_code == 0


def test_report_refuses_a_folder_of_other_files_before_any_work(run_main, small_corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "holds files that are not part of a validation report (notes.txt)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_report_refuses_a_users_own_validation_csv(run_main, small_corpus, tmp_path):
    # A validation.csv of the user's (not an earlier report's: other first columns) is not replaced
    # for its name.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "validation.csv").write_text("run,mfu\nmine,0.5\n")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 2 and result.stdout == ""
    assert "holds files that are not part of a validation report (validation.csv)" in result.stderr
    assert (out / "validation.csv").read_text() == "run,mfu\nmine,0.5\n"


def test_report_replaces_an_earlier_figure_known_by_its_mark(run_main, small_corpus, tmp_path):
    out = tmp_path / "report"
    assert run_main(validate_cmd, "--corpus", small_corpus, "--report", out).exit_code == 0
    figure = out / "predicted_vs_measured.png"
    whole = figure.read_bytes()
    figure.write_bytes(whole[:SIGNATURE_HEAD_BYTES])  # cut short, its head still says whose it is
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 0, result.stderr
    assert figure.read_bytes() == whole


@pytest.mark.parametrize("mine", ["photo", "unmarked"])
def test_report_refuses_a_users_own_figure(run_main, small_corpus, tmp_path, mine):
    """A predicted_vs_measured.png without the tools' mark (the user's, or one drawn before the
    mark) is not replaced for its name, and nothing is written beside it."""
    out = tmp_path / "mine"
    out.mkdir()
    if mine == "photo":
        png = b"\x89PNG\r\n\x1a\n my photo"
    else:  # the figure as sp-validate drew it before it marked its files
        buffer = io.BytesIO()
        draw_figure(score_corpus(load_corpus(small_corpus))).savefig(buffer, format="png", dpi=120,
                                                                 metadata={"Software": None})
        png = buffer.getvalue()
    (out / "predicted_vs_measured.png").write_bytes(png)
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: --report folder {out} holds files that are not part of a validation report "
                             "(predicted_vs_measured.png); give a new or empty folder, or an earlier report's\n")
    assert [p.name for p in out.iterdir()] == ["predicted_vs_measured.png"]
    assert (out / "predicted_vs_measured.png").read_bytes() == png


def test_report_refuses_a_link_in_its_folder_rather_than_write_through_it(run_main, small_corpus, tmp_path):
    """validation.csv written through a link the user keeps in the folder would replace the link's
    target, a file the user never named."""
    kept = tmp_path / "notes.txt"
    kept.write_text("keep")
    out = tmp_path / "report"
    out.mkdir()
    (out / "validation.csv").symlink_to(kept)
    result = run_main(validate_cmd, "--corpus", small_corpus, "--report", out)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: --report folder {out} holds files that are not part of a validation report "
                             "(validation.csv (a link)); give a new or empty folder, or an earlier report's\n")
    assert kept.read_text() == "keep" and [p.name for p in out.iterdir()] == ["validation.csv"]


@pytest.mark.parametrize("content, message", [
    (None, "corpus .*nope.yaml does not exist"),
    ("rows: [\n", "is malformed"),
    (SMALL.replace("tp: 8, ulysses: 1, measured: 238.9", "tp: 8, ulysses: 2, measured: 238.9"),
     r"row 2 \(b\) is invalid: .*tp\*pp\*dp\*ulysses\*ring = 16"),
    (SMALL.replace("model: Llama-2-7B", "model: Llama-9-9B"), "Llama-9-9B"),
    # A trainer the corpus has no runtime for: refused on loading, not a KeyError mid-scoring.
    (SMALL.replace("framework: Megatron-LM", "framework: megatron"),
     r"row 1 \(a\) is invalid: framework: Input should be 'Megatron-LM', .* or 'Composer FSDP'"),
    # Settings the row's model cannot run, found before any row is scored.
    (SMALL.replace("{id: c, table: T5 r3,", "{id: c, table: T5 r3, framework: torchtitan, moe_router_padding: true,"),
     r"^error: corpus row c: moe_router_padding is Megatron's --moe-router-padding-for-quantization, .*torchtitan$"),
    # Hand edits pydantic's lax mode would read as 8 and false (fileio.validate_strict).
    (SMALL.replace("tp: 8, ulysses: 1, measured: 238.9", "tp: 8.0, ulysses: 1, measured: 238.9"),
     r"row 2 \(b\) is invalid: tp: expected a whole number, got 8.0$"),
    (SMALL.replace("expressible: false", "expressible: 'no'"),
     r'row 4 \(d\) is invalid: expressible: expected true or false, got "no"$'),
])
def test_bad_corpus_is_one_line_and_exit_2(run_main, tmp_path, content, message):
    path = tmp_path / "nope.yaml"
    if content is not None:
        path.write_text(content)
    result = run_main(validate_cmd, "--corpus", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert re.search(message, result.stderr)


def test_check_exits_1_when_a_limit_breaks(run_main, small_corpus, tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("targets: {mape_percent: 0.001, group_mape_percent: 0.001, group_spearman_min: 0.5}\n")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", strict)
    assert result.exit_code == 1
    assert "limit(s) broken" in result.stdout
    assert "corpus MAPE" in result.stdout and "group src 64K: MAPE" in result.stdout
    loose = tmp_path / "loose.yaml"
    loose.write_text("targets: {mape_percent: 100, group_mape_percent: 100, group_spearman_min: -1}\n")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", loose, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["check"] == {"thresholds": str(loose), "passed": True, "failures": []}


def test_scoring_runs_without_torch():
    import subprocess
    import sys

    code = ("import sys\n"
            "from sp_planner.cli import validate_cmd\n"
            "from sp_planner.validation.corpus import default_corpus_path, load_corpus\n"
            "from sp_planner.validation.score import score_corpus\n"
            "score_corpus(load_corpus(default_corpus_path()))\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_default_corpus_missing_names_the_fix(run_main, monkeypatch, tmp_path):
    monkeypatch.setattr(validate_cmd, "default_corpus_path", lambda: tmp_path / "validation" / "corpus")
    result = run_main(validate_cmd)
    assert result.exit_code == 2
    assert "not in the wheel; pass --corpus PATH" in result.stderr


def test_regression_rows_are_listed_apart_from_rows_not_expressible(run_main, small_corpus):
    result = run_main(validate_cmd, "--corpus", small_corpus)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Skipped (1), not expressible by the cost model:\n  1 FP8 run" in out
    assert ("Not scored (1), measured during a performance regression the framework's\nmaintainers filed:\n"
            "  e: issue 9 calls this run a regression") in out
    markdown = run_main(validate_cmd, "--corpus", small_corpus, "--format", "markdown").stdout
    assert markdown.startswith("5 published runs from 1 source; 3 scored, 1 skipped as not expressible by the "
                               "cost model, 1 not scored because the framework's maintainers filed it as a "
                               "performance regression (")
    assert "1 skipped, 1 filed as a regression." in " ".join(out.split())


def test_row_takes_one_prediction_apart(run_main, small_corpus):
    scored = json.loads(run_main(validate_cmd, "--corpus", small_corpus, "--format", "json").stdout)
    row_a = next(r for r in scored["rows"] if r["id"] == "a")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--row", "a", "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["row"] == row_a  # the row as the whole corpus's scoring reports it
    assert (doc["plan"]["tp"], doc["plan"]["ulysses"], doc["global_batch"]) == (4, 2, 1)
    # The parts add up to the step and the peak, as in sp-plan --explain.
    assert sum(doc["time"].values()) == pytest.approx(doc["step_time_s"])
    assert sum(doc["memory"].values()) == pytest.approx(doc["row"]["predicted_memory_peak_bytes"])
    # Whole bytes for tools: ints, not floats the memory model computes in.
    assert all(type(v) is int for v in (*doc["memory"].values(), doc["row"]["predicted_memory_peak_bytes"],
                                         doc["row"]["hbm_bytes"]))
    table = run_main(validate_cmd, "--corpus", small_corpus, "--row", "a")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == "a: src, T5 r1"
    assert run_main(validate_cmd, "--corpus", small_corpus, "--row", "A").stdout == table.stdout  # any case
    assert run_main(validate_cmd, "--corpus", small_corpus, "--row", " a\t").stdout == table.stdout  # pasted
    assert f"predicted {row_a['predicted']:.4g} TFLOPS sq, measured 260.2: {row_a['error_percent']:+.1f}%" in lines
    assert any(line.startswith("  attention kernels") for line in lines)
    # A row filed as a regression still has its prediction, with the filing beside it.
    filed = run_main(validate_cmd, "--corpus", small_corpus, "--row", "e")
    assert filed.exit_code == 0 and "not scored, filed as a regression: issue 9 calls this run" in filed.stdout


@pytest.mark.parametrize("args, message", [
    (("--row", "zz"), "--row zz: no such row in the corpus; `sp-validate` lists every row id"),
    (("--row", "aa"), "--row aa: no such row in the corpus (the nearest: a); `sp-validate` lists every row id"),
    (("--row", "d"), "--row d: the row is not expressible, so it has no prediction (FP8 run)"),
    (("--row", "a", "--format", "markdown"), "--row prints a table or JSON"),
    (("--row", "a", "--check", "thresholds.yaml"), "--row explains one row; drop --report and --check"),
])
def test_row_bad_input_is_one_line_and_exit_2(run_main, small_corpus, args, message):
    result = run_main(validate_cmd, "--corpus", small_corpus, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_refuses_a_ratchet_on_a_group_the_corpus_lacks(run_main, small_corpus, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("targets: {mape_percent: 100, group_mape_percent: 100, group_spearman_min: -1}\n"
                    "enforced_groups: {'src 64k': {mape_percent: 0.001}}\n")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", typo)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: {typo}: enforced_groups names 'src 64k', which is no group of the corpus; "
                             "did you mean 'src 64K'?\n")


@pytest.mark.parametrize("limits, where", [
    ("targets: {mape_percent: .inf, group_mape_percent: 10, group_spearman_min: 0}\n", "targets.mape_percent"),
    ("targets: {mape_percent: 10, group_mape_percent: .nan, group_spearman_min: 0}\n", "targets.group_mape_percent"),
    ("targets: {mape_percent: 10, group_mape_percent: 10, group_spearman_min: 0}\n"
     "enforced_groups: {'src 64K': {mape_percent: .inf}}\n", "enforced_groups.src 64K.mape_percent"),
])
def test_check_refuses_a_limit_that_is_not_a_finite_number(run_main, small_corpus, tmp_path, limits, where):
    # An infinite MAPE limit would switch its check off without a word.
    path = tmp_path / "limits.yaml"
    path.write_text(limits)
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"error: thresholds file {path} is invalid: {where}: Input should be a finite number\n"


def test_check_with_markdown_names_the_broken_limits_on_stderr(run_main, small_corpus, tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("targets: {mape_percent: 1, group_mape_percent: 1, group_spearman_min: 0.99}\n")
    markdown = run_main(validate_cmd, "--corpus", small_corpus, "--format", "markdown")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", strict, "--format", "markdown")
    assert result.exit_code == 1
    # stdout stays the README's section, exactly as without --check; the failures go to stderr.
    assert result.stdout == markdown.stdout
    # (wrapped at its spaces to 80 columns: a long path goes to a line of its own)
    assert f"check against {strict}: 3 limit(s) broken" in " ".join(result.stderr.split())
    assert "corpus MAPE" in result.stderr and "group src 64K: MAPE" in result.stderr
    loose = tmp_path / "loose.yaml"
    loose.write_text("targets: {mape_percent: 100, group_mape_percent: 100, group_spearman_min: -1}\n")
    result = run_main(validate_cmd, "--corpus", small_corpus, "--check", loose, "--format", "markdown")
    assert result.exit_code == 0 and result.stdout == markdown.stdout
    assert "every limit holds" in result.stderr


@pytest.mark.parametrize("columns", [40, 50, 64])
def test_a_narrow_terminal_gets_every_figure_whole(run_main, small_corpus, monkeypatch, columns):
    # The table's fixed columns are 75 wide and --row's breakdowns 57: under that they split into
    # column groups led by the row (or the part); prose wraps at spaces, a hyphenated word whole.
    scored = json.loads(run_main(validate_cmd, "--corpus", small_corpus, "--format", "json").stdout)
    monkeypatch.setenv("COLUMNS", str(columns))
    text = run_main(validate_cmd, "--corpus", small_corpus).stdout
    lines = text.splitlines()
    # Only the corpus path (pytest's tmp_path, one word) may pass the width.
    assert all(len(line) <= columns or str(small_corpus) in line for line in lines) and "…" not in text
    for row in scored["rows"]:
        cells = [line.split() for line in lines if line.split()[:1] == [row["id"]]]
        figures = [cell for found in cells for cell in found[1:]]
        assert f"{row['error_percent']:+.1f}%" in figures and f"{row['measured']:.1f}" in figures
    assert f"MAPE over 3 scored rows: {scored['mape_percent']:.1f}%" in lines
    explained = run_main(validate_cmd, "--corpus", small_corpus, "--row", "a")
    lines = explained.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns and "…" not in explained.stdout
    doc = json.loads(run_main(validate_cmd, "--corpus", small_corpus, "--row", "a", "--format", "json").stdout)
    words = explained.stdout.split()
    assert f"{doc['time']['attention_s']:.4g}" in words and f"{doc['step_time_s']:.4g}" in words
    assert "attention" in words and "kernels" in words


def test_80_columns_keep_the_fixed_layout(run_main, small_corpus, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    wide = run_main(validate_cmd, "--corpus", small_corpus).stdout
    monkeypatch.delenv("COLUMNS")
    assert run_main(validate_cmd, "--corpus", small_corpus).stdout == wide
    assert "row                    source     figure      predicted   measured    error" in wide.splitlines()
