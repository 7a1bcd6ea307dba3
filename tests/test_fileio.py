"""fileio's one-line messages for pydantic's errors."""

from __future__ import annotations

import pydantic
import pytest
from pydantic import Field

from sp_planner.errors import UserInputError
from sp_planner.fileio import field_message, read_structured


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
