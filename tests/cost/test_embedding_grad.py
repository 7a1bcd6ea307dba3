"""The word embedding's gradient passes per micro-batch against hand counts (cost.embedding_grad)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.dp_exposure import Edges, last_calls_s
from sp_planner.cost.embedding_grad import (
    counted_embedding_grad_s,
    embedding_grad_bytes_per_element,
    embedding_grad_s,
)


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
    # What cost.step and the simulator count: the pp 1 passes, none on a pipeline's first stage.
    counted = counted_embedding_grad_s(model, hw, tp=np.array([1, 2, 1]), pp=np.array([1, 1, 2]), grad_bytes=4,
                                       wrapper="megatron")
    assert list(counted) == [t[0], t[1], 0.0]


def test_last_buckets_run_beside_the_embedding_passes():
    # 10 s of unhideable calls, 3 of them the embedding's own (issued after its backward): the
    # other 7 run beside the TP reduce-scatter (1 s) and the embedding's passes (2 s), 4 s exposed,
    # then the embedding's 3: 7 s. Without the passes, 6 + 3 = 9 s.
    assert float(last_calls_s(10.0, 3.0, Edges(0.0, 0.0, 1.0, bwd_tail_s=2.0))) == pytest.approx(7.0)
    assert float(last_calls_s(10.0, 3.0, Edges(0.0, 0.0, 1.0))) == pytest.approx(9.0)
