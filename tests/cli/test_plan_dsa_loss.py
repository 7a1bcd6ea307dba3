"""sp-plan --dsa-indexer-loss: the DSA indexer trained with its sparse KL loss, in the plan file
and the flags; the losses sp-planner does not time refused in one line."""

from __future__ import annotations

from sp_planner.planfile import read_plan_file
from tests.cli.conftest import assert_one_line_error

# The 128K question's best plan (docs/cost-model.md, Stop 63), which fits with the loss or without.
PINNED = ["--model", "deepseek-v3.2-exp", "--hardware", "h800", "--nodes", "32", "--seq-len", "128k", "--tp", "1",
          "--pp", "1", "--dp", "8", "--ulysses", "1", "--ring", "32", "--cp-comm", "allgather", "--ep", "16",
          "--zero", "3", "--recompute", "full", "--micro-batch", "1"]


def test_the_sparse_loss_is_recorded_and_emitted(sp_plan, tmp_path):
    out = tmp_path / "plan.json"
    result = sp_plan(*PINNED, "--dsa-indexer-loss", "sparse", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert read_plan_file(out).model.dsa.indexer_loss == "sparse"
    assert "    --dsa-indexer-use-sparse-loss" in result.stdout and "not trained" not in result.stdout + result.stderr
    plain = sp_plan(*PINNED, "--out", str(tmp_path / "plain.json"))
    assert read_plan_file(tmp_path / "plain.json").model.dsa.indexer_loss == "none"
    assert "    --dsa-indexer-loss-coeff" not in plain.stdout and "not trained" in plain.stdout + plain.stderr


def test_the_dense_loss_and_a_model_without_an_indexer_are_refused(sp_plan):
    assert_one_line_error(sp_plan(*PINNED, "--dsa-indexer-loss", "dense"), "--dsa-indexer-loss dense",
                          "no tilelang kernel", "use sparse or none")
    result = sp_plan("--model", "DeepSeek-V3", "--hardware", "h800", "--nodes", "8", "--seq-len", "32k",
                     "--dsa-indexer-loss", "sparse")
    assert_one_line_error(result, "--dsa-indexer-loss sparse", "no DeepSeek Sparse Attention indexer")
