"""The step-end TP all-reduces of the gradients of parameters whole on every TP rank, the
sequence-parallel ones' (SUM) and DSA's indexer's (AVG), against hand counts (cost.replicated_grads)."""

import numpy as np
import pytest

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost import step, zero_read_terms
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.replicated_grads import (
    replicated_all_reduce_s,
    replicated_grad_bytes,
    replicated_sent_bytes,
    sequence_parallel_layer_params,
)
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.cost.states import MEGATRON_STATES
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

H800 = load_hardware("h800")
V32 = load_model("deepseek-v3.2-exp")  # 61 layers, each with a 13,959,424-parameter indexer
V3 = load_model("deepseek-v3")  # the same MLA without DSA
LLAMA = load_model("llama3-8b")  # 32 layers, h 4096, RMSNorm, no QK norm
QWEN3 = load_model("qwen3-8b")  # 36 layers, h 4096, QK norm over head_dim 128
MEGATRON = {"seq_len": 4096, "sums_sequence_parallel": True, "sequence_parallel": True}


def _one(**degrees) -> Candidates:
    return Candidates.of_plan(ParallelPlan(**degrees))


def _bytes(model, c, **options):
    return tuple(float(b[0]) for b in replicated_grad_bytes(model, c, MEGATRON_STATES, **(MEGATRON | options)))


def test_llama_and_qwen3_norms_by_hand():
    # Llama 3 8B, tp 8, pp 1: 32 layers x 2 norms x 4096 + the final norm's 4096 = 266,240 fp32
    # main_grad elements, 1,064,960 B; a ring over 8 ranks sends 2 x 7/8 of it, 1,863,680 B.
    c = _one(tp=8, dp=2, zero=1)
    assert _bytes(LLAMA, c) == (266_240 * 4, 0.0) == (1_064_960, 0.0)
    assert float(replicated_sent_bytes(LLAMA, c, MEGATRON_STATES, **MEGATRON).summed[0]) == 1_863_680
    t = float(replicated_all_reduce_s(LLAMA, H800, c, gpus_per_node=8, states=MEGATRON_STATES, **MEGATRON)[0])
    assert t == pytest.approx(float(ring_collective_time_s(H800, "all_reduce", 1_863_680, 8, 1, 8)))
    assert t > 1_863_680 / 200e9  # the ring's latency besides H800's 200 GB/s NVLink
    # Qwen3 8B adds its q_layernorm and k_layernorm, 2 x 128 a layer: 36 x 8448 + 4096 = 308,224.
    assert sequence_parallel_layer_params(QWEN3, moe=False, sequence_parallel=True) == 8448
    assert _bytes(QWEN3, _one(tp=4, dp=2, zero=1)) == (308_224 * 4, 0.0)
    # Without sequence parallelism only the QK norms, selected by name: 36 x 256.
    assert _bytes(QWEN3, _one(tp=4, dp=2, zero=1), sequence_parallel=False) == (9216 * 4, 0.0)
    assert _bytes(LLAMA, c, sequence_parallel=False) == (0.0, 0.0)


def test_deepseek_mla_down_projections_and_router_by_hand():
    # A dense layer: norms 2 x 7168, kv_down 7168 x (512 + 64) and its norm 512, q_down 7168 x 1536
    # and its norm 1536 = 15,155,200; a MoE layer adds the router's 7168 x 256 = 16,990,208.
    assert sequence_parallel_layer_params(V3, moe=False, sequence_parallel=True) == 15_155_200
    assert sequence_parallel_layer_params(V3, moe=True, sequence_parallel=True) == 16_990_208
    # pp 1: 3 dense + 58 MoE layers + the final norm = 1,030,904,832 elements.
    assert _bytes(V3, _one(tp=8, dp=4, ep=8, zero=1)) == (1_030_904_832 * 4, 0.0)
    # pp 4 with a first stage of 16 layers: 3 dense + 13 MoE, no final norm.
    c = _one(tp=8, pp=4, dp=2, ep=8, zero=1, first_stage_layers=16, last_stage_layers=15)
    assert _bytes(V3, c) == ((3 * 15_155_200 + 13 * 16_990_208) * 4, 0.0) == (1_065_353_216, 0.0)


