"""Conversions from the cost model's estimate to each published convention, checked by hand."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_model
from sp_planner.validation.corpus_row import CorpusRow
from sp_planner.validation.row_run import predict_row, row_model, row_plan, row_runtime
from sp_planner.validation.score import published_figure, score_row, spearman


def _row(corpus, row_id):
    return next(r for r in corpus.rows if r.id == row_id)


def korthikanti_model_flops(*, batch, seq, layers, hidden, vocab):
    """Korthikanti et al. 2022 (arXiv 2205.05198) section 6: model FLOPs per iteration,
    72 B s l h^2 (1 + s/(6h) + V/(12 h l)), attention over the full square, no recompute."""
    return 72 * batch * seq * layers * hidden**2 * (1 + seq / (6 * hidden) + vocab / (12 * hidden * layers))


def test_published_mfu_matches_korthikanti_formula_at_the_published_time(corpus):
    # The README's 41.5% MFU for 22B is Table 5's 1.10 s through Korthikanti's FLOP count on
    # 8 GPUs at 312 TFLOPS: 1.1436e15 / (1.10 * 8 * 312e12) = 41.65%. Ties the two sources.
    flops = korthikanti_model_flops(batch=4, seq=2048, layers=48, hidden=6144, vocab=51200)
    assert flops == pytest.approx(1.1436e15, rel=1e-4)
    mfu = 100 * flops / (_row(corpus, "korth-22b-seqsel").measured * 8 * 312e12)
    assert mfu == pytest.approx(_row(corpus, "mlm-22b-mfu").measured, abs=0.2)


def test_predicted_mfu_is_megatron_full_square_flops_over_the_stated_peak(corpus):
    row = _row(corpus, "mlm-22b-mfu")
    est = predict_row(row, corpus)
    # The cost model's model FLOPs per step agree with Korthikanti's count within 1% (it also
    # counts biases, which his formula leaves out), so "megatron_full_square" is his convention.
    step_flops = est.model_tflops_per_gpu * 1e12 * est.step_time_s * 8
    hand = korthikanti_model_flops(batch=4, seq=2048, layers=48, hidden=6144, vocab=51200)
    assert step_flops == pytest.approx(hand, rel=0.01)
    assert published_figure(row, est, row_model(row, corpus)) == pytest.approx(
        100 * hand / (est.step_time_s * 8 * 312e12), rel=0.01)


def test_causal_convention_halves_only_the_attention_term(corpus):
    full_row = _row(corpus, "usp-t5-64k-t4u2r1")
    causal_row = full_row.model_copy(update={"convention": "causal_model"})
    full = published_figure(full_row, predict_row(full_row, corpus), row_model(full_row, corpus))
    causal = published_figure(causal_row, predict_row(causal_row, corpus), row_model(causal_row, corpus))
    # Llama-2-7B per token: layer GEMMs 2h(2q + 2kv) + 2*3*h*ffn, attention 4 q s (full) or
    # 2 q s (causal), logits 2 h V; the forward+backward factor 3 cancels in the ratio.
    m = load_model("Llama-2-7B")
    h, s = 4096, 65536
    gemm = 2 * h * (2 * 4096 + 2 * 4096) + 2 * 3 * h * 11008
    logits = 2 * h * 32000
    assert (m.hidden_size, m.intermediate_size, m.vocab_size, m.num_layers) == (4096, 11008, 32000, 32)
    ratio = (32 * (gemm + 2 * 4096 * s) + logits) / (32 * (gemm + 4 * 4096 * s) + logits)
    assert causal / full == pytest.approx(ratio, rel=1e-9)
    assert ratio == pytest.approx(0.6385, abs=1e-3)


def test_causal_convention_leaves_recompute_out(corpus):
    # The same row with core-attention recompute: the count is the model's (no recompute pass),
    # so the figure is that count over the predicted (longer) step.
    row = _row(corpus, "usp-t5-64k-t4u2r1").model_copy(update={"convention": "causal_model"})
    again = row.model_copy(update={"recompute": "selective"})
    base, slower = predict_row(row, corpus), predict_row(again, corpus)
    assert slower.step_time_s > base.step_time_s
    figure = published_figure(again, slower, row_model(again, corpus))
    assert figure == pytest.approx(published_figure(row, base, row_model(row, corpus))
                                   * base.step_time_s / slower.step_time_s, rel=1e-12)
    assert figure < slower.hardware_tflops_per_gpu  # the executed count holds the recompute too


def test_tokens_per_second_per_gpu_divides_by_the_gpus(corpus):
    row = _row(corpus, "titan-8b-128g-fsdp").model_copy(update={"expressible": True, "reason": None})
    est = predict_row(row, corpus)
    assert published_figure(row, est, row_model(row, corpus)) == pytest.approx(est.tokens_per_s / 128)
    assert est.tokens_per_s == pytest.approx(256 * 8192 / est.step_time_s)


def test_step_time_error_signs(corpus):
    scored = score_row(_row(corpus, "korth-22b-seqsel"), corpus)
    assert scored.figure == "step_time_s"
    assert scored.error_percent == pytest.approx(100 * (scored.predicted - 1.10) / 1.10)
    # A shorter predicted step is an optimistic (faster) prediction.
    assert scored.speed_error_percent == pytest.approx(100 * (1.10 / scored.predicted - 1))
    assert (scored.error_percent < 0) == (scored.speed_error_percent > 0)


@pytest.mark.parametrize("x, y, rho", [
    ([1, 2, 3], [10, 20, 30], 1.0),
    ([1, 2, 3], [30, 20, 10], -1.0),
    ([1, 2, 3], [10, 30, 20], 0.5),
    ([1, 2, 3, 4], [1, 2, 2, 3], 0.9486832980505138),  # ties take average ranks
])
def test_spearman(x, y, rho):
    assert spearman(x, y) == pytest.approx(rho)


def test_spearman_is_undefined_for_small_or_flat_groups():
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError, match="pairs"):
        spearman([1, 2, 3], [1, 2])


def test_result_groups_and_mape(scored):
    assert scored.mape_percent == pytest.approx(sum(abs(r.error_percent) for r in scored.rows) / len(scored.rows))
    by_name = {g.name: g for g in scored.groups}
    assert by_name["usp-t5 64K"].rows == 3 and by_name["usp-t5 30K"].rows == 6
    assert by_name["mlm-readme 2K"].rows == 4 and by_name["korth-t5 2K"].rows == 8  # vpp-3 rows scored
    assert by_name["nemo-cp H100 7B"].rows == 9 and by_name["nemo-cp B200 8B"].rows == 8
    assert sum(g.rows for g in scored.groups) == len(scored.rows)
    assert all(s.reason for s in scored.skipped)


def nemo_llama_model_flops(*, gbs, seq, layers, hidden, ffn, heads, groups, vocab):
    """NeMo's Llama 2/3 model FLOPs per step (nemo/utils/flops_formulas.py llama2/llama3 between
    d899549 and 6251117): gbs s l h^2 (12 + 12 g/a + 18 f/h + 12 s/h + 6 V/(l h)), attention over
    the full s x s square."""
    return gbs * seq * layers * hidden**2 * (
        12 + 12 * groups / heads + 18 * ffn / hidden + 12 * seq / hidden + 6 * vocab / (layers * hidden))


@pytest.mark.parametrize("row_id, model_name", [("nemo-h100-128k", "Llama-2-7B"), ("nemo-b200-1m", "Llama-3-8B")])
def test_nemo_rows_are_fp8_plans_in_nemos_full_square_convention(corpus, row_id, model_name):
    row = _row(corpus, row_id)
    plan = row_plan(row)
    assert (plan.precision, plan.ring, plan.micro_batch, plan.recompute) == ("fp8", row.ring, 1, "none")
    assert row.assumed and "micro_batch" in row.assumed
    m = load_model(model_name)
    hand = nemo_llama_model_flops(gbs=row.global_batch, seq=row.seq_len, layers=m.num_layers, hidden=m.hidden_size,
                                  ffn=m.intermediate_size, heads=m.num_heads, groups=m.num_kv_heads,
                                  vocab=m.vocab_size)
    est = predict_row(row, corpus)
    # The estimate's model FLOPs per step are NeMo's count (Llama has no biases; norms are not counted).
    assert est.model_tflops_per_gpu * 1e12 * est.step_time_s * row.world_size == pytest.approx(hand, rel=1e-3)
    assert published_figure(row, est, m) == pytest.approx(hand / (est.step_time_s * row.world_size) / 1e12, rel=1e-3)


def test_corpus_precisions_map_to_plan_precisions(corpus):
    fp16 = _row(corpus, "korth-22b-seqsel")
    assert fp16.precision == "fp16" and row_plan(fp16).precision == "bf16"
    interleaved = _row(corpus, "korth-175b-seqsel")
    assert row_plan(interleaved).vpp == 3 and row_plan(interleaved).pp == 8


def test_selene_rows_run_megatrons_unfused_attention(corpus):
    from sp_planner.validation.row_run import row_hardware

    for row_id in ("korth-22b-seqsel", "mlm-1t-mfu"):
        assert row_hardware(_row(corpus, row_id)).efficiency.attention_unfused, row_id
    assert not row_hardware(_row(corpus, "usp-t5-64k-t4u2r1")).efficiency.attention_unfused


def test_megatron_bridge_rows_run_force_balanced_routing(corpus):
    # Their recipes set moe_router_force_load_balancing: the busiest EP rank carries the mean.
    from sp_planner.cost.moe import busiest_rank_load
    from sp_planner.validation.row_run import row_model, row_runtime

    row = _row(corpus, "mb-q235-b200-mx")
    model = row_model(row, corpus)
    assert model.moe.routing == "balanced" and float(busiest_rank_load(model, row.ep)) == 1.0
    assert (row.vpp, row.first_stage_layers, row.last_stage_layers) == (2, 11, 11)  # account_for_* split
    # The fp8_mx recipe turns the parameter all-gather overlap off (NaN grad norm otherwise).
    assert not row_runtime(row).overlap.param_gather
    # Learned routing would cost the same pinned plan more: all-to-alls carry 1.25x the copies.
    learned = predict_row(row.model_copy(update={"routing": "learned"}), corpus)
    assert learned.comm_bytes.ep_all_to_all == pytest.approx(predict_row(row, corpus).comm_bytes.ep_all_to_all * 1.25)


def test_balanced_routing_needs_an_moe_model(corpus):
    from sp_planner.validation.row_run import row_model

    row = _row(corpus, "korth-22b-full").model_copy(update={"routing": "balanced"})
    with pytest.raises(ValueError, match="routing balanced needs an MoE model"):
        row_model(row, corpus)


def test_a_row_runs_its_framework_with_its_recipe_changes(corpus):
    # One Runtime per row: the framework's (Megatron-Bridge runs Megatron's overlap and states),
    # with the CUDA graph scopes the recipe sets (mb-dsv3-gb200-bf16: moe_router, moe_preprocess),
    # FP8 weights only where the row states them (a bf16 row here) and the bf16 gradient
    # reduction its perf config sets (grad_reduce_in_fp32 false: 2 B main gradients).
    from sp_planner.cost.runtime import MEGATRON_RUNTIME
    from sp_planner.validation.row_run import row_runtime

    runtime = row_runtime(_row(corpus, "mb-dsv3-gb200-bf16"))
    assert (runtime.overlap, runtime.states) == (
        MEGATRON_RUNTIME.overlap,
        MEGATRON_RUNTIME.states.model_copy(update={"fp8_param_gather": False, "grad_bytes": 2}))
    assert runtime.cuda_graphs == {"moe_router", "moe_preprocess"}


def test_every_corpus_framework_has_a_runtime_and_an_attention_kernel():
    # CorpusFramework is what a row may name (others are refused on loading): each runs with its
    # runtime and either sp-plan's framework default kernel or the corpus' own.
    from typing import get_args

    from sp_planner.validation.corpus_row import CorpusFramework
    from sp_planner.validation.row_run import CORPUS_FRAMEWORK_KERNEL, CORPUS_FRAMEWORK_RUNTIME, CORPUS_KERNEL

    names = set(get_args(CorpusFramework))
    assert set(CORPUS_FRAMEWORK_RUNTIME) == names
    assert set(CORPUS_FRAMEWORK_KERNEL) | set(CORPUS_KERNEL) == names
    assert not set(CORPUS_FRAMEWORK_KERNEL) & set(CORPUS_KERNEL)


def test_rows_run_their_frameworks_ring_unless_they_state_another(corpus):
    # Megatron-family rows run Transformer Engine's ring (cost.ring_impl); the USP paper's rows put
    # yunchang's inside Megatron-LM and say so (ring_impl: yunchang), and NeMo's 24.03 container
    # (TE 1.3) the ring that still copied its zigzag halves (ring_impl: transformer_engine_1.9).
    from sp_planner.cost.ring_impl import TE_1_9_RING, TE_RING, YUNCHANG_RING
    from sp_planner.validation.row_run import row_runtime

    assert row_runtime(_row(corpus, "nemo-b200-128k")).ring == TE_RING
    assert row_runtime(_row(corpus, "nemo-h100-128k")).ring == TE_1_9_RING
    usp = _row(corpus, "usp-t5-30k-t1u1r8")
    assert usp.ring_impl == "yunchang" and row_runtime(usp).ring == YUNCHANG_RING
    assert row_runtime(usp.model_copy(update={"ring_impl": None})).ring == TE_RING


def test_rows_gather_over_tp_as_their_framework_does(corpus):
    # Transformer Engine quantizes before its TP gathers; the corpus' torchtitan (9dec370, 2024-12)
    # gathers float8 through torchao's float8 TP styles, as 0.2.x's tensorwise (cost.tp_gathers).
    from sp_planner.cost.tp_gathers import TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
    from sp_planner.validation.row_run import row_runtime

    assert row_runtime(_row(corpus, "mbd-405b-b200-cs")).tp_gathers == TE_TP_GATHERS
    assert row_runtime(_row(corpus, "titan-70b-2d")).tp_gathers == TORCHAO_TENSORWISE_TP_GATHERS


def test_rows_whose_recipe_reduces_gradients_in_bf16_keep_bf16_main_gradients(corpus):
    # Megatron-Bridge's llama perf configs set grad_reduce_in_fp32 False: the 405B B200 rank holds
    # 2 B a parameter less of gradients than with Megatron's fp32 default, in memory and in the
    # reductions; the same setting on a torch FSDP row is refused.
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "mbd-405b-b200-cs")
    assert not row.grad_reduce_in_fp32 and row_runtime(row).states.grad_bytes == 2
    fp32 = row.model_copy(update={"grad_reduce_in_fp32": True})
    assert row_runtime(fp32).states.grad_bytes == 4
    bf16, four = predict_row(row, corpus), predict_row(fp32, corpus)
    # ZeRO-1: the gradients are whole on the rank, so they shrink by 2 B per parameter held.
    assert four.memory.grads_bytes == pytest.approx(2 * bf16.memory.grads_bytes)
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"grad_reduce_in_fp32": False})
    with pytest.raises(ValueError, match="grad_reduce_in_fp32 false is a Megatron setting"):
        row_runtime(mpt)


def test_each_rows_cross_entropy_holds_its_frameworks_bytes_per_logit(corpus):
    # cost.loss_memory: the USP rows' Megatron-LM (2196398) and NeMo 24.03's Megatron-Core subtract
    # out of place (10 B a logit), today's Megatron in place (6 B), llm-foundry's MPT runs
    # flash-attn's fused kernel (4 B); the Megatron setting on a Composer row is refused.
    from sp_planner.validation.row_run import row_runtime

    usp = _row(corpus, "usp-t5-64k-t4u2r1")
    assert usp.megatron_ce_out_of_place and row_runtime(usp).loss_memory.logit_bytes == 10
    assert row_runtime(_row(corpus, "nemo-h100-128k")).loss_memory.logit_bytes == 10
    assert row_runtime(_row(corpus, "nemo-b200-128k")).loss_memory.logit_bytes == 6
    assert row_runtime(_row(corpus, "mpt-7b-2k-8g")).loss_memory.logit_bytes == 4
    # 64K tokens over ulysses 2 on tp 4: 32768 tokens x 32000 / 4 vocab on the rank.
    in_place = usp.model_copy(update={"megatron_ce_out_of_place": False})
    ten, six = predict_row(usp, corpus).memory.logits_bytes, predict_row(in_place, corpus).memory.logits_bytes
    assert (ten, six) == (10 * 32768 * 32000 / 4, 6 * 32768 * 32000 / 4)
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"megatron_ce_out_of_place": True})
    with pytest.raises(ValueError, match="are Megatron settings"):
        row_runtime(mpt)


def test_rows_with_te_fused_cross_entropy_hold_two_bytes_a_logit(corpus):
    # Megatron-Bridge's performance scripts run TE's fused loss (cross_entropy_fusion_impl te) on a
    # TE that writes the gradient into the bf16 logits (cost.loss_memory): 2 B a logit, and the
    # loss moves 10 B a logit instead of 60.
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "mba-8b-b200-cs")
    assert row.te_fused_cross_entropy
    runtime = row_runtime(row)
    assert (runtime.loss_memory.logit_bytes, runtime.loss_bytes_per_logit) == (2, 10)
    unfused = row.model_copy(update={"te_fused_cross_entropy": False})
    unfused_runtime = row_runtime(unfused)
    assert (unfused_runtime.loss_memory.logit_bytes, unfused_runtime.loss_bytes_per_logit) == (6, 60)
    fused_est, unfused_est = predict_row(row, corpus), predict_row(unfused, corpus)
    # Llama-3-8B at 8K, tp 1, micro batch 2: 16384 tokens x 128256 logits on the rank.
    assert row.micro_batch == 2 and row.tp == 1
    assert unfused_est.memory.logits_bytes - fused_est.memory.logits_bytes == 4 * 16384 * 128256
    # The loss rides with the GEMMs on the loss stage (cost.gemm_work); this row is held at the B200
    # FP8 bound (cost.mfu_ceiling), so the step itself does not move.
    assert fused_est.time.gemm_s < unfused_est.time.gemm_s
    with pytest.raises(ValueError, match="state one"):
        row_runtime(row.model_copy(update={"megatron_ce_out_of_place": True}))
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"te_fused_cross_entropy": True})
    with pytest.raises(ValueError, match="are Megatron settings"):
        row_runtime(mpt)


def test_rows_with_bf16_adam_moments_hold_two_thirds_of_the_optimizer_states(corpus):
    # Megatron-LM's MXFP8 Qwen3-235B recipes: --use-precision-aware-optimizer with bf16 moments beside
    # the fp32 master: 4 + 2 + 2 bytes a parameter against 4 + 4 + 4 (cost.states), sharded alike.
    from sp_planner.validation.row_run import row_runtime

    from sp_planner.validation.row_run import row_plan

    row = _row(corpus, "mlmr-q235-gb300-mx-fcg")
    # MXFP8: Megatron-Core keeps the fp32 master itself (no 16-bit remainder), so 4 + 2 + 2.
    assert row.adam_moments_bf16 and row_plan(row).adam_moments_bf16 and not row_plan(row).master_as_remainder
    fp32 = row.model_copy(update={"adam_moments_bf16": False})
    low, high = predict_row(row, corpus).memory, predict_row(fp32, corpus).memory
    assert low.optimizer_bytes == pytest.approx(high.optimizer_bytes * 8 / 12)
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"adam_moments_bf16": True})
    with pytest.raises(ValueError, match="precision-aware optimizer"):
        row_runtime(mpt)


def test_rows_whose_recipe_overlaps_tp_comm_time_it_overlapped(corpus):
    # Megatron-Bridge's llama recipes turn TP userbuffers overlap on for TP > 1 (llama3.py
    # CommOverlapConfig(tp_comm_overlap=True)): the row's runtime overlaps the TP collectives
    # (cost.tp_overlap), which then cost less than exposed; a TP 1 row may not state it.
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "mbd-70b-h100-cs")
    assert row.tp_comm_overlap and row_runtime(row).overlap.tp_comm
    exposed = row.model_copy(update={"tp_comm_overlap": False})
    assert not row_runtime(exposed).overlap.tp_comm
    assert predict_row(row, corpus).time.tp_comm_s < predict_row(exposed, corpus).time.tp_comm_s
    tp1 = _row(corpus, "mbd-70b-gb200-cs").model_copy(update={"tp_comm_overlap": True})
    with pytest.raises(ValueError, match="tp_comm_overlap is Megatron's TP userbuffers overlap"):
        row_runtime(tp1)


def test_tuned_userbuffers_config_rows_time_their_own_config(corpus):
    # Megatron-Bridge's Llama-3-70B H100 FP8 recipe passes its tuned userbuffers configuration
    # (scripts/performance/configs/llama3/llama3_llm_pretrain.py lines 163-173 at v0.2.0): the row's
    # runtime carries it; the same row on TE's defaults pays the 16-SM margins and times its TP
    # collectives longer. A row without TP overlap may not name one.
    row = _row(corpus, "mbd-70b-h100-cs")
    assert row_runtime(row).overlap.tp_comm_cfg == "userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192"
    default = row.model_copy(update={"tp_comm_overlap_cfg": None})
    assert row_runtime(default).overlap.tp_comm_cfg == "te_default"
    assert predict_row(row, corpus).time.tp_comm_s < predict_row(default, corpus).time.tp_comm_s
    with pytest.raises(ValueError, match="only a tp_comm_overlap row runs"):
        CorpusRow.model_validate({**row.model_dump(), "tp_comm_overlap": False})


def test_te_1x_rows_time_te_1_8_defaults(corpus):
    # The Megatron-LM README's H100 runs (2024-07-15, no --tp-comm-overlap-cfg) ran a Transformer
    # Engine no newer than v1.8's defaults: 16 SMs a collective, no SM margin (TE v1.8 module/base.py
    # lines 117-123, 254-262). Every one of their tp_comm_overlap rows names them, and the 7.1B row's
    # TP collectives cost less than under TE 2.x's margins (te_default).
    rows = [r for r in corpus.rows if r.id.startswith("mlmh-") and r.tp_comm_overlap]
    assert len(rows) == 8 and {r.tp_comm_overlap_cfg for r in rows} == {"te_1.8_default"}
    row = _row(corpus, "mlmh-7.1b")
    assert row_runtime(row).overlap.tp_comm_cfg == "te_1.8_default"
    te2 = row.model_copy(update={"tp_comm_overlap_cfg": None})
    assert predict_row(row, corpus).time.tp_comm_s < predict_row(te2, corpus).time.tp_comm_s


def test_rows_without_sequence_parallelism_run_their_norms_on_every_tp_rank(corpus):
    # Narayanan et al. 2021 (Megatron-LM before --sequence-parallel): the 18B run at tp 8 states
    # sequence_parallel false, its runtime carries it, and it is slower and holds more than the
    # same run with sequence parallelism; a torch FSDP row may not state it, nor TP userbuffers.
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "nar-18b")
    assert not row.sequence_parallel and not row_runtime(row).sequence_parallel
    with_sp = row.model_copy(update={"sequence_parallel": True})
    before, split = predict_row(row, corpus), predict_row(with_sp, corpus)
    assert before.step_time_s > split.step_time_s
    assert before.memory.activations_bytes > split.memory.activations_bytes
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"sequence_parallel": False})
    with pytest.raises(ValueError, match="sequence_parallel false describes a Megatron-family run"):
        row_runtime(mpt)
    overlapped = _row(corpus, "mbd-70b-h100-cs").model_copy(update={"sequence_parallel": False})
    with pytest.raises(ValueError, match="needs a Megatron-family framework, TP > 1 and sequence parallelism"):
        row_runtime(overlapped)


def test_rows_whose_recipe_keeps_fp8_weights_run_them(corpus):
    # Megatron-Bridge v0.2.0 bf16_with_fp8_current_scaling_mixed sets fp8_param_gather: the GEMM
    # weights are FP8 (cost.fp8_params), 2 B a GEMM parameter less on H100 (Llama-3.1-405B, 126
    # layers of 3,187,671,040 GEMM weights over tp 8: 398,458,880 a layer on the rank; the memory
    # peak is on the second pipeline rank, with 16 layers: pp 8 x vp 8 puts 15 on the first stage,
    # which holds (2 x 7 + 7 x 8 + 1) / 8 micro-batches of them, 133 layer-micro-batches, and 16 on
    # the second, which holds (2 x 6 + 7 x 8 + 1) / 8, 138).
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "mbd-405b-h100-cs")
    assert row.fp8_param_gather and row_runtime(row).states.fp8_param_gather
    bf16 = row.model_copy(update={"fp8_param_gather": False})
    assert not row_runtime(bf16).states.fp8_param_gather
    fp8_weights, bf16_weights = predict_row(row, corpus), predict_row(bf16, corpus)
    saved = bf16_weights.memory.params_bytes - fp8_weights.memory.params_bytes
    assert saved == pytest.approx(2 * 16 * 398_458_880)
    # Rows of other frameworks cannot state it.
    mpt = _row(corpus, "mpt-7b-2k-8g").model_copy(update={"fp8_param_gather": True})
    with pytest.raises(ValueError, match="fp8_param_gather is Megatron's --fp8-param-gather"):
        row_runtime(mpt)


def test_llm_foundry_triton_rows_run_the_triton_port(corpus):
    from sp_planner.cost.attention_kernels import TRITON_PORT, with_attention_kernel
    from sp_planner.catalog import load_hardware
    from sp_planner.validation.row_run import row_hardware

    h100 = load_hardware("h100-sxm")
    # attn_impl triton (no attention_kernel stated): the port; attn_impl flash: flash-attn 2.
    assert row_hardware(_row(corpus, "mpt-7b-64k-8g")) == with_attention_kernel(h100, TRITON_PORT)
    assert row_hardware(_row(corpus, "mptl-7b-2k-512g")) == with_attention_kernel(h100, "fa2")


def test_fp8_attention_rows_run_cudnn_in_fp8(corpus):
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.attention_kernels import with_attention_kernel
    from sp_planner.cost.fp8_attention import with_fp8_attention
    from sp_planner.validation.row_run import row_hardware

    # Megatron on GB200: cuDNN's curves, scaled by cuDNN's FP8/BF16 SDPA ratio (cost.fp8_attention).
    cudnn = with_attention_kernel(load_hardware("gb200-nvl72"), "cudnn")
    assert row_hardware(_row(corpus, "mb26-q30-gb200-mx")) == with_fp8_attention(cudnn)
    assert row_hardware(_row(corpus, "mb-q30-gb200-mx")) == cudnn


def test_narayanan_rows_convert_step_time_through_eq3(corpus):
    # Narayanan et al. 2021 Table 1 counts 96 B s l h^2 (1 + s/6h + V/16lh) per iteration (eq. 3,
    # recompute forward included); the 1T row's prediction is that count over the predicted step.
    row = _row(corpus, "nar-1t")
    assert (row.convention, row.recompute, row.tp, row.pp, row.dp, row.micro_batch) == (
        "megatron_2021_recompute", "full", 8, 64, 6, 1)
    est = predict_row(row, corpus)
    hand = 96 * 3072 * 2048 * 128 * 25600**2 * (1 + 2048 / (6 * 25600) + 51200 / (16 * 128 * 25600))
    figure = published_figure(row, est, row_model(row, corpus))
    assert figure == pytest.approx(hand / (est.step_time_s * 3072) / 1e12, rel=1e-12)
    # The executed FLOPs differ: causal attention, biases; so the figure is not hardware TFLOPS.
    assert figure != pytest.approx(est.hardware_tflops_per_gpu, rel=1e-3)


@pytest.mark.parametrize("row_id, billions", [
    ("nar-1.7b", 1.7), ("nar-3.6b", 3.6), ("nar-7.5b", 7.5), ("nar-18b", 18.4), ("nar-39b", 39.1),
    ("nar-76b", 76.1), ("nar-145b", 145.6), ("nar-310b", 310.1), ("nar-530b", 529.6), ("nar-1t", 1008.0)])
def test_narayanan_models_have_table_1s_parameter_counts(corpus, row_id, billions):
    # Table 1's parameter column is eq. 2, 12lh^2(1 + 13/12h + (V + s)/12lh): our count of the same
    # layers plus the s x h learned position embeddings (which ModelSpec leaves out) rounds to it.
    row = _row(corpus, row_id)
    model = row_model(row, corpus)
    assert (model.num_params + 2048 * model.hidden_size) / 1e9 == pytest.approx(billions, abs=0.05)


def test_local_ddp_rows_reduce_gradients_after_the_backward(corpus):
    # Megatron-LM 2021's local DDP all-reduces the gradient buffer after the pipeline flush
    # (training.py train_step at 6985e58): exposed, so the step is longer than with bucket overlap.
    from sp_planner.validation.row_run import row_runtime

    row = _row(corpus, "nar-39b")
    assert not row.overlap_grad_reduce and not row_runtime(row).overlap.grad_all_reduce
    overlapped = row.model_copy(update={"overlap_grad_reduce": True})
    assert row_runtime(overlapped).overlap.grad_all_reduce
    assert predict_row(row, corpus).step_time_s > predict_row(overlapped, corpus).step_time_s
    assert _row(corpus, "nar-18b").overlap_grad_reduce  # torch DDP overlaps in the backward


def test_usp_v5_count_turns_the_first_report_into_the_second(corpus):
    """The USP paper printed Table 5 twice; v5's figure over the first one's is the usp_v5 count
    over Megatron's full count (both over the same measured time) on every row, so scoring a v5
    row gives its usp-t5 twin's prediction in v5's count."""
    pairs = [(r, _row(corpus, r.id.replace("usp-t5", "usp-v5"))) for r in corpus.rows if r.source == "usp-t5"]
    assert len(pairs) == 9
    m = load_model("Llama-2-7B")
    for first, second in pairs:
        s = first.seq_len
        # Per token: Megatron's full count 6 N + 12 l s q, and v5's without the K, V projections.
        full = 6 * (32 * (4 * 4096**2 + 3 * 4096 * 11008) + 32000 * 4096) + 12 * 32 * s * 4096
        v5 = 6 * (32 * (2 * 4096**2 + 3 * 4096 * 11008) + 32000 * 4096) + 6 * 32 * s * 4096
        assert second.measured / first.measured == pytest.approx(v5 / full, rel=2e-4)
        assert (second.convention, first.convention) == ("usp_v5", "megatron_full_square")
        est = predict_row(first, corpus)
        assert published_figure(second, est, m) == pytest.approx(
            published_figure(first, est, m) * v5 / full, rel=2e-3)


def test_hybridep_rows_run_without_permutation_passes(corpus):
    # mba-q30-b300-mx states HybridEP (its recipe's moe_flex_dispatcher_backend hybridep): its
    # model carries it, and the same run under the alltoall dispatcher costs the permutations
    # (cost.moe) in gemm_s, and NCCL's all-to-all of 7 remote copies a token instead of HybridEP's
    # 5.34 rows (its own included) at its measured 531-536 GB/s (cost.hybridep): slower.
    # Compared without its EP overlap (cost.ep_overlap), which hides a different share of each.
    row = _row(corpus, "mba-q30-b300-mx").model_copy(update={"ep_comm_overlap": False})
    assert row_model(row, corpus).moe.dispatcher == "hybridep"
    fused = predict_row(row, corpus)
    alltoall = predict_row(row.model_copy(update={"moe_dispatcher": "alltoall"}), corpus)
    assert alltoall.time.gemm_s > fused.time.gemm_s
    assert alltoall.time.moe_comm_s > fused.time.moe_comm_s
    with pytest.raises(ValueError, match="moe_dispatcher hybridep is Megatron's flex dispatcher"):
        row_model(row.model_copy(update={"framework": "torchtitan"}), corpus)


def test_rows_filed_as_regressions_are_kept_but_not_scored(corpus, scored):
    filed = {r.id for r in corpus.rows if r.regression is not None}
    assert filed == {"mb-q30-b200-mx", "mb-q30-h100-cs", "mb-q235-b200-mx"}
    assert filed.isdisjoint(r.id for r in scored.rows)
    assert {r.id for r in scored.skipped if r.kind == "regression"} == filed
    # The fixed recipe of the regressed 235B run is scored in its place: 1024 sequences of 4096
    # tokens over 64 GPUs in the pull request's 16.9 s step.
    (fixed,) = [r for r in scored.rows if r.id == "mbpr-q235-b200-mx"]
    assert fixed.measured == 16.9 and fixed.figure == "step_time_s"
    assert 1024 * 4096 / 64 / fixed.measured == pytest.approx(3878, abs=1)


def test_nemo_2407_rows_run_the_release_recipe(corpus):
    """NeMo-Framework-Launcher 24.07: FP8 with delayed scaling, flash-attn 2 (the launcher turned
    cuDNN attention off), gradients reduced once a step in bf16 (zero 1), TP userbuffers where
    the model config sets them, and every row's GPUs = tp x pp x cp x dp as the table states."""
    rows = {r.id: r for r in corpus.rows if r.source == "nemo-2407"}
    assert set(rows) == {"nl-llama2-7b", "nl-llama2-13b", "nl-llama2-70b", "nl-llama3-8b", "nl-llama3-70b"}
    for row in rows.values():
        plan, runtime = row_plan(row), row_runtime(row)
        assert (plan.precision, plan.fp8_recipe, plan.zero, row.attention_kernel) == ("fp8", "delayed", 1, "fa2")
        assert runtime.states.grad_bytes == 2 and runtime.overlap.tp_comm == (row.tp > 1)
        assert row.world_size == row.tp * row.pp * row.ring * row.dp
    # The table's GPU counts: 8, 16, 64, 8, 64; Llama 3 with CP 2.
    ids = ("nl-llama2-7b", "nl-llama2-13b", "nl-llama2-70b", "nl-llama3-8b", "nl-llama3-70b")
    assert [rows[i].world_size for i in ids] == [8, 16, 64, 8, 64]
    assert (rows["nl-llama3-8b"].ring, rows["nl-llama3-70b"].ring, rows["nl-llama3-70b"].vpp) == (2, 2, 10)
    # The 70B runs' userbuffers configurations: llama3_70b_fp8.sh line 22 and llama2_70b.yaml line 3.
    assert row_runtime(rows["nl-llama3-70b"]).overlap.tp_comm_cfg == "ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192"
    assert row_runtime(rows["nl-llama2-70b"]).overlap.tp_comm_cfg == "ub_cfg_h100_h8192_tp4_mbs1_seqlen4096"


