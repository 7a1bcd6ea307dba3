"""The word embedding's gradient passes per micro-batch against hand counts (cost.embedding_grad)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import Edges, last_calls_s
from sp_planner.cost.embedding_grad import (
    embedding_grad_bytes_per_element,
    embedding_grad_s,
    table_grad_bytes_per_element,
)
from sp_planner.cost.grad_buffer import MEGATRON_GRAD_SYNC
from sp_planner.cost.step import time_columns
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload


def test_bytes_per_element_by_hand():
    # Megatron, fp32 main gradients: zero-fill 2 + main_grad.add_ (read 4 + 2, write 4) = 12; tied on
    # one stage also the output layer's dummy zeros 2 and autograd's sum of the two (2 + 2 + 2): 20.
    assert embedding_grad_bytes_per_element(grad_bytes=4, main_grad_add=True, tied_on_stage=False,
                                            fused_output_wgrad=True) == 12
    assert embedding_grad_bytes_per_element(grad_bytes=4, main_grad_add=True, tied_on_stage=True,
                                            fused_output_wgrad=True) == 20
    # bf16 main gradients (grad_reduce_in_fp32 false): 2 + (2 + 2 + 2) = 8.
    assert embedding_grad_bytes_per_element(grad_bytes=2, main_grad_add=True, tied_on_stage=False,
                                            fused_output_wgrad=True) == 8
    # torch FSDP (its copy into the reduce-scatter input is cost.grad_buffer's): the zero-fill, and
    # tied the sum with the output GEMM's own gradient: 2, 8.
    assert embedding_grad_bytes_per_element(grad_bytes=4, main_grad_add=False, tied_on_stage=False,
                                            fused_output_wgrad=False) == 2
    assert embedding_grad_bytes_per_element(grad_bytes=4, main_grad_add=False, tied_on_stage=True,
                                            fused_output_wgrad=False) == 8


def test_the_wrapper_decides_the_main_grad_add_and_the_fused_output_gradient():
    # Megatron's DDP and apex add into main_grad and fuse the output's weight gradient (12 B, tied
    # 20 B as above); torch FSDP and no counted wrapper do neither (2 B, tied 8 B).
    for wrapper in ("megatron", "apex"):
        assert table_grad_bytes_per_element(grad_bytes=4, wrapper=wrapper, tied_on_stage=False) == 12
        assert table_grad_bytes_per_element(grad_bytes=4, wrapper=wrapper, tied_on_stage=True) == 20
    for wrapper in ("torch-fsdp2", None):
        assert table_grad_bytes_per_element(grad_bytes=4, wrapper=wrapper, tied_on_stage=False) == 2
        assert table_grad_bytes_per_element(grad_bytes=4, wrapper=wrapper, tied_on_stage=True) == 8


def test_megatron_gpt_1_7b_on_h100_by_hand():
    # Megatron-LM README's 1.7B (vocab 131,072, hidden 2048, tied) on one stage at tp 1: 20 B x
    # 268,435,456 = 5,368,709,120 B at 3.35 TB/s x 0.76 (h100-sxm memory_bound): 2.1087 ms a
    # micro-batch. At tp 2 half the rows; at pp 2 the first stage's table is untied there (12 B).
    hw = load_hardware("h100-sxm")
    model = load_model("Llama-3-8B").model_copy(update={"vocab_size": 131072, "hidden_size": 2048,
                                                        "tie_word_embeddings": True})
    t = embedding_grad_s(model, hw, tp=np.array([1, 2, 1]), pp=np.array([1, 1, 2]), grad_bytes=4,
                         wrapper="megatron")
    table = 131072 * 2048
    assert t[0] == pytest.approx(20 * table / (3.35e12 * 0.76))
    assert t[0] == pytest.approx(2.1087e-3, rel=1e-4)
    assert t[1] == pytest.approx(t[0] / 2)
    assert t[2] == pytest.approx(12 * table / (3.35e12 * 0.76))
    # No wrapper counted (grad_sync None): the zero-fill and the unfused tied sum, 8 B.
    none = embedding_grad_s(model, hw, tp=1, pp=1, grad_bytes=4, wrapper=None)
    assert float(none) == pytest.approx(8 * table / (3.35e12 * 0.76))


def _step(model, plan: ParallelPlan, megatron: bool):
    """The step's columns with Megatron's DDP counted, or no wrapper's passes (grad_sync None)."""
    return time_columns(model, H100, Workload(seq_len=8192, global_batch=16), Candidates.of_plan(plan),
                        gpus_per_node=8, grad_sync=MEGATRON_GRAD_SYNC if megatron else None).time


