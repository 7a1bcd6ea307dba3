from __future__ import annotations

import json
import os

import pytest

from sp_planner.errors import UserInputError
from sp_planner.present.summary import SUMMARY_SCHEMA
from sp_planner.report import REPORT_FILES, write_report
from sp_planner.destination import WriteFailed
from sp_planner.report import writer


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def quick_page(monkeypatch):
    """The page's content does not matter to atomicity; skip drawing the figures."""
    monkeypatch.setattr(writer, "render_index",
                        lambda **kwargs: "<!DOCTYPE html><title>sp-planner report: q</title><p>page</p>")


def _summary(fields: dict) -> dict:
    """A stand-in summary with the schema line an earlier report's holds (writer.REPORT_SIGNATURES)."""
    return {"schema_version": SUMMARY_SCHEMA, **fields}


def test_write_report_writes_the_three_files_and_returns_index(question, quick_page, tmp_path):
    index = write_report(tmp_path / "out", **question.report_args())
    assert index == tmp_path / "out" / "index.html"
    assert _entries(tmp_path / "out") == sorted(REPORT_FILES)
    assert _entries(tmp_path) == ["out"]  # no staging folder left beside it
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == question.summary


def test_failure_midway_leaves_neither_report_nor_temporary_folder(question, quick_page, tmp_path, monkeypatch):
    def broken_csv(path, frame, *, global_batch):
        path.write_text("half a csv")
        raise OSError("disk full")

    monkeypatch.setattr(writer, "write_plans_csv", broken_csv)
    with pytest.raises(WriteFailed, match="disk full"):
        write_report(tmp_path / "out", **question.report_args())
    assert _entries(tmp_path) == []


def test_failure_midway_keeps_the_previous_report_whole(question, quick_page, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_report(out, **question.report_args())
    before = {name: (out / name).read_bytes() for name in REPORT_FILES}
    monkeypatch.setattr(writer, "write_plans_csv",
                        lambda path, frame, *, global_batch: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(WriteFailed, match="boom"):
        write_report(out, **{**question.report_args(), "summary": _summary({"other": 1})})
    assert {name: (out / name).read_bytes() for name in REPORT_FILES} == before
    assert _entries(tmp_path) == ["out"]


def test_failed_swap_puts_the_previous_report_back(question, quick_page, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_report(out, **question.report_args())
    before = (out / "summary.json").read_bytes()
    real_replace = writer.os.replace
    calls = []

    def replace_failing_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old report moved aside; moving the new one in fails
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", replace_failing_second)
    keep = tmp_path / "tmp"
    keep.mkdir()
    monkeypatch.setattr(writer.tempfile, "tempdir", str(keep))
    with pytest.raises(WriteFailed, match="rename failed; it is kept at ") as failed:
        write_report(out, **{**question.report_args(), "summary": _summary({"other": 1})})
    assert (out / "summary.json").read_bytes() == before
    # The new report is not lost: it waits, whole, where the message says.
    (kept,) = keep.iterdir()
    assert str(kept) in str(failed.value)
    assert json.loads((kept / "summary.json").read_text()) == _summary({"other": 1})
    assert _entries(tmp_path) == ["out", "tmp"]


def test_rewriting_a_report_replaces_it(question, quick_page, tmp_path):
    out = tmp_path / "out"
    write_report(out, **question.report_args())
    write_report(out, **{**question.report_args(), "summary": _summary({"second": True})})
    assert json.loads((out / "summary.json").read_text()) == _summary({"second": True})
    assert _entries(tmp_path) == ["out"]


def test_a_users_folder_stays_the_same_folder_with_its_permissions(question, quick_page, tmp_path):
    out = tmp_path / "mine"
    out.mkdir(mode=0o750)
    out.chmod(0o750)
    before = out.stat()
    # Into the empty folder, then over its report.
    for summary in (_summary({"first": True}), _summary({"second": True})):
        write_report(out, **{**question.report_args(), "summary": summary})
        after = out.stat()
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert json.loads((out / "summary.json").read_text()) == _summary({"second": True})
    assert _entries(out) == sorted(REPORT_FILES) and _entries(tmp_path) == ["mine"]


def test_a_folder_of_other_files_or_a_file_is_refused_untouched(question, quick_page, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="notes.txt"):
        write_report(work, **question.report_args())
    assert _entries(work) == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserInputError, match="not a folder"):
        write_report(afile, **question.report_args())
    assert _entries(tmp_path) == ["afile", "work"]


@pytest.fixture
def csv_in_background(monkeypatch):
    """plans.csv written by a forked child whatever the frame's size (above BACKGROUND_CSV_ROWS rows)."""
    from sp_planner.report import background

    if not background.can_fork():
        pytest.skip("writes in a forked child only on Linux")
    monkeypatch.setattr(writer, "BACKGROUND_CSV_ROWS", 0)
    started = []
    real_start = writer.Background.start

    def start(write):
        job = real_start(write)
        started.append(job._pid)
        return job

    monkeypatch.setattr(writer.Background, "start", start)
    return started


def test_csv_written_in_background_is_the_csv_written_in_place(question, quick_page, csv_in_background, tmp_path,
                                                               monkeypatch):
    write_report(tmp_path / "background", **question.report_args())
    monkeypatch.setattr(writer, "BACKGROUND_CSV_ROWS", len(question.result.frame) + 1)
    write_report(tmp_path / "in-place", **question.report_args())
    assert len(csv_in_background) == 1  # one child wrote the first report's plans.csv
    for name in REPORT_FILES:
        assert (tmp_path / "background" / name).read_bytes() == (tmp_path / "in-place" / name).read_bytes()
    assert _entries(tmp_path) == ["background", "in-place"]


def test_background_csv_failure_leaves_neither_report_nor_temporary_folder(question, quick_page, csv_in_background,
                                                                          tmp_path, monkeypatch):
    def broken_csv(path, frame, *, global_batch):
        path.write_text("half a csv")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_plans_csv", broken_csv)
    keep = tmp_path / "tmp"
    keep.mkdir()
    monkeypatch.setattr(writer.tempfile, "tempdir", str(keep))
    with pytest.raises(WriteFailed, match=r"could not write the report .*out: No space left on device$"):
        write_report(tmp_path / "out", **question.report_args())
    assert _entries(tmp_path) == ["tmp"] and _entries(keep) == []


def test_page_failure_stops_the_background_csv_and_removes_the_staging(question, csv_in_background, tmp_path,
                                                                      monkeypatch):
    def broken_page(**kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(writer, "render_index", broken_page)
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_report(tmp_path / "out", **question.report_args())
    assert _entries(tmp_path) == []
    (pid,) = csv_in_background
    with pytest.raises(ChildProcessError):  # the writer was stopped and reaped
        os.waitpid(pid, os.WNOHANG)


def test_an_interrupt_a_finalizer_swallowed_still_stops_the_report(question, quick_page, tmp_path, monkeypatch):
    # Ctrl-C inside a weakref callback is printed and lost by Python; the handler remembers it, and
    # the report is not moved into place: the earlier one stays, nothing temporary is left.
    from sp_planner import interrupts

    out = tmp_path / "out"
    write_report(out, **question.report_args())
    before = (out / "summary.json").read_text()
    monkeypatch.setattr(interrupts, "_seen", True)
    with pytest.raises(KeyboardInterrupt):
        write_report(out, **{**question.report_args(), "summary": _summary({"other": 1})})
    assert (out / "summary.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
