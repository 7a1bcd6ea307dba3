"""Recompute mla_up_proj (cost.mla_recompute): DeepSeek-V3's saved bytes and FLOPs by hand, the
rule, the search's choices and the flags."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.activations import activation_bytes_per_layer
from sp_planner.cost.flops import hardware_flops_per_step, model_flops_per_step
from sp_planner.cost.mla_recompute import mla_up_proj_flops_per_token
from sp_planner.flags import FlagRequest, render_flags
from sp_planner.plan import RECOMPUTE_MLA_UP_PROJ, RECOMPUTE_NONE, ParallelPlan, violations
from sp_planner.space import Pins
from sp_planner.space_choices import Axes, _zeros_and_recomputes
from sp_planner.specs.workload import Workload

DSV3 = load_model("DeepSeek-V3")
MIB = 2**20


@pytest.mark.parametrize("tp, none_mib", [(1, 1727.77), (2, 863.89)])
def test_deepseek_v3_4k_saved_bytes_drop_by_qkv_less_k_pos_emb(tp, none_mib):
    # n = 4096 tokens, 128 heads, the model's head_dim (128 + 64 + 128)/2 = 160:
    # Q = 2 B x 4096 x 128/tp x 160 = 160/tp MiB, K + V twice that: 480/tp MiB freed.
    # k_pos_emb kept whole on every TP rank: 2 B x 4096 x 64 = 0.5 MiB.
    w = Workload(seq_len=4096, global_batch=1)
    none, up = (activation_bytes_per_layer(DSV3, w, tp=tp, ulysses=1, ring=1, micro_batch=1,
                                           recompute=np.array([code]))[0][0]
                for code in (RECOMPUTE_NONE, RECOMPUTE_MLA_UP_PROJ))
    assert (none - up) / MIB == pytest.approx(480 / tp - 0.5)
    assert none / MIB == pytest.approx(none_mib, abs=0.01)  # 1248.27 and 624.39 MiB with mla_up_proj


def test_ulysses_saves_its_own_copies_and_the_ring_its_kv_buffer():
    w = Workload(seq_len=4096, global_batch=1)

    def drop(**cp):
        none, up = (activation_bytes_per_layer(DSV3, w, tp=1, micro_batch=1, recompute=np.array([code]), **cp)[0][0]
                    for code in (RECOMPUTE_NONE, RECOMPUTE_MLA_UP_PROJ))
        return (none - up) / MIB

    # n = 2048 tokens: Q 80 MiB, K + V 160 MiB, k_pos_emb 0.25 MiB.
    assert drop(ulysses=1, ring=2) == pytest.approx(80 - 0.25)  # TE p2p saves its own K/V ring buffer
    assert drop(ulysses=1, ring=2, allgather=True) == pytest.approx(240 - 0.25)  # all-gather CP saves q, k, v
    assert drop(ulysses=2, ring=1) == pytest.approx(-0.25)  # the all-to-all's outputs are saved


def test_hardware_flops_add_the_up_projections_forward_model_flops_unchanged():
    # 2 x (q_lora 1536 x 128 x (128 + 64) + kv_lora 512 x 128 x (128 + 128)) = 109,051,904 per token.
    assert mla_up_proj_flops_per_token(DSV3) == 2 * (1536 * 128 * 192 + 512 * 128 * 256) == 109_051_904
    none, up = hardware_flops_per_step(DSV3, seq_len=4096, global_batch=2, causal=True,
                                       recompute=np.array([RECOMPUTE_NONE, RECOMPUTE_MLA_UP_PROJ]))
    assert up - none == pytest.approx(109_051_904 * 61 * 4096 * 2)
    assert model_flops_per_step(DSV3, seq_len=4096, global_batch=2) > 0  # no recompute argument at all


def test_rule_refuses_a_model_without_mla():
    llama = load_model("Llama-3-8B")
    w = Workload(seq_len=4096, global_batch=8)
    (v,) = violations(ParallelPlan(dp=8, recompute="mla_up_proj"), llama, w)
    assert v.rule == "mla_up_proj" and "has no MLA" in v.message
    assert not violations(ParallelPlan(dp=8, recompute="mla_up_proj"), DSV3, w)


def test_search_offers_it_to_mla_models_only():
    assert RECOMPUTE_MLA_UP_PROJ not in _zeros_and_recomputes(Pins(), Axes(num_layers=32))[1]
    assert RECOMPUTE_MLA_UP_PROJ in _zeros_and_recomputes(Pins(), Axes(num_layers=61, mla=True))[1]
    assert _zeros_and_recomputes(Pins(recompute="mla_up_proj"), Axes(num_layers=32))[1] == [RECOMPUTE_MLA_UP_PROJ]


def _request(plan):
    return FlagRequest(model=DSV3, workload=Workload(seq_len=4096, global_batch=plan.dp * 2), plan=plan,
                       num_nodes=plan.world_size // 8, gpus_per_node=8)


def test_frameworks_without_it_refuse():
    plan = ParallelPlan(tp=2, dp=32, ep=64, etp=1, recompute="mla_up_proj")
    for framework in ("deepspeed", "torchtitan", "yunchang"):
        flags = render_flags(framework, _request(plan))
        assert not flags.supported and "recompute mla_up_proj cannot be expressed" in flags.reason, framework
    text = render_flags("megatron", _request(plan)).text
    assert "--recompute-granularity selective" in text and "--recompute-modules mla_up_proj" in text
    assert "--recompute-method" not in text
