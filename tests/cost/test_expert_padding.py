"""Megatron-Core's per-expert FP8 padding copies (cost.expert_padding): the alignment by precision,
when the counts are unaligned, the bytes by hand from TE's Fp8Padding and Fp8Unpadding, and their
time beside the alltoall dispatcher's permutations."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.expert_padding import (GROUPED_MLP_PADS, NO_PADDING, align_rows, padding_bytes_per_token,
                                            unaligned_probability)
from sp_planner.cost.moe import moe_times
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload
from sp_planner.specs.moe import MoESpec

QWEN3_235B = load_model("Qwen3-235B-A22B")  # hidden 4096, 128 experts, top-8, all 94 layers MoE
BALANCED = QWEN3_235B.model_copy(update={"moe": QWEN3_235B.moe.model_copy(update={"routing": "balanced"})})
PADDER = {True: GROUPED_MLP_PADS, False: NO_PADDING}
CODES = np.array([PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8")])


def _with_moe(model, **update):
    return model.model_copy(update={"moe": model.moe.model_copy(update=update)})


def test_alignment_by_precision():
    # TE Fp8Padding: 32 rows under MXFP8, 16 under the other FP8 recipes; bf16 pads nothing, and
    # nothing pads where the framework does not (or its router pads instead).
    assert align_rows(CODES, True).tolist() == [0.0, 16.0, 32.0]
    assert align_rows(CODES, False).tolist() == [0.0, 0.0, 0.0]


def test_dropless_counts_are_unaligned_but_for_all_residues_zero():
    # One local expert (ep 128): aligned with probability 1/16 under FP8, 1/32 under MXFP8.
    assert float(unaligned_probability(BALANCED, 4096, 128, 1, 16)) == 1 - 1 / 16
    assert float(unaligned_probability(BALANCED, 4096, 128, 1, 32)) == 1 - 1 / 32
    # 16 local experts (ep 8): every one aligned with probability 16^-16.
    assert float(unaligned_probability(BALANCED, 4096, 8, 1, 16)) == 1 - 16.0 ** -16
    assert float(unaligned_probability(BALANCED, 4096, 8, 1, 0)) == 0.0
    assert float(unaligned_probability(load_model("Llama-3-8B"), 4096, 8, 1, 16)) == 0.0


def test_padded_to_capacity_is_exact():
    drop = QWEN3_235B.model_copy(update={"moe": MoESpec(num_experts=128, top_k=8, moe_intermediate_size=1536,
                                                        capacity_factor=1.0, pad_to_capacity=True)})
    # 16384 tokens x 8 / 128 = capacity 1024 a source; x ep 8 = 8192 rows an expert: aligned.
    assert float(unaligned_probability(drop, 16384, 8, 1, 32)) == 0.0
    # 1000 tokens: capacity ceil(62.5) = 63, x 8 = 504 rows = 31 x 16 + 8: unaligned.
    assert float(unaligned_probability(drop, 1000, 8, 1, 16)) == 1.0
    # ... and with etp 2, 1008 rows = 63 x 16: aligned.
    assert float(unaligned_probability(drop, 1000, 8, 2, 16)) == 0.0


def test_bytes_by_hand():
    # Per token copy: pad and unpad, each reading and writing a row of 4096 bf16 elements,
    # 2 x 2 x 4096 x 2 = 32768 bytes; 8 copies a source token at load 1.
    p = 1 - 16.0 ** -16
    assert float(padding_bytes_per_token(BALANCED, 4096, 8, 1, 16, 1.0, 2)) == pytest.approx(8 * 32768 * p, rel=1e-15)
    # etp 2 doubles the copies the rank's experts compute; a 1.25 load adds a quarter.
    assert float(padding_bytes_per_token(BALANCED, 4096, 8, 2, 16, 1.25, 2)) == pytest.approx(
        2 * 1.25 * 8 * 32768 * p, rel=1e-15)


@pytest.mark.parametrize("dispatcher,copied", [("alltoall", True), ("hybridep", False)])
def test_copies_ride_with_the_alltoall_permutations(dispatcher, copied):
    hw = load_hardware("b200")
    model = _with_moe(BALANCED, dispatcher=dispatcher)
    kw = dict(tokens_per_tp_rank=4096, ep=8, etp=1, ep_stride=1, elem_bytes=2, gpus_per_node=8)
    padded = moe_times(hw, model, pad_align_rows=16.0, **kw)
    plain = moe_times(hw, model, **kw)
    # 4096 tokens x 262144 bytes = 1 GiB a layer forward, at the memory-bound share of HBM.
    expected = 4096 * 8 * 32768 * (1 - 16.0 ** -16) / (hw.hbm_bandwidth_bytes_per_s * hw.efficiency.memory_bound)
    assert float(padded.permute_s - plain.permute_s) == pytest.approx(expected if copied else 0.0, rel=1e-12)


def test_megatron_fp8_plans_pay_it_forward_and_backward():
    hw = load_hardware("b200")
    model = _with_moe(load_model("Qwen3-30B-A3B"), routing="balanced")  # hidden 2048, 48 MoE layers
    workload = Workload(seq_len=4096, global_batch=64)
    plan = ParallelPlan(dp=8, ep=8, etp=1, zero=1, precision="fp8", fp8_recipe="tensorwise")
    runs = {pads: evaluate(model, hw, workload, plan, num_nodes=1, gpus_per_node=8,
                           runtime=MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": PADDER[pads]}))
            for pads in (True, False)}
    # Megatron-Core's default pads (corpus rows without moe_router_padding; sp-plan's flags pad in
    # the router instead, flags.release_runtime, tests/flags/test_router_padding_agreement.py).
    assert MEGATRON_RUNTIME.expert_row_padding == GROUPED_MLP_PADS
    # 8 micro-batches x 48 layers x (forward + backward) x 4096 tokens x 8 copies x 2 x 2 x 2048 x 2 B.
    per_pass = 4096 * 8 * 2 * 2 * 2048 * 2 * (1 - 16.0 ** -16) / (
        hw.hbm_bandwidth_bytes_per_s * hw.efficiency.memory_bound)
    assert runs[True].time.gemm_s - runs[False].time.gemm_s == pytest.approx(8 * 48 * 2 * per_pass, rel=1e-9)
    # bf16 pads nothing.
    bf16 = plan.model_copy(update={"precision": "bf16", "fp8_recipe": None})
    times = [evaluate(model, hw, workload, bf16, num_nodes=1, gpus_per_node=8,
                      runtime=MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": PADDER[pads]})).time.gemm_s
             for pads in (True, False)]
    assert times[0] == times[1]
