"""Step-time assembly: bubble, exposed comm, FLOP conventions."""

import numpy as np
import pytest

from sp_planner import distinct
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.flops import logits_gemm_flops_per_token, model_flops_per_step
from sp_planner.cost.kernels import gemm_time_s, memory_pass_time_s
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.plan import ParallelPlan
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME
from sp_planner.cost.step import time_columns
from sp_planner.search import evaluate, search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.specs import Workload

WORKLOAD = Workload(seq_len=4096, global_batch=8)


def test_bubble_is_the_other_stages_micro_batch(toy_model, hardware):
    # pp 2, 8 micro-batches: the last stage paces (its layers and the logits); the pipeline fills
    # and drains through the first, whose micro-batch is the same layers without the logits:
    # (pp-1)/m of the work when the stages are equal (Narayanan 2021), less the logits here, plus
    # the first stage's embedding gradient passes (cost.embedding_grad: 100 x 64 table, Megatron's
    # zero-fill 2 B and main_grad add 10 B an element, at 1 TB/s x 0.8 memory-bound: 96 ns).
    est = evaluate(toy_model, hardware, WORKLOAD, ParallelPlan(pp=2, dp=1, micro_batch=1),
                   num_nodes=1, gpus_per_node=2)
    t = est.time
    work = (t.gemm_s + t.attention_s + t.recompute_s + t.tp_comm_s + t.ulysses_comm_s
            + t.ring_comm_exposed_s)
    m, tokens = 8, WORKLOAD.seq_len
    logits = float(gemm_time_s(hardware, 3 * logits_gemm_flops_per_token(toy_model) * tokens)
                   + memory_pass_time_s(hardware, LOSS_BYTES_PER_LOGIT * tokens * toy_model.vocab_size))
    assert logits > 0
    embedding = 12 * 100 * 64 / (1e12 * 0.8)
    assert t.bubble_s == pytest.approx((2 - 1) / m * work - logits + embedding)
    assert est.step_time_s == pytest.approx(sum(t.model_dump().values()))


def test_no_bubble_or_pp_comm_without_pipeline(toy_model, hardware):
    t = evaluate(toy_model, hardware, WORKLOAD, ParallelPlan(dp=2), num_nodes=1, gpus_per_node=2).time
    assert t.bubble_s == 0 and t.pp_comm_s == 0 and t.tp_comm_s == 0


def test_tp_comm_exposed_by_hand(toy_model, hardware):
    # 8 sequences of 4096 tokens over dp 1 -> 8 micro-batches; 2 layers; tp 2 inside a node:
    # every AG / RS sends 4096*64*2/2 bytes at 100 GB/s; 6 AG + 4 RS per layer, and per
    # micro-batch the embedding's RS (forward) and AG (backward) and the output layer's AG
    # (forward), AG and RS (backward; Megatron-Core tensor_parallel/layers.py). At step end the
    # sequence-parallel norms' fp32 gradients, 2 layers x 2 x 64 + the final norm's 64 = 320 x 4 B,
    # all-reduced over the 2 ranks: each sends 2 x 1/2 x 1280 B (cost.replicated_grads).
    t = evaluate(toy_model, hardware, WORKLOAD, ParallelPlan(tp=2, micro_batch=1), num_nodes=1,
                 gpus_per_node=2).time
    assert t.tp_comm_s == pytest.approx(8 * (2 * 10 + 5) * (4096 * 64 * 2 / 2) / 100e9 + 1280 / 100e9, rel=1e-12)


def test_recompute_costs_time(toy_model, hardware):
    times = {r: evaluate(toy_model, hardware, WORKLOAD, ParallelPlan(dp=2, recompute=r), num_nodes=1,
                         gpus_per_node=2) for r in ("none", "selective", "full")}
    assert times["none"].time.recompute_s == 0
    assert 0 < times["selective"].time.recompute_s < times["full"].time.recompute_s
    assert times["full"].hardware_tflops_per_gpu > times["none"].hardware_tflops_per_gpu * (
        times["none"].step_time_s / times["full"].step_time_s)
    # model FLOPs do not count recompute
    assert times["full"].model_tflops_per_gpu * times["full"].step_time_s == pytest.approx(
        times["none"].model_tflops_per_gpu * times["none"].step_time_s)


def test_megatron_model_flops_llama2_7b_by_hand():
    # Megatron num_floating_point_operations (2024): 12*B*s*L*h^2*[(1 + g/a + s/h)*q/h
    # + ffn/h*3/2] + 6*B*s*h*V, Llama-2-7B (h 4096, MHA, ffn 11008, 32 layers, V 32000).
    s, h, L, ffn, V = 65536, 4096, 32, 11008, 32000
    want = 12 * s * L * h * h * ((1 + 1 + s / h) + ffn / h * 1.5) + 6 * s * h * V
    got = model_flops_per_step(load_model("Llama-2-7B"), seq_len=s, global_batch=1)
    assert got == pytest.approx(want, rel=1e-12)


