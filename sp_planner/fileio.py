"""Atomic writes and strict reads of the JSON/YAML files the tools exchange."""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from sp_planner.destination import write_text
from sp_planner.errors import UserInputError
from sp_planner.missing_file import missing_file_hint

T = TypeVar("T", bound=pydantic.BaseModel)


# Bytes read from the head of a file to recognise it as the tools' own (check_output_folder).
SIGNATURE_HEAD_BYTES = 4096
# The most read_structured reads of one file: far above any input of the tools (the largest corpus
# file is under 30 KB, a plan.json with every rank group of 1024 nodes of 8 GPUs 1.6 MB), and a bound
# on what a device that never ends (/dev/zero, /dev/urandom) would have it read forever.
MAX_INPUT_BYTES = 256 * 2**20


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


class NotJsonError(ValueError):
    """A YAML value JSON has no form for: strict validation (validate_strict) reads a file as JSON."""


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names one key twice (it keeps the last), and
    what JSON cannot hold: a key that is not text (`8:`, and YAML 1.1's `on:` or `yes:`, read as
    true) and a date, which validate_strict would see as other text than the file's."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else kind_of(key)
                read_as = "null" if key is None else kind_of(key)
                raise NotJsonError(f"key {shown} (line {line}) is not text (YAML reads it as {read_as}); "
                                   "write it in quotes")
            if key in keys:
                raise DuplicateKeyError(f"key {key!r} appears twice in one mapping (line {line})")
            keys.add(key)
        return super().construct_mapping(node, deep=deep)

    def _refuse_non_json(self, node: yaml.Node) -> None:
        kind = _NOT_JSON[node.tag.rsplit(":", 1)[-1]]
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            raise NotJsonError(f"{node.value} (line {line}) is read as a YAML {kind}, which JSON has no form for; "
                               "write it in quotes")
        raise NotJsonError(f"a YAML {kind} (line {line}) has no JSON form; write a list")


# YAML 1.2's floats in exponent form (989e12, 1.5e3, 1e-5): PyYAML resolves floats by YAML 1.1's
# rule, which wants a point and a signed exponent, and would hand validate_strict the text "989e12",
# which strict mode rightly refuses for a number. JSON reads them as numbers; so does this loader.
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"), list("-+.0123456789"))
# The tags of YAML's types JSON has no form for, named as a user would (a timestamp may be a bare date).
_NOT_JSON = {"timestamp": "date", "binary": "binary value", "set": "set"}
for _tag in _NOT_JSON:
    _StrictSafeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _StrictSafeLoader._refuse_non_json)


# Files the tools write (sp-report's plans.csv and index.html, sp-simulate's Gantt chart) or a user
# keeps beside them, named by a suffix that is neither JSON nor YAML: given where a JSON or YAML file
# is read, the YAML parser's complaint about a line deep inside them would not say what is wrong.
_NOT_JSON_OR_YAML = {".csv": "a CSV table", ".tsv": "a TSV table", ".html": "an HTML page", ".htm": "an HTML page",
                     ".png": "a PNG image", ".svg": "an SVG image", ".pdf": "a PDF document",
                     ".safetensors": "a safetensors weights file"}


