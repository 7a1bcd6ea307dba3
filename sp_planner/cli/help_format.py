"""--help laid out for the terminal it is printed in (40 columns and up), for every sp-* command.

Typer's Rich help panel gives each option a fixed column for its name, its "--no-" twin, its
type and its help; at 80 columns sp-plan's 40 options do not fit those columns, and Rich cut
option names ("--moe-capacity…") and the flag names quoted in the help. This layout is click's
plain one (names, then the help from a fixed column, or on the next line when the names are
long) with two changes: a flag name is never broken at its hyphens (--cpu-offloading-num-layers
stays whole), and the epilog's example command lines keep their words and wrap with a shell
continuation (`\\`), so each can still be pasted as it is printed.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Sequence
from typing import Any

from typer.core import TyperCommand

from sp_planner.cli.terminal import terminal_columns, wrap_at_spaces

# Where an option's help starts when its names fit before it (click's own limit, col_max 30).
HELP_COLUMN_MAX = 30
MIN_TEXT_WIDTH = 20
# Narrower than this, the help column reads a word or two a line: the help goes under the names.
STACK_BELOW = 30
STACK_INDENT = 4
EXAMPLE_PREFIXES = ("sp-", "torchrun ")
CONTINUATION = " \\"
CONTINUATION_INDENT = "    "


def wrap_words(text: str, width: int) -> list[str]:
    """Wrap at spaces only: no word, flag or path is split."""
    return wrap_at_spaces(text, max(width, MIN_TEXT_WIDTH))


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
    # An option and its value too long for one continuation line go on two (an option's name has
    # no space, so the first one parts it from its value, quoted or not).
    room = width - len(CONTINUATION) - len(CONTINUATION_INDENT)
    units = [part for unit in units for part in (unit.split(" ", 1) if len(unit) > room else (unit,))]
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
    """(names, help) rows as lines of at most `width` characters (unless one word alone is longer).
    A help whose longest word passes its column, and every help when the column would be narrower
    than STACK_BELOW (a terminal under ~64 columns), goes under its names, STACK_INDENT in."""
    if not rows:
        return []
    column = min(max(len(names) for names, _ in rows) + 2, HELP_COLUMN_MAX + 2)
    text_width = width - column
    out: list[str] = []
    for names, help_text in rows:
        longest = max((len(word) for word in help_text.split()), default=0)
        indent = STACK_INDENT if text_width < STACK_BELOW or longest > text_width else column
        wrapped = wrap_words(help_text, width - indent)
        if wrapped and indent == column and len(names) + 2 <= column:
            out.append(names.ljust(column) + wrapped[0])
            wrapped = wrapped[1:]
        else:  # a name and its twin or choices too long for a line part at their spaces
            out.extend(wrap_words(names, width))
        out.extend(" " * indent + line for line in wrapped)
    return out


def epilog_commands(epilog: str) -> list[str]:
    """The epilog's lines, stripped, with an example command (starting `sp-` or `torchrun `) that
    the source continues with a backslash, and a paragraph of prose, joined into one line."""
    lines: list[str] = []
    continued = prose = False
    for raw in epilog.splitlines():
        line = raw.strip()
        command = continued or line.startswith(EXAMPLE_PREFIXES)
        text = line.removesuffix("\\").strip() if command else line
        # A paragraph the source breaks over lines is one line here, wrapped as a whole.
        if continued or (prose and text and not command):
            lines[-1] += f" {text}"
        else:
            lines.append(text)
        continued = command and line.endswith("\\")
        prose = bool(text) and not command
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


def help_width() -> int:
    """The help's width: the terminal's (COLUMNS, else its size; 80 for a pipe) less click's
    2-column margin, at most 78. Click's own floor of 50 ran help past a narrower terminal."""
    return max(terminal_columns() - 2, MIN_TEXT_WIDTH)


class PlainHelpCommand(TyperCommand):
    """A Typer command whose --help is laid out by option_lines and epilog_lines (the app sets
    rich_markup_mode=None, so Typer leaves the layout to these), at help_width."""

    def get_help(self, ctx: Any) -> str:
        formatter = ctx.make_formatter()
        formatter.width = help_width()
        self.format_help(ctx, formatter)
        return formatter.getvalue().rstrip("\n")

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        """The command's description, its paragraphs wrapped at spaces (click's wrap also breaks at
        hyphens: "all-" / "gather")."""
        text = inspect.cleandoc(self.help or "").partition("\f")[0]
        if not text:
            return
        formatter.write_paragraph()
        indent = " " * (formatter.current_indent + formatter.indent_increment)
        for i, paragraph in enumerate(text.split("\n\n")):
            lines = wrap_words(" ".join(paragraph.split()), formatter.width - len(indent))
            formatter.write(("\n" if i else "") + "".join(f"{indent}{line}\n" for line in lines))

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
