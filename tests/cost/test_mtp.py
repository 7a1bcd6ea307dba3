"""Multi-token prediction (cost.mtp) against hand counts: DeepSeek-V3's one MTP depth's parameters,
FLOPs and the last stage's work, and the simulator running the same depths."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.buckets import stage_layouts
from sp_planner.cost.flops import hardware_flops_per_step, model_flops_per_step
from sp_planner.cost.mtp import mtp_depth_extras_s, mtp_head_s, mtp_kind, mtp_layer_model, mtp_saved_extra_bytes
from sp_planner.cost.params import mtp_params_per_rank, stage_params_per_rank
from sp_planner.cost.states import MEGATRON_STATES
from sp_planner.cost.tied_embedding import tied_grad_bytes
from sp_planner.pipeline import stage_layers
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload

H100 = load_hardware("H100-SXM")
DSV3 = load_model("DeepSeek-V3")
DSV3_MTP = DSV3.model_copy(update={"mtp_layers": 1})
H, V = 7168, 129280
# DeepSeek-V3's MoE layer by hand (MLA: q_lora 1536, kv_lora 512, qk 128 + 64, v 128, 128 heads;
# 256 routed + 1 shared expert of 3 x 7168 x 2048, a 7168 x 256 router, two norms).
MLA = (H * 1536 + 1536 + 1536 * 128 * 192) + (H * (512 + 64) + 512 + 512 * 128 * 256) + 128 * 128 * H
MOE_MLP = 257 * 3 * H * 2048 + H * 256
MOE_LAYER = MLA + MOE_MLP + 2 * H
EXTRA = 2 * H * H + 3 * H  # eh_proj and enorm, hnorm, final_layernorm


def test_deepseek_v3_mtp_depth_holds_a_moe_layer_eh_proj_and_norms():
    # One depth: 11,610,067,968 parameters, the "11.5B unique" DeepSeek publishes for its MTP module
    # (deepseek-ai/DeepSeek-V3 README_WEIGHTS.md; its embedding and head are shared).
    assert mtp_kind(DSV3, 4096).moe
    assert float(mtp_params_per_rank(DSV3_MTP, 1, 1)) == MOE_LAYER + EXTRA == 11_610_067_968
    assert MOE_LAYER + EXTRA == pytest.approx(11.5e9, rel=0.01)
    # With a pipeline the last stage adds its own copy of the table (gpt_model.py lines 173-174);
    # tp 2 splits the MLA projections but the down projections and latent norms (whole on every
    # rank, cost.params.mla_tp_duplicated_params), the dense MLP parts and eh_proj, ep 8 the routed
    # experts.
    routed = 256 * 3 * H * 2048
    down = H * (1536 + 576) + 1536 + 512
    by_hand = (((MLA - down) / 2 + down) + (routed / 8 + 3 * H * 2048 / 2 + H * 256) + 2 * H) + 2 * H * H / 2 + 3 * H
    by_hand += V * H / 2
    assert float(mtp_params_per_rank(DSV3_MTP, 2, 16, 8, 1)) == pytest.approx(by_hand, rel=1e-12)
    assert mtp_params_per_rank(DSV3, 2, 16, 8, 1) == 0.0


def test_the_last_stage_holds_the_depths_and_a_single_stage_no_second_table():
    stages = stage_layers(61, np.array([16]), np.array([4]), np.array([1]))
    first0, last0 = stage_params_per_rank(DSV3, 1, np.array([16]), stages, 8, 1)
    first1, last1 = stage_params_per_rank(DSV3_MTP, 1, np.array([16]), stages, 8, 1)
    assert first1[0] == first0[0]
    assert last1[0] - last0[0] == pytest.approx(MLA + 256 * 3 * H * 2048 / 8 + 3 * H * 2048 + H * 256 + 2 * H
                                                + EXTRA + V * H, rel=1e-12)
    one = stage_layers(61, np.array([1]), np.array([0]), np.array([0]))
    single0, _ = stage_params_per_rank(DSV3, 1, np.array([1]), one)
    single1, _ = stage_params_per_rank(DSV3_MTP, 1, np.array([1]), one)
    assert single1[0] - single0[0] == pytest.approx(MOE_LAYER + EXTRA, rel=1e-12)


def test_model_flops_count_the_depth_as_megatron_does():
    # training.py lines 1042-1049 and 1288-1303: one more MoE layer (2 x its active weights: MLA's
    # projections and 8 routed + 1 shared expert; attention over the full 4096 x 4096 square, 4 x
    # q_size x s with q_size 128 x 160), 2 x (2h^2 + 3h) for eh_proj and the norms, 2hV for the
    # logits, each 3 x forward.
    s = 4096
    layer = 2 * MLA + 2 * 3 * H * 9 * 2048 + 4 * 128 * 160 * s
    per_token = 3 * (layer + 2 * EXTRA + 2 * H * V)
    delta = model_flops_per_step(DSV3_MTP, seq_len=s, global_batch=2) - model_flops_per_step(DSV3, seq_len=s,
                                                                                                global_batch=2)
    assert delta == pytest.approx(per_token * s * 2, rel=1e-12)
    # Executed FLOPs: the causal half of the attention, and full recompute runs the layer again.
    causal = 2 * MLA + 2 * 3 * H * 9 * 2048 + 2 * 128 * 160 * s
    full = np.array([2])  # plan.RECOMPUTE_FULL
    hw = hardware_flops_per_step(DSV3_MTP, seq_len=s, global_batch=1, causal=True, recompute=full) - (
        hardware_flops_per_step(DSV3, seq_len=s, global_batch=1, causal=True, recompute=full))
    assert float(hw[0]) == pytest.approx((4 * causal + 3 * (2 * EXTRA + 2 * H * V)) * s, rel=1e-12)


def test_a_depth_beyond_its_layer_is_eh_proj_the_norms_and_the_heads_again():
    tokens, tp = 4096.0, 2
    zero = dict(logits_s=0.0, logits_bwd_share=2 / 3, emb_fwd_s=0.0, emb_bwd_s=0.0, out_tp_fwd_s=0.0,
                out_tp_bwd_s=0.0, emb_tp_fwd_s=0.0, emb_tp_bwd_s=0.0)
    fwd, bwd = mtp_depth_extras_s(DSV3_MTP, H100, tokens=tokens, tp=tp, **zero)
    rate = H100.peak_bf16_flops * H100.efficiency.gemm * H100.efficiency.sustained_fraction
    eh = 2 * 2 * H * H * tokens / tp / rate
    norms = 3 * 2 * 2 * H * tokens / tp / (H100.hbm_bandwidth_bytes_per_s * H100.efficiency.memory_bound)
    assert float(fwd) == pytest.approx(eh + norms, rel=1e-12)
    assert float(bwd) == pytest.approx(2 * (eh + norms), rel=1e-12)
    # The heads' work comes again per depth, its backward share in backward.
    fwd2, bwd2 = mtp_depth_extras_s(DSV3_MTP, H100, tokens=tokens, tp=tp, **{**zero, "logits_s": 0.3})
    assert (float(fwd2 - fwd), float(bwd2 - bwd)) == pytest.approx((0.1, 0.2))
    two = DSV3.model_copy(update={"mtp_layers": 2})
    total, backward = mtp_head_s(two, H100, layer_total_s=1.0, layer_bwd_s=0.6, tokens=tokens, tp=tp, **zero)
    assert (float(total), float(backward)) == pytest.approx((2 * (1.0 + fwd + bwd), 2 * (0.6 + bwd)))
    assert mtp_head_s(DSV3, H100, layer_total_s=1.0, layer_bwd_s=0.6, tokens=tokens, tp=tp, **zero) == (0.0, 0.0)


def test_a_depth_saves_eh_projs_input_and_three_norm_inputs():
    # 2h + 3h bf16 values per token of the sequence-parallel region.
    assert float(mtp_saved_extra_bytes(DSV3_MTP, 2048.0)) == 5 * 2 * H * 2048


def test_the_depths_layer_is_the_last_layers_kind():
    assert mtp_layer_model(load_model("Llama-3-8B"), 8192) is None  # alike layers: the average is it
    maverick = load_model("Llama-4-Maverick-17B-128E")
    assert mtp_layer_model(maverick, 8192).moe.layer_step == 1  # its last layer is an MoE one


def test_mtp_all_reduces_the_tables_between_the_pipelines_ends():
    # finalize_model_grads.py lines 146 and 164-239: DeepSeek-V3 is untied, yet with MTP the last
    # stage's copy of the table is summed with the first stage's: (V / tp) x h fp32 main grads.
    c = Candidates.of_plan(ParallelPlan(tp=2, pp=16, dp=8))
    assert float(tied_grad_bytes(DSV3, c, MEGATRON_STATES)[0]) == 0.0
    assert float(tied_grad_bytes(DSV3_MTP, c, MEGATRON_STATES)[0]) == 4 * V * H / 2


def test_the_depths_tensors_are_the_last_stages_head_and_its_experts():
    dense0, expert0 = stage_layouts(DSV3, tp=1, ep=8, etp=1, layers=1, single_stage=False, dp=16, zero=1,
                                    first_stage=False, last_stage=True)
    dense1, expert1 = stage_layouts(DSV3_MTP, tp=1, ep=8, etp=1, layers=1, single_stage=False, dp=16, zero=1,
                                    first_stage=False, last_stage=True)
    dense_params = lambda layout: sum(layout.head) + sum(sum(b) for b in layout.layers) + sum(layout.tail)  # noqa: E731
    routed = 256 * 3 * H * 2048 / 8
    assert dense_params(dense1) - dense_params(dense0) == pytest.approx(MOE_LAYER - 256 * 3 * H * 2048 + EXTRA + V * H)
    assert dense_params(expert1) - dense_params(expert0) == pytest.approx(routed)


@pytest.mark.parametrize(("name", "seq_len", "global_batch", "nodes", "plan"), [
    ("Llama-3-8B", 8192, 64, 2, ParallelPlan(tp=2, pp=4, dp=2, vpp=2)),
    ("Llama-3-8B", 8192, 64, 2, ParallelPlan(tp=2, dp=8)),
    ("Qwen3-30B-A3B", 4096, 128, 2, ParallelPlan(pp=2, dp=8, ep=8)),
    ("DeepSeek-V3", 4096, 256, 32, ParallelPlan(tp=2, pp=16, dp=8, ep=16, first_stage_layers=3, last_stage_layers=2)),
])
def test_the_simulator_runs_the_depths_as_the_analytic_model_counts_them(name, seq_len, global_batch, nodes, plan):
    model, workload = load_model(name).model_copy(update={"mtp_layers": 1}), Workload(seq_len=seq_len,
                                                                                      global_batch=global_batch)
    est = evaluate(model, H100, workload, plan, num_nodes=nodes, gpus_per_node=8)
    sim = simulate(model, H100, workload, plan, num_nodes=nodes, gpus_per_node=8, detail=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.01)
    without = evaluate(load_model(name), H100, workload, plan, num_nodes=nodes, gpus_per_node=8)
    assert est.step_time_s > without.step_time_s


@pytest.mark.parametrize("vpp", [1, 2, 4])
def test_an_interleaved_last_rank_holds_the_depths_activations_once(vpp):
    # The depths run in the last chunk only; at the last rank's peak (its first backward) its
    # in-flight forwards are pp x (vpp - 1) of earlier chunks and one of the last: Llama-3-8B at 4K
    # over pp 4, a second depth adds one layer's saved bytes and 10h bytes a token, whatever vpp
    # (not ((vpp - 1) pp + 1) / vpp times them: 2.5x at vpp 2).
    from sp_planner.cost.activations import saved_activation_bytes_per_layer
    from sp_planner.cost.memory import memory_columns

    llama, workload = load_model("Llama-3-8B"), Workload(seq_len=4096, global_batch=64)
    c = Candidates.of_plan(ParallelPlan(pp=4, vpp=vpp, dp=2))
    one, two = (memory_columns(llama.model_copy(update={"mtp_layers": k}), H100, workload, c, domain_gpus=8)
                for k in (1, 2))
    assert float(one.logits_bytes[0]) > 0 and float(two.logits_bytes[0]) > 0  # the last stage peaks
    layer = float(saved_activation_bytes_per_layer(llama, H100, workload, c)[0][0])
    assert float(two.activations_bytes[0] - one.activations_bytes[0]) == layer + 5 * 2 * 4096 * 4096


def test_the_depths_gemm_weights_are_the_last_stages_root_gemm():
    # Their FP8 copies (cost.memory) and FP8 gathers (cost.dp_times): the layer's weights less its
    # norms and routed experts (MLA, the shared expert, the router) and eh_proj, at tp 1; routed
    # experts over edp with the stage's (cost.stage_params).
    from sp_planner.cost.stage_params import stage_params
    stages = stage_layers(61, np.array([16]), np.array([4]), np.array([1]))
    moe = (np.array([1.0]), np.array([4.0]), np.array([1.0]))
    own = stage_params(DSV3_MTP, 1, np.array([16]), 8, 1, stages, moe)
    assert float(own.root_gemm[2][0]) == MLA + 3 * H * 2048 + H * 256 + 2 * H * H
    assert float(own.root_gemm[0][0]) == 0.0 and float(own.root_gemm[1][0]) == 0.0
    without = stage_params(DSV3, 1, np.array([16]), 8, 1, stages, moe)
    assert float(own.experts[2][0] - without.experts[2][0]) == 256 * 3 * H * 2048 / 8
