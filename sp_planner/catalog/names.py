"""Forgiving lookup of built-in names: case and the separators '-', '.', '_' and spaces are ignored."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from sp_planner.errors import UserInputError

_SEPARATORS = re.compile(r"[-._\s]")
FILE_SUFFIXES = (".json", ".yaml", ".yml")


def normalise(name: str) -> str:
    """'Llama-3.1-8B' -> 'llama318b'."""
    return _SEPARATORS.sub("", name).lower()


def lookup_table(names: Iterable[str], aliases: Mapping[str, str]) -> dict[str, str]:
    """Normalised key -> canonical name, for the names themselves and their aliases."""
    canonical = list(names)
    table: dict[str, str] = {}
    for spelling, target in [(n, n) for n in canonical] + list(aliases.items()):
        key = normalise(spelling)
        assert target in canonical, f"alias target {target!r} is not a built-in name"
        assert table.get(key, target) == target, f"{key!r} would name both {table[key]} and {target}"
        table[key] = target
    return table


def looks_like_path(arg: str) -> bool:
    """A file argument has a directory part or a data-file suffix; a built-in name has neither."""
    return "/" in arg or "\\" in arg or Path(arg).suffix.lower() in FILE_SUFFIXES


def find(query: str, table: Mapping[str, str]) -> str | None:
    """The canonical name for `query`, or None when it names nothing (the caller decides what next)."""
    return table.get(normalise(query))


def close_names(query: str, table: Mapping[str, str], *, limit: int = 3) -> list[str]:
    """Up to `limit` known names closest to `query`, closest first. A known name the query begins
    (gb200 -> GB200-NVL72) leads when it is the only one, then difflib's closest spellings."""
    asked = normalise(query)
    prefixed = {table[key] for key in table if key.startswith(asked)} if asked else set()
    spelled = [table[key] for key in difflib.get_close_matches(asked, list(table), n=len(table), cutoff=0.6)]
    first = [next(iter(prefixed))] if len(prefixed) == 1 else []
    return list(dict.fromkeys(first + spelled))[:limit]  # aliases fold into their names


def unknown_name_error(
    query: str, table: Mapping[str, str], *, what: str, listed_in: str, hint: str
) -> UserInputError:
    """One short line: what was asked, the closest known names, where every known name is listed
    (33 models spelt out made a 700-character line), how else to proceed."""
    close = close_names(query, table)
    others = f" (or {', '.join(close[1:])})" if len(close) > 1 else ""
    suggestion = f" Did you mean {close[0]}{others}?" if close else ""
    count = len(set(table.values()))
    return UserInputError(f"unknown {what} {query!r}.{suggestion} {listed_in} lists all {count}; {hint}")


def builtin_file_error(arg: str, table: Mapping[str, str], *, what: str, kind: str) -> UserInputError | None:
    """The error for `arg`, a path to nothing that spells a built-in name in its last part without a
    data-file suffix (a800.yaml, ./llama3-8b): a built-in given as a file, named; None where it
    spells none or exists. `what`: the file's kind ('hardware profile'); `kind`: the built-in's
    ('profile')."""
    if os.path.lexists(arg):  # lexists: False, not an error, for a name too long
        return None
    name = Path(arg).name
    suffix = Path(name).suffix.lower()
    builtin = find(name[:-len(suffix)] if suffix in FILE_SUFFIXES else name, table)
    if builtin is None:
        return None
    return UserInputError(f"{what} file {arg} does not exist; for the built-in {kind} give its name alone: {builtin}")
