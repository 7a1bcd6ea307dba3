"""cost.step_layers: the step's parts before the data-parallel passes, priced by the step's bound
(cost.step_bound, once per distinct row) and taken back at any rows (LayerParts.take), give
cost.step.time_columns every bit it gives pricing those rows alone."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.kind_passes import kind_walks
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.cost.step import time_columns
from sp_planner.cost.step_bound import step_lower_bound
from sp_planner.cost.step_columns import StepParts, TimeColumns
from sp_planner.cost.stage_layer_times import piped_rows
from sp_planner.cost.step_options import StepOptions
from sp_planner.search import search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.specs import Workload

WORKLOAD = Workload(seq_len=16384, global_batch=64)


def test_step_parts_are_the_time_columns_but_the_ceiling():
    assert StepParts._fields == TimeColumns._fields[:-1]


@pytest.mark.parametrize(("model_name", "framework"), [
    ("DeepSeek-V3", "megatron"), ("DeepSeek-V3", "torchtitan"), ("Qwen3-30B-A3B", "megatron")],
    ids=["kinds-megatron", "kinds-fsdp", "one-kind-megatron"])
def test_bound_layers_taken_back_time_as_priced_alone(model_name, framework):
    model, hardware = load_model(model_name), load_hardware("H100-SXM")
    runtime = FRAMEWORK_RUNTIME[framework]
    c = enumerate_candidates(WORKLOAD, 64, Pins(precision=None), 8, axes=search_axes(model, hardware))
    options = StepOptions(gpus_per_node=8, overlap=runtime.overlap, states=runtime.states, ring_impl=runtime.ring,
                          grad_sync=runtime.grad_sync, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                          sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers)
    bound = step_lower_bound(model, hardware, WORKLOAD, c, **options)
    assert len(bound.layers.priced.micro_batches) < len(c) // 2  # priced once per distinct row
    rng = np.random.default_rng(0)
    pp = np.asarray(c.pp)
    subsets = {
        "sorted": np.sort(rng.choice(len(c), 3000, replace=False)),
        "shuffled, repeated": rng.choice(len(c), 3000, replace=True),
        "unpipelined": rng.choice(np.flatnonzero(pp == 1), 2000, replace=False),  # no stage blended
    }
    if model_name == "DeepSeek-V3":  # pipelined rows whose stages are not blended (cost.stage_layer_times)
        blended = piped_rows(model, WORKLOAD.seq_len, c, WORKLOAD.global_batch / (np.asarray(c.dp) * c.micro_batch))
        subsets["pipelined, none blended"] = rng.choice(np.setdiff1d(np.flatnonzero(pp > 1), blended), 2000)
    for name, index in subsets.items():
        rows = c.take(index)
        if model_name == "DeepSeek-V3" and name in ("sorted", "shuffled, repeated"):  # blended, walked rows
            assert np.any(np.asarray(rows.pp) > 1) and kind_walks(model, WORKLOAD.seq_len, rows) is not None
        taken = time_columns(model, hardware, WORKLOAD, rows, bound.layers.take(index).at_rows(), **options)
        alone = time_columns(model, hardware, WORKLOAD, rows, **options)
        assert np.isfinite(alone.step_time_s).mean() > 0.5, name
        for field in alone._fields:
            got, want = getattr(taken, field), getattr(alone, field)
            for g, w in zip(got, want) if field == "time" else [(got, want)]:
                np.testing.assert_array_equal(g, w, err_msg=f"{name}: {field}")


def test_the_recomputed_forwards_collectives_are_shown_as_communication_at_the_same_step():
    # Full recompute re-runs a layer's TP collectives and MoE dispatch/combine, selective the attention's
    # Ulysses all-to-alls: the breakdown shows them with their kind (as sp-simulate's critical path
    # does), moved after the sum, so every step is bit for bit what the unmoved parts sum to.
    from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE
    from sp_planner.cost.step import _time_parts
    from sp_planner.cost.step_columns import step_columns

    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("H100-SXM")
    c = enumerate_candidates(WORKLOAD, 64, Pins(precision=None), 8, axes=search_axes(model, hardware))
    parts, lp = _time_parts(model, hardware, WORKLOAD, c, gpus_per_node=8)
    unmoved = step_columns(model, hardware, WORKLOAD, c, parts)
    shown = time_columns(model, hardware, WORKLOAD, c, gpus_per_node=8)
    assert np.array_equal(shown.step_time_s, unmoved.step_time_s)
    np.testing.assert_allclose(sum(shown.time), shown.step_time_s, rtol=1e-12)
    moved = {name: np.broadcast_to(np.subtract(getattr(shown.time, name), getattr(unmoved.time, name)), (len(c),))
             for name in TimeColumns._fields}
    none = np.asarray(c.recompute) == RECOMPUTE_NONE
    assert none.any() and all(np.array_equal(v[none], np.zeros(none.sum())) for v in moved.values())
    full = (np.asarray(c.recompute) == RECOMPUTE_FULL) & (np.asarray(c.ep) > 1) & (np.asarray(c.tp) > 1)
    assert full.any()
    # What recomputation gives up, its collectives take: dispatch/combine m x layers x its forward.
    assert np.all(moved["moe_comm_s"][full] > 0) and np.all(moved["tp_comm_s"][full] > 0)
    np.testing.assert_allclose(moved["moe_comm_s"][full],
                               np.broadcast_to(lp.micro_batches * lp.layers * lp.stage.first.recompute_moe_s,
                                               (len(c),))[full], rtol=1e-12)
    given = moved["tp_comm_s"] + moved["moe_comm_s"] + moved["ulysses_comm_s"] + moved["ring_comm_exposed_s"]
    np.testing.assert_allclose(-moved["recompute_s"][full], given[full], rtol=1e-9)
