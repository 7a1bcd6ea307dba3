"""sp_planner.destination: regular files and new paths atomically with umask modes, links followed,
devices and FIFOs written through, unusable destinations refused in one line, failed writes kept."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from sp_planner.destination import (
    WriteFailed,
    check_file_destination,
    check_folder_destination,
    deliver_text,
    write_text,
)
from sp_planner.errors import UserInputError


def test_new_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "plan.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plan.json").stat().st_mode) == 0o644


def test_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("old")
    path.chmod(0o640)
    write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_symlink_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    check_file_destination(link, option="--out")
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")
    write_text(link, "x")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "x"


def test_character_device_is_written_through_not_replaced():
    check_file_destination("/dev/null", option="--out")
    write_text("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    write_text(fifo, "through the pipe")
    reader.join(10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_stdout_link_to_a_pipe_is_written_through(tmp_path):
    # /dev/stdout -> /proc/self/fd/1, whose target is "pipe:[inode]" (no such path) when piped:
    # the write goes through the link, not to a file beside a missing folder.
    read_end, write_end = os.pipe()
    link = tmp_path / "out"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    try:
        check_file_destination(link, option="--out")
        write_text(link, "through the pipe")
        os.close(write_end)
        with os.fdopen(read_end) as handle:
            assert handle.read() == "through the pipe"
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_dash_is_refused_not_written_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match="--out -: '-' is not read as standard output; give a file name, "
                                             "or /dev/stdout"):
        check_file_destination("-", option="--out")
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("where, message", [
    ("folder", "--out {p} is a folder"),
    ("under_file", "--out {p}: {tmp}/file is not a folder"),
    ("missing_parent", "--out {p}: folder {tmp}/nope does not exist; create it first"),
    ("proc", "--out {p}: cannot write in folder /proc (it takes no new files); give a folder you can write in"),
])
def test_unusable_file_destinations_are_refused_in_one_line(tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    path = {"folder": tmp_path / "dir", "under_file": tmp_path / "file" / "plan.json",
            "missing_parent": tmp_path / "nope" / "plan.json", "proc": "/proc/plan.json"}[where]
    with pytest.raises(UserInputError) as err:
        check_file_destination(path, option="--out")
    assert message.format(p=path, tmp=tmp_path) in str(err.value) and "\n" not in str(err.value)
    assert not os.path.exists("/proc/plan.json")


def test_folder_destination_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="exists and is not a folder"):
        check_folder_destination(tmp_path / "file", option="--out-dir")
    with pytest.raises(UserInputError, match="cannot write in folder /proc"):
        check_folder_destination("/proc/report", option="--report")


def test_failed_write_keeps_the_text_where_the_message_says(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(WriteFailed) as err:
        deliver_text("/dev/full", "the result", what="result")
    message = str(err.value)
    assert message.startswith("could not write /dev/full: No space left on device; the result is kept at ")
    kept = message.rsplit(" ", 1)[1]
    assert open(kept).read() == "the result"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_read_only_file_is_refused_not_replaced(tmp_path, monkeypatch):
    path = tmp_path / "plan.json"
    path.write_text("mine")
    path.chmod(0o444)
    real_access = os.access
    # As root access() says yes to everything; ask as an ordinary user would be answered.
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(path) else real_access(p, mode))
    with pytest.raises(UserInputError, match=f"--out {path}: permission denied"):
        check_file_destination(path, option="--out")
    assert path.read_text() == "mine"
