"""torchtitan's per-parameter TP all-reduces of Partial gradients in FSDP2's post-backward, against
hand counts (cost.partial_tp_grads)."""

import numpy as np
import pytest

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.partial_tp_grads import (
    partial_grad_all_reduce_s,
    partial_grad_calls,
    partial_grad_elem_bytes,
    partial_grad_layer_params,
    partial_grad_sent_bytes,
)
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, TORCHTITAN_RUNTIMES
from sp_planner.cost.zero_read_terms import zero_read_terms
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

H800 = load_hardware("h800")
LLAMA = load_model("llama3-8b")  # 32 layers, h 4096, RMSNorm
V3 = load_model("deepseek-v3")  # h 7168, q_lora_rank 1536, kv_lora_rank 512, rope head dim 64
QWEN3 = load_model("qwen3-8b")  # 36 layers, h 4096, head_dim 128, QK norms


def _one(**degrees) -> Candidates:
    return Candidates.of_plan(ParallelPlan(**degrees))


def _seconds(model, c, m):
    return float(partial_grad_all_reduce_s(model, H800, c, m, gpus_per_node=8, pp_stage_grad_sync=True)[0])


def test_each_layers_partial_parameters_by_hand():
    assert partial_grad_layer_params(LLAMA) == (4096, 4096)  # attention_norm, ffn_norm
    # + wkv_a 7168 x (512 + 64), kv_norm 512, wq_a 7168 x 1536, q_norm 1536
    assert partial_grad_layer_params(V3) == (7168, 7168, 4_128_768, 512, 11_010_048, 1536)
    # 32 layers' two norms and, at pp 1, the final norm: 65 calls of 4096 elements.
    assert {n: int(k[0]) for n, k in partial_grad_calls(LLAMA, np.array([32]), np.array([1])).items()} == {4096: 65}
    assert int(partial_grad_calls(LLAMA, np.array([16]), np.array([2]))[4096][0]) == 32


def test_every_micro_batch_reduces_in_bf16_without_pp():
    # Llama 3 8B, tp 8 x dp 2, FSDP, 4 micro-batches: 4 x 65 all-reduces, each rank sending
    # 2 x 7/8 x 4096 x 2 B = 14,336 B.
    c = _one(tp=8, dp=2, zero=3)
    assert int(partial_grad_elem_bytes(c, True)[0]) == 2
    one = float(ring_collective_time_s(H800, "all_reduce", 14_336, 8, 1, 8))
    assert _seconds(LLAMA, c, 4) == pytest.approx(4 * 65 * one)
    assert _seconds(LLAMA, c, 4) > 260 * 14_336 / 200e9  # latency-bound: well above the bytes' NVLink time


def test_a_synced_pipeline_stage_reduces_fp32_once():
    # pp 2, FSDP: torch.distributed.pipelining reduces once after the stage's last backward, the
    # gradients accumulated in fp32 (reduce_dtype): 16 layers x 2 norms, no final norm on stage 0,
    # tp 4 sending 2 x 3/4 x 4096 x 4 B = 24,576 B.
    c = _one(tp=4, pp=2, dp=8, zero=3)
    assert int(partial_grad_elem_bytes(c, True)[0]) == 4
    one = float(ring_collective_time_s(H800, "all_reduce", 24_576, 4, 1, 8))
    assert _seconds(LLAMA, c, 8) == pytest.approx(32 * one)


