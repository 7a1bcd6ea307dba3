"""The shipped corpus, loaded and scored once per session (scoring evaluates every row)."""

from __future__ import annotations

import pytest

from sp_planner.validation.corpus import default_corpus_path, load_corpus
from sp_planner.validation.score import score_corpus


@pytest.fixture(scope="session")
def corpus():
    return load_corpus(default_corpus_path())


@pytest.fixture(scope="session")
def scored(corpus):
    return score_corpus(corpus)
