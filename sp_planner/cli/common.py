"""Shared CLI behaviour: bad input gives one line on stderr and exit code 2, no traceback.

Unexpected internal errors are not caught here, so they still show a traceback.
"""

from __future__ import annotations

import codecs
import errno
import math
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

import pydantic
import typer

try:  # recent typer (0.29 here) vendors click as typer._click and no longer installs it
    from typer._click.exceptions import ClickException
except ImportError:  # older typer depends on click itself
    from click import ClickException  # type: ignore[import-not-found, no-redef]

from sp_planner import interrupts
from sp_planner.cli.joined import quiet_rank, stays_quiet
from sp_planner.errors import UserInputError
from sp_planner.fileio import errors_line

EXIT_USAGE = 2
# The most plans --top lists (sp-plan, sp-report): far above a readable table, and a bound that keeps a
# huge --top from reaching islice, which refuses one past sys.maxsize.
MAX_TOP = 10_000
# Seconds a timeout may be: torch.distributed keeps one as int64 nanoseconds (std::chrono, 2**63 ns
# = 9.2e9 s): sp-run --timeout 1e10 made every rank's TCPStore connect time out at once, 1e14 raised
# datetime.timedelta's OverflowError in the ranks (exit 1 after the launch).
MAX_TIMEOUT_S = 1e9
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a job stopped by Ctrl-C


# Extensions of the files the tools read and write: a file option's name that is one alone, or a folder
# option's new name that ends in one, is a slip (an unset shell variable in "$NAME.yaml", a file name
# where a folder is asked for), not a name meant.
FILE_EXTENSIONS = (".json", ".yaml", ".yml", ".csv", ".html", ".png", ".svg")


def _extension(name: str) -> str | None:
    """The FILE_EXTENSIONS entry `name` ends in, as spelt there (any case); None where none."""
    return next((name[-len(ext):] for ext in FILE_EXTENSIONS if name.lower().endswith(ext)), None)


def file_name(raw: str) -> Path:
    """typer parser of an option naming a file to write: a name ending in a slash, '.' or '..' names a
    folder, which Path would drop (`--out x/` and `--out x/.` wrote a file x), and a name that is an
    extension alone (`.yaml`) has no file name (Path(".yaml").suffix is "", so sp-calibrate said it
    must end in .yaml)."""
    if not raw:
        raise typer.BadParameter("the name is empty; give a file name")
    if raw.endswith(("/", os.sep)):
        raise typer.BadParameter(f"{raw} ends in a slash, which names a folder; give a file name inside it")
    path = Path(raw)
    _, slash, last = raw.replace(os.sep, "/").rpartition("/")
    if slash and last in (".", ".."):  # "." or ".." alone stays a folder to Path (check_file_destination)
        raise typer.BadParameter(f"{raw} ends in /{last}, which names a folder; give a file name inside it")
    extension = _extension(path.name)
    if extension is not None and path.name == extension:
        raise typer.BadParameter(f"{raw} is an extension alone, with no file name before {extension} (\"$NAME"
                                 f"{extension}\" with NAME unset?); give a name before it, e.g. "
                                 f"{path.with_name('out' + extension)}")
    return path


def folder_name(raw: str) -> Path:
    """typer parser of an option naming a folder to write into: an empty name (`--report "$DIR"` with DIR
    unset) is refused, not read as Path('') = the current folder, and so is a new folder named as a file
    (`--out report.html` made a folder report.html holding index.html); an existing folder is taken."""
    if not raw:
        raise typer.BadParameter("the name is empty; give a folder name (. for the current folder)")
    path = Path(raw)
    extension = _extension(path.name)
    if extension is not None and not path.exists():  # an existing file is check_folder_destination's
        stem = path.name[:-len(extension)].rstrip(".") or "out"
        raise typer.BadParameter(f"{raw} ends in {extension}, a file's extension, and no such folder exists: this "
                                 f"option names a folder to write into; give a folder name, e.g. "
                                 f"{path.with_name(stem)}")
    return path


def check_finite_seconds(option: str, seconds: float | None) -> None:
    """An option of seconds given as inf (typer's FloatRange refuses nan by its bound but lets inf
    by), or past MAX_TIMEOUT_S, is refused in one line; None (not given) passes."""
    if seconds is not None and not math.isfinite(seconds):
        raise UserInputError(f"{option} {seconds:g}: must be a finite number of seconds")
    if seconds is not None and seconds > MAX_TIMEOUT_S:
        raise UserInputError(f"{option} {seconds:g}: must be at most {MAX_TIMEOUT_S:g} seconds (31 years; "
                             "torch.distributed holds a timeout in int64 nanoseconds)")


