"""search_refine: the best plans' interleaved variants that need Megatron's
--pipeline-model-parallel-layout, which the whole-space scan leaves out, are priced and ranked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sp_planner.search as search_module
import sp_planner.search_refine as refine_module
from sp_planner.catalog import load_hardware, load_model
from sp_planner.planfile import PlanFile
from sp_planner.report.plan_pins import recorded_pins
from sp_planner.search import Pins, search
from sp_planner.search_refine import TupleBests, refine_tuples
from sp_planner.sim import simulate
from sp_planner.space import DEGREES, EXPERT_DEGREES
from sp_planner.specs import Workload

H100 = load_hardware("H100-SXM")
DSV3 = load_model("DeepSeek-V3")
# DeepSeek-V3's 61 layers over pp 16: 3 / 4 x 14 / 2 a stage. With vpp 2 the first stage's 3 do
# not divide into its 2 chunks, so the split runs only as a layout ("Et|(tt|)*14t|(tt|)*15tL").
DSV3_CASE = dict(num_nodes=32, gpus_per_node=8, pins=Pins(tp=2, pp=16))
DSV3_WORKLOAD = Workload(seq_len=4096, global_batch=256)


def _without_refinement(monkeypatch) -> None:
    monkeypatch.setattr(refine_module, "REFINE_TOP_TUPLES", 0)
    monkeypatch.setattr(refine_module, "REFINE_PER_PP", 0)


def test_deepseek_v3s_interleaved_layout_is_found_and_ranked_first(monkeypatch):
    refined = search(DSV3, H100, DSV3_WORKLOAD, top_k=3, **DSV3_CASE)
    best = refined.ranked[0]
    assert (best.plan.pp, best.plan.vpp, best.plan.first_stage_layers, best.plan.last_stage_layers) == (16, 2, 3, 2)
    assert (best.plan.dp, best.plan.ring, best.plan.ep, best.plan.recompute) == (4, 2, 8, "mla_up_proj")
    # 3.965 s before Stop 56 (its tail's middle stage, 2, now drains stage 1's chunk-0 backward later);
    # 3.9541 s before Stop 57 (the first stage's chunks and the middle stages' end chunks priced from
    # their own layers, and the group-boundary wait): closer to the simulator's 3.961 s. 3.9569 s
    # (its p2p ring) before Stop 64 counted MLA's down projections whole on every TP rank: that plan's
    # 4-layer stages need 227 MB more (85,073,848,704 B of 85,045,477,376), so its all-gather ring runs.
    # 4.2606 s before Stop 65's host sync (cost.host: each MoE layer's sync exposes the op after it).
    assert best.plan.cp_comm == "allgather"
    assert best.step_time_s == pytest.approx(4.2640, abs=1e-3)
    # The same estimate a pinned --vpp 2 gives it: the same split, rules and cost columns.
    pinned = search(DSV3, H100, DSV3_WORKLOAD, top_k=3, num_nodes=32, gpus_per_node=8,
                    pins=Pins(tp=2, pp=16, vpp=2))
    assert pinned.ranked[0] == best
    # Without the refinement the scan's best is a 1F1B plan, 1.5x as long.
    _without_refinement(monkeypatch)
    scanned = search(DSV3, H100, DSV3_WORKLOAD, top_k=3, **DSV3_CASE)
    vpp1 = scanned.ranked[0]
    # 5.8316 s before Stop 64, 5.8332 s before Stop 65's host sync.
    assert vpp1.plan.vpp == 1 and vpp1.step_time_s == pytest.approx(5.8366, abs=1e-3)
    # Every refined candidate is counted: 13,140 scanned, and the vpp 2 rows of the tuples refined.
    assert scanned.candidates_evaluated == 13140 < refined.candidates_evaluated
    assert sum(refined.prune_counts.values()) + int(refined.frame["fits"].sum()) == refined.candidates_evaluated
    # The simulator agrees: 3.961 s against 3.957 s analytic, and the 1F1B plan is slower there too.
    sim_best = simulate(DSV3, H100, DSV3_WORKLOAD, best.plan, num_nodes=32, gpus_per_node=8, detail=False)
    sim_vpp1 = simulate(DSV3, H100, DSV3_WORKLOAD, vpp1.plan, num_nodes=32, gpus_per_node=8, detail=False)
    assert best.step_time_s == pytest.approx(sim_best.step_time_s, rel=0.01)
    assert vpp1.step_time_s == pytest.approx(sim_vpp1.step_time_s, rel=0.01)
    assert sim_best.step_time_s < 0.75 * sim_vpp1.step_time_s


def test_a_refined_plans_plan_file_reports_it_first():
    # pp 16 pinned alone: the best is a refined vpp 2 plan (tp 4 since Stop 64's whole MLA down
    # projections; DSV3_CASE's tp 2 plan, no longer the best over tp, would not be first).
    best = search(DSV3, H100, DSV3_WORKLOAD, top_k=1, num_nodes=32, gpus_per_node=8, pins=Pins(pp=16)).ranked[0].plan
    plan_file = PlanFile(model=DSV3, hardware=H100, workload=DSV3_WORKLOAD, num_nodes=32, gpus_per_node=8, plan=best)
    pins, pinned = recorded_pins(plan_file)
    assert pinned == {"vpp": 2}  # the scan does not reach it: sp-report pins what the refinement found
    assert search(DSV3, H100, DSV3_WORKLOAD, top_k=1, num_nodes=32, gpus_per_node=8,
                  pins=pins).ranked[0].plan == best


@pytest.mark.parametrize("chunk,head_rows", [(500, 5), (4000, 40)])
def test_streamed_refinement_is_the_every_row_ones(chunk, head_rows, monkeypatch):
    monkeypatch.setattr(search_module, "CHUNK_CANDIDATES", 1 << 20)
    whole = search(DSV3, H100, DSV3_WORKLOAD, top_k=7, every_row=True, **DSV3_CASE)
    monkeypatch.setattr(search_module, "CHUNK_CANDIDATES", chunk)
    monkeypatch.setattr(search_module, "HEAD_ROWS", head_rows)
    streamed = search(DSV3, H100, DSV3_WORKLOAD, top_k=7, **DSV3_CASE)
    assert streamed.candidates_evaluated == whole.candidates_evaluated == len(whole.frame)
    assert streamed.prune_counts == whole.prune_counts
    assert streamed.ranked == whole.ranked
    pd.testing.assert_frame_equal(streamed.frame, whole.frame)


@pytest.mark.parametrize(("name", "nodes", "workload"), [
    ("Llama-3-8B", 4, Workload(seq_len=12288, global_batch=6)),
    ("Llama-3-70B", 8, Workload(seq_len=32768, global_batch=64)),
])
def test_models_whose_plans_need_no_layout_search_as_before(name, nodes, workload, monkeypatch):
    model = load_model(name)
    now = search(model, H100, workload, num_nodes=nodes, gpus_per_node=8, top_k=10)
    _without_refinement(monkeypatch)
    before = search(model, H100, workload, num_nodes=nodes, gpus_per_node=8, top_k=10)
    assert now.candidates_evaluated == before.candidates_evaluated
    assert now.prune_counts == before.prune_counts and now.ranked == before.ranked


def _bests(pps: list[int]) -> TupleBests:
    width = len(DEGREES) + len(EXPERT_DEGREES)
    tuples = np.ones((len(pps), width), dtype=np.int64)
    tuples[:, DEGREES.index("pp")] = pps
    tuples[:, DEGREES.index("dp")] = np.arange(len(pps))  # each its own tuple
    return TupleBests(tuples, np.arange(len(pps), dtype=float), np.arange(len(pps)))


def test_the_best_tuples_and_the_best_of_each_pp_are_refined():
    # 40 pp 16 tuples ranked first, then 6 pp 8 and 2 pp 4: the best 32, and 4 of pp 8, 2 of pp 4.
    bests = _bests([16] * 40 + [8] * 6 + [4] * 2)
    chosen = refine_tuples(bests)
    assert chosen[:, DEGREES.index("dp")].tolist() == [*range(32), 40, 41, 42, 43, 46, 47]


def test_progress_counts_the_refinement_on_from_the_scan():
    seen: list = []
    result = search(DSV3, H100, DSV3_WORKLOAD, top_k=1, progress=lambda done, total, what=None:
                    seen.append((done, total, what)), **DSV3_CASE)
    scanned, n = 13140, result.candidates_evaluated - 13140
    assert seen[0] == (0, scanned, "searching 13,140 candidates")
    assert (scanned, scanned, "searching 13,140 candidates") in seen
    assert seen[-1] == (scanned + n, scanned + n, f"interleaving the best plans: {n:,} candidates")
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)


def test_the_refinements_candidates_are_enumerated_once(monkeypatch):
    # Counted for progress, costed by the scan and by the frame's passes over every row: one
    # enumeration of the refined tuples' rows.
    enumerated = []
    iterate = search_module.iter_candidates

    def counted(*args, refine=False, **kwargs):
        enumerated.append(refine)
        return iterate(*args, refine=refine, **kwargs)

    monkeypatch.setattr(search_module, "iter_candidates", counted)
    result = search(DSV3, H100, DSV3_WORKLOAD, top_k=1, **DSV3_CASE)
    assert result.candidates_evaluated > 13140 and len(result.frame) > 2000  # refined rows, the frame built
    assert enumerated == [True]