def test_only_llm_foundrys_flash_rows_unpad_around_the_kernel(corpus):
    # cost.unpad_passes: attn_impl flash (the large-scale table's flash-attn 2 rows) runs
    # flash_attn_fn's unpad and pad passes; the Triton port (Composer's default here) and every
    # other framework's kernel take q, k, v as they are.
    flash = _row(corpus, "mptl-1b-2k-512g")
    assert flash.attention_kernel == "fa2" and row_runtime(flash).unpads_attention
    assert not row_runtime(_row(corpus, "mpt-7b-2k-8g")).unpads_attention
    assert not row_runtime(_row(corpus, "nemo-h100-128k")).unpads_attention
    assert not any(row_runtime(r).unpads_attention for r in corpus.rows if r.framework != "Composer FSDP")
    assert sum(row_runtime(r).unpads_attention for r in corpus.rows) == 12


def test_mpt_1b_flash_row_pays_the_passes_on_every_layer(corpus):
    # mptl-1b-2k-512g: 12 x 2048 tokens a rank, one micro-batch, 24 layers, no recompute; 18h + 22h
    # bytes a token and layer (h 2048) at H100's memory-bound rate (3.35 TB/s x 0.76).
    from sp_planner.search import evaluate
    from sp_planner.validation.row_run import row_hardware, row_workload

    row = _row(corpus, "mptl-1b-2k-512g")
    runtime = row_runtime(row)
    plain, unpadded = (evaluate(row_model(row, corpus), row_hardware(row), row_workload(row), row_plan(row),
                                num_nodes=row.num_nodes, gpus_per_node=row.gpus_per_node,
                                runtime=runtime.model_copy(update={"unpads_attention": u})) for u in (False, True))
    hand_s = 24 * 12 * 2048 * 40 * 2048 / (3.35e12 * 0.76)
    assert unpadded.time.gemm_s - plain.time.gemm_s == pytest.approx(hand_s, rel=1e-9)


