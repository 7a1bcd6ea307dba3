"""A pipeline stage's memory from its own layers: DeepSeek-V3's first stage holds its 3 dense
layers and no expert, every other stage only MoE layers (cost.moe.stage_moe_layers). The
layers x moe_layer_fraction average gave the first stage 2.85 MoE layers' experts and a middle
stage of 4 MoE layers 3.80."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.moe import stage_moe_layers
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