H100 = load_hardware("h100-sxm")
LLAMA = load_model("Llama-3-8B")
# The first stage's table at tp 1: 128,256 x 4096 elements; Megatron's main_grad add (10 of the
# 12 B an element) is what the counted wrapper adds over none (the zero-fill's 2 B), at 3.35 TB/s
# x 0.76: 2.0634 ms a micro-batch.
ADD_S = 10 * 128256 * 4096 / (3.35e12 * 0.76)


@pytest.mark.parametrize("tied", [False, True])
def test_a_pipeline_first_stage_runs_them_in_the_bubble(tied):
    # pp 2, even split: the last stage (the loss) paces and the first fills and drains the pipeline
    # once (Narayanan 2021): its passes lengthen the bubble, not the 4 micro-batches. Tied or not,
    # the first stage's table takes no output gradient (the last stage's copy does).
    assert ADD_S == pytest.approx(2.0634e-3, rel=1e-4)
    model = LLAMA.model_copy(update={"tie_word_embeddings": tied})
    plan = ParallelPlan(pp=2, dp=4)
    counted, none = _step(model, plan, True), _step(model, plan, False)
    assert float(counted.bubble_s[0] - none.bubble_s[0]) == pytest.approx(ADD_S)
    assert float(counted.gemm_s[0]) == pytest.approx(float(none.gemm_s[0]))


def test_a_pacing_first_stage_runs_them_every_micro_batch():
    # 20 layers on the first stage, 12 on the last: the first paces, its passes in each of the
    # 4 micro-batches (global batch 16 over dp 4) with the GEMMs.
    plan = ParallelPlan(pp=2, dp=4, first_stage_layers=20, last_stage_layers=12)
    counted, none = _step(LLAMA, plan, True), _step(LLAMA, plan, False)
    m = 16 / 4
    assert float(counted.gemm_s[0] - none.gemm_s[0]) == pytest.approx(m * ADD_S)


def test_last_buckets_run_beside_the_embedding_passes():
    # 10 s of unhideable calls, 3 of them the embedding's own (issued after its backward): the
    # other 7 run beside the TP reduce-scatter (1 s) and the embedding's passes (2 s), 4 s exposed,
    # then the embedding's 3: 7 s. Without the passes, 6 + 3 = 9 s.
    assert float(last_calls_s(10.0, 3.0, Edges(0.0, 0.0, 1.0, bwd_tail_s=2.0))) == pytest.approx(7.0)
    assert float(last_calls_s(10.0, 3.0, Edges(0.0, 0.0, 1.0))) == pytest.approx(9.0)


def test_an_interleaved_first_stage_runs_them_on_the_drain():
    # pp 8, vpp 2, 16 micro-batches: the drain's last min(pp, m) = 8 chunk-0 backwards pass the
    # stages 7 -> 0, the first stage's each longer by the passes (cost.pipeline_path, the drain's
    # pile-up): 8 of them where the 1F1B bubble would hold one at 1/vpp.
    plan = ParallelPlan(pp=8, vpp=2, dp=1)
    counted, none = _step(LLAMA, plan, True), _step(LLAMA, plan, False)
    assert float(counted.bubble_s[0] - none.bubble_s[0]) == pytest.approx(8 * ADD_S)
    assert float(counted.gemm_s[0]) == pytest.approx(float(none.gemm_s[0]))
