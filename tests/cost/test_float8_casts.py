"""torchao's eager Float8Linear casts (cost.float8_casts) by hand on Llama 3 8B (h 4096, q 4096, kv
1024, ffn 14336, SwiGLU): what torchtitan 0.2.x's tensorwise float8 casts each micro-batch, in
place of Transformer Engine's casts and once-a-step weight cast."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.float8_casts import EAGER_FLOAT8_CAST_BYTES_PER_ELEM, eager_float8_cast_elements
from sp_planner.cost.fp8_params import weight_cast_s
from sp_planner.cost.gemm_work import gemm_work
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.states import TORCH_FSDP_STATES
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.space import Candidates

BF16, FP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8"))
MODEL, H100 = load_model("llama3-8b"), load_hardware("h100")
FFN = 14336
# A layer's GEMM weights: wq, wo 4096 x 4096; wk, wv 1024 x 4096; w1, w2, w3 4096 x 14336.
WEIGHTS = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336  # 218,103,808


def _elements(tp, precision=FP8, gathers=TORCHAO_TENSORWISE_TP_GATHERS):
    fwd, bwd = eager_float8_cast_elements(MODEL, tokens=8192, tp=np.array([tp]), ep=1, etp=1, ffn=FFN,
                                          precision=np.array([precision]), gathers=gathers)
    return fwd[0], bwd[0]


def test_an_eager_cast_moves_33_bytes_an_element():
    # abs (2 + 2), max (2); to fp32 (2 + 4), x scale (4 + 4), clamp (4 + 4), to float8 (4 + 1).
    assert EAGER_FLOAT8_CAST_BYTES_PER_ELEM == 33


def test_tp_1_each_linear_casts_its_own_input_and_backward_casts_again():
    # Forward: wq, wk, wv each cast the 4096-wide norm output, wo the 4096-wide attention output,
    # w1 and w3 the 4096-wide norm output, w2 the 14336-wide product: 38,912 a token x 8192,
    # plus every weight: 318,767,104 + 218,103,808 = 2^29.
    fwd, bwd = _elements(1)
    assert fwd == 38_912 * 8192 + WEIGHTS == 2**29
    # Backward: each output gradient twice (q + 2kv + h + 2 ffn + h = 43,008 a token), the saved
    # inputs again, the weights again.
    assert bwd == (2 * 43_008 + 38_912) * 8192 + WEIGHTS == 1_241_513_984


def test_tp_2_the_float8_styles_cast_each_tensor_once():
    # The styles cast the shards before the collectives: the four GEMM inputs (h + q + h + ffn =
    # 26,624 a token) forward and the output gradients (43,008) backward on 8192/2 tokens, and
    # Float8Linear casts only its half of the weights, forward and backward.
    fwd, bwd = _elements(2)
    assert fwd == 26_624 * 4096 + WEIGHTS / 2 == 218_103_808
    assert bwd == 43_008 * 4096 + WEIGHTS / 2 == 285_212_672


@pytest.mark.parametrize("precision, gathers", [(BF16, TORCHAO_TENSORWISE_TP_GATHERS), (FP8, TE_TP_GATHERS),
                                                (FP8, BF16_TP_GATHERS)])
def test_none_outside_torchaos_eager_per_tensor_fp8(precision, gathers):
    assert _elements(1, precision, gathers) == (0.0, 0.0)


def test_the_layer_work_takes_the_eager_casts_and_no_weight_cast_a_step():
    # gemm_work's casts: Transformer Engine's (6 B an element on Hopper) replaced by the eager
    # count at 33 B; the GEMMs and elementwise work are the same, so the difference is the casts'.
    one = dict(seq_len=8192, tp=np.array([1]), micro_batch=1, cp=1, ep=1, etp=1, precision=np.array([FP8]),
               fp8_current=np.array([True]), gpus_per_node=8)
    te = gemm_work(MODEL, H100, **one, tp_gathers=TE_TP_GATHERS)
    ao = gemm_work(MODEL, H100, **one, tp_gathers=TORCHAO_TENSORWISE_TP_GATHERS)
    te_fwd, te_bwd = 6 * 26_624 * 8192, 6 * 43_008 * 8192
    fwd, bwd = _elements(1)
    assert ao.fwd_s[0] - te.fwd_s[0] == pytest.approx(float(memory_pass_time_s(H100, 33 * fwd - te_fwd)))
    # Backward takes the forward's non-cast work twice in both, then its own casts.
    assert ao.bwd_s[0] - te.bwd_s[0] == pytest.approx(float(memory_pass_time_s(H100, 33 * bwd - te_bwd)))
    c = Candidates.of_plan(ParallelPlan(precision="fp8", fp8_recipe="tensorwise"))
    assert weight_cast_s(H100, MODEL, TORCH_FSDP_STATES, c, 32, 4, TORCHAO_TENSORWISE_TP_GATHERS)[0] == 0.0
    # Transformer Engine's: once a step, 6 B a weight (cast, transpose, amax) on the 32 layers.
    assert weight_cast_s(H100, MODEL, TORCH_FSDP_STATES, c, 32, 4, TE_TP_GATHERS)[0] == pytest.approx(
        float(memory_pass_time_s(H100, 6 * 32 * WEIGHTS)))
