"""cost.unpad_passes: llm-foundry's unpad and pad passes around flash-attn's varlen kernel, by hand,
and where they enter the layer's time (cost.gemm_work, cost.layer_times, sim.step_work)."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.gemm_work import gemm_work
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.layer_times import layer_times
from sp_planner.cost.overlap import TORCHTITAN_OVERLAP
from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.cost.runtime import TORCHTITAN_RUNTIME
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS
from sp_planner.cost.unpad_passes import unpad_bytes_per_token
from sp_planner.plan import ParallelPlan
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.step_work import step_work
from sp_planner.candidates import Candidates
from sp_planner.specs import ModelSpec, Workload

# MPT-1B (validation/corpus/mosaic_mpt_h100.yaml): 16 heads of 128, no GQA, h = 2048.
MPT_1B = ModelSpec(name="MPT-1B", hidden_size=2048, intermediate_size=8192, num_layers=24, num_heads=16,
                   num_kv_heads=16, head_dim=128, vocab_size=50368, tie_word_embeddings=True, mlp="gelu",
                   linear_bias=False, position_embedding="learned_absolute")
H100 = load_hardware("h100-sxm")
WORKLOAD = Workload(seq_len=2048, global_batch=16)


def test_mha_bytes_by_hand():
    # A token's q, k and v rows (2048 bf16 elements each): forward, three gathers read 2 B and write
    # 2 B an element (4 x 6144 = 24,576), pad_input writes zeros and index_puts the output (6 x
    # 2048 = 12,288); backward, three zeros + scatters (6 x 6144 = 36,864) and pad's gather of the
    # output's gradient (4 x 2048 = 8,192). 18h and 22h.
    assert unpad_bytes_per_token(MPT_1B) == (36_864.0, 45_056.0)
    assert unpad_bytes_per_token(MPT_1B) == (18 * 2048, 22 * 2048)


def test_gqa_moves_the_kv_rows_it_has():
    # Llama-3-8B: 32 query heads and 8 KV heads of 128 (q 4096, k and v 1024 each, not repeated:
    # flash-attn 2 takes GQA as it is). Forward 4 x 6144 + 6 x 4096, backward 6 x 6144 + 4 x 4096.
    model = load_model("llama3-8b")
    assert (model.q_size, model.kv_size) == (4096, 1024)
    assert unpad_bytes_per_token(model) == (49_152.0, 53_248.0)


def _gemms(unpads: bool, tp: int = 1):
    return gemm_work(MPT_1B, H100, seq_len=2048, tp=np.array([tp]), micro_batch=np.array([12]), cp=np.array([1]),
                     ep=np.array([1]), etp=np.array([1]), precision=np.array([0]), fp8_current=np.array([False]),
                     gpus_per_node=8, sequence_parallel=True, tp_gathers=BF16_TP_GATHERS, unpads_attention=unpads)


@pytest.mark.parametrize("tp", [1, 2])
def test_gemm_work_adds_each_way_on_its_own(tp):
    # 12 x 2048 tokens; the rank's heads are 1/tp of them. Each way at the memory-bound rate
    # (H100 3.35 TB/s x 0.76), not the backward as twice the forward.
    plain, unpadded = _gemms(False, tp), _gemms(True, tp)
    tokens = 12 * 2048
    fwd_s = 36_864 * tokens / tp / (3.35e12 * 0.76)
    bwd_s = 45_056 * tokens / tp / (3.35e12 * 0.76)
    assert float(memory_pass_time_s(H100, 36_864 * tokens / tp)) == pytest.approx(fwd_s)
    assert float(unpadded.fwd_s[0] - plain.fwd_s[0]) == pytest.approx(fwd_s, rel=1e-9)
    assert float(unpadded.bwd_s[0] - plain.bwd_s[0]) == pytest.approx(bwd_s, rel=1e-9)
    assert np.array_equal(unpadded.gemm_only_s, plain.gemm_only_s)
    assert np.array_equal(unpadded.logits_s, plain.logits_s)


def test_off_is_the_default():
    default = gemm_work(MPT_1B, H100, seq_len=2048, tp=np.array([1]), micro_batch=np.array([12]), cp=np.array([1]),
                        ep=np.array([1]), etp=np.array([1]), precision=np.array([0]), fp8_current=np.array([False]),
                        gpus_per_node=8, sequence_parallel=True, tp_gathers=BF16_TP_GATHERS)
    assert all(np.array_equal(a, b) for a, b in zip(default, _gemms(False)))


def _layer(recompute: str, unpads: bool):
    plan = ParallelPlan(dp=8, zero=3, micro_batch=12, recompute=recompute)
    return layer_times(MPT_1B, H100, WORKLOAD, Candidates.of_plan(plan), gpus_per_node=8,
                       overlap=TORCHTITAN_OVERLAP, ring_impl=YUNCHANG_RING, loss_bytes_per_logit=4,
                       sequence_parallel=True, tp_gathers=BF16_TP_GATHERS, unpads_attention=unpads)


@pytest.mark.parametrize("recompute, forwards", [("none", 1), ("full", 2)])
def test_full_recompute_runs_the_forward_passes_again(recompute, forwards):
    # Composer checkpoints whole MPT blocks: the recomputed forward unpads and pads again.
    plain, unpadded = _layer(recompute, False), _layer(recompute, True)
    fwd_s = 36_864 * 12 * 2048 / (3.35e12 * 0.76)
    bwd_s = 45_056 * 12 * 2048 / (3.35e12 * 0.76)
    assert float(unpadded.fwd_s[0] - plain.fwd_s[0]) == pytest.approx(fwd_s, rel=1e-9)
    assert float(unpadded.recompute_s[0] - plain.recompute_s[0]) == pytest.approx((forwards - 1) * fwd_s, abs=1e-15)
    assert float(unpadded.per_layer_s[0] - plain.per_layer_s[0]) == pytest.approx(forwards * fwd_s + bwd_s, rel=1e-9)


def test_the_simulator_times_the_same_layer():
    # sim.step_work takes the runtime's flag to cost.gemm_work: its layer's GEMM-side seconds grow by
    # the same forward and backward passes.
    cluster = build_cluster(H100, 1)
    plan = ParallelPlan(dp=8, zero=3, micro_batch=1)
    workload = Workload(seq_len=2048, global_batch=8)
    plain, unpadded = (step_work(cluster, MPT_1B, workload, plan,
                                 TORCHTITAN_RUNTIME.model_copy(update={"unpads_attention": u}))[0].kind_layers[0]
                       for u in (False, True))
    fwd_s = 36_864 * 2048 / (3.35e12 * 0.76)
    bwd_s = 45_056 * 2048 / (3.35e12 * 0.76)
    grew_fwd = (unpadded.gemm_attn_fwd_s + unpadded.gemm_mlp_fwd_s) - (plain.gemm_attn_fwd_s + plain.gemm_mlp_fwd_s)
    grew_bwd = (unpadded.gemm_attn_bwd_s + unpadded.gemm_mlp_bwd_s) - (plain.gemm_attn_bwd_s + plain.gemm_mlp_bwd_s)
    assert (grew_fwd, grew_bwd) == pytest.approx((fwd_s, bwd_s), rel=1e-9)
