"""The vectorized search against the scalar rules and the single-plan path."""

import numpy as np
import pytest

from sp_planner.estimate import plain

from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import CommBytes, CommLinks, MemoryBreakdown, PlanEstimate, TimeBreakdown
from sp_planner.plan import ParallelPlan, violations
from sp_planner.search import Pins, evaluate, search
from sp_planner.space import degree_tuples
from sp_planner.specs import Workload

MODEL = load_model("Llama-3-8B")  # 32 heads, 8 KV heads: exercises the GQA rules
HW = load_hardware("A800")
WORKLOAD = Workload(seq_len=12288, global_batch=6)  # 12288 = 2^12 * 3: some splits fail


@pytest.fixture(scope="module")
def result():
    return search(MODEL, HW, WORKLOAD, num_nodes=2, gpus_per_node=8, top_k=5)


def _plan(row) -> ParallelPlan:
    return ParallelPlan(**{name: plain(row[name]) for name in ParallelPlan.model_fields})


def test_degree_tuples_count():
    # ordered factorisations of 2^k into 5 factors: C(k+4, 4)
    assert len(degree_tuples(8, Pins())) == 35
    assert len(degree_tuples(4096, Pins())) == 1820
    assert np.all(np.prod(degree_tuples(12, Pins()), axis=1) == 12)


def test_frame_has_the_promised_columns(result):
    cols = set(result.frame.columns)
    expected = set(ParallelPlan.model_fields) | {
        "fits", "reason", "memory_peak_bytes", "step_time_s", "tokens_per_s", "model_tflops_per_gpu",
        "hardware_tflops_per_gpu", "mfu", "hardware_mfu"}
    expected |= {f"mem_{f}" for f in MemoryBreakdown.model_fields}
    expected |= {f"time_{f}" for f in TimeBreakdown.model_fields}
    expected |= {f"comm_{f}" for f in CommBytes.model_fields}
    expected |= {f"link_{f}" for f in CommLinks.model_fields}
    assert expected <= cols
    assert result.candidates_evaluated == len(result.frame)


def test_vectorized_rules_agree_with_violations(result):
    frame = result.frame
    sample = frame.sample(n=min(400, len(frame)), random_state=0)
    for _, row in sample.iterrows():
        broken = violations(_plan(row), MODEL, WORKLOAD)
        if broken:
            assert not row["fits"]
            assert row["reason"] == f"{broken[0].rule}: {broken[0].message}"
        else:
            assert row["fits"] == (row["memory_peak_bytes"] <= HW.hbm_bytes)
            assert (row["reason"] == "") == bool(row["fits"])


