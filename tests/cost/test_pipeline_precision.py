"""Interleaved and uneven pipelines, and FP8 GEMMs, against hand derivations and published
figures (Narayanan et al. 2021; Megatron-LM schedules.py; the Llama 3 paper's split; MAMF)."""

from __future__ import annotations

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.memory import memory_columns
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.step import time_columns
from sp_planner.pipeline_split import default_split
from sp_planner.pipeline import (
    first_stage_in_flight,
    interleave_breaks,
    split_breaks,
    stage_in_flight,
    stage_layers,
)
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.specs import Workload


def test_llama3_405b_splits():
    # 126 layers over 16 stages: the Llama 3 paper's 7 on the first and last, 8 elsewhere, for
    # every vpp that divides 8 (Megatron's counted split: (126 + 2) / 16 = 8 per stage).
    for vpp in (1, 2, 4, 8):
        assert [int(x) for x in default_split(126, 16, vpp)] == [7, 7]
    # over 8 stages: (126 + 2) / 8 = 16 -> 15 / 16 x 6 / 15
    assert [int(x) for x in default_split(126, 8, 1)] == [15, 15]
    s = stage_layers(126, 16, 7, 7)
    assert (s.first, s.middle, s.last) == (7, 8, 7)
    assert 7 + 8 * 14 + 7 == 126


def test_megatron_split_rules():
    # explicit counts must divide by vpp (transformer_config.py: "must be divisible by virtual pipeline")
    assert split_breaks(126, 16, 2, 7, 9)
    assert not split_breaks(126, 16, 2, 6, 8)  # middle (126 - 14) / 14 = 8, a multiple of 2
    assert split_breaks(32, 33, 1, 0, 0)  # more stages than layers
    assert not split_breaks(32, 4, 8, 0, 0) and split_breaks(32, 4, 16, 0, 0)  # 8 per stage / vpp


def test_interleaving_needs_a_pipeline_and_pp_micro_batches():
    assert interleave_breaks(1, 2, 8)  # no pipeline
    assert interleave_breaks(4, 2, 2)  # 2 < 4: no micro-batch group Megatron accepts
    # 6 % 4 != 0 runs in one group of 6 (pipeline_order.micro_batch_group)
    assert not interleave_breaks(4, 2, 6) and not interleave_breaks(4, 2, 8) and not interleave_breaks(4, 1, 6)


def test_in_flight_by_hand():
    # 1F1B: min(p, m) on the first stage.
    assert first_stage_in_flight(8, 1, 32) == 8 and first_stage_in_flight(8, 1, 4) == 4
    # Interleaved, rank 0, group pp: warm-up 2(p-1) + (v-1)p chunks + 1, each 1/v of the stage:
    # p=8, v=2, m=32: (14 + 8 + 1) / 2 = 11.5 micro-batches' worth (vs 8 for 1F1B).
    assert first_stage_in_flight(8, 2, 32) == pytest.approx(11.5)
    # All micro-batches in warm-up when m = p: every chunk of every micro-batch, m * v chunks.
    assert first_stage_in_flight(16, 4, 16) == 16
    # Other ranks (schedules.py get_pp_rank_microbatches): 1F1B warm-up p - rank - 1, so rank 1 of
    # 8 holds 7 and the last 1; interleaved, the last rank's warm-up is (v-1)p chunks: p=4, v=2
    # holds (4 + 1) / 2 = 2.5 micro-batches when its loss runs, rank 1 (2*2 + 4 + 1) / 2 = 4.5.
    assert stage_in_flight(8, 1, 32, 1) == 7 and stage_in_flight(8, 1, 32, 7) == 1
    assert stage_in_flight(4, 2, 8, 3) == pytest.approx(2.5) and stage_in_flight(4, 2, 8, 1) == pytest.approx(4.5)
    # m 10 runs groups of N = 5 (pipeline_order.micro_batch_group): warm-up (v-1)N more, the last rank
    # (5 + 1) / 2 = 3 micro-batches' worth, rank 0 (2*3 + 5 + 1) / 2 = 6 (5.5 with groups of pp).
    assert stage_in_flight(4, 2, 10, 3) == pytest.approx(3.0) and first_stage_in_flight(4, 2, 10) == pytest.approx(6.0)