def test_their_bytes_join_the_tp_all_reduce_column():
    # The same calls' bytes: 4 x 65 x 14,336 B a step at tp 8 x dp 2, FSDP, 4 micro-batches; at pp 2
    # 32 x 24,576 B once. cost.comm's tp_all_reduce adds them to the step-end calls' for torchtitan.
    assert float(partial_grad_sent_bytes(LLAMA, _one(tp=8, dp=2, zero=3), 4, pp_stage_grad_sync=True)[0]) == (
        4 * 65 * 14_336)
    assert float(partial_grad_sent_bytes(LLAMA, _one(tp=4, pp=2, dp=8, zero=3), 8, pp_stage_grad_sync=True)[0]) == (
        32 * 24_576)
    assert float(partial_grad_sent_bytes(LLAMA, _one(tp=1, dp=16, zero=3), 4, pp_stage_grad_sync=True)[0]) == 0.0
    c = _one(tp=8, dp=2, zero=3)
    workload = Workload(seq_len=8192, global_batch=8)  # 4 micro-batches at dp 2

    def sent(partial: bool) -> int:
        return int(comm_columns(LLAMA, workload, c, gpus_per_node=8, pp_stage_grad_sync=True,
                                partial_tp_grads=partial).sent_bytes.tp_all_reduce[0])
    assert sent(True) - sent(False) == 4 * 65 * 14_336


def test_no_fsdp_reduce_counts_once_and_tp_1_nothing():
    c = _one(tp=8, dp=2, zero=0)
    one = float(ring_collective_time_s(H800, "all_reduce", 14_336, 8, 1, 8))
    assert _seconds(LLAMA, c, 4) == pytest.approx(65 * one)
    assert _seconds(LLAMA, _one(tp=1, dp=16, zero=3), 4) == 0.0


def test_only_torchtitan_runs_them_and_they_join_the_replicated_term():
    assert [name for name, rt in FRAMEWORK_RUNTIME.items() if rt.partial_tp_grads] == ["torchtitan"]
    assert all(rt.partial_tp_grads and not rt.sums_sequence_parallel_grads for rt in TORCHTITAN_RUNTIMES.values())
    c = _one(tp=8, dp=2, zero=3)
    rt = FRAMEWORK_RUNTIME["torchtitan"]
    kw = {"gpus_per_node": 8, "seq_len": 4096, "states": rt.states, "sums_sequence_parallel_grads": False,
          "overlap": rt.overlap}
    layers = np.array([32])
    without = zero_read_terms(LLAMA, H800, c, layers, np.array([4]), partial_tp_grads=False, **kw)[2]
    with_ = zero_read_terms(LLAMA, H800, c, layers, np.array([4]), partial_tp_grads=True, **kw)[2]
    assert float(without[0]) == 0.0
    assert float(with_[0]) == pytest.approx(_seconds(LLAMA, c, np.array([4])))


def test_qwen3s_qk_norms_reduce_their_partial_gradients_too():
    # q_norm and k_norm: RMSNorm weights of head_dim 128, whole on each TP rank, their gradients
    # Partial over TP (module docstring): two more calls a layer, 36 x 2 = 72 of 128 elements at
    # pp 1 beside the 36 x 2 + 1 = 73 of 4096.
    assert partial_grad_layer_params(QWEN3) == (4096, 4096, 128, 128)
    calls = partial_grad_calls(QWEN3, np.array([36]), np.array([1]))
    assert {n: int(k[0]) for n, k in calls.items()} == {128: 72, 4096: 73}
    # tp 8 x dp 2, FSDP, 4 micro-batches, bf16: each q/k norm call sends 2 x 7/8 x 128 x 2 B = 448 B,
    # each hidden norm's 14,336 B; 4 x 72 latency-bound calls more than before.
    c = _one(tp=8, dp=2, zero=3)
    small = float(ring_collective_time_s(H800, "all_reduce", 448, 8, 1, 8))
    big = float(ring_collective_time_s(H800, "all_reduce", 14_336, 8, 1, 8))
    assert _seconds(QWEN3, c, 4) == pytest.approx(4 * (72 * small + 73 * big), rel=1e-12)
    assert 4 * 72 * small > 0.2 * _seconds(QWEN3, c, 4)  # latency, not bytes: a fifth of the term or more
    assert float(partial_grad_sent_bytes(QWEN3, c, 4, pp_stage_grad_sync=True)[0]) == 4 * (72 * 448 + 73 * 14_336)
