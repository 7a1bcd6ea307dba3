"""fileio's one-line messages for pydantic's errors."""

from __future__ import annotations

import codecs

import pydantic
import pytest
from pydantic import Field

from sp_planner.errors import UserInputError
from sp_planner.fileio import field_message, read_structured, validate_as
from sp_planner.specs.base import FrozenModel


class _Bounded(pydantic.BaseModel):
    softcap: float = Field(gt=0, le=1e6)


def _message(value: float) -> str:
    with pytest.raises(pydantic.ValidationError) as err:
        _Bounded(softcap=value)
    return field_message(err.value.errors()[0])


def test_a_bound_names_the_value_and_the_bound():
    assert _message(2e6) == "2e+06 is out of range: it must be at most 1e+06"


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_non_finite_value_is_said_to_be_one_not_out_of_range(value, shown):
    # NaN fails every comparison, so pydantic reports the upper bound: the value, not the range, is wrong.
    assert _message(value) == f"{shown} is not a finite number"


def test_a_folder_given_as_a_file_is_one_line_that_says_so(tmp_path):
    from sp_planner.errors import UserInputError
    from sp_planner.fileio import read_structured

    with pytest.raises(UserInputError, match=r"^hardware profile file .* is a folder; give the path of the file"):
        read_structured(tmp_path, what="hardware profile")


def test_a_file_over_the_input_bound_is_refused_after_reading_only_the_bound(tmp_path, monkeypatch):
    from sp_planner import fileio
    from sp_planner.errors import UserInputError

    monkeypatch.setattr(fileio, "MAX_INPUT_BYTES", 2 * 2**20)
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * (2**20 - 2) + "0 ] ")  # 2 MiB + 1 byte
    with pytest.raises(UserInputError, match=r"^plan file .*big.json holds more than 2 MiB \(or is a device"):
        fileio.read_structured(path, what="plan")
    path.write_text("[" + "0," * (2**20 - 2) + "0 ]")  # 2 MiB exactly: read whole
    assert len(fileio.read_structured(path, what="plan")) == 2**20 - 1


def test_windows_line_ends_read_as_read_text_reads_them(tmp_path):
    from sp_planner.fileio import read_structured

    path = tmp_path / "crlf.yaml"
    path.write_bytes(b"name: A\r\nnote: |\r\n  two\r\n  lines\r\n")
    assert read_structured(path, what="figures") == {"name": "A", "note": "two\nlines\n"}


@pytest.mark.parametrize("name, text, said", [
    ("dup.yaml", "name: A\nefficiency:\n  gemm: 0.5\nname: B\n", "key 'name' appears twice in one mapping (line 4)"),
    ("dup.json", '{"name": "A", "x": {"y": 1, "y": 2}}', "key 'y' appears twice in one mapping"),
])
def test_a_key_given_twice_is_refused_not_the_last_one_kept(tmp_path, name, text, said):
    # PyYAML and json keep the last of two equal keys silently; a hand-edited profile with two
    # `name:` lines would then plan on the one the user may not mean.
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError) as err:
        read_structured(path, what="hardware profile")
    assert str(err.value) == f"hardware profile file {path} is malformed: {said}"
    path.write_text(text.replace("name: B", "label: B").replace('"y": 2', '"z": 2'), encoding="utf-8")
    assert isinstance(read_structured(path, what="hardware profile"), dict)


class _Figures(pydantic.BaseModel):
    count: int = 1
    share: float = 0.5
    enabled: bool = False
    sizes: tuple[int, ...] = ()
    names: dict[str, str] = {}


def _strict_refusal(tmp_path, text: str) -> str:
    from sp_planner.fileio import validate_as

    path = tmp_path / "figures.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError) as err:
        validate_as(_Figures, read_structured(path, what="figures"), what="figures", path=path)
    return str(err.value).removeprefix(f"figures file {path} is invalid: ")