MODEL = load_model("llama3-8b")
H100 = load_hardware("h100")
WORKLOAD = Workload(seq_len=8192, global_batch=64)


def _columns(overlap=MEGATRON_OVERLAP, **plan):
    c = Candidates.of_plan(ParallelPlan(**plan))
    return (memory_columns(MODEL, H100, WORKLOAD, c, domain_gpus=8),
            time_columns(MODEL, H100, WORKLOAD, c, gpus_per_node=8, overlap=overlap))


def test_vpp_divides_the_bubble_and_multiplies_pp_sends():
    # Blocking sends (overlap_p2p_comm off): one per chunk boundary, twice as many at vpp 2.
    blocking = MEGATRON_OVERLAP.model_copy(update={"pp_p2p": False})
    _, plain = _columns(tp=2, pp=4, vpp=1)
    _, inter = _columns(blocking, tp=2, pp=4, vpp=2)
    # Halved, but for the first stage's backward beyond its layers, which runs with its chunk 0:
    # the embedding's TP all-gather of a micro-batch's 8192 x 4096 bf16 activations and its
    # gradient passes, 12 B on each of 128,256 / 2 x 4096 elements at 3.35 TB/s x 0.76 (1.238 ms).
    # The drain's last J = min(pp, m) = 4 chunk-0 backwards pass the stages pp-1 -> 0, each equal
    # (8 layers a stage, 4 a chunk) but the first's: the extra counts whole, not 1/2, and 3 times
    # more (cost.pipeline_path, the drain's pile-up). The fill's first J chunk-0 forwards pile up
    # the same way behind the first stage's embedding forward, its TP reduce-scatter of those
    # activations: 3 times (the last stage's fill, cost.pipeline_path's held path).
    passes = 12 * 128256 / 2 * 4096 / (3.35e12 * 0.76)
    assert passes == pytest.approx(1.2380e-3, rel=1e-4)
    gather = ring_collective_time_s(H100, "all_gather", 8192 * 4096 * 2 / 2, 2, 1, 8)
    drain = (1 - 1 / 2 + 3) * (passes + gather)
    fill = 3 * ring_collective_time_s(H100, "reduce_scatter", 8192 * 4096 * 2 / 2, 2, 1, 8)
    assert inter.time.bubble_s[0] == pytest.approx(plain.time.bubble_s[0] / 2 + drain + fill)
    assert inter.time.pp_comm_s[0] == pytest.approx(2 * plain.time.pp_comm_s[0])
    # Megatron's default on the interleaved schedule overlaps them: an 8K-token activation over
    # NVLink (tp 2: 4096 x 4096 x 2 B, 34 MB) takes far less than a 4-layer chunk's forward, so
    # only the fill's and drain's hops are waited for (cost.pipeline_sends.interleaved_edge_sends_s): at
    # least the 2 (pp - 1) to the last stage and back, at most 2 (pp x vpp - 1).
    _, overlapped = _columns(tp=2, pp=4, vpp=2)
    send = inter.time.pp_comm_s[0] / (WORKLOAD.global_batch * 2 * 2)  # dp 1: m = 64
    assert 2 * 3 * send <= overlapped.time.pp_comm_s[0] <= 2 * 7 * send * (1 + 1e-9)
    assert plain.time.pp_comm_s[0] > 0.0  # plain 1F1B blocks whatever the flag


