"""cost.kind_table: each layer kind priced once per evaluation, on every row its readers read, and
each reader's rows of it what pricing those rows alone gives, bit for bit."""

import numpy as np
import pytest

import sp_planner.cost.step as step
import sp_planner.cost.step_layers as step_layers
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.kind_table import kind_table, mtp_layer_times
from sp_planner.cost.layer_kinds import distinct_kinds, kind_model
from sp_planner.cost.layer_times import candidate_layer_times
from sp_planner.cost.mtp import mtp_layer_model
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload
from tests.cost.test_layer_kinds import RUNTIME

SEQ = 8192
WORKLOAD = Workload(seq_len=SEQ, global_batch=256)
# Every reader: pipelined rows (interleaved and not), ZeRO-3 walks on a single stage and on a
# pipeline's stages, and rows no reader needs but the MTP depths (ZeRO-1, pp 1).
PLANS = (ParallelPlan(pp=2, vpp=2, dp=64, ep=16, zero=3), ParallelPlan(pp=4, dp=32, ep=16, zero=1),
         ParallelPlan(tp=8, dp=16, ep=16, zero=3), ParallelPlan(tp=8, dp=16, ep=16, zero=1))


def _candidates():
    return Candidates.concat([Candidates.of_plan(p) for p in PLANS])


@pytest.mark.parametrize("name, mtp", [("Llama-4-Maverick-17B-128E", 0), ("DeepSeek-V3", 1)])
def test_each_kind_is_priced_once_per_evaluation(monkeypatch, name, mtp):
    # The step's readers (stage_layer_times, kind_passes, the MTP layer) all read one table: the
    # layer-times callback runs once for the model's average layer and once per kind.
    model = load_model(name).model_copy(update={"mtp_layers": mtp})
    hardware, c = load_hardware("h100-sxm"), _candidates()
    calls: list[str] = []

    def counted(priced_model, *args, **kwargs):
        calls.append("average" if priced_model is model else "kind")
        return candidate_layer_times(priced_model, *args, **kwargs)

    monkeypatch.setattr(step_layers, "candidate_layer_times", counted)
    step.time_columns(model, hardware, WORKLOAD, c, gpus_per_node=8)
    kinds = len(distinct_kinds(model, SEQ))
    assert kinds == 2 and calls == ["average"] + ["kind"] * kinds


def test_each_reader_reads_what_its_rows_priced_alone_give():
    model = load_model("Llama-4-Maverick-17B-128E").model_copy(update={"mtp_layers": 1})
    hardware, c = load_hardware("h100-sxm"), _candidates()

    def price(kind, rows):
        return candidate_layer_times(kind, hardware, WORKLOAD, rows, **RUNTIME)

    table = kind_table(model, SEQ, c, 4, price)
    assert table.walks is not None
    assert table.piped.tolist() == [0, 1] and table.walks.rows.tolist() == [0, 2]
    for k, kind in enumerate(table.kinds):
        for rows in (table.piped, table.walks.rows):
            alone = price(kind_model(model, kind), c.take(rows))
            assert np.array_equal(np.broadcast_to(table.at(k, rows).fwd_s, (len(rows),)), alone.fwd_s)
            assert np.array_equal(np.broadcast_to(table.at(k, rows).attn.bwd_s, (len(rows),)), alone.attn.bwd_s)
    # The MTP depths' layer on every row: the last layer's kind (MoE), as mtp_layer_model gives it.
    mtp = price(mtp_layer_model(model, SEQ), c)
    assert np.array_equal(mtp_layer_times(table, model, SEQ, price(model, c)).bwd_s, mtp.bwd_s)