def test_deepseek_v32_indexer_by_hand_is_a_second_call():
    # tp 8, pp 1, ZeRO-1: the whole fp32 main_grad of 61 x 13,959,424 indexer parameters,
    # 3,406,099,456 B, in the AVG call beside the SUM one (V3's buffer).
    c = _one(tp=8, dp=4, ep=8, zero=1)
    assert V32.indexer_params_per_layer == 13_959_424
    summed, averaged = _bytes(V32, c)
    assert (summed, averaged) == (1_030_904_832 * 4, 61 * 13_959_424 * 4) == (4_123_619_328, 3_406_099_456)
    t = float(replicated_all_reduce_s(V32, H800, c, gpus_per_node=8, states=MEGATRON_STATES, **MEGATRON)[0])
    calls = [float(ring_collective_time_s(H800, "all_reduce", b * 2 * 7 / 8, 8, 1, 8)) for b in (summed, averaged)]
    assert t == pytest.approx(sum(calls))


def test_stages_sharded_gradients_other_frameworks_and_tp1():
    # pp 4 on the even split: the first stage's 61 / 4 = 15.25 layers (cost.params counts it so);
    # Megatron-FSDP (ZeRO-3) hands each call its 1 / (dp x cp) = 1/8 main_grad shard.
    assert _bytes(V32, _one(tp=8, pp=4, zero=1))[1] == 15.25 * 13_959_424 * 4
    whole = _bytes(V32, _one(tp=8, dp=4, zero=1))
    assert _bytes(V32, _one(tp=8, dp=4, ring=2, zero=3)) == (whole[0] / 8, whole[1] / 8)
    # A framework without Megatron's SUM call keeps the indexer's only; tp 1 has neither.
    assert _bytes(V32, _one(tp=8, dp=4, zero=1), sums_sequence_parallel=False) == (0.0, whole[1])
    for model in (V32, LLAMA):
        c = _one(tp=1, dp=8, zero=1)
        assert _bytes(model, c) == (0.0, 0.0)
        assert float(replicated_all_reduce_s(model, H800, c, gpus_per_node=8, states=MEGATRON_STATES,
                                             **MEGATRON)[0]) == 0
    assert {name for name, r in FRAMEWORK_RUNTIME.items() if r.sums_sequence_parallel_grads} == {"megatron",
                                                                                                 "mindspeed"}


def test_comm_columns_carry_both_calls_on_the_tp_link():
    workload = Workload(seq_len=4096, global_batch=64)
    cols = comm_columns(V32, workload, _one(tp=8, dp=4, zero=1), gpus_per_node=8)
    assert int(cols.sent_bytes.tp_all_reduce[0]) == int((4_123_619_328 + 3_406_099_456) * 2 * 7 / 8)
    assert str(cols.links.tp_all_reduce[0]) == "intra"
    dense = comm_columns(LLAMA, workload, _one(tp=8, dp=2, zero=1), gpus_per_node=8)
    assert int(dense.sent_bytes.tp_all_reduce[0]) == 1_863_680
    none = comm_columns(LLAMA, workload, _one(tp=8, dp=2, zero=1), gpus_per_node=8,
                        sums_sequence_parallel_grads=False)
    assert int(none.sent_bytes.tp_all_reduce[0]) == 0 and str(none.links.tp_all_reduce[0]) == "none"


@pytest.mark.parametrize("model", [V32, LLAMA])
def test_the_step_exposes_them_as_tp_communication(monkeypatch, model):
    # With the term and without it (patched to 0) at the same plan: tp_comm_s grows by it alone.
    c, workload = _one(tp=8, dp=4, zero=1), Workload(seq_len=4096, global_batch=64)
    with_it = step.time_columns(model, H800, workload, c, gpus_per_node=8)
    monkeypatch.setattr(zero_read_terms, "replicated_all_reduce_s", lambda *a, **k: np.zeros(1))
    without = step.time_columns(model, H800, workload, c, gpus_per_node=8)
    extra = float(replicated_all_reduce_s(model, H800, c, gpus_per_node=8, states=MEGATRON_STATES, **MEGATRON)[0])
    assert extra > 0
    assert with_it.time.tp_comm_s[0] - without.time.tp_comm_s[0] == pytest.approx(extra)
    for name, a, b in zip(with_it.time._fields, with_it.time, without.time):
        if name not in ("tp_comm_s", "mfu_ceiling_s"):
            assert float(np.asarray(a)[0]) == float(np.asarray(b)[0]), name
