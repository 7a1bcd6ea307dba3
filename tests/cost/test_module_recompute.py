"""Recompute moe_act and moe_act+layernorm (cost.module_recompute): Qwen3 and DeepSeek-V3's saved
bytes and re-run seconds by hand, FP8's saved inputs, the rule, the search's choices (MoE models only), the CUDA-graph
exception and the simulator's agreement."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import activation_bytes_per_layer, saved_activation_bytes_per_layer
from sp_planner.cost.module_recompute import effective_recompute, module_recompute_s
from sp_planner.plan import (
    RECOMPUTE,
    RECOMPUTE_MOE_ACT,
    RECOMPUTE_MOE_ACT_LAYERNORM,
    RECOMPUTE_NONE,
    ParallelPlan,
    violations,
)
from sp_planner.search import evaluate, search
from sp_planner.sim import simulate
from sp_planner.space import Pins
from sp_planner.candidates import Candidates
from sp_planner.space_choices import Axes, _zeros_and_recomputes
from sp_planner.specs.workload import Workload

QWEN3_235B, QWEN3_30B, DSV3 = (load_model(n) for n in ("Qwen3-235B-A22B", "Qwen3-30B-A3B", "DeepSeek-V3"))
H100 = load_hardware("H100-SXM")
MIB = 2**20
W4K = Workload(seq_len=4096, global_batch=1)


def _stored(model, code, **kw):
    kw = {"tp": 2, "ulysses": 1, "ring": 1, "micro_batch": 1, **kw}
    return activation_bytes_per_layer(model, W4K, recompute=np.array([code]), **kw)[0][0]


@pytest.mark.parametrize("ep, load", [(1, 1.0), (8, 1.25)])  # ep > 1: the learned router's busiest rank
def test_qwen3_235b_frees_the_activation_output_and_the_pre_mlp_norm(ep, load):
    # n = 4096 tokens over tp 2: the activation output is 2 B x 2048 x top_k 8 x moe_ffn 1536 = 48 MiB
    # (x the busiest rank's load); the pre-MLP norm's output 2 B x 2048 x h 4096 = 16 MiB. The input
    # norm is fused into the QKV linear (no standalone module), so nothing of it.
    none, act, act_ln = (_stored(QWEN3_235B, c, ep=ep)
                         for c in (RECOMPUTE_NONE, RECOMPUTE_MOE_ACT, RECOMPUTE_MOE_ACT_LAYERNORM))
    assert (none - act) / MIB == pytest.approx(48 * load)
    assert (act - act_ln) / MIB == pytest.approx(16)


def test_deepseek_v3_frees_its_mla_input_norm_in_every_layer_and_pre_mlp_norm_in_58_of_61():
    none, act, act_ln = (_stored(DSV3, c) for c in (RECOMPUTE_NONE, RECOMPUTE_MOE_ACT, RECOMPUTE_MOE_ACT_LAYERNORM))
    # 58 of 61 layers are MoE: 2 B x 2048 x 8 x 2048 = 64 MiB each, averaged over the layers.
    assert (none - act) / MIB == pytest.approx(64 * 58 / 61)
    # The MLA input norm (every layer) and the MoE layers' pre-MLP norm: 2 B x 2048 x 7168 = 28 MiB each.
    assert (act - act_ln) / MIB == pytest.approx(28 * (1 + 58 / 61))


def test_under_fp8_the_freed_fc2_input_takes_its_fp8_saving_with_it():
    # Without recompute TE's fc2 saves its input in FP8 (1 B an element); moe_act's fc2 saves the
    # discarded original instead, so FP8 frees 1 B an element where bf16 frees 2.
    def drop(precision):
        stored = [saved_activation_bytes_per_layer(QWEN3_235B, H100, W4K, Candidates.of_plan(ParallelPlan(
            tp=2, dp=4, ep=8, recompute=r, precision=precision, fp8_recipe="tensorwise")))[0][0]
            for r in ("none", "moe_act")]
        return (stored[0] - stored[1]) / MIB
    assert drop("bf16") == pytest.approx(48 * 1.25)
    assert drop("fp8") == pytest.approx(48 * 1.25 - 24)  # 2 B x the busiest rank's copies, less 1 B x the mean


def test_rerun_seconds_are_the_activation_and_norm_traffic_at_the_memory_bound_rate():
    # Read gate + up, write the output: 2 B x 3 x 2048 x 8 x 1536 bytes; a norm reads and writes
    # 2 B x 2048 x 4096 each way. H100: 3.35 TB/s x 0.76.
    rate = 3.35e12 * 0.76
    codes = np.array([RECOMPUTE_NONE, RECOMPUTE_MOE_ACT, RECOMPUTE_MOE_ACT_LAYERNORM])
    s = module_recompute_s(QWEN3_235B, H100, tokens=4096, region=2048, tp=2, ep=1, recompute=codes)
    act, norm = 2 * 3 * 2048 * 8 * 1536 / rate, 2 * 2 * 2048 * 4096 / rate
    assert s == pytest.approx([0.0, act, act + norm])


def test_rule_refuses_a_dense_model_and_the_search_tries_them_for_moe_models_only():
    llama, w = load_model("Llama-3-8B"), Workload(seq_len=4096, global_batch=8)
    for name in ("moe_act", "moe_act+layernorm"):
        (v,) = violations(ParallelPlan(dp=8, recompute=name), llama, w)
        assert v.rule == "moe_act" and "has no MoE layers" in v.message
        assert not violations(ParallelPlan(dp=8, ep=8, recompute=name), QWEN3_30B, w)
    unpinned = _zeros_and_recomputes(Pins(), Axes(num_layers=48, num_experts=128))[1]
    assert [RECOMPUTE[c] for c in unpinned] == ["none", "selective", "full", "moe_act+layernorm"]
    unpinned = _zeros_and_recomputes(Pins(), Axes(num_layers=61, num_experts=256, mla=True))[1]
    assert [RECOMPUTE[c] for c in unpinned] == ["none", "selective", "full", "mla_up_proj",
                                                "moe_act+layernorm"]
    assert [RECOMPUTE[c] for c in _zeros_and_recomputes(Pins(), Axes(num_layers=32))[1]] == [
        "none", "selective", "full"]  # dense: the rule would refuse them
    assert _zeros_and_recomputes(Pins(recompute="moe_act+layernorm"), Axes(num_layers=48))[1] == [
        RECOMPUTE_MOE_ACT_LAYERNORM]


def test_a_graphed_router_without_alltoall_preprocess_graphs_turns_the_pre_mlp_norm_off():
    # transformer_layer.py at d98e8a64 lines 481-521: the Megatron-LM Qwen3-235B H100 recipe
    # (router + preprocess graphs, HybridEP's flex dispatcher) runs moe_act alone.
    graphs = frozenset({"moe_router", "moe_preprocess"})
    assert effective_recompute(QWEN3_235B, "moe_act+layernorm", graphs, "hybridep") == "moe_act"
    assert effective_recompute(QWEN3_235B, "moe_act+layernorm", graphs, "alltoall") == "moe_act+layernorm"
    assert effective_recompute(QWEN3_235B, "moe_act+layernorm", frozenset(), "hybridep") == "moe_act+layernorm"
    assert effective_recompute(DSV3, "moe_act+layernorm", graphs, "hybridep") == "moe_act+layernorm"  # MLA's input norm
    assert effective_recompute(QWEN3_235B, "selective", graphs, "hybridep") == "selective"


@pytest.mark.parametrize(("model", "plan", "nodes", "global_batch"), [
    (QWEN3_30B, dict(dp=8, ep=8), 1, 64),
    (QWEN3_30B, dict(tp=2, dp=4, ep=4, pp=2), 2, 64),
])
def test_the_simulator_agrees_and_times_the_same_rerun(model, plan, nodes, global_batch):
    w = Workload(seq_len=4096, global_batch=global_batch)
    steps = {}
    for name in ("none", "moe_act", "moe_act+layernorm"):
        p = ParallelPlan(recompute=name, **plan)
        est = evaluate(model, H100, w, p, num_nodes=nodes, gpus_per_node=8)
        sim = simulate(model, H100, w, p, num_nodes=nodes, gpus_per_node=8, detail=False)
        assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)
        steps[name] = (est.step_time_s, sim.step_time_s)
    for name in ("moe_act", "moe_act+layernorm"):  # both add the same re-run seconds (within 2%)
        est_extra, sim_extra = (steps[name][i] - steps["none"][i] for i in (0, 1))
        assert est_extra > 0 and sim_extra == pytest.approx(est_extra, rel=0.02)


def test_the_search_finds_a_plan_that_fits_only_with_the_moe_module_recompute():
    # Qwen3-235B, 16 nodes of H100, 4K, 256 sequences: at dp 4 pp 8 (vpp 4) ring 4 ep 8 nothing
    # recomputed needs 81.9 GiB of the 79.2 GiB, moe_act+layernorm 77.8 GiB, and selective (which
    # frees only flash attention's O and lse) still 81.9 GiB; the unpinned search, which now tries
    # moe_act+layernorm, ranks it above full recompute (sp-plan: 4.59 s against 4.81 s at pp 16).
    w = Workload(seq_len=4096, global_batch=256, causal=True)
    pins = Pins(tp=1, ulysses=1, ring=4, dp=4, pp=8, vpp=4, ep=8, etp=1, zero=1, micro_batch=1)
    frame = search(QWEN3_235B, H100, w, num_nodes=16, gpus_per_node=8, pins=pins).frame
    fits = frame.groupby("recompute")["fits"].any()
    assert not fits["none"] and not fits["selective"] and fits["moe_act+layernorm"] and fits["full"]
    assert "moe_act" not in set(frame["recompute"])  # tried only where pinned
    fitting = frame[frame["fits"]]
    assert fitting.iloc[0]["recompute"] == "moe_act+layernorm"
    best = fitting.groupby("recompute")["step_time_s"].min()
    assert best["moe_act+layernorm"] < best["full"]
