"""Where the tools write: check a destination before any work, then write without harming anything.

The rules (the user's files are sacred):
- a regular file or a new path is written atomically (a temporary file beside it, then a rename),
  with the permissions a plain `open()` would give: an existing file's mode, else 0666 & ~umask;
- a symbolic link is followed: its target gets the same treatment, the link itself stays;
- a character or block device or a FIFO is written through (opened and written, never replaced);
- a folder, a socket or a path under a missing folder is refused; nothing the user did not name
  (a parent folder, a replacement for a link) is ever created.
If a write still fails at the end (a full disk, /dev/full), the text is kept in a temporary file
and the error names it, so a result that took minutes is never lost.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from sp_planner.errors import UserInputError


class WriteFailed(UserInputError):
    """The destination passed the checks but the write failed; the message names where the text is kept."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode open(path, 'w') gives a new file."""
    return 0o666 & ~_umask()


def new_folder_mode() -> int:
    return 0o777 & ~_umask()


def resolve_link(path: Path) -> Path:
    """The path a write to `path` lands on: a symbolic link's (final) target, else the path itself.
    A link whose target names nothing while opening it does work is a kernel file-descriptor link
    (/dev/stdout -> /proc/self/fd/1 -> "pipe:[...]" when the output is piped): the link itself."""
    path = Path(path)
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        return path if not target.exists() and path.exists() else target
    return path


def same_destination(a: Path, b: Path) -> bool:
    """Whether two paths name one place: through links and `..`, or one file by two hard links."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def lies_inside(path: Path, folder: Path) -> bool:
    """Whether `path` names a place inside `folder` (through links and `..`)."""
    try:
        return Path(folder).resolve() in Path(path).resolve().parents
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
        return False


def refuse_reading_file_as_output(out: Path, *, option: str, inputs: tuple[tuple[str, object], ...]) -> None:
    """Refuse an output path that is one of the run's own input files (UserInputError): writing
    the result there would replace what the run was asked to read. `inputs`: (option, value)
    pairs; a value that names no existing file (a built-in name, None) is skipped."""
    for input_option, value in inputs:
        if value is None:
            continue
        path = Path(str(value))
        try:
            is_file = path.is_file()
        except OSError:
            continue
        if is_file and same_destination(out, path):
            raise UserInputError(f"{option} {out} is the {input_option} file this run reads, which the output "
                                 "would replace; give another path")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "other"


def _probe_folder(folder: Path, label: str) -> None:
    """Refuse a folder that does not exist, is not a folder, or cannot take a new file (read-only
    mount, permissions, a pseudo file system). The probe file is removed at once."""
    if not folder.exists():
        raise UserInputError(f"{label}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise UserInputError(f"{label}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sp-planner-probe-", dir=folder)
    except OSError as err:
        # ENOENT for a folder that exists: one that takes no new files (/proc, /sys), whose
        # "No such file or directory" read as if the folder were missing.
        why = "it takes no new files" if err.errno == errno.ENOENT else (err.strerror or str(err))
        raise UserInputError(f"{label}: cannot write in folder {folder} ({why}); give a folder you can "
                             "write in") from None
    os.close(fd)
    os.unlink(probe)


def check_file_destination(path: Path, *, option: str, fixed_name: bool = False) -> None:
    """Raise UserInputError (one line) unless a file can be written at `path` by write_text.
    `fixed_name`: the command names the file itself inside the folder `option` gives (sp-simulate's
    timeline.json), so the messages name the file and advise another folder."""
    path = Path(path)
    label = f"{path} (in {option})" if fixed_name else f"{option} {path}"
    if str(path) == "-":  # a file named "-" is not what a user asking for standard output wants
        raise UserInputError(f"{label}: '-' is not read as standard output; give a file name, or /dev/stdout")
    try:
        target = resolve_link(path)
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        _probe_folder(target.parent if str(target.parent) else Path("."), label)
        return
    except OSError as err:
        raise UserInputError(f"{label}: {err.strerror or err}") from None
    kind = _kind(mode)
    if kind == "folder":
        if fixed_name:
            raise UserInputError(f"{label} is a folder; remove it or choose another {option}")
        raise UserInputError(f"{label} is a folder; give a file name inside it, e.g. {path / 'out.json'}")
    if kind == "other":
        raise UserInputError(f"{label} is neither a file, a device nor a FIFO; give a file name")
    if not os.access(target, os.W_OK):  # a read-only file is not replaced behind its owner's back
        raise UserInputError(f"{label}: permission denied")
    if kind == "file":
        _probe_folder(target.parent, label)  # the atomic rename needs a writable folder


def check_folder_destination(path: Path, *, option: str) -> None:
    """Raise UserInputError unless `path` is a folder we may write into, or a new folder we may create
    (its parent exists and is writable). A link to a folder counts as that folder."""
    path = Path(path)
    label = f"{option} {path}"
    try:
        target = resolve_link(path)
        mode: int | None = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as err:  # a name too long, a link loop, no permission to look
        raise UserInputError(f"{label}: {err.strerror or err}") from None
    if mode is not None:
        if not stat.S_ISDIR(mode):
            raise UserInputError(f"{label} exists and is not a folder; give a folder name")
        _probe_folder(target, label)
    else:
        _probe_folder(target.parent if str(target.parent) else Path("."), label)


def write_text(path: Path, text: str | bytes) -> None:
    """Write `text` (str as UTF-8, or bytes) at `path` by the rules above (raises OSError as open/rename do)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    target = resolve_link(Path(path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and _kind(mode) in ("device", "fifo"):
        with open(target, "wb") as handle:
            handle.write(data)
        return
    if mode is not None and _kind(mode) != "file":
        raise IsADirectoryError(f"{target} is not a regular file")
    keep_mode = stat.S_IMODE(mode) if mode is not None else new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), keep_mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep_text(text: str | bytes, *, name: str) -> Path | None:
    """Save `text` in a new file in the temporary folder (TMPDIR); None if even that fails."""
    stem, dot, suffix = name.rpartition(".")
    try:
        fd, kept = tempfile.mkstemp(prefix=f"sp-planner-{stem or suffix}-", suffix=f".{suffix}" if dot else "")
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
    except OSError:
        return None
    return Path(kept)


def deliver_text(path: Path, text: str | bytes, *, what: str) -> None:
    """write_text, and if it fails, keep the text elsewhere and raise WriteFailed naming both."""
    try:
        write_text(path, text)
    except OSError as err:
        kept = keep_text(text, name=Path(path).name or "output")
        where = f"the {what} is kept at {kept}" if kept else f"the {what} could not be kept anywhere either"
        raise WriteFailed(f"could not write {path}: {err.strerror or err}; {where}") from None
