"""--help laid out for the terminal it is printed in (80 columns and up), for every sp-* command.

Typer's Rich help panel gives each option a fixed column for its name, its "--no-" twin, its
type and its help; at 80 columns sp-plan's 40 options do not fit those columns, and Rich cut
option names ("--moe-capacity…") and the flag names quoted in the help. This layout is click's
plain one (names, then the help from a fixed column, or on the next line when the names are
long) with two changes: a flag name is never broken at its hyphens (--cpu-offloading-num-layers
stays whole), and the epilog's example command lines keep their words and wrap with a shell
continuation (`\\`), so each can still be pasted as it is printed.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Sequence
from typing import Any

from typer.core import TyperCommand

# Where an option's help starts when its names fit before it (click's own limit, col_max 30).
HELP_COLUMN_MAX = 30
MIN_TEXT_WIDTH = 20
EXAMPLE_PREFIXES = ("sp-", "torchrun ")
CONTINUATION = " \\"
CONTINUATION_INDENT = "    "


def wrap_words(text: str, width: int) -> list[str]:
    """Wrap at spaces only: no word, flag or path is split."""
    return textwrap.wrap(text, max(width, MIN_TEXT_WIDTH), break_on_hyphens=False, break_long_words=False)


def _command_units(words: Sequence[str], *, quote: bool = False) -> list[str]:
    """A command's words with each option kept beside its value (`--tp 8` is one unit); `quote`:
    each word as the shell needs it (shlex.quote)."""
    units: list[str] = []
    for word in words:
        shown = shlex.quote(word) if quote else word
        if units and not word.startswith("-") and units[-1].startswith("-") and " " not in units[-1]:
            units[-1] += f" {shown}"
        else:
            units.append(shown)
    return units


def wrap_command(line: str, width: int) -> list[str]:
    """A shell command wrapped between its options (an option stays beside its value) with a
    continuation backslash, continuations indented."""
    return _wrap_units(_command_units(line.split()), width)


def wrap_argv(argv: Sequence[str], width: int) -> list[str]:
    """A command's arguments as shell lines of `width` (as wrap_command), each argument quoted and
    never split, so the lines paste as the one command argv is."""
    return _wrap_units(_command_units(argv, quote=True), width)


def _wrap_units(units: list[str], width: int) -> list[str]:
    current = ""
    lines: list[str] = []
    for word in units:
        limit = width - len(CONTINUATION) - (len(CONTINUATION_INDENT) if lines else 0)
        candidate = f"{current} {word}" if current else word
        if current and len(candidate) > limit:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return [(CONTINUATION_INDENT if i else "") + text + (CONTINUATION if i < len(lines) - 1 else "")
            for i, text in enumerate(lines)]


def option_lines(rows: list[tuple[str, str]], width: int) -> list[str]:
    """(names, help) rows as lines of at most `width` characters (unless one name alone is longer)."""
    if not rows:
        return []
    column = min(max(len(names) for names, _ in rows) + 2, HELP_COLUMN_MAX + 2)
    text_width = max(width - column, MIN_TEXT_WIDTH)
    out: list[str] = []
    for names, help_text in rows:
        wrapped = wrap_words(help_text, text_width)
        if wrapped and len(names) + 2 <= column:
            out.append(names.ljust(column) + wrapped[0])
            wrapped = wrapped[1:]
        else:
            out.append(names)
        out.extend(" " * column + line for line in wrapped)
    return out


def epilog_commands(epilog: str) -> list[str]:
    """The epilog's lines, stripped, with an example command (starting `sp-` or `torchrun `) that
    the source continues with a backslash joined into one line."""
    lines: list[str] = []
    continued = False
    for raw in epilog.splitlines():
        line = raw.strip()
        command = continued or line.startswith(EXAMPLE_PREFIXES)
        text = line.removesuffix("\\").strip() if command else line
        if continued:
            lines[-1] += f" {text}"
        else:
            lines.append(text)
        continued = command and line.endswith("\\")
    return lines


def epilog_lines(epilog: str, width: int) -> list[str]:
    """Paragraphs wrapped at spaces; an example command (a line starting `sp-` or `torchrun `)
    wrapped as a shell command; blank lines kept."""
    out: list[str] = []
    for line in epilog_commands(epilog):
        if not line:
            out.append("")
        elif line.startswith(EXAMPLE_PREFIXES):
            out.extend("  " + text for text in wrap_command(line, width - 2))
        else:
            out.extend(wrap_words(line, width))
    return out


class PlainHelpCommand(TyperCommand):
    """A Typer command whose --help is laid out by option_lines and epilog_lines (the app sets
    rich_markup_mode=None, so Typer leaves the layout to these)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then options, as Typer's plain layout sections them."""
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            rows = [record for param in self.get_params(ctx)
                    if param.param_type_name == kind and (record := param.get_help_record(ctx)) is not None]
            if not rows:
                continue
            with formatter.section(title):
                indent = " " * formatter.current_indent
                for line in option_lines(rows, formatter.width - formatter.current_indent):
                    formatter.write(f"{indent}{line}".rstrip() + "\n")

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """Click's usage line: a required argument by its name (PLAN.json), an optional one in
        brackets. Typer's plain layout writes required arguments in braces ({PLAN.json}), which a
        shell reads as a brace expansion."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = param.metavar or (param.name or "").upper()
            name = name if param.required else f"[{name}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        if not self.epilog:
            return
        formatter.write_paragraph()
        indent = " " * (formatter.current_indent + 2)
        for line in epilog_lines(self.epilog, formatter.width - formatter.current_indent - 2):
            formatter.write(f"{indent}{line}".rstrip() + "\n")
