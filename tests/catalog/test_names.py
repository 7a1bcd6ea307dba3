"""Name normalisation and the unknown-name message shared by the model and hardware catalogs."""

import pytest

from sp_planner.catalog.names import (
    find,
    looks_like_path,
    lookup_table,
    normalise,
    unknown_name_error,
)


@pytest.mark.parametrize(
    ("spelling", "key"),
    [("Llama-3.1-8B", "llama318b"), ("LLAMA3_8b", "llama38b"), ("Qwen 2.5 7B", "qwen257b"), ("a800", "a800")],
)
def test_normalise_drops_case_and_separators(spelling, key):
    assert normalise(spelling) == key


def test_lookup_table_maps_names_and_aliases():
    table = lookup_table(["H100-SXM", "A800"], {"H100": "H100-SXM"})
    assert find("h100", table) == "H100-SXM"
    assert find("H100_sxm", table) == "H100-SXM"
    assert find("a-800", table) == "A800"
    assert find("a100", table) is None


def test_lookup_table_refuses_a_key_naming_two_entries():
    with pytest.raises(AssertionError, match="would name both"):
        lookup_table(["Llama-3.1-8B", "Llama-31-8B"], {})


def test_lookup_table_refuses_alias_to_unknown_name():
    with pytest.raises(AssertionError, match="not a built-in name"):
        lookup_table(["A800"], {"a100": "A100-80GB"})


@pytest.mark.parametrize(
    ("arg", "is_path"),
    [
        ("llama3-8b", False),
        ("Qwen2.5-7B", False),
        ("h100.yaml", True),
        ("cfg/config.json", True),
        ("./x", True),
    ],
)
def test_looks_like_path(arg, is_path):
    assert looks_like_path(arg) is is_path


def test_unknown_name_error_is_one_line_with_suggestion_and_every_name():
    table = lookup_table(["Llama-3-8B", "Llama-2-7B"], {})
    labels = {"what": "model", "known_label": "Built-in models", "hint": "Or a path."}
    message = str(unknown_name_error("llama3-80b", table, **labels))
    assert "\n" not in message
    assert message.startswith("unknown model 'llama3-80b'.")
    assert "Did you mean Llama-3-8B?" in message
    assert "Built-in models: Llama-3-8B, Llama-2-7B." in message
    assert message.endswith("Or a path.")


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_or_hardware_name_is_refused_not_read_as_the_current_folder(name):
    from sp_planner.catalog import load_hardware, load_model
    from sp_planner.errors import UserInputError

    with pytest.raises(UserInputError, match=r"^the model name is empty"):
        load_model(name)
    with pytest.raises(UserInputError, match=r"^the hardware name is empty"):
        load_hardware(name)


def test_a_name_the_query_begins_is_suggested_before_the_closest_spelling():
    # 'gb200' is closer in spelling to B200 than to GB200-NVL72, but begins only the latter; a
    # prefix of two names (A100-40GB, A100-80GB) falls back to the closest spelling.
    table = lookup_table(["B200", "GB200-NVL72", "A100-40GB", "A100-80GB"], {})
    labels = {"what": "hardware", "known_label": "Built-in", "hint": "Or a path."}
    assert "Did you mean GB200-NVL72?" in str(unknown_name_error("gb200", table, **labels))
    assert "Did you mean A100-80GB?" in str(unknown_name_error("a100", table, **labels))  # difflib's pick
    assert "Did you mean B200?" in str(unknown_name_error("b20", table, **labels))
