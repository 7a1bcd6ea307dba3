"""sp_planner.cli.validate_row.find_row: the row --row names, or one line saying what to give."""

from __future__ import annotations

import pytest

from sp_planner.cli.validate_row import find_row
from sp_planner.errors import UserInputError
from sp_planner.validation.corpus import load_corpus
from tests.validation.corpus_text import FIRST_ROW, SOURCE_AND_DEFAULTS

ONE_ROW = SOURCE_AND_DEFAULTS + FIRST_ROW


@pytest.mark.parametrize("row_id", ["", " ", "\t"])
def test_an_empty_row_id_asks_for_one(tmp_path, row_id):
    # `--row "$ID"` with ID unset was "--row : no such row in the corpus".
    path = tmp_path / "one.yaml"
    path.write_text(ONE_ROW)
    corpus = load_corpus(path)
    assert find_row(corpus, " A ").id == "a"
    with pytest.raises(UserInputError) as err:
        find_row(corpus, row_id)
    assert str(err.value) == "--row is empty; give a row id (`sp-validate` lists every row id)"