def test_evaluate_equals_frame_row(result):
    frame = result.frame
    for i in [0, 1, 7, len(frame) // 2, len(frame) - 1]:
        row = frame.iloc[i]
        from_frame = PlanEstimate.from_row(row)
        single = evaluate(MODEL, HW, WORKLOAD, _plan(row), num_nodes=2, gpus_per_node=8)
        assert single == from_frame


def test_prune_counts_cover_every_non_fitting_candidate(result):
    frame = result.frame
    assert sum(result.prune_counts.values()) == int((~frame["fits"]).sum())
    assert set(result.prune_counts) <= {"heads", "kv_heads", "seq_len", "layers", "batch", "oom"}
    # 16 GPUs, 32 heads, 8 KV heads: every power-of-two tp*ulysses <= 16 divides the heads and
    # meets the KV rule (8 | 16 or 16 | 8); zigzag ring 16 needs 12288 % 32 == 0 (true); only
    # dp 4, 8, 16 break the batch of 6, and pp 16 keeps 32 layers whole.
    assert "heads" not in result.prune_counts and "kv_heads" not in result.prune_counts
    assert result.prune_counts["batch"] > 0


def test_ranking_fits_first_by_step_time(result):
    ranked = result.ranked
    assert len(ranked) == 5
    fitting = [e for e in ranked if e.fits]
    assert fitting and ranked[: len(fitting)] == tuple(fitting)
    times = [e.step_time_s for e in fitting]
    assert times == sorted(times)
    frame = result.frame
    fits = frame["fits"].to_numpy()
    first_bad = np.argmin(fits) if not fits.all() else len(fits)
    assert fits[:first_bad].all() and not fits[first_bad:].any()


def test_pins_restrict_the_space():
    res = search(MODEL, HW, WORKLOAD, num_nodes=2, gpus_per_node=8, pins=Pins(tp=2, ulysses=4, zero=1))
    frame = res.frame
    assert (frame["tp"] == 2).all() and (frame["ulysses"] == 4).all() and (frame["zero"] == 1).all()
    assert set(frame["recompute"]) == {"none", "selective", "full"}


def test_fully_pinned_plan_is_evaluated_even_when_it_breaks_a_rule():
    pins = Pins(tp=1, pp=1, dp=8, ulysses=3, ring=1, zero=1, recompute="none", micro_batch=1)
    res = search(MODEL, HW, WORKLOAD, num_nodes=3, gpus_per_node=8, pins=pins)
    assert res.candidates_evaluated == 1
    (only,) = res.ranked
    assert not only.fits
    assert only.reason.startswith("heads: num_heads 32 is not divisible by tp*ulysses")
    assert res.prune_counts == {"heads": 1}  # the first broken rule counts (batch 6 % 8 is too)


def test_oom_plan_reports_shortfall():
    plan = ParallelPlan(dp=8, zero=0, micro_batch=1)
    est = evaluate(load_model("Llama-2-7B"), HW, Workload(seq_len=65536, global_batch=8), plan,
                   num_nodes=1, gpus_per_node=8)
    assert not est.fits
    # A800: 85,100,068,864 B, what the CUDA runtime reports of its 80 GB (hardware_profiles/a800.yaml)
    assert est.reason.startswith("oom: needs") and "79.3 GiB available" in est.reason


def test_evaluate_rejects_wrong_world_size():
    with pytest.raises(ValueError, match="uses dp\\*pp\\*tp\\*ulysses\\*ring = 4 GPUs"):
        evaluate(MODEL, HW, WORKLOAD, ParallelPlan(dp=4), num_nodes=1, gpus_per_node=8)


def test_search_rejects_impossible_pins():
    with pytest.raises(ValueError, match="no \\(dp, pp, tp, ulysses, ring\\)"):
        search(MODEL, HW, WORKLOAD, num_nodes=1, gpus_per_node=8, pins=Pins(tp=3))


def test_typed_cost_columns_carry_the_result_fields():
    from sp_planner.cost.comm import PerCollective
    from sp_planner.cost.memory import MemoryColumns
    from sp_planner.cost.step_columns import TimeColumns

    assert MemoryColumns._fields == (*MemoryBreakdown.model_fields, "peak_bytes")
    assert TimeColumns._fields == tuple(TimeBreakdown.model_fields)
    assert PerCollective._fields == tuple(CommBytes.model_fields)
    assert tuple(CommLinks.model_fields) == tuple(CommBytes.model_fields)


def test_the_frame_of_a_result_cannot_be_changed_through_it(result):
    before = result.frame
    frame = result.frame
    del frame["fits"]
    frame["step_time_s"] = -1.0
    after = result.frame
    assert list(after.columns) == list(before.columns)
    assert after.equals(before)


@pytest.mark.parametrize("gpus_per_node, pins", [(8, Pins(ep=8, tp=2, etp=2)), (6, Pins(ep=8))])
def test_expert_grids_that_break_the_rules_cost_without_numpy_warnings(gpus_per_node, pins):
    """ep x etp above the ranks (edp 0) breaks the expert_grid rule; such candidates are still
    costed when too few pass, to show the closest plans, and must not divide by zero."""
    import warnings

    mixtral = load_model("mixtral-8x7b")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = search(mixtral, load_hardware("h100"), Workload(seq_len=32768, global_batch=8), num_nodes=2,
                        gpus_per_node=gpus_per_node, pins=pins)
    assert result.ranked and all(np.isfinite(est.step_time_s) for est in result.ranked)


def test_unfused_attention_is_searched_without_context_parallelism():
    # It runs where Transformer Engine runs it for Megatron, which takes no context parallelism, and
    # no ring merges its blocks (cost.attention): every candidate has ulysses and ring 1.
    from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel

    l40s = load_hardware("l40s")
    kw = dict(num_nodes=1, gpus_per_node=8, top_k=5)
    workload = Workload(seq_len=32768, global_batch=8)
    unfused = search(load_model("gemma-2-9b"), with_attention_kernel(l40s, UNFUSED), workload, **kw)
    assert {(e.plan.ulysses, e.plan.ring) for e in unfused.ranked} == {(1, 1)}
    flash = search(load_model("gemma-2-9b"), l40s, workload, **kw)
    assert any(e.plan.ulysses * e.plan.ring > 1 for e in flash.ranked)