def test_megatron_lm_moe_recipes_run_the_router_in_fp32(corpus):
    # Every Megatron-LM examples/moe_recipes recipe sets moe_router_dtype fp32 (the file's header), and
    # so does Megatron-Bridge's DeepSeek-V3 provider in every release the corpus's DeepSeek-V3 runs used
    # (v0.2.0 deepseek_provider.py line 79, v0.4.0 deepseek_v3_bridge.py line 67, v0.6.0 line 75);
    # Megatron-Bridge's Qwen3 MoE recipes keep Megatron-Core's None.
    fp32 = {r.id for r in corpus.rows if r.moe_router_dtype == "fp32"}
    mlm = {r.id for r in corpus.rows if r.source == "mlm-moe"}
    deepseek = {r.id for r in corpus.rows if r.model == "DeepSeek-V3" and r.reason is None}
    assert deepseek == {"mb26-dsv3-gb300-mx", "mb26-dsv3-gb200-mx", "mba-dsv3-b200-mx", "mba-dsv3-b300-mx",
                        "mb-dsv3-b200-mx"}
    assert fp32 == mlm | deepseek and len(mlm) == 11
    row = _row(corpus, "mlmr-q30-h100-bf16")
    assert row_runtime(row).moe_router_dtype == "fp32"
    default = row.model_copy(update={"moe_router_dtype": None})
    assert row_runtime(default).moe_router_dtype is None
    # The TF32 gradient GEMMs and the casts only add time (cost.router).
    assert predict_row(row, corpus).time.gemm_s > predict_row(default, corpus).time.gemm_s
    with pytest.raises(ValueError, match="moe_router_dtype is Megatron's --moe-router-dtype"):
        row_runtime(_row(corpus, "mpt-7b-2k-8g").model_copy(update={"moe_router_dtype": "fp32"}))
    with pytest.raises(ValueError, match="has no experts"):
        row_model(_row(corpus, "mbd-405b-h100-cs").model_copy(update={"moe_router_dtype": "fp32"}), corpus)


def test_router_padding_takes_the_experts_fp8_padding_away(corpus):
    # Megatron-Bridge v0.4.2's Qwen3 recipe leaves the router unpadded (qwen3_moe.py line 97,
    # moe_router_padding_for_fp8 False), so TEGroupedMLP pads with copies (cost.expert_padding); a
    # row stating --moe-router-padding-for-quantization pads in the router instead.
    row = _row(corpus, "mba-q235-b200-mx")
    assert row_runtime(row).expert_row_padding == "grouped_mlp"
    assert row_runtime(row.model_copy(update={"moe_router_padding": True})).expert_row_padding == "router"
    with pytest.raises(ValueError, match="moe_router_padding is Megatron's"):
        row_runtime(_row(corpus, "titan-8b-8g-fsdp").model_copy(update={"moe_router_padding": True}))
