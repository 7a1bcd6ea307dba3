"""The terminal's width and text wrapped at its spaces, for the sp-* commands' plain-text output."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Rich loads with the first console, not for --help (cli.help_format wraps with textwrap)
    from rich.console import Console

# A pipe or a file gets 80 columns (shutil's fallback), as does a wider terminal.
MAX_COLUMNS = 80
# A narrower terminal (COLUMNS=1 in a broken environment) is laid out for this many and wraps the rest:
# Rich cannot lay a table out in one column (it fails an assertion sharing out the widths), and below
# 20 no table of the tools reads anyway.
MIN_COLUMNS = 20


def stdout_columns() -> int:
    """stdout's columns: COLUMNS, else the size of the terminal stdout is (80 for a pipe or file);
    at least MIN_COLUMNS."""
    return max(shutil.get_terminal_size((MAX_COLUMNS, 24)).columns, MIN_COLUMNS)


def terminal_columns() -> int:
    """The terminal's columns (COLUMNS, else its size; 80 for a pipe or file), from MIN_COLUMNS to
    MAX_COLUMNS."""
    return min(stdout_columns(), MAX_COLUMNS)


def stdout_console() -> Console:
    """Rich on stdout at stdout_columns(): the terminal's width, and 80 columns for a pipe or file
    unless COLUMNS says otherwise. Rich alone takes the width of stdin's or stderr's terminal when
    stdout has none, so that `sp-plan ... > answer.txt` in a 200-column terminal wrote lines of 200."""
    from rich.console import Console

    return Console(width=stdout_columns())


def wrap_at_spaces(text: str, width: int, *, indent: str = "", hang: str = "") -> list[str]:
    """`text` in lines of at most `width` columns, broken at its spaces only (no word, flag, path or
    hyphenated word is split; one longer than `width` has a line of its own): the first line after
    `indent`, the others after `hang` (default: `indent`)."""
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=hang or indent,
                         break_on_hyphens=False, break_long_words=False)


def write_note(text: str, stream) -> None:
    """`note: text` on `stream` (stderr), wrapped at its spaces to the terminal, the lines after
    the first indented under the text."""
    stream.write("\n".join(wrap_at_spaces(f"note: {text}", terminal_columns(), hang="      ")) + "\n")


def pack_words(words: Sequence[str], width: int) -> list[str]:
    """`words` joined by spaces in lines of at most `width` columns, none of them split (a path
    with a space in it stays whole; one wider than `width` gets a line of its own)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def wrote_lines(paths: Sequence[Path], width: int) -> list[str]:
    """'wrote a.png and b.csv in FOLDER' for files of one folder (the folder named once, whole,
    where a long one would have been repeated for each file), else 'wrote PATH, PATH': within
    `width` columns except a path wider than them, which keeps a line of its own."""
    folders = {path.parent for path in paths}
    if len(paths) < 2 or len(folders) != 1:
        names = [str(path) for path in paths]
        where: list[str] = []
    else:
        names = [path.name for path in paths]
        folder = folders.pop()
        where = [] if folder == Path(".") else ["in", str(folder)]
    *head, last = names
    listed = [f"{name}," for name in head[:-1]] + (head[-1:] + ["and"] if head else []) + [last]
    return pack_words(["wrote", *listed, *where], width)
