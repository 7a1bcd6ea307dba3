"""The tied embedding's step-end all-reduce between a pipeline's ends against hand counts
(cost.tied_embedding)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.collective_sizes import size_factor
from sp_planner.cost.states import DEEPSPEED_STATES, MEGATRON_STATES
from sp_planner.cost.step import time_columns
from sp_planner.cost.tied_embedding import embedding_group_stride, tied_all_reduce_s, tied_grad_bytes
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

A100 = load_hardware("a100-80gb")
GPT3 = load_model("GPT-3-175B")  # vocab 50,257, hidden 12,288, tied
TABLE = 50257 * 12288


def _one(**degrees) -> Candidates:
    return Candidates.of_plan(ParallelPlan(**degrees))


def test_gpt3_175b_at_tp8_pp8_on_a100_nodes_by_hand():
    # tp 8, pp 8, dp 16 on 128 DGX A100 nodes: each end's fp32 main_grad is 50,257 x 12,288 / 8 =
    # 77,194,752 elements, 308,779,008 B. The ends are 7 x 128 ranks apart (pp outermost), one a
    # node: a two-rank ring all-reduce sends the buffer once (2 x 1/2) through each end's 200G NIC
    # at 25 GB/s x 0.96, plus 2 network steps of 14 us: 12.894 ms.
    c = _one(tp=8, pp=8, dp=16)
    assert float(tied_grad_bytes(GPT3, c, MEGATRON_STATES)[0]) == 4 * TABLE / 8 == 308_779_008
    assert int(embedding_group_stride(c, 8)[0]) == 7 * 128
    t = float(tied_all_reduce_s(GPT3, A100, c, gpus_per_node=8, states=MEGATRON_STATES)[0])
    assert t == pytest.approx(308_779_008 / (25e9 * 0.96) + 2 * 14e-6)
    assert t == pytest.approx(12.894e-3, rel=1e-4)


def test_a_pipeline_inside_one_node_all_reduces_over_nvlink():
    # tp 2, pp 4 on one DGX A100: 1,235,116,032 B at 300 GB/s x 0.78 plus 2 NVLink steps of 3.4 us,
    # times the 8 x A100 nccl-tests all_reduce curve's slowdown at that size (cost.collective_sizes,
    # the nearest measured group for two ranks): 1.0189, 5.385 ms.
    c = _one(tp=2, pp=4)
    assert int(embedding_group_stride(c, 8)[0]) == 1
    t = float(tied_all_reduce_s(GPT3, A100, c, gpus_per_node=8, states=MEGATRON_STATES)[0])
    factor = float(size_factor(A100, "all_reduce", 4 * TABLE / 2, 2))
    assert factor == pytest.approx(1.0189, rel=1e-4)
    assert t == pytest.approx(factor * (4 * TABLE / 2 / (300e9 * 0.78) + 2 * 3.4e-6))
    assert t == pytest.approx(5.385e-3, rel=1e-3)


def test_only_a_tied_pipeline_pays_and_sharded_gradients_send_their_shard():
    untied = GPT3.model_copy(update={"tie_word_embeddings": False})
    assert float(tied_grad_bytes(untied, _one(tp=8, pp=8, dp=16), MEGATRON_STATES)[0]) == 0
    assert float(tied_grad_bytes(GPT3, _one(tp=8, dp=16), MEGATRON_STATES)[0]) == 0
    assert float(tied_all_reduce_s(GPT3, A100, _one(tp=8, dp=16), gpus_per_node=8, states=MEGATRON_STATES)[0]) == 0
    # ZeRO-1 (the distributed optimizer) leaves the buffer whole; Megatron-FSDP's ZeRO-2/3 hand the
    # all-reduce their main_grad shard, 1 / (dp x cp) = 1/32 of it; a bf16 buffer is half.
    whole = tied_grad_bytes(GPT3, _one(tp=8, pp=8, dp=16, zero=1), MEGATRON_STATES)[0]
    assert whole == 4 * TABLE / 8
    assert tied_grad_bytes(GPT3, _one(tp=8, pp=8, dp=16, ring=2, zero=2), MEGATRON_STATES)[0] == whole / 32
    assert tied_grad_bytes(GPT3, _one(tp=8, pp=8, dp=16, zero=1), DEEPSPEED_STATES)[0] == whole / 2


def test_the_step_exposes_it_as_pipeline_communication():
    # Tied against untied at the same plan: the step and its pp_comm_s grow by the all-reduce alone.
    plan = dict(tp=8, pp=8, dp=16)
    workload = Workload(seq_len=2048, global_batch=1536)
    untied = GPT3.model_copy(update={"tie_word_embeddings": False})
    tied_step, untied_step = (time_columns(m, A100, workload, _one(**plan), gpus_per_node=8) for m in (GPT3, untied))
    extra = float(tied_all_reduce_s(GPT3, A100, _one(**plan), gpus_per_node=8, states=MEGATRON_STATES)[0])
    assert tied_step.time.pp_comm_s[0] - untied_step.time.pp_comm_s[0] == pytest.approx(extra)
    # The output layer is the tied copy on the last stage either way (cost.params): nothing else
    # moves but the stretch to the MFU ceiling, which follows the step.
    for name, a, b in zip(tied_step.time._fields, tied_step.time, untied_step.time):
        if name not in ("pp_comm_s", "mfu_ceiling_s"):
            assert float(np.asarray(a)[0]) == float(np.asarray(b)[0]), name