@pytest.mark.parametrize("text, said", [
    ("count: 2.0", "count: expected a whole number, got 2.0"),
    ("count: '2'", 'count: expected a whole number, got "2"'),
    ("enabled: 'yes'", 'enabled: expected true or false, got "yes"'),
    ("enabled: 1", "enabled: expected true or false, got 1"),
    ("share: true", "share: expected a number, got true"),
    ("sizes: [1, 2.0]", "sizes.1: expected a whole number, got 2.0"),
    ("sizes: 3", "sizes: expected a list, got 3"),
    ("names: {a: 1}", "names.a: expected text, got 1"),
])
def test_a_value_lax_mode_would_coerce_is_refused_naming_the_field(tmp_path, text, said):
    assert _strict_refusal(tmp_path, text) == said


@pytest.mark.parametrize("text, said", [
    ("names: {a: 2024-05-01}", "2024-05-01 (line 1) is read as a YAML date, which JSON has no form for; "
                               "write it in quotes"),
    ("names:\n  8: a", "key 8 (line 2) is not text (YAML reads it as a number); write it in quotes"),
    ("on: true", "key on (line 1) is not text (YAML reads it as true/false); write it in quotes"),
    ("names: !!set {a, b}", "a YAML set (line 1) has no JSON form; write a list"),
])
def test_a_yaml_value_json_has_no_form_for_is_refused_where_it_is(tmp_path, text, said):
    # Strict validation reads a file as JSON: a date, or a key 8 or `on` (YAML 1.1's true), would be
    # read as other text than the file's, or fail without saying where.
    path = tmp_path / "figures.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError) as err:
        read_structured(path, what="figures")
    assert str(err.value) == f"figures file {path} is malformed: {said}"


def test_strict_reading_takes_lists_for_tuples_and_whole_numbers_for_floats(tmp_path):
    from sp_planner.fileio import validate_as

    path = tmp_path / "figures.yaml"
    path.write_text("count: 3\nshare: 1\nenabled: true\nsizes: [1, 2]\nnames: {a: b}\n", encoding="utf-8")
    figures = validate_as(_Figures, read_structured(path, what="figures"), what="figures", path=path)
    assert figures == _Figures(count=3, share=1.0, enabled=True, sizes=(1, 2), names={"a": "b"})
    assert type(figures.share) is float


@pytest.mark.parametrize("text, share", [("share: 989e12", 989e12), ("share: -1E-5", -1e-5), ("share: 1_000e3", 1e6),
                                         ("share: 1.5e3", 1500.0)])
def test_an_exponent_without_a_point_is_a_number_as_json_reads_it(tmp_path, text, share):
    # YAML 1.1 (PyYAML) reads 989e12 as text, which strict validation would refuse for a number;
    # hand-written profiles say 989e12 FLOP/s.
    from sp_planner.fileio import validate_as

    path = tmp_path / "figures.yaml"
    path.write_text(text, encoding="utf-8")
    assert validate_as(_Figures, read_structured(path, what="figures"), what="figures", path=path).share == share
    assert _strict_refusal(tmp_path, "count: 8e0") == "count: expected a whole number, got 8.0"
    assert _strict_refusal(tmp_path, "names: {a: 1e3}") == "names.a: expected text, got 1000.0"


class _Profile(FrozenModel):
    name: str
    peak_flops: float
    hbm_bytes: int
    gpus_per_node: int
    note: str = ""


# The top-level keys of a plan file (sp-plan --out), which shares gpus_per_node with a profile.
_PLAN_KEYS = ("schema_version", "created_by", "model", "hardware", "workload", "num_nodes", "gpus_per_node",
              "framework", "framework_version", "plan", "estimate", "rank_layout", "rank_groups")


def test_another_kind_of_file_is_named_in_one_short_line(tmp_path):
    # `sp-plan --hardware plan.json` said "is invalid:" and then every field the profile lacks and
    # every one the plan file has, 819 columns; `sp-report --run plan.json` and `sp-validate
    # --corpus plan.json` likewise.
    with pytest.raises(UserInputError) as err:
        validate_as(_Profile, dict.fromkeys(_PLAN_KEYS, 1), what="hardware profile", path="plan.json")
    assert str(err.value) == ("hardware profile file plan.json is not a hardware profile file: it lacks most "
                              "of the fields one needs (name, peak_flops, hbm_bytes)")


