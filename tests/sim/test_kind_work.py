"""sim.kind_work through sim.step_work: each layer of a stage at its own kind's work
(cost.layer_kinds), the kind-independent collectives run once."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.layer_kinds import LayerKind, kind_model
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.runtime import MEGATRON_RUNTIME as RT
from sp_planner.plan import ParallelPlan
from sp_planner.sim.attention_steps import attention_steps, windowed
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.layer_program import stage_forward
from sp_planner.sim.step_work import step_work
from sp_planner.specs.workload import Workload

H100 = load_hardware("H100-SXM")
GEMMA, DEEPSEEK = load_model("gemma-3-27b"), load_model("deepseek-v3")
LONG = Workload(seq_len=131072, global_batch=16)
A2A = "ep dispatch/combine all-to-all"


def _attention_fwd_s(model) -> float:
    """One layer's attention forward at 128K, tp 1, ulysses 8, no ring, by the cost functions."""
    steps = attention_steps(H100, model, batch=1, seq_len=LONG.seq_len, tp=1, ulysses=8, ring=1, causal=True,
                            zigzag=True, ring_impl=RT.ring)
    return windowed(steps, H100, model, batch=1, seq_len=LONG.seq_len, tp=1, ulysses=8).fwd_steps_s[0]


def test_a_gemma_stage_runs_its_global_and_local_layers_at_their_own_attention():
    # Gemma 3 27B, 62 layers at pp 8 (7 + 6 x 8 + 7): stage 3 holds layers 23-30, of which 23 and
    # 29 are global (every sixth, from layer 5) and the rest sliding over 1024 tokens.
    plan = ParallelPlan(ulysses=8, pp=8, recompute="full", first_stage_layers=7, last_stage_layers=7)
    work, _ = step_work(build_cluster(H100, 8), GEMMA, LONG, plan)
    assert work.stage_kinds[3] == (0, 1, 1, 1, 1, 1, 0, 1)  # 0: global, 1: local (distinct_kinds' order)
    full = _attention_fwd_s(kind_model(GEMMA, LayerKind(moe=False, local=False)))
    band = _attention_fwd_s(kind_model(GEMMA, LayerKind(moe=False, local=True)))
    assert full > 10 * band  # a 128K causal square against a 1024-token band
    attn = [op.duration_s for op in stage_forward(work, 3).ops if op.name.endswith("attn fwd 0")]
    assert attn == pytest.approx([full, band, band, band, band, band, full, band], rel=1e-12)
    # Blended by the model's 10 global and 52 local layers, the kinds give back the average layer.
    every = [work.layer_at(s, layer).attn_fwd_steps_s[0] for s in range(8) for layer in range(work.layers_of(s))]
    assert sum(every) == pytest.approx(62 * _attention_fwd_s(GEMMA), rel=1e-12)
    assert sorted(set(every)) == pytest.approx([band, full], rel=1e-12)


def test_deepseeks_dense_layers_have_no_expert_work_and_its_moe_layers_all_of_it():
    # DeepSeek-V3, pp 16 (3 + 14 x 4 + 2): the first stage holds the 3 dense layers only.
    plan = ParallelPlan(dp=16, pp=16, ep=16, zero=3, first_stage_layers=3, last_stage_layers=2)
    work, phases = step_work(build_cluster(H100, 32), DEEPSEEK, Workload(seq_len=8192, global_batch=256), plan)
    assert work.stage_kinds[0] == (0, 0, 0) and set(work.stage_kinds[1]) == {1}
    assert not any(op.kind == "moe_comm" for op in stage_forward(work, 0).ops)
    # The all-to-all run once, as the model's average layer ran it: a MoE layer takes it whole.
    (a2a,) = [p.duration_s for p in phases if p.name == A2A]
    moe = [op.duration_s for op in stage_forward(work, 1).ops if op.kind == "moe_comm"]
    assert len(moe) == 8 and moe == pytest.approx([a2a] * 8, rel=1e-12)
    held = [work.layer_at(s, layer).moe_all_to_all_s for s in range(16) for layer in range(work.layers_of(s))]
    assert sum(held) == pytest.approx(61 * moe_layer_fraction(DEEPSEEK) * a2a, rel=1e-12)
    assert sum(held) == pytest.approx(58 * a2a, rel=1e-12)
    dense, routed = work.kind_layers
    assert routed.gemm_mlp_fwd_s > dense.gemm_mlp_fwd_s and dense.gemm_attn_fwd_s > 0


def test_llama4_runs_its_expert_collectives_once_for_both_moe_kinds():
    # Maverick: dense and MoE layers in turn, 3 chunked to 1 global: three kinds, two of them MoE.
    model = load_model("llama-4-maverick-17b-128e")
    plan = ParallelPlan(tp=2, ulysses=4, pp=4, ep=8, recompute="full")
    work, phases = step_work(build_cluster(H100, 4), model, Workload(seq_len=65536, global_batch=16), plan)
    assert len(work.kind_layers) == 3 and [p.name for p in phases].count(A2A) == 1
    assert [layer.moe_all_to_all_s > 0 for layer in work.kind_layers] == [False, True, True]


@pytest.mark.parametrize("name, plan", [
    ("llama-3-8b", ParallelPlan(dp=2, tp=2, ulysses=2, pp=2)),
    ("qwen3-30b-a3b", ParallelPlan(dp=4, ulysses=2, pp=2, ep=4)),
])
def test_a_model_of_one_kind_keeps_one_layer(name, plan):
    work, _ = step_work(build_cluster(H100, 2), load_model(name), Workload(seq_len=32768, global_batch=16), plan)
    assert len(work.kind_layers) == 1
    assert np.unique(np.concatenate(work.stage_kinds)).tolist() == [0]