def test_overlapped_sends_expose_what_a_chunk_forward_does_not_hide():
    # tp 1 (no TP collective in a layer's forward) with the sends' link 1000x slower: each of the
    # m x 2 x vpp sends is exposed by its time beyond the chunk's forward, the pacing stage's
    # 4 layers x the layer forward, which the link does not change.
    slow = H100.model_copy(update={"intra_node": H100.intra_node.model_copy(
        update={"bandwidth_bytes_per_s": H100.intra_node.bandwidth_bytes_per_s / 1000})})
    c = Candidates.of_plan(ParallelPlan(tp=1, pp=4, dp=2, vpp=2))
    blocking = MEGATRON_OVERLAP.model_copy(update={"pp_p2p": False})
    blocked = time_columns(MODEL, slow, WORKLOAD, c, gpus_per_node=8, overlap=blocking)
    beside = time_columns(MODEL, slow, WORKLOAD, c, gpus_per_node=8)
    m = WORKLOAD.global_batch / (c.dp[0] * c.micro_batch[0])
    sends = m * 2 * 2
    send = blocked.time.pp_comm_s[0] / sends
    # Besides, the fill's and drain's hops wait whole (cost.pipeline_sends.interleaved_edge_sends_s): on
    # this link all 2 (pp x vpp - 1) of them, less the slack beside the loss's backward.
    edge_hops = 2 * (4 * 2 - 1)
    assert 0.0 < beside.time.pp_comm_s[0] < blocked.time.pp_comm_s[0]
    assert beside.time.pp_comm_s[0] < (sends + edge_hops) * send  # each steady send hid something
    # The hidden part is one chunk's forward whatever the link: a 2000x slower link exposes each
    # steady send and each edge hop by the link's whole difference.
    slower = slow.model_copy(update={"intra_node": slow.intra_node.model_copy(
        update={"bandwidth_bytes_per_s": slow.intra_node.bandwidth_bytes_per_s / 2})})
    again = time_columns(MODEL, slower, WORKLOAD, c, gpus_per_node=8)
    blocked2 = time_columns(MODEL, slower, WORKLOAD, c, gpus_per_node=8, overlap=blocking)
    send2 = blocked2.time.pp_comm_s[0] / sends
    assert again.time.pp_comm_s[0] - beside.time.pp_comm_s[0] == pytest.approx((sends + edge_hops) * (send2 - send),
                                                                                rel=1e-9)


def test_uneven_stages_hold_their_layers():
    # 32 layers over 3 stages: middle ceil(32/3) = 11, first 11, last (with the logits) 10.
    assert [int(x) for x in default_split(32, 3, 1)] == [11, 10]
    # 9 / 8 / 8 / 7: the first stage (4 micro-batches in flight under 1F1B) stores 9/8 of the
    # even split's activations, and holds 9/8 of its layer parameters.
    mem_even, _ = _columns(tp=2, pp=4)
    mem_uneven, _ = _columns(tp=2, pp=4, first_stage_layers=9, last_stage_layers=7)
    assert mem_uneven.activations_bytes[0] == pytest.approx(9 / 8 * mem_even.activations_bytes[0])


def test_interleaved_last_stage_holds_more_than_one_micro_batch():
    # Llama-3-8B, 32K tokens, pp 4 x vpp 2, full recompute: the last stage's logits (32768 x
    # 128256 x 6 B, 23.5 GiB) make it the peak. It stores each of its 8 layers' input (2 B x 32768
    # x 4096) for 2.5 micro-batches (stage_in_flight), not one.
    workload = Workload(seq_len=32768, global_batch=16)
    c = Candidates.of_plan(ParallelPlan(pp=4, vpp=2, dp=2, recompute="full"))
    mem = memory_columns(MODEL, H100, workload, c, domain_gpus=8)
    assert mem.logits_bytes[0] == 6 * 32768 * MODEL.vocab_size
    assert mem.activations_bytes[0] == pytest.approx(8 * 2.5 * 2 * 32768 * 4096)


