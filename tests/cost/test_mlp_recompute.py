"""Recompute mlp and mla_up_proj+mlp (cost.mlp_recompute): Llama-3-8B's and DeepSeek-V3's freed bytes
by hand, FP8's saved inputs, the re-run seconds and TP calls, the rules (dense layers; MLA), the
search leaving them unpinned-out, and the simulator's agreement."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.activations import activation_bytes_per_layer, saved_activation_bytes_per_layer
from sp_planner.cost.flops import hardware_flops_per_step
from sp_planner.cost.mlp_recompute import (dense_mlp_gemm_share, mlp_recompute_comm_s, mlp_recompute_layers,
                                           mlp_recompute_s)
from sp_planner.cost.tp_calls import tp_calls_per_step
from sp_planner.plan import RECOMPUTE, RECOMPUTE_NONE, ParallelPlan, violations
from sp_planner.recompute import RECOMPUTE_MLA_UP_PROJ, RECOMPUTE_MLA_UP_PROJ_MLP, RECOMPUTE_MLP
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.space import Pins
from sp_planner.candidates import Candidates
from sp_planner.space_choices import Axes, _zeros_and_recomputes
from sp_planner.specs.workload import Workload

LLAMA, DSV3, QWEN3_30B = (load_model(n) for n in ("Llama-3-8B", "DeepSeek-V3", "Qwen3-30B-A3B"))
H100 = load_hardware("H100-SXM")
MIB = 2**20
W4K = Workload(seq_len=4096, global_batch=1)


def _stored(model, code):
    return activation_bytes_per_layer(model, W4K, tp=2, ulysses=1, ring=1, micro_batch=1,
                                      recompute=np.array([code]))[0][0]


def test_llama_frees_the_mlp_insides_and_the_norm_output():
    # n = 4096 over tp 2: fc1's output and the SwiGLU output, 2 B x 3 x 4096 x 14336 / 2 = 168 MiB;
    # the fused pre-MLP norm's output (fc1's input) 2 B x 2048 x 4096 = 16 MiB. Its input, the
    # residual, is the checkpoint's input and stays.
    assert (_stored(LLAMA, RECOMPUTE_NONE) - _stored(LLAMA, RECOMPUTE_MLP)) / MIB == pytest.approx(168 + 16)
    assert _stored(LLAMA, RECOMPUTE_MLP) / MIB == pytest.approx(88.25)


def test_deepseek_v3_frees_it_on_its_3_dense_layers_of_61_beside_mla_up_proj():
    # Dense layers: 2 B x 3 x 4096 x 18432 / 2 = 216 MiB and 2 B x 2048 x 7168 = 28 MiB, on 3 of 61.
    freed = 244 * 3 / 61
    assert (_stored(DSV3, RECOMPUTE_NONE) - _stored(DSV3, RECOMPUTE_MLP)) / MIB == pytest.approx(freed)
    both = _stored(DSV3, RECOMPUTE_MLA_UP_PROJ_MLP)
    assert (_stored(DSV3, RECOMPUTE_MLA_UP_PROJ) - both) / MIB == pytest.approx(freed)
    # Every layer MoE: nothing to free.
    assert _stored(QWEN3_30B, RECOMPUTE_MLP) == _stored(QWEN3_30B, RECOMPUTE_NONE)


def test_under_fp8_the_freed_gemm_inputs_take_their_fp8_saving_with_them():
    # FP8 saves fc1's (h) and fc2's (ffn) inputs at 1 B where bf16 takes 2; once the MLP is
    # checkpointed neither is saved: bf16 frees 184 MiB, FP8 1 B x 2048 x (4096 + 14336) = 36 MiB less.
    def drop(precision):
        stored = [saved_activation_bytes_per_layer(LLAMA, H100, W4K, Candidates.of_plan(ParallelPlan(
            tp=2, dp=4, recompute=r, precision=precision, fp8_recipe="tensorwise")))[0][0] for r in ("none", "mlp")]
        return (stored[0] - stored[1]) / MIB
    assert drop("bf16") == pytest.approx(184)
    assert drop("fp8") == pytest.approx(184 - 2048 * (4096 + 14336) / MIB)


def test_rerun_is_the_mlp_gemm_share_and_one_tp_all_gather_and_reduce_scatter():
    # Llama-3-8B: the MLP's 2 x 3 x h x 14336 FLOPs of a layer's 2h x (2 x 4096 + 2 x 1024) + that.
    share = 3 * 14336 / (2 * 4096 + 2 * 1024 + 3 * 14336)
    assert dense_mlp_gemm_share(LLAMA) == pytest.approx(share)
    codes = np.array([RECOMPUTE_NONE, RECOMPUTE_MLP])
    s = mlp_recompute_s(LLAMA, gemm_fwd_s=1.0, tp_all_gather_s=0.1, tp_reduce_scatter_s=0.2, recompute=codes)
    assert s == pytest.approx([0.0, share + 0.3])
    # DeepSeek-V3: 3 of 61 layers; mla_up_proj alone re-runs none.
    s = mlp_recompute_s(DSV3, gemm_fwd_s=1.0, tp_all_gather_s=0.0, tp_reduce_scatter_s=0.0,
                        recompute=np.array([RECOMPUTE_MLA_UP_PROJ, RECOMPUTE_MLA_UP_PROJ_MLP]))
    assert s[0] == 0.0 and s[1] == pytest.approx(dense_mlp_gemm_share(DSV3)) and 0 < s[1] < 3 / 61
    # The hardware FLOPs count the dense MLP GEMMs again: 2 x 3 x 4096 x 14336 a token, 32 layers.
    none, mlp = hardware_flops_per_step(LLAMA, seq_len=4096, global_batch=1, causal=True, recompute=codes)
    assert mlp - none == pytest.approx(32 * 2 * 3 * 4096 * 14336 * 4096)


def test_the_reruns_tp_collectives_are_its_communication_share():
    # Of the rerun's share + 0.3 s, the 0.1 s all-gather and 0.2 s reduce-scatter (DeepSeek-V3: 3 of
    # 61 layers' worth, under mla_up_proj+mlp only).
    codes = np.array([RECOMPUTE_NONE, RECOMPUTE_MLP])
    assert mlp_recompute_comm_s(LLAMA, tp_all_gather_s=0.1, tp_reduce_scatter_s=0.2,
                                recompute=codes) == pytest.approx([0.0, 0.3])
    dsv3 = mlp_recompute_comm_s(DSV3, tp_all_gather_s=0.1, tp_reduce_scatter_s=0.2,
                                recompute=np.array([RECOMPUTE_MLA_UP_PROJ, RECOMPUTE_MLA_UP_PROJ_MLP]))
    assert dsv3 == pytest.approx([0.0, 3 / 61 * 0.3])


def test_the_breakdown_shows_the_reruns_tp_collectives_as_tp_communication_at_the_same_step():
    # sp-plan counted them under recomputation (llama3-8b, a800, 1 node, 32k, tp 4, --recompute mlp:
    # recomputation 31.00 s, TP 30.73 s; now 24.95 s and 36.78 s, the step 244.12 s either way), as
    # every other recomputed collective moves since 8e244403 (LayerParts.recompute_comm).
    from sp_planner.cost.step import _time_parts, time_columns
    from sp_planner.cost.step_columns import step_columns

    workload = Workload(seq_len=16384, global_batch=16)
    c = Candidates.concat([Candidates.of_plan(p) for p in (ParallelPlan(tp=4, dp=2, recompute="mlp"),
                                                           ParallelPlan(tp=4, dp=2, recompute="none"),
                                                           ParallelPlan(tp=1, ulysses=8, recompute="mlp"))])
    parts, lp = _time_parts(LLAMA, H100, workload, c, gpus_per_node=8)
    unmoved = step_columns(LLAMA, H100, workload, c, parts)
    shown = time_columns(LLAMA, H100, workload, c, gpus_per_node=8)
    assert np.array_equal(shown.step_time_s, unmoved.step_time_s)
    to_tp = np.asarray(shown.time.tp_comm_s) - np.asarray(unmoved.time.tp_comm_s)
    from_recompute = np.asarray(unmoved.time.recompute_s) - np.asarray(shown.time.recompute_s)
    # m x layers x the dense share (all of Llama's layers) of one all-gather and reduce-scatter; none
    # without the recompute or without TP.
    again = lp.micro_batches * lp.layers * (lp.stage.first.tp_all_gather_s + lp.stage.first.tp_reduce_scatter_s)
    np.testing.assert_allclose(to_tp, [np.broadcast_to(again, (3,))[0], 0.0, 0.0], rtol=1e-12, atol=0.0)
    assert to_tp[0] > 0
    np.testing.assert_allclose(from_recompute, to_tp, rtol=1e-12)


def test_each_recomputed_layer_calls_one_tp_all_gather_and_reduce_scatter_again():
    base = tp_calls_per_step(layers=8, micro_batches=4, full_recompute=False, pp=2, position_embedding="rope")
    again = mlp_recompute_layers(LLAMA, layers=8, recompute=np.array(RECOMPUTE_MLP))
    calls = tp_calls_per_step(layers=8, micro_batches=4, full_recompute=False, pp=2, position_embedding="rope",
                              mlp_recomputes=again)
    assert int(again) == 8
    assert calls.all_gathers - base.all_gathers == 32 and calls.reduce_scatters - base.reduce_scatters == 32
    assert int(mlp_recompute_layers(QWEN3_30B, layers=8, recompute=np.array(RECOMPUTE_MLP))) == 0


def test_rules_refuse_mlp_without_dense_layers_and_the_combination_without_mla():
    w = Workload(seq_len=4096, global_batch=8)
    for name in ("mlp", "mla_up_proj+mlp"):
        rules = {v.rule for v in violations(ParallelPlan(dp=8, ep=8, recompute=name), QWEN3_30B, w)}
        assert "mlp" in rules
    (v,) = violations(ParallelPlan(dp=8, ep=8, recompute="mlp"), QWEN3_30B, w)
    assert "every layer of this model is MoE" in v.message
    (v,) = violations(ParallelPlan(dp=8, recompute="mla_up_proj+mlp"), LLAMA, w)
    assert v.rule == "mla_up_proj"
    assert not violations(ParallelPlan(dp=8, recompute="mlp"), LLAMA, w)
    # The unpinned search does not try them (candidate counts unchanged); pinned, they are the choice.
    assert [RECOMPUTE[c] for c in _zeros_and_recomputes(Pins(), Axes(num_layers=32))[1]] == [
        "none", "selective", "full"]
    assert _zeros_and_recomputes(Pins(recompute="mlp"), Axes(num_layers=32))[1] == [RECOMPUTE_MLP]


@pytest.mark.parametrize(("plan", "nodes"), [(dict(tp=2, dp=4), 1), (dict(tp=2, dp=2, pp=2), 1),
                                             (dict(tp=4, ring=2, dp=2), 2)])
def test_the_simulator_agrees_and_times_the_same_rerun(plan, nodes):
    w = Workload(seq_len=8192, global_batch=32)
    steps = {}
    for name in ("none", "mlp"):
        p = ParallelPlan(recompute=name, **plan)
        est = evaluate(LLAMA, H100, w, p, num_nodes=nodes, gpus_per_node=8)
        sim = simulate(LLAMA, H100, w, p, num_nodes=nodes, gpus_per_node=8, detail=False)
        assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.005)
        steps[name] = (est.step_time_s, sim.step_time_s)
    est_extra, sim_extra = (steps["mlp"][i] - steps["none"][i] for i in (0, 1))
    assert est_extra > 0 and sim_extra == pytest.approx(est_extra, rel=0.02)
