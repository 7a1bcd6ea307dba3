"""Dropout's passes and saved masks against hand counts (cost.dropout, cost.gemm_work,
cost.activations, cost.memory)."""

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.activations import activation_bytes_per_layer
from sp_planner.cost.dropout import (
    embedding_dropout_bytes_per_token,
    embedding_dropout_saved_bytes_per_token,
    hidden_dropout_bytes_per_token,
    hidden_dropout_saved_bytes_per_token,
)
from sp_planner.cost.gemm_work import gemm_work
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.precision import BF16
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

GPT3 = load_model("GPT-3-175B")  # h 12288, 96 heads, GeLU 4h, no dropout stated
GPT3_DROP = GPT3.model_copy(update={"hidden_dropout": 0.1, "attention_dropout": 0.1})


def test_bytes_by_hand():
    # Two fused bias-dropout-adds a layer: forward the bool mask (1 B), backward read the gradient
    # and the mask, write the gradient (2 + 1 + 2 B); h = 12288.
    assert hidden_dropout_bytes_per_token(GPT3_DROP) == (2 * 12288, 2 * 5 * 12288)
    assert hidden_dropout_saved_bytes_per_token(GPT3_DROP) == 2 * 12288
    # The embedding's eager dropout: read 2, write 2 + mask 1; backward read 2 + 1, write 2.
    assert embedding_dropout_bytes_per_token(GPT3_DROP) == (5 * 12288, 5 * 12288)
    assert embedding_dropout_saved_bytes_per_token(GPT3_DROP) == 12288
    # At p = 0 PyTorch's dropout returns its input: nothing runs, nothing is saved.
    assert hidden_dropout_bytes_per_token(GPT3) == (0.0, 0.0) == embedding_dropout_bytes_per_token(GPT3)
    assert hidden_dropout_saved_bytes_per_token(GPT3) == 0.0 == embedding_dropout_saved_bytes_per_token(GPT3)


def _layer(model, *, tp, recompute, sequence_parallel=True):
    stored, _ = activation_bytes_per_layer(
        model, Workload(seq_len=2048, global_batch=8), tp=np.array([tp]), ulysses=np.array([1]),
        ring=np.array([1]), micro_batch=np.array([1]), recompute=np.array([recompute]), unfused=True,
        sequence_parallel=sequence_parallel)
    return float(stored[0])


def test_a_gpt_layer_saves_korthikantis_34sbh_and_5as2b():
    # Korthikanti et al. 2022 Table 2 for GPT-3 175B (s 2048, b 1, h 12288, a 96) on t = 8 with the
    # unfused attention they ran: sbh(34/t + 5as/(ht)) with sequence parallelism, sbh(10 + 24/t +
    # 5as/(ht)) without, sbh 34/t under selective recompute, 2sbh/t under full.
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    assert _layer(GPT3_DROP, tp=t, recompute=RECOMPUTE_NONE) == s * b * h * (34 / t + 5 * a * s / (h * t))
    assert _layer(GPT3_DROP, tp=t, recompute=RECOMPUTE_NONE, sequence_parallel=False) == pytest.approx(
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t)), rel=1e-15)
    assert _layer(GPT3_DROP, tp=t, recompute=RECOMPUTE_SELECTIVE) == s * b * h * 34 / t
    assert _layer(GPT3_DROP, tp=t, recompute=RECOMPUTE_FULL) == 2 * s * b * h / t
    # Without dropout the two masks (sbh/t each) and the attention dropout's mask and output (3as^2b/t) go.
    assert _layer(GPT3, tp=t, recompute=RECOMPUTE_NONE) == s * b * h * (32 / t + 2 * a * s / (h * t))


def _work(model, hardware, *, sp):
    return gemm_work(model, hardware, seq_len=4096, tp=np.array([2]), micro_batch=np.array([1]), cp=np.array([1]),
                     ep=np.array([1]), etp=np.array([1]), precision=np.array([BF16]),
                     fp8_current=np.array([False]), gpus_per_node=4, sequence_parallel=sp)


@pytest.mark.parametrize("sp,tokens", [(True, 2048), (False, 4096)])
def test_the_layer_pays_the_masks_forward_and_their_kernel_backward(toy_model, hardware, sp, tokens):
    # Toy h 64 on tp 2, 4096 tokens: the dropouts run on 2048 tokens a rank with sequence
    # parallelism, on all 4096 without; forward 2 x 64 x 1 B a token, backward 2 x 64 x 5 B, at
    # 1 TB/s x 0.8 memory-bound.
    drop = toy_model.model_copy(update={"hidden_dropout": 0.1})
    plain, with_drop = _work(toy_model, hardware, sp=sp), _work(drop, hardware, sp=sp)
    assert with_drop.fwd_s[0] - plain.fwd_s[0] == pytest.approx(128 * tokens / 0.8e12)
    assert with_drop.bwd_s[0] - plain.bwd_s[0] == pytest.approx(640 * tokens / 0.8e12)
    assert with_drop.gemm_only_s[0] == plain.gemm_only_s[0]
    assert float(memory_pass_time_s(hardware, 128 * tokens)) == pytest.approx(128 * tokens / 0.8e12)


def test_the_first_stage_holds_the_embedding_masks_in_flight(toy_model, hardware):
    # pp 2, tp 2, 32 tokens, 8 micro-batches: the first stage holds min(pp, m) = 2 in flight.
    # Its one layer keeps two masks of 32 x 64 / 2 B, and the embedding's mask 32 x 64 / 2 B more.
    workload = Workload(seq_len=32, global_batch=8)
    plan = ParallelPlan(dp=1, tp=2, pp=2, zero=0, micro_batch=1)
    drop = toy_model.model_copy(update={"hidden_dropout": 0.1})

    def first_stage(model):
        return evaluate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=4).memory.activations_bytes

    assert first_stage(drop) - first_stage(toy_model) == 2 * (2 * 1024 + 1024)
