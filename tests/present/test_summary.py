"""build_summary: the JSON document sp-plan prints and the reports save as summary.json."""

from __future__ import annotations

import json
import math

from sp_planner.catalog import load_hardware, load_model
from sp_planner.layout import rank_groups
from sp_planner.planfile_layout import RankLayout
from sp_planner.present.summary import SUMMARY_SCHEMA, _finite, build_summary, estimate_row
from sp_planner.report.csv import CSV_COLUMNS
from sp_planner.search import search
from sp_planner.space import Pins
from sp_planner.specs.workload import Workload

MODEL, HARDWARE = load_model("llama3-8b"), load_hardware("a800")
WORKLOAD = Workload(seq_len=64 * 1024, global_batch=8)


def test_summary_holds_the_top_k_plans_in_rank_order():
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=1, gpus_per_node=8, top_k=6)
    doc = build_summary(model=MODEL, hardware=HARDWARE, workload=WORKLOAD, num_nodes=1, gpus_per_node=8,
                        result=result, top_k=3)
    assert doc["schema_version"] == SUMMARY_SCHEMA
    # The same keys whatever the outcome: no suggestions is an empty list, not a missing key.
    assert doc["fit_suggestions"] == []
    assert len(doc["plans"]) == 3
    for entry, est in zip(doc["plans"], result.ranked):
        assert {k: entry[k] for k in est.plan.model_dump()} == est.plan.model_dump()
        # Whole bytes (the model computes in floats): ints in JSON, each within a byte of its float,
        # summing to the peak's float rounded.
        assert all(abs(entry["memory"][k] - v) < 1 for k, v in est.memory.model_dump().items())
        assert all(type(v) is int for v in entry["memory"].values())
        assert entry["memory_peak_bytes"] == round(est.memory_peak_bytes) == sum(entry["memory"].values())
        assert type(entry["memory_peak_bytes"]) is int
        assert entry["comm_bytes"] == est.comm_bytes.model_dump()
        assert entry["comm_links"] == est.comm_links.model_dump()
        # The generator only (the full lists made 185 MB at 131,072 GPUs); it expands to every group.
        assert "rank_groups" not in entry
        assert RankLayout.model_validate(entry["rank_layout"]) == RankLayout.of(est.plan)
        assert RankLayout.model_validate(entry["rank_layout"]).expand() == rank_groups(est.plan)
        assert set(entry["flags"]) == {"megatron", "mindspeed", "deepspeed", "yunchang", "torchtitan"}
    json.dumps(doc, allow_nan=False)  # strict JSON


def test_summary_lists_the_rank_groups_in_full_on_request():
    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=1, gpus_per_node=8, top_k=2)
    doc = build_summary(model=MODEL, hardware=HARDWARE, workload=WORKLOAD, num_nodes=1, gpus_per_node=8,
                        result=result, top_k=2, full_rank_groups=True)
    for entry, est in zip(doc["plans"], result.ranked):
        assert entry["rank_groups"] == rank_groups(est.plan)
        assert RankLayout.model_validate(entry["rank_layout"]).expand() == entry["rank_groups"]


def test_non_finite_numbers_become_null():
    assert _finite({"a": [1.0, math.inf], "b": {"c": math.nan}, "d": "x"}) == {"a": [1.0, None], "b": {"c": None},
                                                                            "d": "x"}


def test_byte_counts_are_whole_and_other_floats_stay():
    doc = _finite({"hbm_bytes": 85045477376.0, "x_bytes": 2.5e9 + 0.6, "step_time_s": 1.25, "n_bytes": [3.4, math.inf]})
    assert doc == {"hbm_bytes": 85045477376, "x_bytes": 2500000001, "step_time_s": 1.25, "n_bytes": [3, None]}
    assert type(doc["hbm_bytes"]) is int


def test_estimate_row_flattens_with_units_in_the_names():
    est = search(MODEL, HARDWARE, WORKLOAD, num_nodes=1, gpus_per_node=8, top_k=1).ranked[0]
    row = estimate_row(est, global_batch=WORKLOAD.global_batch)
    assert row["cp"] == est.plan.ulysses * est.plan.ring and row["world_size"] == 8
    assert row["comm_ring_p2p_bytes"] == est.comm_bytes.ring_p2p
    assert row["time_attention_s"] == est.time.attention_s
    assert abs(row["mem_activations_bytes"] - est.memory.activations_bytes) < 1
    assert type(row["mem_activations_bytes"]) is int and type(row["memory_peak_bytes"]) is int
    # The plans.csv columns, the simulated step included (None: not simulated).
    assert row["simulated_step_time_s"] is None
    assert ["rank", *row] == list(CSV_COLUMNS)
    simulated = est.model_copy(update={"simulated_step_time_s": 2.5})
    assert estimate_row(simulated, global_batch=WORKLOAD.global_batch)["simulated_step_time_s"] == 2.5


