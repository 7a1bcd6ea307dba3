"""The first stage's embedding work against hand counts (cost.embedding_work)."""

import numpy as np
import pytest

from sp_planner.cost.embedding_work import embedding_work, position_table_bytes, stage_embedding_s
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

BW = 1e12 * 0.8  # the toy profile's memory-bound rate (tests/cost/conftest.py)


def test_a_learned_position_table_with_dropout_by_hand(toy_model, hardware):
    # Toy h 64, vocab 100, learned positions, hidden dropout 0.1; tp 2, 32 tokens a rank, Megatron's
    # DDP with fp32 main gradients. Forward: the position add 3 x 2 B x 32 x 64 = 12288 B (whole on
    # each TP rank) and the embedding dropout 5 B x 64 x 32/2 = 5120 B (after the scatter).
    # Backward: the word table (100/2 x 64, 12 B an element at pp 2: 38400 B), the position table
    # (32 x 64, 12 B: 24576 B), the dropout's 5 B x 64 x 16 = 5120 B.
    model = toy_model.model_copy(update={"position_embedding": "learned_absolute", "hidden_dropout": 0.1})
    work = embedding_work(model, hardware, tp=np.array([2]), pp=np.array([2]), tokens=np.array([32.0]),
                          seq_len=32, grad_bytes=4, wrapper="megatron")
    assert work.fwd_s[0] == pytest.approx((12288 + 5120) / BW)
    assert work.bwd_s[0] == pytest.approx((38400 + 24576 + 5120) / BW)
    # Without sequence parallelism the dropout runs on all 32 tokens of each TP rank.
    no_sp = embedding_work(model, hardware, tp=np.array([2]), pp=np.array([2]), tokens=np.array([32.0]),
                           seq_len=32, grad_bytes=4, wrapper="megatron", sequence_parallel=False)
    assert no_sp.fwd_s[0] - work.fwd_s[0] == pytest.approx(5120 / BW)
    # No wrapper's main_grad add counted: the position table's zero-fill only (2 B an element).
    assert position_table_bytes(model, seq_len=32, grad_bytes=4, wrapper=None) == 2 * 32 * 64
    # A rope model has neither table nor add, a model without dropout no dropout.
    assert position_table_bytes(toy_model, seq_len=32, grad_bytes=4, wrapper="megatron") == 0.0
    rope = embedding_work(toy_model, hardware, tp=np.array([2]), pp=np.array([2]), tokens=np.array([32.0]),
                          seq_len=32, grad_bytes=4, wrapper="megatron")
    assert rope.fwd_s[0] == 0.0 and rope.bwd_s[0] == pytest.approx(38400 / BW)
    # Both ways together on the loss stage at pp 1, on the first stage with pp > 1.
    head, first = stage_embedding_s(work._replace(fwd_s=np.array([1.0, 1.0]), bwd_s=np.array([2.0, 2.0])),
                                    np.array([1, 2]))
    assert list(head) == [3.0, 0.0] and list(first) == [0.0, 3.0]


def test_a_pipeline_fills_and_drains_through_the_first_stages_embedding(toy_model, hardware):
    # pp 2, one layer a stage, 8 micro-batches: the last stage (the loss) paces, and the first
    # stage's extra work lengthens the bubble once. Learned positions against none: the position
    # add (3 x 2 B x 4096 x 64) and the table's passes (12 B x 4096 x 64) on top.
    workload = Workload(seq_len=4096, global_batch=8)
    plan = ParallelPlan(dp=1, pp=2, micro_batch=1)

    def time(kind):
        model = toy_model.model_copy(update={"position_embedding": kind})
        return evaluate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=2).time

    learned, none = time("learned_absolute"), time("none")
    assert learned.bubble_s - none.bubble_s == pytest.approx((6 + 12) * 4096 * 64 / BW)
    assert learned.gemm_s == none.gemm_s
