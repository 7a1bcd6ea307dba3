"""DSA's duplicated indexer: its gradients' step-end TP all-reduce against hand counts
(cost.indexer_grad_sync)."""

import numpy as np
import pytest

from sp_planner.candidates import Candidates
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost import step
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.indexer_grad_sync import indexer_all_reduce_s, indexer_grad_bytes, indexer_sent_bytes
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.states import MEGATRON_STATES
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

H800 = load_hardware("h800")
V32 = load_model("deepseek-v3.2-exp")  # 61 layers, each with a 13,959,424-parameter indexer
V3 = load_model("deepseek-v3")  # the same MLA without DSA


def _one(**degrees) -> Candidates:
    return Candidates.of_plan(ParallelPlan(**degrees))


def test_deepseek_v32_at_tp8_by_hand():
    # tp 8, pp 1, ZeRO-1: the whole fp32 main_grad of 61 x 13,959,424 indexer parameters,
    # 3,406,099,456 B; a ring all-reduce over 8 ranks sends 2 x 7/8 of it, 5,960,674,048 B.
    c = _one(tp=8, dp=4, zero=1)
    assert V32.indexer_params_per_layer == 13_959_424
    assert float(indexer_grad_bytes(V32, c, MEGATRON_STATES)[0]) == 61 * 13_959_424 * 4 == 3_406_099_456
    assert float(indexer_sent_bytes(V32, c, MEGATRON_STATES)[0]) == 3_406_099_456 * 2 * 7 / 8 == 5_960_674_048
    t = float(indexer_all_reduce_s(V32, H800, c, gpus_per_node=8, states=MEGATRON_STATES)[0])
    assert t == pytest.approx(float(ring_collective_time_s(H800, "all_reduce", 5_960_674_048, 8, 1, 8)))
    assert t >= 5_960_674_048 / 200e9  # no faster than H800's 200 GB/s NVLink


def test_stages_and_sharded_gradients_send_less_and_tp1_nothing():
    # pp 4: the first stage's layers, 61 / 4 = 15.25 on the even split (cost.params counts it so);
    # Megatron-FSDP (ZeRO-3) hands the call its 1 / (dp x cp) = 1/8 main_grad shard.
    assert float(indexer_grad_bytes(V32, _one(tp=8, pp=4, zero=1), MEGATRON_STATES)[0]) == 15.25 * 13_959_424 * 4
    whole = 61 * 13_959_424 * 4
    assert float(indexer_grad_bytes(V32, _one(tp=8, dp=4, ring=2, zero=3), MEGATRON_STATES)[0]) == whole / 8
    for model, c in ((V32, _one(tp=1, dp=8, zero=1)), (V3, _one(tp=8, dp=4, zero=1))):
        assert float(indexer_grad_bytes(model, c, MEGATRON_STATES)[0]) == 0
        assert float(indexer_all_reduce_s(model, H800, c, gpus_per_node=8, states=MEGATRON_STATES)[0]) == 0


def test_comm_columns_carry_its_bytes_on_the_tp_link():
    workload = Workload(seq_len=4096, global_batch=64)
    cols = comm_columns(V32, workload, _one(tp=8, dp=4, zero=1), gpus_per_node=8)
    assert int(cols.sent_bytes.tp_all_reduce[0]) == 5_960_674_048
    assert str(cols.links.tp_all_reduce[0]) == "intra"
    none = comm_columns(V32, workload, _one(tp=1, dp=32, zero=1), gpus_per_node=8)
    assert int(none.sent_bytes.tp_all_reduce[0]) == 0 and str(none.links.tp_all_reduce[0]) == "none"


def test_the_step_exposes_it_as_tp_communication(monkeypatch):
    # With the term and without it (patched to 0) at the same plan: tp_comm_s grows by it alone.
    c, workload = _one(tp=8, dp=4, zero=1), Workload(seq_len=4096, global_batch=64)
    with_it = step.time_columns(V32, H800, workload, c, gpus_per_node=8)
    monkeypatch.setattr(step, "indexer_all_reduce_s", lambda *a, **k: np.zeros(1))
    without = step.time_columns(V32, H800, workload, c, gpus_per_node=8)
    extra = float(indexer_all_reduce_s(V32, H800, c, gpus_per_node=8, states=MEGATRON_STATES)[0])
    assert extra > 0
    assert with_it.time.tp_comm_s[0] - without.time.tp_comm_s[0] == pytest.approx(extra)
    for name, a, b in zip(with_it.time._fields, with_it.time, without.time):
        if name not in ("tp_comm_s", "mfu_ceiling_s"):
            assert float(np.asarray(a)[0]) == float(np.asarray(b)[0]), name
