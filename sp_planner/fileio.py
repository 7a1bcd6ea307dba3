"""Atomic writes and strict reads of the JSON/YAML files the tools exchange."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from sp_planner.destination import write_text
from sp_planner.errors import UserInputError

T = TypeVar("T", bound=pydantic.BaseModel)


# Bytes read from the head of a file to recognise it as the tools' own (check_output_folder).
SIGNATURE_HEAD_BYTES = 4096


def check_output_folder(out_dir: Path, *, allowed: frozenset[str] | set[str] | tuple[str, ...], label: str,
                        kind: str, signatures: Mapping[str, bytes] | None = None) -> None:
    """Refuse a target that is a file, or a folder holding files other than `allowed` (an earlier
    run's output, which may be replaced): UserInputError naming up to three of them.

    `label` names the target in the message ("report folder", "--report folder"), `kind` what
    it holds ("a report"). `signatures`: bytes the head of an allowed file must hold to be taken
    for an earlier run's (the report's title, the summary's schema): a user's own index.html is
    not replaced for its name.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"{label} {out_dir} exists and is not a folder")
    if out_dir.is_dir():
        # An entry is an earlier run's output only by its name and as a regular file: a folder (or
        # device) bearing a report file's name is the user's, and replacing it would delete what it
        # holds; so is a symbolic link (the tools write none), which a replaced report would delete
        # or, written through, turn its target into a report file.
        foreign = sorted(_listed(p) for p in out_dir.iterdir()
                         if p.name not in allowed or p.is_symlink() or not p.is_file()
                         or not bears_signature(p, (signatures or {}).get(p.name)))
        if foreign:
            raise UserInputError(
                f"{label} {out_dir} holds files that are not part of {kind} ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder, or an earlier report's"
            )


def bears_signature(entry: Path, signature: bytes | None) -> bool:
    """Whether the regular file `entry` holds `signature` in its head (True without one)."""
    if signature is None:
        return True
    try:
        with open(entry, "rb") as handle:
            return signature in handle.read(SIGNATURE_HEAD_BYTES)
    except OSError:
        return False


def _listed(entry: Path) -> str:
    """An entry's name, marked as a folder ('notes/', as `ls -F`) or a link ('summary.json (a link)')."""
    if entry.is_symlink():
        return f"{entry.name} (a link)"
    return entry.name + ("/" if entry.is_dir() else "")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    Links, devices and FIFOs are followed or written through (sp_planner.destination.write_text)."""
    write_text(Path(path), text)


class DuplicateKeyError(ValueError):
    """A mapping names one key twice: JSON and YAML parsers keep the last silently."""


def _refuse_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads object_pairs_hook: the mapping, or DuplicateKeyError on a key given twice."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"key {key!r} appears twice in one mapping")
        seen[key] = value
    return seen


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names one key twice (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise DuplicateKeyError(f"key {key!r} appears twice in one mapping (line "
                                        f"{key_node.start_mark.line + 1})")
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def read_structured(path: Path, *, what: str) -> object:
    """Parse a .json/.yaml/.yml file, turning every failure into one UserInputError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise UserInputError(f"{what} file {path} is a folder; give the path of the file itself") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"cannot read {what} file {path}: {err}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_refuse_duplicate_pairs)
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, RecursionError, yaml.YAMLError) as err:  # ValueError: JSON errors, 4300+ digit numbers
        detail = " ".join(str(err).split())
        raise UserInputError(f"{what} file {path} is malformed: {detail}") from None


def validate_as(model: type[T], data: object, *, what: str, path: Path | str) -> T:
    """Validate parsed data, naming the file and the bad fields in one line."""
    if not isinstance(data, dict):
        raise UserInputError(f"{what} file {path} must hold a mapping, got {kind_of(data)}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        # A check of the whole file (no field) is said as it is.
        fields = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {field_message(item)}" if item["loc"] else field_message(item)
            for item in err.errors()
        )
        raise UserInputError(f"{what} file {path} is invalid: {fields}") from None


def kind_of(data: object) -> str:
    """What a parsed JSON/YAML document holds, in the file's own terms: 'nothing (an empty file or
    null)', 'a list', 'a string', 'a number', 'true/false'."""
    if data is None:
        return "nothing (an empty file or null)"
    if isinstance(data, bool):
        return "true/false"
    if isinstance(data, (int, float)):
        return "a number"
    if isinstance(data, str):
        return "a string"
    return "a list" if isinstance(data, list) else type(data).__name__


# pydantic's upper-bound checks, said with the value and the bound in a readable form
# (1.15e+18, not 1152921504606847000).
_BOUNDS = {"less_than_equal": ("le", "at most"), "less_than": ("lt", "below")}
_RANGE_CHECKS = {"less_than_equal", "less_than", "greater_than_equal", "greater_than"}


def field_message(item: Mapping[str, Any]) -> str:
    """pydantic's message for one error; an upper-bound check names the value and the bound readably."""
    value = item.get("input")
    if isinstance(value, float) and not math.isfinite(value) and item.get("type", "") in _RANGE_CHECKS:
        return f"{value} is not a finite number"  # not "nan is out of range: it must be at most 1e+06"
    bound = _BOUNDS.get(item.get("type", ""))
    ctx = item.get("ctx") or {}
    if bound is None or bound[0] not in ctx:
        # A validator's own sentence, without pydantic's "Value error, " in front of it.
        return str(item["msg"]).removeprefix("Value error, ")
    key, words = bound
    return f"{_number(item.get('input'))} is out of range: it must be {words} {_number(ctx[key])}"


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) and abs(value) < 10**12 else f"{value:.3g}"