def test_the_second_rank_is_checked_when_the_first_stage_is_lighter():
    # Llama-3.1-405B over pp 16 with the paper's 7 / 8 x 14 / 7 split, tp 8, 8K tokens, no
    # recompute: the first rank stores 7 layers x 16 micro-batches, the second 8 layers x 15, 120
    # against 112 layer-micro-batches, and more parameters: the second rank is the peak.
    model = load_model("llama3.1-405b")
    workload = Workload(seq_len=8192, global_batch=128)
    c = Candidates.of_plan(ParallelPlan(tp=8, pp=16, dp=8, zero=1, recompute="none",
                                        first_stage_layers=7, last_stage_layers=7))
    mem = memory_columns(model, H100, workload, c, domain_gpus=8)
    # One layer's saved bytes on a rank, n = 8192 tokens, h 16384, 16 heads and 1 KV head of 128 on
    # it, ffn 53248 / 8: norms 4 x 2n x 2048 = 134,217,728; Q and O 2n x 2048 each = 33,554,432;
    # K and V 2 x 2n x 128 = 4,194,304; log-sum-exp 4n x 16 = 524,288; SwiGLU's gate, up and
    # activation outputs 3 x 2n x 6656 = 327,155,712 -> 533,200,896.
    per_layer = 134_217_728 + 2 * 33_554_432 + 4_194_304 + 524_288 + 327_155_712
    assert mem.activations_bytes[0] == 8 * 15 * per_layer
    assert mem.logits_bytes[0] == 0.0


def test_fp8_gemms_at_the_mamf_rate():
    _, bf16 = _columns(dp=8, zero=1)
    _, fp8 = _columns(dp=8, zero=1, precision="fp8")
    # Same attention, faster GEMMs: H100 MAMF 1402.6 FP8 vs 794.5 BF16 TFLOPS (1.77x) on the
    # GEMMs, less the cast-transpose passes; attention untouched.
    assert fp8.time.attention_s[0] == pytest.approx(bf16.time.attention_s[0])
    ratio = bf16.time.gemm_s[0] / fp8.time.gemm_s[0]
    assert 1.3 < ratio < 1402.6 / 794.5


def test_fp8_weight_copies_and_saved_inputs():
    # ZeRO-2 (Megatron-FSDP optim_grads): bf16 parameters, which TE casts and caches whole
    # (Megatron-FSDP's FP8 parameters are ZeRO-3's, cost.fp8_params).
    mem_bf16, _ = _columns(dp=8, zero=2, recompute="none")
    mem_fp8, _ = _columns(dp=8, zero=2, recompute="none", precision="fp8")
    gemm_params = (MODEL.attention_params_per_layer + MODEL.mlp_params_per_layer) * MODEL.num_layers
    extra = mem_fp8.params_bytes[0] - mem_bf16.params_bytes[0]
    # FP8 weight + transpose: 2 bytes per GEMM parameter (+ 144 B of scaling state per layer).
    assert extra == pytest.approx(2 * gemm_params + 144 * MODEL.num_layers, rel=1e-9)
    # saved GEMM inputs at 1 byte: (2h + q + ffn) bytes per token per layer fewer, but the
    # attention's bf16 output (2q bytes a token), in bf16 the same tensor as the out-projection's
    # saved input, stays beside the projection's FP8 cast (Transformer Engine linear.py).
    tokens = 8192
    h, q, ffn = MODEL.hidden_size, MODEL.q_size, MODEL.intermediate_size
    saved = mem_bf16.activations_bytes[0] - mem_fp8.activations_bytes[0]
    assert saved == pytest.approx(tokens * (2 * h + q + ffn - 2 * q) * MODEL.num_layers, rel=1e-9)
    # Selective recompute frees the attention's copy: all four inputs save their byte.
    sel_bf16, _ = _columns(dp=8, zero=2, recompute="selective")
    sel_fp8, _ = _columns(dp=8, zero=2, recompute="selective", precision="fp8")
    saved = sel_bf16.activations_bytes[0] - sel_fp8.activations_bytes[0]
    assert saved == pytest.approx(tokens * (2 * h + q + ffn) * MODEL.num_layers, rel=1e-9)


def test_fp8_on_hardware_without_it_is_an_error():
    c = Candidates.of_plan(ParallelPlan(dp=8, precision="fp8"))
    with pytest.raises(ValueError, match="no FP8"):
        time_columns(MODEL, load_hardware("a800"), WORKLOAD, c, gpus_per_node=8)
    assert np.isfinite(time_columns(MODEL, H100, WORKLOAD, c, gpus_per_node=8).step_time_s).all()