def test_a_file_of_the_right_kind_with_fields_wrong_keeps_every_field_named(tmp_path):
    data = {"name": "x", "gpus_per_node": 8, "typo": 1, "other": 2, "third": 3}  # 2 of 4 needed, 3 unknown
    with pytest.raises(UserInputError) as err:
        validate_as(_Profile, data, what="hardware profile", path="mine.yaml")
    assert str(err.value) == ("hardware profile file mine.yaml is invalid: peak_flops: Field required; "
                              "hbm_bytes: Field required; typo: Extra inputs are not permitted; other: Extra "
                              "inputs are not permitted; third: Extra inputs are not permitted")


@pytest.mark.parametrize("name, text, said", [
    # sp-report's own plans.csv: a quoted reason holds ': ', where YAML failed at line 3 of 3.
    ("plans.csv", 'dp,fits,reason\n1,True,\n2,False,"oom: needs 79.2 GiB per GPU"\n', "a CSV table"),
    ("index.html", '<!doctype html>\n<title>sp-planner report: Llama-3-8B</title>\n', "an HTML page"),
    ("gantt.png", b"\x89PNG\r\n\x1a\n", "a PNG image"),
])
def test_a_table_page_or_image_given_for_a_json_or_yaml_file_is_named_as_what_it_is(tmp_path, name, text, said):
    # Was the YAML parser's "mapping values are not allowed here ... line 1734, column 89" for
    # `sp-report report/plans.csv`, and "'utf-8' codec can't decode byte 0x89" for a Gantt chart.
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(UserInputError) as err:
        read_structured(path, what="plan")
    assert str(err.value) == f"plan file {path} is {said} (by its name), not JSON or YAML; give the plan file itself"


def test_a_missing_csv_or_a_folder_named_like_one_is_said_to_be_that(tmp_path):
    with pytest.raises(UserInputError, match=r"plans.csv does not exist; check the path$"):
        read_structured(tmp_path / "plans.csv", what="plan")
    (tmp_path / "runs.csv").mkdir()
    with pytest.raises(UserInputError, match=r"runs.csv is a folder; give the path of the file itself$"):
        read_structured(tmp_path / "runs.csv", what="plan")


@pytest.mark.parametrize("name", ["config.json", "profile.yaml"])
def test_a_utf8_byte_order_mark_is_read_past_in_json_as_in_yaml(tmp_path, name):
    # Windows Notepad and PowerShell 5's Out-File -Encoding utf8 write one: a .json file was refused
    # ("Unexpected UTF-8 BOM (decode using utf-8-sig)") where the same .yaml was read.
    path = tmp_path / name
    path.write_bytes(codecs.BOM_UTF8 + b'{"name": "caf\xc3\xa9", "layers": 2}')
    assert read_structured(path, what="plan") == {"name": "café", "layers": 2}


@pytest.mark.parametrize("data, said", [
    ('{"layers": 2}'.encode("utf-16"), "is UTF-16 text"),  # PowerShell 5's `>`, with its byte-order mark
    (b"name: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 9)"),  # Latin-1
])
def test_text_in_another_encoding_is_named_with_the_fix(tmp_path, data, said):
    # Was "cannot read plan file ...: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte".
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    with pytest.raises(UserInputError) as err:
        read_structured(path, what="plan")
    assert str(err.value) == f"plan file {path} {said}; save it as UTF-8"


def test_a_missing_file_says_how_to_mend_the_path(tmp_path):
    # Was "plan file .../pinned.jsn does not exist": the file beside it went unsaid.
    (tmp_path / "pinned.json").write_text("{}")
    with pytest.raises(UserInputError) as err:
        read_structured(tmp_path / "pinned.jsn", what="plan")
    assert str(err.value) == f"plan file {tmp_path}/pinned.jsn does not exist; did you mean {tmp_path}/pinned.json?"


def test_an_empty_json_file_reads_as_nothing_as_an_empty_yaml_file_does(tmp_path):
    # Was "is malformed: Expecting value: line 1 column 1 (char 0)"; the readers say "got nothing
    # (an empty file or null)" for None.
    for name in ("empty.json", "empty.yaml"):
        (tmp_path / name).write_text(" \n")
        assert read_structured(tmp_path / name, what="plan") is None
    with pytest.raises(UserInputError, match="must hold a mapping, got nothing"):
        validate_as(_Bounded, read_structured(tmp_path / "empty.json", what="run result"), what="run result",
                    path=tmp_path / "empty.json")
