"""sp_planner.cli.validate_row.find_row: the row --row names, or one line saying what to give."""

from __future__ import annotations

import pytest

from sp_planner.cli.validate_row import find_row
from sp_planner.errors import UserInputError
from sp_planner.validation.corpus import load_corpus

ONE_ROW = """\
source: {id: src, title: t, where: w, url: "https://x", read_from: r, setup: s}
defaults: {model: Llama-2-7B, hardware: A800, num_nodes: 1, gpus_per_node: 8, pp: 1, zero: 1,
           recompute: none, micro_batch: 1, precision: bf16, framework: Megatron-LM,
           figure: model_tflops_per_gpu, convention: megatron_full_square, seq_len: 65536,
           global_batch: 1, ring: 1, dp: 1}
rows:
  - {id: a, table: T5 r1, tp: 4, ulysses: 2, measured: 260.2}
"""


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
