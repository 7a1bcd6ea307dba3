"""Executed FLOPs (cost.flops.hardware_flops_per_step) where the framework runs MLA's down
projections whole on every TP rank (torchtitan), against hand counts."""

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.flops import hardware_flops_per_step
from sp_planner.plan import RECOMPUTE_FULL, RECOMPUTE_NONE, RECOMPUTE_SELECTIVE

DSV3 = load_model("deepseek-v3")  # 61 layers, h 7168, q_lora_rank 1536, kv_lora_rank 512, rope dim 64
LLAMA = load_model("llama3-8b")
# DeepSeek-V3's down projections a token and layer: 2 x 7168 x (512 + 64 + 1536) FLOPs.
DOWN_FLOPS = 2 * 7168 * (512 + 64 + 1536)


def _flops(model, tp, whole, recompute=RECOMPUTE_NONE):
    return float(hardware_flops_per_step(model, seq_len=4096, global_batch=2, causal=True,
                                         recompute=np.array([recompute]), tp=np.array([tp]),
                                         whole_mla_down_projections=whole)[0])


def test_whole_down_projections_run_once_on_each_tp_rank():
    assert DOWN_FLOPS == 30_277_632
    # tp 8: each rank runs every token of its group through wq_a and wkv_a, 7 copies beyond the
    # model's one, forward + 2 x backward, 61 layers, 2 x 4096 tokens.
    copies = 61 * 7 * DOWN_FLOPS * 3 * 4096 * 2
    assert copies == 317_732_016_881_664  # 15.5% above the split count (2.05e15)
    assert _flops(DSV3, 8, True) - _flops(DSV3, 8, False) == pytest.approx(copies, rel=1e-12)
    # Selective recompute re-runs the core attention only; full the forward, down projections too.
    assert _flops(DSV3, 8, True, RECOMPUTE_SELECTIVE) - _flops(DSV3, 8, False, RECOMPUTE_SELECTIVE) == (
        pytest.approx(copies, rel=1e-12))
    assert _flops(DSV3, 8, True, RECOMPUTE_FULL) - _flops(DSV3, 8, False, RECOMPUTE_FULL) == (
        pytest.approx(copies * 4 / 3, rel=1e-12))


def test_nothing_added_at_tp_1_without_mla_or_for_megatron():
    # tp 1 has no other rank; Llama has no MLA; Megatron splits the tokens (flag off): the count
    # is the one before the flag, whatever tp.
    assert _flops(DSV3, 1, True) == _flops(DSV3, 1, False)
    assert _flops(LLAMA, 8, True) == _flops(LLAMA, 8, False) == _flops(LLAMA, 1, False)
    assert _flops(DSV3, 8, False) == _flops(DSV3, 1, False)
