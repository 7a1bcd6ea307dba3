"""The terminal's width and text wrapped at its spaces, for the sp-* commands' plain-text output."""

from __future__ import annotations

import shutil
import textwrap

# A pipe or a file gets 80 columns (shutil's fallback), as does a wider terminal.
MAX_COLUMNS = 80


def terminal_columns() -> int:
    """The terminal's columns (COLUMNS, else its size; 80 for a pipe or file), at most MAX_COLUMNS."""
    return min(shutil.get_terminal_size((MAX_COLUMNS, 24)).columns, MAX_COLUMNS)


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
