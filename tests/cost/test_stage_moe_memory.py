"""A pipeline stage's memory from its own layers: DeepSeek-V3's first stage holds its 3 dense
layers and no expert, every other stage only MoE layers (cost.moe_params.stage_moe_layers). The
layers x moe_layer_fraction average gave the first stage 2.85 MoE layers' experts and a middle
stage of 4 MoE layers 3.80."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.moe_params import stage_moe_layers
from sp_planner.cost.states import MEGATRON_STATES
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

DEEPSEEK, MAVERICK = load_model("deepseek-v3"), load_model("Llama-4-Maverick-17B-128E")


def _counts(model, pp, first=0, last=0):
    return tuple(float(np.ravel(x)[0]) for x in stage_moe_layers(model, stage_layers(model.num_layers, pp, first,
                                                                                         last)))


def test_stage_moe_layers_by_hand():
    # DeepSeek-V3 (first_k_dense_replace 3): 3 + 14 x 4 + 2 layers -> 0, 4 and 2 MoE layers.
    assert _counts(DEEPSEEK, 16, 3, 2) == (0.0, 4.0, 2.0)
    # Maverick (interleave_moe_layer_step 2: layers 1, 3, 5, ... MoE), 48 layers over 16 stages of
    # 3: layers 0-2 hold 1, layers 3-5 hold 2, layers 45-47 hold 2; over 8 stages of 6: 3 each.
    assert _counts(MAVERICK, 16) == (1.0, 2.0, 2.0)
    assert _counts(MAVERICK, 8) == (3.0, 3.0, 3.0)
    # A single stage holds them all; an even split in fractions of a layer keeps the average.
    assert _counts(DEEPSEEK, 1) == (58.0, 58.0 * 61 / 61, 58.0)
    assert _counts(DEEPSEEK, 2, 0, 0)[0] == pytest.approx(30.5 * 58 / 61)


def test_deepseek_middle_stage_holds_four_moe_layers_of_states_by_hand():
    # ZeRO-1, pp 16 (3 + 14 x 4 + 2), ep 16, dp 16, tp 1: the middle stage (4 MoE layers) peaks;
    # its fp32 gradients are whole on the rank: per layer MLA + 2 RMSNorms of 7168, the shared
    # expert and the router whole, 256 routed experts of 3 x 7168 x 2048 over ep 16.
    h = 7168
    expert = 3 * h * 2048
    layer = DEEPSEEK.mla_params_per_layer + 2 * h + 256 * expert / 16 + expert + h * 256
    plan = ParallelPlan(dp=16, pp=16, ep=16, zero=1, first_stage_layers=3, last_stage_layers=2, recompute="full")
    workload = Workload(seq_len=8192, global_batch=256)
    est = evaluate(DEEPSEEK, load_hardware("H100-SXM"), workload, plan, num_nodes=32, gpus_per_node=8)
    assert est.memory.grads_bytes == pytest.approx(MEGATRON_STATES.grad_bytes * 4 * layer, rel=1e-9)
    # The same stage of an all-MoE DeepSeek-V3 holds the same states.
    all_moe = DEEPSEEK.model_copy(update={"moe": DEEPSEEK.moe.model_copy(update={"first_dense_layers": 0})})
    ref = evaluate(all_moe, load_hardware("H100-SXM"), workload, plan, num_nodes=32, gpus_per_node=8)
    for part in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        assert getattr(est.memory, part) == pytest.approx(getattr(ref.memory, part), rel=1e-12)


def test_interleaved_stages_count_the_moe_layers_megatron_places_on_them():
    # Maverick over pp 8, vpp 2 (chunks of 3): stage 0 holds layers 0-2 and 24-26 (MoE: 1, 25),
    # stage 1 layers 3-5 and 27-29 (MoE: 3, 5, 27, 29), stage 7 layers 21-23 and 45-47 (21, 23, 45, 47);
    # the contiguous count gave 3 to each (layers 0-5, 6-11, 42-47).
    from sp_planner.cost.stage_activations import stage_kind_layers, stage_moe_layers_held
    from sp_planner.candidates import Candidates

    c = Candidates.concat([Candidates.of_plan(ParallelPlan(pp=8, vpp=vpp, dp=8, ep=8)) for vpp in (2, 1)])
    placed = stage_moe_layers_held(MAVERICK, 8192, stage_kind_layers(MAVERICK, 8192, c))
    assert [float(x[0]) for x in placed] == [2.0, 4.0, 4.0]
    assert [float(x[1]) for x in placed] == list(_counts(MAVERICK, 8))  # vpp 1: the contiguous run


def test_a_stages_saved_activations_are_its_own_layers():
    # DeepSeek-V3 at 4K, tp 2, pp 16 [3, 4 x 14, 2]: the first stage saves its 3 dense layers',
    # the second 4 MoE layers', each priced as a model of that kind alone.
    from sp_planner.cost.activations import saved_activation_bytes_per_layer
    from sp_planner.cost.layer_kinds import LayerKind, kind_model
    from sp_planner.cost.stage_activations import stage_saved_bytes
    from sp_planner.candidates import Candidates

    hardware, workload = load_hardware("H100-SXM"), Workload(seq_len=4096, global_batch=256)
    c = Candidates.of_plan(ParallelPlan(tp=2, pp=16, dp=8, ep=16, first_stage_layers=3, last_stage_layers=2))

    def stored(model):
        return saved_activation_bytes_per_layer(model, hardware, workload, c)[0]

    dense, moe = (float(stored(kind_model(DEEPSEEK, LayerKind(k, False)))[0]) for k in (False, True))
    assert moe > 1.4 * dense  # the routed token copies
    from sp_planner.cost.stage_activations import stage_kind_layers

    first, second, last = stage_saved_bytes(DEEPSEEK, 4096, stage_kind_layers(DEEPSEEK, 4096, c), stored=stored)
    assert (float(first[0]), float(second[0]), float(last[0])) == pytest.approx((3 * dense, 4 * moe, 2 * moe),
                                                                                rel=1e-12)
    single = Candidates.of_plan(ParallelPlan(tp=2, dp=128, ep=16))
    assert all(np.isnan(x[0]) for x in stage_saved_bytes(DEEPSEEK, 4096, stage_kind_layers(DEEPSEEK, 4096, single),
                                                         stored=stored))
