"""The step's lower bound without the data-parallel passes (cost.step_bound, search_prune's)."""

import functools

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.cost.step import _time_parts, time_columns
from sp_planner import columns
from sp_planner.cost.step_bound import BOUND_ZEROED_PARTS, BoundLayers, step_lower_bound
from sp_planner.cost.step_options import StepOptions
from sp_planner.search import search_axes
from sp_planner.search_prune import BOUND_MARGIN
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.specs import Workload


@pytest.mark.parametrize(("model_name", "runtime"), [
    ("Qwen3-30B-A3B", FRAMEWORK_RUNTIME["megatron"]), ("DeepSeek-V3", FRAMEWORK_RUNTIME["megatron"]),
    ("Qwen3-30B-A3B", FRAMEWORK_RUNTIME["torchtitan"])], ids=["moe-megatron", "mla-kinds-megatron", "moe-fsdp"])
def test_step_lower_bound_is_the_step_without_the_data_parallel_parts(model_name, runtime):
    # step_lower_bound (search_prune's bound): every kept part as time_columns prices it, the
    # zeroed ones (DP exposure, optimizer, host) each >= 0 on every row (the bound's premise; the DP
    # exposure within rounding of 0: search_prune.BOUND_MARGIN), so the bound never exceeds the step.
    model, hardware = load_model(model_name), load_hardware("H100-SXM")
    workload = Workload(seq_len=16384, global_batch=64)
    c = enumerate_candidates(workload, 64, Pins(precision=None), 8, axes=search_axes(model, hardware))
    options = StepOptions(gpus_per_node=8, overlap=runtime.overlap, states=runtime.states, ring_impl=runtime.ring,
                          grad_sync=runtime.grad_sync, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                          sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers)
    step = time_columns(model, hardware, workload, c, **options)
    bound = step_lower_bound(model, hardware, workload, c, **options).bound_s
    t = step.time
    zeroed = [getattr(t, name) for name in BOUND_ZEROED_PARTS]
    # The parts as the step sums them, before the breakdown shows the recomputed forward's
    # collectives with their kinds (cost.step_columns' `moved`, after the sum).
    parts, _ = _time_parts(model, hardware, workload, c, **options)
    kept = [0.0 if name in BOUND_ZEROED_PARTS else part for name, part in zip(parts._fields, parts)]
    assert np.array_equal(bound, functools.reduce(np.add, kept), equal_nan=True)
    finite = np.isfinite(step.step_time_s)
    assert finite.mean() > 0.5
    assert np.all(zeroed[0][finite] >= -BOUND_MARGIN * step.step_time_s[finite])
    assert all(np.all(z[finite] >= 0) for z in zeroed[1:])
    assert np.all(bound[finite] * (1 - BOUND_MARGIN) <= step.step_time_s[finite])
    assert np.all(t.mfu_ceiling_s[finite] >= 0)


def test_bound_layers_concatenate_only_within_one_bound():
    # The pruned scan's pending rows keep the bound's layers through takes and concatenations of
    # rows of one bound; rows of another bound, or none, leave them to be priced again (None).
    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("H100-SXM")
    workload = Workload(seq_len=16384, global_batch=64)
    c = enumerate_candidates(workload, 64, Pins(precision=None), 8, axes=search_axes(model, hardware))
    layers = step_lower_bound(model, hardware, workload, c, gpus_per_node=8).layers
    other = step_lower_bound(model, hardware, workload, c, gpus_per_node=8).layers
    head, tail = layers.take(np.arange(5)), layers.take(np.arange(len(c) - 3, len(c)))
    joined = columns.concat([head, tail])
    assert joined is not None and joined.priced is layers.priced
    assert joined.row.tolist() == layers.row[[0, 1, 2, 3, 4, len(c) - 3, len(c) - 2, len(c) - 1]].tolist()
    assert columns.concat([head, other.take(np.arange(2))]) is None
    assert BoundLayers.concat([head, None]) is None and BoundLayers.concat([None, head]) is None


@pytest.mark.parametrize(("model_name", "framework"), [
    ("Qwen3-30B-A3B", "megatron"), ("DeepSeek-V3", "megatron"), ("gemma-2-9b", "megatron"),
    ("Qwen3-30B-A3B", "torchtitan")], ids=["moe", "mla-kinds", "tied-table", "moe-fsdp-partial-grads"])
def test_skip_reads_a_sum_at_most_the_bound_and_the_rest_are_bounded_as_without_it(model_name, framework):
    # step_lower_bound(skip=...): the layers' parts summed before the weight casts, the tied
    # table's and the TP gradients' all-reduces (cost.zero_read_terms) are added never exceed the
    # bound, on every row of a search with every precision (FP8 casts priced); the rows skip leaves
    # are bounded bit for bit as without it, with the same layers; a row skipped for a partial sum
    # above a threshold has its bound above it too.
    runtime = FRAMEWORK_RUNTIME[framework]
    model, hardware = load_model(model_name), load_hardware("H100-SXM")
    workload = Workload(seq_len=16384, global_batch=64)
    c = enumerate_candidates(workload, 64, Pins(precision=None), 8, axes=search_axes(model, hardware))
    options = StepOptions(gpus_per_node=8, overlap=runtime.overlap, states=runtime.states, ring_impl=runtime.ring,
                          grad_sync=runtime.grad_sync, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                          sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers,
                          sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                          partial_tp_grads=runtime.partial_tp_grads)
    whole = step_lower_bound(model, hardware, workload, c, **options)
    asked: list[np.ndarray] = []

    def above_median(partial_s):
        asked.append(partial_s)
        return partial_s > np.nanmedian(partial_s)

    skipped = step_lower_bound(model, hardware, workload, c, skip=above_median, **options)
    partial_s = asked[0]
    finite = np.isfinite(whole.bound_s)
    assert whole.rows is None and len(partial_s) == len(c) and finite.mean() > 0.5
    assert np.all(partial_s[finite] <= whole.bound_s[finite])
    assert np.any(partial_s[finite] < whole.bound_s[finite])  # the terms it leaves out are priced somewhere
    kept = np.flatnonzero(~above_median(partial_s))
    assert skipped.rows is not None and skipped.rows.tolist() == kept.tolist() and 0 < len(kept) < len(c)
    np.testing.assert_array_equal(skipped.bound_s, whole.bound_s[kept])
    assert skipped.layers.priced is not whole.layers.priced
    for name in ("per_layer_s", "micro_batches", "layers"):
        np.testing.assert_array_equal(np.broadcast_to(getattr(skipped.layers.at_rows(), name), len(kept)),
                                      np.broadcast_to(getattr(whole.layers.at_rows(), name), len(c))[kept])
    dropped = np.setdiff1d(np.arange(len(c)), kept)
    assert np.all(whole.bound_s[dropped] > np.nanmedian(partial_s))
