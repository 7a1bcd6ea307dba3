"""sp_planner.missing_file: the fix hint after '<what> file PATH does not exist'."""

from __future__ import annotations

from sp_planner.missing_file import missing_file_hint


def test_a_missing_folder_is_named(tmp_path):
    assert missing_file_hint(tmp_path / "nope" / "plan.json") == (
        f"; folder {tmp_path}/nope does not exist either: check the path")


def test_the_closest_file_beside_it_is_offered(tmp_path):
    (tmp_path / "thresholds.yaml").write_text("")
    (tmp_path / "plan.json").write_text("")
    assert missing_file_hint(tmp_path / "threshold.yaml") == f"; did you mean {tmp_path}/thresholds.yaml?"
    assert missing_file_hint(tmp_path / "Plan.json") == f"; did you mean {tmp_path}/plan.json?"  # case
    # A file that only shares the extension is no slip: nothing offered.
    assert missing_file_hint(tmp_path / "cluster.json") == "; check the path"


def test_a_slip_of_case_is_offered_as_the_folder_spells_it(tmp_path):
    (tmp_path / "plan.json").write_text("{}")
    assert missing_file_hint(tmp_path / "Plan.JSON") == f"; did you mean {tmp_path / 'plan.json'}?"
    assert missing_file_hint(tmp_path / "PLAN.json") == f"; did you mean {tmp_path / 'plan.json'}?"


def test_a_bare_name_is_offered_bare_and_said_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pinned.json").write_text("")
    assert missing_file_hint(tmp_path.joinpath("pined.json").relative_to(tmp_path)) == "; did you mean pinned.json?"
    assert missing_file_hint(tmp_path.joinpath("x.yaml").relative_to(tmp_path)) == (
        f"; check the path (a relative path starts at the current folder, {tmp_path})")