def _say(message: str) -> None:
    """One 'error:' line on stderr (if stderr is still there)."""
    try:
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone too: the exit code is all that is left


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 2."""
    _say(message)
    raise SystemExit(EXIT_USAGE)


class StdoutFailed(Exception):
    """Standard output could not be written (a closed pipe, a full disk, /dev/full)."""

    def __init__(self, err: OSError) -> None:
        super().__init__(err)
        self.err = err

    def message(self) -> str:
        if self.err.errno == errno.EPIPE:
            return "standard output was closed before all output was written (broken pipe)"
        return f"cannot write to standard output: {self.err.strerror or self.err}"


class _GuardedStdout:
    """sys.stdout whose write errors become StdoutFailed, so that they are told apart from internal
    errors (which keep their traceback). Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream  # None: the process started with file descriptor 1 closed (`>&-`)

    def write(self, text: str) -> int:
        try:
            if self._stream is None:
                raise OSError(errno.EBADF, "it is closed")
            return self._stream.write(text)
        except OSError as err:
            raise StdoutFailed(err) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as err:
            raise StdoutFailed(err) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


# What an ASCII-only terminal shows for the few non-ASCII characters the tools print (microseconds
# as "us", not "?s"); anything else becomes '?'.
ASCII_SPELLINGS = {"\u00b5": "u", "\u2026": "...", "\u00d7": "x"}


def _spell_in_ascii(err: UnicodeError) -> tuple[str, int]:
    """codecs error handler: ASCII_SPELLINGS for what it knows, '?' for the rest."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start:err.end]
    return "".join(ASCII_SPELLINGS.get(ch, "?") for ch in bad), err.end


codecs.register_error("sp_planner_ascii", _spell_in_ascii)


def _tolerate_narrow_encodings() -> None:
    """An ASCII-only (or other non-UTF) terminal gets ASCII spellings ('us' for microseconds) or '?'
    for the characters it cannot show instead of a UnicodeEncodeError; Rich already draws its
    tables in ASCII there."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if not encoding.startswith("utf") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="sp_planner_ascii")


def _abandon_stdout(stream: TextIO) -> None:
    """Point the failed stream's file descriptor at /dev/null so that the interpreter's last flush
    cannot fail again (a stream without one, as in tests, is left alone)."""
    try:
        target = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, target)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def describe_validation_error(err: pydantic.ValidationError) -> str:
    """One line naming each bad field: 'field.path: what is wrong'."""
    return f"invalid {err.title}: {errors_line(err)}"


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str | None = None, *,
            once_per_node: bool = False) -> None:
    """Run a typer app, mapping user errors (ours, pydantic's, click's) to one stderr line + exit 2,
    and an unwritable standard output to one line too. `once_per_node`: a command that runs as every
    rank of a torchrun/SLURM launch says a user error, or Ctrl-C's 'interrupted', from its node's
    first rank only (cli.joined)."""
    _tolerate_narrow_encodings()
    try:
        interrupts.install()
    except ValueError:  # not the main thread: Python's own handler stays
        pass
    real_stdout = sys.stdout
    sys.stdout = _GuardedStdout(real_stdout)
    try:
        result = _run_command(app, argv, prog_name, once_per_node)
        sys.stdout.flush()
    except StdoutFailed as failed:
        sys.stdout = real_stdout
        _abandon_stdout(real_stdout)
        fail(failed.message())
    finally:
        sys.stdout = real_stdout
    raise SystemExit(result)


def _refuse(message: str, once_per_node: bool) -> NoReturn:
    """fail(message), or exit 2 without it on a rank that leaves it to its node's first (cli.joined)."""
    if once_per_node and stays_quiet():
        raise SystemExit(EXIT_USAGE)
    fail(message)


def _say_interrupted(once_per_node: bool) -> None:
    """The 'interrupted' line, but not on a rank that leaves it to its node's first: Ctrl-C reaches
    every rank of a torchrun/SLURM launch, and each said it (cli.joined)."""
    if not (once_per_node and quiet_rank()):
        _say("interrupted")


def _run_command(app: typer.Typer, argv: list[str] | None, prog_name: str | None, once_per_node: bool) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:  # click's answer to Ctrl-C (KeyboardInterrupt) and to an aborted prompt
        _say_interrupted(once_per_node)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except ClickException as err:
        _refuse(err.format_message(), once_per_node)
    except UserInputError as err:
        _refuse(str(err), once_per_node)
    except pydantic.ValidationError as err:
        _refuse(describe_validation_error(err), once_per_node)
    if result == EXIT_INTERRUPTED:  # typer answers Ctrl-C by returning 130, silently
        _say_interrupted(once_per_node)
    return result if isinstance(result, int) else 0
