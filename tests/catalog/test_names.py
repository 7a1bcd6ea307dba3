"""Name normalisation and the unknown-name message shared by the model and hardware catalogs."""

import pytest

from sp_planner.catalog.names import (
    builtin_file_error,
    close_names,
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


def test_unknown_name_error_is_one_short_line_with_the_closest_names_and_where_all_are():
    table = lookup_table(["Llama-3-8B", "Llama-2-7B", "Qwen3-8B"], {})
    labels = {"what": "model", "listed_in": "README.md", "hint": "or a path."}
    message = str(unknown_name_error("llama3-80b", table, **labels))
    # llama380b against llama38b 16/17, llama27b 12/17, qwen38b 8/16: the last below difflib's 0.6.
    assert message == ("unknown model 'llama3-80b'. Did you mean Llama-3-8B (or Llama-2-7B)? README.md lists all 3; "
                       "or a path.")
    assert str(unknown_name_error("zzz", table, **labels)) == "unknown model 'zzz'. README.md lists all 3; or a path."


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
    assert close_names("gb200", table) == ["GB200-NVL72", "B200"]
    assert close_names("a100", table) == ["A100-80GB", "A100-40GB"]  # difflib's order: 8/12 against 7/12
    assert close_names("b20", table) == ["B200"]


def test_close_names_stop_at_the_limit_and_fold_aliases_into_their_names():
    table = lookup_table(["H100-SXM", "H200", "H800", "H20"], {"H100": "H100-SXM"})
    # h100sx begins h100sxm; the alias h100 (8/10) is H100-SXM again; h800 and h200 tie at 6/10, and
    # difflib ranks a tie by the greater key; h20 (4/9) is below the 0.6 cutoff.
    assert close_names("h100sx", table) == ["H100-SXM", "H800", "H200"]
    assert close_names("h100sx", table, limit=1) == ["H100-SXM"]


@pytest.mark.parametrize(("arg", "builtin"), [
    ("a800.yaml", "A800"), ("./h100-sxm.yml", "H100-SXM"), ("configs/llama3-8b.json", "Llama-3-8B"),
    ("./Llama-3-8B", "Llama-3-8B"), ("cluster.yaml", None), ("a800.csv", None),
])
def test_a_builtin_given_as_a_missing_path_is_found_by_its_last_part(tmp_path, monkeypatch, arg, builtin):
    monkeypatch.chdir(tmp_path)
    table = lookup_table(["A800", "H100-SXM", "Llama-3-8B"], {})
    error = builtin_file_error(arg, table, what="hardware profile", kind="profile")
    assert (None if error is None else str(error)) == (None if builtin is None else (
        f"hardware profile file {arg} does not exist; for the built-in profile give its name alone: {builtin}"))


def test_a_path_that_exists_is_not_taken_for_a_builtin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a800.yaml").write_text("")
    assert builtin_file_error("a800.yaml", lookup_table(["A800"], {}), what="hardware profile", kind="profile") is None