def test_mfu_is_model_tflops_over_peak(toy_model, hardware):
    est = evaluate(toy_model, hardware, WORKLOAD, ParallelPlan(dp=2), num_nodes=1, gpus_per_node=2)
    assert est.mfu == pytest.approx(est.model_tflops_per_gpu * 1e12 / 100e12)
    assert est.tokens_per_s == pytest.approx(8 * 4096 / est.step_time_s)
    # causal: the hardware count halves the attention square, so it is below the model count
    assert est.hardware_tflops_per_gpu < est.model_tflops_per_gpu


@pytest.mark.parametrize(("model_name", "runtime"), [
    ("Llama-3-8B", FRAMEWORK_RUNTIME["megatron"]), ("Qwen3-30B-A3B", FRAMEWORK_RUNTIME["deepspeed"]),
    ("Qwen3-30B-A3B", FRAMEWORK_RUNTIME["megatron"].model_copy(update={"moe_router_dtype": "fp32"}))],
    ids=["dense-megatron", "moe-deepspeed", "moe-megatron-fp32-router"])
def test_pricing_distinct_rows_once_changes_no_bit(monkeypatch, model_name, runtime):
    # time_columns prices the layers and the compute's pipeline path once per distinct row of the
    # columns they read (cost.layer_times.UNREAD_COLUMNS, cost.step.DP_CHOICE_COLUMNS): a search's
    # every column, FP8 and BF16, every ZeRO stage and schedule, equal bit for bit to pricing
    # every row.
    model, hardware = load_model(model_name), load_hardware("H100-SXM")
    workload = Workload(seq_len=16384, global_batch=64)
    c = enumerate_candidates(workload, 32, Pins(precision=None), 8, axes=search_axes(model, hardware))
    assert len(c) >= 4 * distinct.DISTINCT_MIN_ROWS
    def columns():
        return time_columns(model, hardware, workload, c, gpus_per_node=8, overlap=runtime.overlap,
                            states=runtime.states, ring_impl=runtime.ring, grad_sync=runtime.grad_sync,
                            loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                            sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers,
                            moe_router_dtype=runtime.moe_router_dtype)

    deduplicated = columns()
    monkeypatch.setattr(distinct, "DISTINCT_MIN_ROWS", len(c) + 1)  # every row priced as itself
    every_row = columns()
    for name, a, b in zip(deduplicated.time._fields, deduplicated.time, every_row.time):
        assert np.array_equal(a, b, equal_nan=True), name
    assert np.array_equal(deduplicated.step_time_s, every_row.step_time_s)


def test_executed_tflops_count_torchtitans_whole_mla_down_projections():
    # torchtitan runs MLA's down projections on every token of each TP rank (cost.tp_gathers), which
    # its time counts; so do the executed FLOPs over that time, 7 extra copies at tp 8 (cost.flops;
    # DeepSeek-V3 at 4k, 2 sequences: 3.18e14 FLOPs, 15.5% above the split count), and the model
    # FLOPs not. Megatron's (TE_TP_GATHERS) are the count before.
    from sp_planner.candidates import Candidates
    from sp_planner.cost.flops import hardware_flops_per_step
    from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS

    v3, h100 = load_model("deepseek-v3"), load_hardware("h100")
    workload = Workload(seq_len=4096, global_batch=2)
    c = Candidates.of_plan(ParallelPlan(tp=8, dp=1, micro_batch=1))

    def executed(gathers):
        step = time_columns(v3, h100, workload, c, gpus_per_node=8, tp_gathers=gathers)
        return float(step.hardware_tflops_per_gpu[0] * step.step_time_s[0] * 8 * 1e12), step

    def counted(whole):
        return float(hardware_flops_per_step(v3, seq_len=4096, global_batch=2, causal=True, recompute=c.recompute,
                                             tp=c.tp, whole_mla_down_projections=whole)[0])

    titan, titan_step = executed(BF16_TP_GATHERS)
    megatron, megatron_step = executed(TE_TP_GATHERS)
    assert titan == pytest.approx(counted(True), rel=1e-12)
    assert megatron == pytest.approx(counted(False), rel=1e-12)
    assert counted(True) - counted(False) == pytest.approx(61 * 7 * 30_277_632 * 3 * 4096 * 2, rel=1e-12)
    model = model_flops_per_step(v3, seq_len=4096, global_batch=2) / 8 / 1e12
    assert titan_step.model_tflops_per_gpu[0] * titan_step.step_time_s[0] == pytest.approx(model, rel=1e-12)
