"""specs.hardware_limits: a hardware figure is a finite number in its range, never a YAML boolean
(read as a file is, fileio.validate_strict)."""

import pytest
from pydantic import Field, ValidationError

from sp_planner.fileio import errors_line, validate_strict
from sp_planner.specs.hardware_limits import MAX_FLOPS, MIN_FLOPS, FiniteModel, Fraction


class _Figures(FiniteModel):
    peak_flops: float = Field(ge=MIN_FLOPS, le=MAX_FLOPS)
    share: float = Fraction
    measured: bool = False


def _refused(**figures) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        validate_strict(_Figures, {"peak_flops": 1e15, "share": 0.5, **figures})
    return refused.value


def _refusal(**figures) -> str:
    return str(_refused(**figures))


def test_figures_in_range_are_kept():
    figures = _Figures(peak_flops=MAX_FLOPS, share=1.0, measured=True)
    assert (figures.peak_flops, figures.share, figures.measured) == (1e24, 1.0, True)
    assert _Figures(peak_flops=MIN_FLOPS, share=1e-9).peak_flops == 1e8


@pytest.mark.parametrize("figures, expected", [
    ({"peak_flops": float("inf")}, "Input should be a finite number"),
    ({"peak_flops": float("nan")}, "Input should be a finite number"),
    ({"peak_flops": 1e30}, "less than or equal to 1000000000000000000000000"),
    ({"peak_flops": 1e-30}, "greater than or equal to 100000000"),
    ({"share": 0.0}, "greater than 0"),
    ({"share": 1.5}, "less than or equal to 1"),
])
def test_a_typo_is_refused_naming_its_range(figures, expected):
    assert expected in _refusal(**figures)


@pytest.mark.parametrize("figures, expected", [
    ({"peak_flops": True}, "peak_flops: expected a number, got true"),
    ({"share": False}, "share: expected a number, got false"),
    ({"measured": "yes"}, 'measured: expected true or false, got "yes"'),
])
def test_a_yaml_boolean_is_no_number_and_a_string_no_boolean(figures, expected):
    assert errors_line(_refused(**figures)) == expected


def test_unknown_fields_are_refused_and_figures_frozen():
    assert "Extra inputs are not permitted" in _refusal(peak_flop=1e15)
    with pytest.raises(ValidationError):
        _Figures(peak_flops=1e15, share=0.5).share = 0.7