def read_structured(path: Path, *, what: str) -> object:
    """Parse a .json/.yaml/.yml file, turning every failure into one UserInputError line."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            kind = _NOT_JSON_OR_YAML.get(path.suffix.lower())
            if kind is not None:  # once open: a missing file is said to be missing, a folder a folder
                raise UserInputError(f"{what} file {path} is {kind} (by its name), not JSON or YAML; give the "
                                     f"{what} file itself")
            raw = handle.read(MAX_INPUT_BYTES + 1)
        if len(raw) > MAX_INPUT_BYTES:
            raise UserInputError(f"{what} file {path} holds more than {MAX_INPUT_BYTES // 2**20} MiB (or is a device "
                                 "that never ends, such as /dev/zero); give the path of the file itself")
        # utf-8-sig: a byte-order mark (Windows Notepad's, PowerShell 5's Out-File) is dropped, as the
        # YAML parser drops it, rather than refused by json as "Unexpected UTF-8 BOM" (RFC 8259 8.1 lets
        # a parser ignore it); every other byte decodes as UTF-8.
        text = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")  # universal newlines
    except FileNotFoundError:
        raise UserInputError(f"{what} file {path} does not exist{missing_file_hint(path)}") from None
    except IsADirectoryError:
        raise UserInputError(f"{what} file {path} is a folder; give the path of the file itself") from None
    except UnicodeDecodeError as err:
        # UTF-16 is what Windows PowerShell 5's `>` and Out-File write: said so, with the fix.
        utf16 = err.object[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        said = "UTF-16 text" if utf16 else f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        raise UserInputError(f"{what} file {path} is {said}; save it as UTF-8") from None
    except OSError as err:
        raise UserInputError(f"cannot read {what} file {path}: {err}") from None
    try:
        if path.suffix.lower() == ".json":  # empty: None, as YAML reads it (json said "Expecting value")
            return None if not text.strip() else json.loads(text, object_pairs_hook=_refuse_duplicate_pairs)
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, RecursionError, yaml.YAMLError) as err:  # ValueError: JSON errors, 4300+ digit numbers
        detail = " ".join(str(err).split())
        raise UserInputError(f"{what} file {path} is malformed: {detail}") from None


def validate_as(model: type[T], data: object, *, what: str, path: Path | str, strict: bool = True) -> T:
    """Validate parsed data, naming the file and the bad fields in one line. `strict` (validate_strict)
    for what a file holds; False only for fields a reader built itself from a file it checked."""
    if not isinstance(data, dict):
        raise UserInputError(f"{what} file {path} must hold a mapping, got {kind_of(data)}")
    refuse_foreign(model, data, what=what, path=path)
    try:
        return validate_strict(model, data) if strict else model.model_validate(data)
    except pydantic.ValidationError as err:
        raise UserInputError(f"{what} file {path} is invalid: {errors_line(err)}") from None


def refuse_foreign(model: type[pydantic.BaseModel], data: dict, *, what: str, path: Path | str) -> None:
    """Refuse in one short line a file that lacks most of the fields `model` needs and whose fields
    are mostly not `model`'s (another kind of file, e.g. a plan file given as a run result or a
    hardware profile): pydantic would list every field it lacks and every field it has, a line of
    hundreds of columns. A file of the right kind with a few fields wrong keeps that list."""
    fields = model.model_fields
    needed = [f.alias or name for name, f in fields.items() if f.is_required()]
    known = data.keys() & {f.alias or name for name, f in fields.items()}
    missing = [name for name in needed if name not in data]
    if needed and 2 * len(known) < len(data) and 2 * len(missing) > len(needed):
        raise UserInputError(f"{what} file {path} is not a {what} file: it lacks most of the fields one needs "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")


def errors_line(err: pydantic.ValidationError, *, whole: str | None = None) -> str:
    """Every error of `err` as 'field.path: message', joined by '; '; a check of the whole object (no
    field) is said as it is, or after `whole` ('(row): ...')."""
    def one(item) -> str:
        where = ".".join(str(p) for p in item["loc"]) or whole
        return f"{where}: {field_message(item)}" if where else field_message(item)

    return "; ".join(one(item) for item in err.errors())


def validate_strict(model: type[T], data: object) -> T:
    """`data` as parsed from a user's JSON/YAML file, validated as `model` in pydantic's strict mode.

    Users edit these files by hand, and lax mode would read `"tp": 2.0` or `"2"` as 2 and `"yes"`,
    `"on"` or 1 as true without a word. Strict mode refuses those (an int field takes only whole
    numbers, a bool field only true/false, a float field no true/false) and still takes an int where
    a float is declared. It validates the data as JSON text because strict Python mode also refuses a
    list for a tuple field; strict JSON mode takes a list there. For the same reason no file model
    has a model_validator(mode="before"): pydantic validates what one returns in Python mode. YAML
    values JSON has no form for (a date, a key that is not text) are refused as read_structured
    parses the file (_StrictSafeLoader).
    """
    return model.model_validate_json(json.dumps(data), strict=True)


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


# Strict mode's type errors (validate_strict), said with what the field takes and the value as the
# file writes it: pydantic's "Input should be a valid integer" leaves out that 2.0 or "2" was given.
# (JSON mode's "Input should be an object" is JavaScript's word for a YAML mapping.)
_EXPECTED = {"int_type": "a whole number", "bool_type": "true or false", "float_type": "a number",
             "string_type": "text", "model_type": "a mapping", "dict_type": "a mapping", "list_type": "a list",
             "tuple_type": "a list"}


def field_message(item: Mapping[str, Any]) -> str:
    """pydantic's message for one error; an upper-bound check names the value and the bound readably,
    a strict type check what the field takes and the value given."""
    value = item.get("input")
    expected = _EXPECTED.get(item.get("type", ""))
    if expected is not None:
        return f"expected {expected}, got {_as_written(value)}"
    if isinstance(value, float) and not math.isfinite(value) and item.get("type", "") in _RANGE_CHECKS:
        return f"{value} is not a finite number"  # not "nan is out of range: it must be at most 1e+06"
    bound = _BOUNDS.get(item.get("type", ""))
    ctx = item.get("ctx") or {}
    if bound is None or bound[0] not in ctx:
        # A validator's own sentence, without pydantic's "Value error, " in front of it.
        return str(item["msg"]).removeprefix("Value error, ")
    key, words = bound
    return f"{_number(item.get('input'))} is out of range: it must be {words} {_number(ctx[key])}"


def _as_written(value: object) -> str:
    """A value as JSON writes it (2.0, "2", true), cut to 60 characters: a mapping given for a
    number is named, not printed whole."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) and abs(value) < 10**12 else f"{value:.3g}"