def test_memory_parts_sum_to_the_peak_in_the_summary_and_the_csv_rows():
    """Qwen3-8B at 200K on 5 x 8 H100s: each part rounded alone summed to a byte under the rounded
    peak in sp-plan's JSON and CSV; the written parts add up to memory_peak_bytes."""
    model, hardware, workload = load_model("qwen3-8b"), load_hardware("h100"), Workload(seq_len=200 * 1024,
                                                                                         global_batch=20)
    result = search(model, hardware, workload, num_nodes=5, gpus_per_node=8, top_k=3)
    doc = build_summary(model=model, hardware=hardware, workload=workload, num_nodes=5, gpus_per_node=8,
                        result=result, top_k=3)
    for entry, est in zip(doc["plans"], result.ranked):
        assert sum(round(v) for v in est.memory.model_dump().values()) != round(est.memory_peak_bytes)
        assert sum(entry["memory"].values()) == entry["memory_peak_bytes"] == round(est.memory_peak_bytes)
        row = estimate_row(est, global_batch=workload.global_batch)
        assert sum(row[f"mem_{k}"] for k in est.memory.model_dump()) == row["memory_peak_bytes"]


def test_estimate_row_of_a_plan_that_breaks_a_hard_rule_has_no_numbers():
    """tp 3 on 3 GPUs splits Llama-3-8B's 32 heads unevenly: plans.csv leaves its numbers empty, and
    so does the row sp-plan --format csv writes (it printed a step time and memory)."""
    result = search(MODEL, HARDWARE, Workload(seq_len=4096, global_batch=2), num_nodes=1, gpus_per_node=3,
                    top_k=3, pins=Pins(pp=1))
    est = result.ranked[0]
    assert est.reason.startswith("heads: ") and math.isfinite(est.step_time_s)
    row = estimate_row(est, global_batch=2)
    metrics = list(CSV_COLUMNS[CSV_COLUMNS.index("memory_peak_bytes"):])
    assert all(row[name] is None for name in metrics)
    assert row["tp"] == 3 and row["reason"] == est.reason and row["fits"] is False


def test_a_framework_plan_equal_to_a_ranked_one_is_described_once(monkeypatch):
    # sp-plan --top 1000 describes up to 2,000 plans, each with every framework's flags; the
    # framework's plans are mostly the ranked ones again, whose entries are made once.
    from sp_planner.estimate import PlanEstimate
    from sp_planner.present import summary as summary_module

    result = search(MODEL, HARDWARE, WORKLOAD, num_nodes=1, gpus_per_node=8, top_k=4)
    # The framework's estimates as the table's (present.expressible) are: equal, not the same objects.
    again = tuple(PlanEstimate.from_row(result.frame.iloc[i]) for i in (0, 2))
    assert list(again) == [result.ranked[0], result.ranked[2]] and again[0] is not result.ranked[0]
    slower = result.ranked[1].model_copy(update={"step_time_s": result.ranked[1].step_time_s * 2})
    described: list[object] = []
    real = summary_module.plan_entry
    monkeypatch.setattr(summary_module, "plan_entry", lambda est, **kw: described.append(est) or real(est, **kw))
    doc = build_summary(model=MODEL, hardware=HARDWARE, workload=WORKLOAD, num_nodes=1, gpus_per_node=8,
                        result=result, top_k=4, framework="megatron", framework_ranked=(*again, slower))
    assert described == [*result.ranked, slower]  # the unequal estimate of a ranked plan is its own entry
    assert doc["framework_plans"] == [doc["plans"][0], doc["plans"][2], _finite(real(
        slower, model=MODEL, workload=WORKLOAD, num_nodes=1, gpus_per_node=8))]
    assert doc["framework_plans"][2]["step_time_s"] == 2 * doc["plans"][1]["step_time_s"]


def test_a_suggestion_prices_its_group_at_its_own_global_batch():
    # pp 2 x vpp 2 at dp 1: the question's 3 micro-batches are one group of 3, the suggestion's
    # batch of 4 is groups of pp 2 (pipeline_order.priced_group); before, null.
    from sp_planner.present.advice import FitSuggestion
    from sp_planner.present.summary import suggestion_entry

    pins = Pins(tp=4, pp=2, vpp=2, ulysses=1, ring=1)
    load = Workload(seq_len=8 * 1024, global_batch=3)
    est = search(MODEL, HARDWARE, load, num_nodes=1, gpus_per_node=8, pins=pins, top_k=1).ranked[0]
    assert (est.plan.dp, est.plan.micro_batch) == (1, 1)
    for batch, group in ((3, 3), (4, 2)):
        fix = FitSuggestion(change="global_batch", option=f"--global-batch {batch}", description="",
                            estimate=est, global_batch=batch)
        assert suggestion_entry(fix)["plan"]["vpp_group"] == group
