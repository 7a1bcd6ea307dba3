"""TP userbuffers overlap: each collective exposed beyond its GEMM (chunk), the GEMM slowed."""

import typing

import numpy as np
import pytest

import sp_planner.cost.tp_times as tp_times_module
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.overlap import gpu_sm_count
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, MEGATRON_RUNTIME
from sp_planner.cost.tp_overlap import (
    LayerGemms,
    bulk_s,
    gemm_shares,
    pipeline_s,
    ring_exchange_s,
    tp_overlap_times,
)
from sp_planner.cost.tp_overlap_buffers import BufferCopies, buffer_copies
from sp_planner.cost.tp_overlap_cfg import BULK, RING_EXCHANGE, UB_CONFIGS, UbConfigName, UbGemm
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

MS = 1e-3


def test_ring_exchange_by_hand():
    # tp 2: one 1 ms transfer beside the first of two 1 ms GEMM chunks: nothing exposed, 1 ms on
    # 1 of 132 SMs lost.
    assert ring_exchange_s(1 * MS, 2 * MS, 2) == pytest.approx(1 / 132 * MS)
    # tp 4, 3 ms all-gather, 2 ms GEMM: three 1 ms transfers beside 0.5 ms chunks expose 0.5 ms
    # each; the GEMM loses 1 SM for its 2 ms.
    assert ring_exchange_s(3 * MS, 2 * MS, 4) == pytest.approx(1.5 * MS + 2 / 132 * MS)


def test_bulk_by_hand():
    # The SM margin runs the 2 ms GEMM on 116 of 132 SMs: 2 x 16/116 ms more; a 1 ms collective
    # beside it is hidden, a 3 ms one exposes what it takes beyond the slowed GEMM.
    assert bulk_s(1 * MS, 2 * MS) == pytest.approx(2 * 16 / 116 * MS)
    assert bulk_s(3 * MS, 2 * MS) == pytest.approx(2 * 16 / 116 * MS + (3 - 2 * 132 / 116) * MS)


def test_margins_take_the_gpus_own_sms():
    # On B200's 148 SMs the margin leaves 132: a 2 ms GEMM takes 2 x 16/132 ms more, and a
    # ring-exchange transfer holds 1 of 148 SMs (cost.overlap.gpu_sm_count).
    assert bulk_s(1 * MS, 2 * MS, 148) == pytest.approx(2 * 16 / 132 * MS)
    assert ring_exchange_s(1 * MS, 2 * MS, 2, 1.0, 148) == pytest.approx(1 / 148 * MS)
    assert gpu_sm_count(load_hardware("b200")) == 148
    assert gpu_sm_count(load_hardware("gb300-nvl72")) == 160
    assert gpu_sm_count(load_hardware("h100-sxm")) == 132


def test_pipeline_exposes_the_last_chunk():
    # 4 chunks: 0.25 ms reduce-scatters behind 2 x 132/116 / 4 ms chunk GEMMs; the last exposed.
    assert pipeline_s(1 * MS, 2 * MS) == pytest.approx((0.25 + 2 * 16 / 116) * MS)


def test_layer_pairs_by_hand():
    # GEMMs 2 ms each, AG and RS 1 ms each, tp 2: forward = qkv/fc1 ring-exchange AGs and
    # proj/fc2 pipeline RSs; backward = proj/fc2 dgrad ring-exchange AGs, qkv/fc1 dgrad bulk AGs
    # and qkv/fc1 wgrad bulk RSs (cost.tp_overlap docstring).
    t = tp_overlap_times(1 * MS, 1 * MS, LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), 2)
    assert t.fwd_s == pytest.approx((2 / 132 + 2 * (0.25 + 2 * 16 / 116)) * MS)
    assert t.bwd_s == pytest.approx((2 / 132 + 4 * 2 * 16 / 116) * MS)


def test_layer_pairs_with_buffer_copies_by_hand():
    # As above, with a 0.1 ms copy into each all-gather buffer and a 0.2 ms clone out of each bulk
    # reduce-scatter buffer. Forward: the two ring exchanges' copies, serial. Backward: the two
    # ring exchanges' copies; the bulk gathers' 1 + 0.1 ms within their 2 x 132/116 ms GEMMs; the
    # two clones.
    base = tp_overlap_times(1 * MS, 1 * MS, LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), 2)
    t = tp_overlap_times(1 * MS, 1 * MS, LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), 2,
                         copies=BufferCopies(0.1 * MS, 0.2 * MS))
    assert t.fwd_s - base.fwd_s == pytest.approx(0.2 * MS)
    assert t.bwd_s - base.bwd_s == pytest.approx((0.2 + 0.4) * MS)
    # A 2.4 ms bulk gather is exposed beyond its 2 x 132/116 = 2.276 ms GEMM: its copy, whole.
    assert bulk_s(2.5 * MS, 2 * MS) - bulk_s(2.4 * MS, 2 * MS) == pytest.approx(0.1 * MS)
    assert bulk_s(2.5 * MS, 2 * MS) == pytest.approx((2.5 - 2) * MS)


def test_llama3_70b_tp8_buffer_copies_by_hand():
    # 4096 tokens at tp 8: a rank's shard is 512 x 8192 = 4,194,304 elements. Its FP8 copy into a
    # gather buffer reads and writes 1 B each: 8,388,608 B at H100's 3.35 TB/s x 0.76 = 3.295 us;
    # the bf16 clone out of a bulk reduce-scatter's buffer twice that.
    copies = buffer_copies(load_hardware("h100-sxm"), shard_elements=4096 * 8192 / 8, gather_elem_bytes=1.0)
    assert float(copies.gather_s) == pytest.approx(8388608 / (3.35e12 * 0.76))
    assert float(copies.gather_s) == pytest.approx(3.295e-6, abs=1e-9)
    assert float(copies.scatter_s) == pytest.approx(2 * float(copies.gather_s))


def test_stated_overlap_charges_the_buffer_copies(toy_model, hardware, monkeypatch):
    # The toy model (h 64) at tp 2 on 4096 tokens: per layer 6 bf16 copies of a 2048 x 64 shard
    # (2 B read + 2 B written an element; the bulk gathers' 2 exposed whole, their collectives
    # already longer than the toy's GEMMs) and 2 clones of as many bytes; 8 micro-batches of 2
    # layers. Everything else as without them.
    workload, plan = Workload(seq_len=4096, global_batch=8), ParallelPlan(tp=2, micro_batch=1)
    overlap = MEGATRON_RUNTIME.overlap.model_copy(update={"tp_comm": True})
    tp_on = MEGATRON_RUNTIME.model_copy(update={"overlap": overlap})
    on = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=2, runtime=tp_on)
    pass_s = 2048 * 64 * 4 / (hardware.hbm_bandwidth_bytes_per_s * hardware.efficiency.memory_bound)
    monkeypatch.setattr(tp_times_module, "buffer_copies", lambda *a, **k: BufferCopies(0.0, 0.0))
    without = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=2, runtime=tp_on)
    assert on.time.tp_comm_s - without.time.tp_comm_s == pytest.approx(8 * 2 * (6 + 2) * pass_s, rel=1e-6)


def test_llama3_70b_gemm_shares_by_hand():
    # h 8192, q 8192, kv 1024, ffn 28672 SwiGLU: per 2h, qkv 10240, proj 8192, fc1 2 x 28672,
    # fc2 28672 of 104448.
    shares = gemm_shares(load_model("Llama-3-70B"))
    assert shares == pytest.approx((10240 / 104448, 8192 / 104448, 57344 / 104448, 28672 / 104448))


def test_no_framework_runtime_overlaps_tp_comm():
    # sp-plan does not emit --tp-comm-overlap: its timings keep the TP collectives exposed.
    assert all(not runtime.overlap.tp_comm for runtime in FRAMEWORK_RUNTIME.values())


def test_stated_overlap_hides_tp_comm_behind_gemms(toy_model, hardware):
    # tp 2: 8 micro-batches x (2 layers x 10 collectives + the embedding's and output layer's 5)
    # of 4096*64*2/2 B at 100 GB/s exposed, and the norms' 1280 B gradient all-reduce at step end
    # (tests/cost/test_step.py); overlapped, the layers' at most that (userbuffers pair only the
    # layers' GEMMs), and the GEMMs are untouched.
    workload, plan = Workload(seq_len=4096, global_batch=8), ParallelPlan(tp=2, micro_batch=1)
    exposed = 8 * (2 * 10 + 5) * (4096 * 64 * 2 / 2) / 100e9 + 1280 / 100e9
    overlap = MEGATRON_RUNTIME.overlap.model_copy(update={"tp_comm": True})
    tp_on = MEGATRON_RUNTIME.model_copy(update={"overlap": overlap})
    off = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=2)
    on = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=2, runtime=tp_on)
    assert off.time.tp_comm_s == pytest.approx(exposed)
    assert 0 < on.time.tp_comm_s < exposed
    assert on.time.gemm_s == off.time.gemm_s


def test_chunked_gemm_slows_each_method_by_its_factor():
    # A 2 ms GEMM 1.5x slower in chunks: ring_exchange at tp 2 with a 1 ms transfer adds the 1 ms
    # the chunks lose and the SM; pipeline slows the 3 ms chunked GEMM by the margin.
    assert ring_exchange_s(1 * MS, 2 * MS, 2, 1.5) == pytest.approx((1 + 1 / 132) * MS)
    assert pipeline_s(1 * MS, 2 * MS, 1.5) == pytest.approx((3 * 132 / 116 - 2 + 0.25) * MS)


def test_ring_exchange_ends_after_every_transfer_and_the_last_chunk_alone():
    # tp 4, 3 ms all-gather, 2 ms GEMM (rule: 1.5 ms exposed, test_ring_exchange_by_hand). The last
    # chunk waits for all three 1 ms transfers, then runs alone at twice its 0.5 ms share: the
    # exchange ends at 3 + 1 = 4 ms, 2 ms past the GEMM; at 1.5x its share, 1.75 ms past.
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, last=2.0) == pytest.approx((2 + 2 / 132) * MS)
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, last=1.5) == pytest.approx((1.75 + 2 / 132) * MS)
    # Transfers shorter than the chunks: 0.6 + 1 ms is within the 2 ms GEMM, nothing exposed.
    assert ring_exchange_s(0.6 * MS, 2 * MS, 4, 1.0, 132, last=2.0) == pytest.approx(0.6 / 132 * MS)
    # Aggregated: the last GEMM of 2 shards (1 ms even, 2 ms alone) after the 3 ms: 3 ms past the
    # GEMM against the rule's 1 + (2 - 1) = 2 ms.
    aggregated = UbGemm(RING_EXCHANGE, 1, False, aggregate=True)
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, aggregated, last=2.0) == pytest.approx((3 + 2 / 132) * MS)
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, aggregated) == pytest.approx((2 + 2 / 132) * MS)


BRIDGE_H100_70B = UB_CONFIGS["userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192"]


def test_bulk_without_margin_holds_its_sms():
    # Megatron-Bridge's tuned bulk GEMMs keep every SM: the collective's 24 SMs of 132 are lost while
    # it runs (1 ms of a 2 ms GEMM); a 3 ms one runs 1 ms past the GEMM, beside it for 2 ms.
    wgrad = UbGemm(BULK, 24, False)
    assert bulk_s(1 * MS, 2 * MS, 132, wgrad) == pytest.approx(24 / 132 * MS)
    assert bulk_s(3 * MS, 2 * MS, 132, wgrad) == pytest.approx((1 + 24 / 132 * 2) * MS)


def test_ring_exchange_reduce_scatter_by_hand():
    # tp 4, a 3 ms reduce-scatter's three 1 ms sends beside the chunks of a 2 ms GEMM on 131 of 132
    # SMs (num_sm 1 with the margin): each exposed by 1 - (2 x 132/131)/4 ms; the margin's slowdown;
    # no SM held beside it.
    g = UbGemm(RING_EXCHANGE, 1, True)
    slow = 2 * 132 / 131
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, g) == pytest.approx((slow - 2 + 3 * (1 - slow / 4)) * MS)


def test_bridge_fp8_config_pairs_by_hand():
    # As test_layer_pairs_by_hand, with Megatron-Bridge's H100 FP8 configuration and a 0.1 ms sum of
    # the tp 2 chunks after each ring-exchange reduce-scatter. Forward: the two ring-exchange
    # all-gathers' SM (1/132 of 1 ms each), the two reduce-scatters' 1-SM margins (2 x 132/131 - 2 ms:
    # each 1 ms send hides behind the other 1.008 ms chunk) and sums. Backward: the dgrad ring
    # exchanges' SM, and the bulk collectives' SMs, 4, 2, 24 and 4 of 132, each for 1 ms.
    copies = BufferCopies(0.0, 0.0, 0.1 * MS)
    t = tp_overlap_times(1 * MS, 1 * MS, LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), 2, copies=copies,
                         cfg=BRIDGE_H100_70B)
    assert t.fwd_s == pytest.approx((2 / 132 + 2 * (2 * 132 / 131 - 2 + 0.1)) * MS)
    assert t.bwd_s == pytest.approx((2 + 4 + 2 + 24 + 4) / 132 * MS)


def test_bridge_configs_as_their_source():
    # Megatron-Bridge training/comm_overlap.py (c81012934): the bulk GEMMs' num_sm (qkv_dgrad,
    # qkv_wgrad, fc1_dgrad, fc1_wgrad), none with the SM margin; proj_fprop and fc2_fprop ring
    # exchanges with a 1-SM margin; the all-gathers' ring exchanges as TE's default.
    expected = {"userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192": (4, 24, 2, 4),
                "userbuffers_fp8_b200_h8192_tp2_mbs1_seqlen8192": (4, 24, 2, 4),
                "userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192": (2, 24, 2, 2),
                "userbuffers_fp8_b200_h16384_tp4_cp2_mbs1_seqlen8192": (8, 32, 2, 8)}
    default = UB_CONFIGS["te_default"]
    for name, sms in expected.items():
        cfg = UB_CONFIGS[name]
        bulk = (cfg.qkv_dgrad, cfg.qkv_wgrad, cfg.fc1_dgrad, cfg.fc1_wgrad)
        assert tuple(g.num_sm for g in bulk) == sms and not any(g.set_sm_margin for g in bulk)
        assert cfg.proj_fprop == cfg.fc2_fprop == UbGemm(RING_EXCHANGE, 1, True)
        assert (cfg.qkv_fprop, cfg.fc1_fprop, cfg.proj_dgrad, cfg.fc2_dgrad) == \
            (default.qkv_fprop, default.fc1_fprop, default.proj_dgrad, default.fc2_dgrad)
    # TE's defaults (module/base.py get_default_config): the ring exchanges 1 SM without margin,
    # pipeline and bulk 16 with it, pipeline in 4 splits.
    assert default.qkv_fprop == UbGemm(RING_EXCHANGE, 1, False)
    assert (default.proj_fprop.num_sm, default.proj_fprop.set_sm_margin, default.proj_fprop.num_splits) == (16, True, 4)
    assert (default.qkv_wgrad.num_sm, default.qkv_wgrad.set_sm_margin) == (16, True)
    assert set(typing.get_args(UbConfigName)) == set(UB_CONFIGS)  # a row may name each, and only these


NEMO_FP8_70B = UB_CONFIGS["ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192"]


def test_aggregated_ring_exchange_by_hand():
    # tp 4, a 3 ms all-gather (three 1 ms shard transfers), a 2 ms GEMM. Aggregated (TE v1.8
    # split_overlap_ag): the pair swap's 1 ms before the first GEMM, then 2 GEMMs of 1 ms beside one
    # 2 ms send: 1 + (2 - 1) ms exposed, against TE's 3 x (1 - 0.5) ms; 1 SM of 132 for 2 ms in both.
    aggregated = UbGemm(RING_EXCHANGE, 1, False, aggregate=True)
    assert ring_exchange_s(3 * MS, 2 * MS, 4, 1.0, 132, aggregated) == pytest.approx((2 + 2 / 132) * MS)
    assert ring_exchange_s(3 * MS, 2 * MS, 4) == pytest.approx((1.5 + 2 / 132) * MS)
    # A 0.6 ms gather: the 0.2 ms swap exposed, the 0.4 ms send hidden by a 1 ms GEMM; TE's none.
    assert ring_exchange_s(0.6 * MS, 2 * MS, 4, 1.0, 132, aggregated) == pytest.approx((0.2 + 0.6 / 132) * MS)
    assert ring_exchange_s(0.6 * MS, 2 * MS, 4) == pytest.approx(0.6 / 132 * MS)


def test_nemo_launcher_fp8_config_pairs_by_hand():
    # GEMMs 2 ms each, AG and RS 1 ms each at tp 4, the FP8 buffers' reduce-scatter 0.5 ms.
    # Forward: the ring-exchange all-gathers' SM (1/132 of 1 ms each, every 1/3 ms transfer under
    # a 0.5 ms chunk); the projection's pipeline on a 24-SM margin (2 x 132/108 ms) and FC2's on a
    # 16-SM one (2 x 132/116 ms), each exposing its last 0.125 ms FP8 chunk. Backward: the dgrad
    # ring exchanges' SM and the bulk collectives' 4, 24, 2 and 4 SMs of 132, each for 1 ms.
    gemms = LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS)
    t = tp_overlap_times(1 * MS, 1 * MS, gemms, 4, cfg=NEMO_FP8_70B, fp8_rs_s=0.5 * MS)
    proj, fc2 = 2 * 132 / 108 - 2 + 0.125, 2 * 132 / 116 - 2 + 0.125
    assert t.fwd_s == pytest.approx((2 / 132 + proj + fc2) * MS)
    assert t.bwd_s == pytest.approx((2 + 4 + 24 + 2 + 4) / 132 * MS)
    # TE's defaults on the same layer: both pipelines on 16-SM margins, each exposing a 0.25 ms
    # bf16 chunk; the bulk GEMMs slowed by their 16-SM margins (2 x 16/116 ms each).
    te = tp_overlap_times(1 * MS, 1 * MS, gemms, 4, fp8_rs_s=0.5 * MS)
    assert te.fwd_s == pytest.approx((2 / 132 + 2 * (2 * 132 / 116 - 2 + 0.25)) * MS)
    assert te.bwd_s == pytest.approx((2 / 132 + 4 * 2 * 16 / 116) * MS)


TE_1_8 = UB_CONFIGS["te_1.8_default"]


def test_te_1_8_defaults_hold_sms_instead_of_margins():
    # A 2 ms GEMM beside a 1 ms collective, on 132 SMs. TE 1.8's bulk GEMM keeps every SM and loses 16
    # for the collective's 1 ms (16/132 = 0.121 ms); TE 2.x's runs on 116 for its 2 ms (2 x 16/116 =
    # 0.276 ms). Pipeline, 4 splits: the last 0.25 ms chunk exposed in both, plus the same SM charge.
    assert bulk_s(1 * MS, 2 * MS, 132, TE_1_8.qkv_wgrad) == pytest.approx(16 / 132 * MS)
    assert bulk_s(1 * MS, 2 * MS) == pytest.approx(2 * 16 / 116 * MS)
    assert pipeline_s(1 * MS, 2 * MS, 1.0, 132, TE_1_8.proj_fprop) == pytest.approx((0.25 + 16 / 132) * MS)
    # Its ring exchange's num_sm 16 is a copy-engine transfer's: 1 SM of 132 for the 1 ms, as TE 2.x's.
    assert ring_exchange_s(1 * MS, 2 * MS, 2, 1.0, 132, TE_1_8.qkv_fprop) == pytest.approx(1 / 132 * MS)


def test_te_1_8_layer_pairs_by_hand():
    # As test_layer_pairs_by_hand (GEMMs 2 ms, AG and RS 1 ms, tp 2) on TE 1.8's defaults. Forward:
    # the two ring exchanges' SM and the two pipelines' 0.25 ms last chunks and 16 SMs for 1 ms.
    # Backward: the dgrad ring exchanges' SM, the four bulk collectives' 16 SMs for 1 ms each.
    t = tp_overlap_times(1 * MS, 1 * MS, LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), 2, cfg=TE_1_8)
    assert t.fwd_s == pytest.approx((2 / 132 + 2 * (0.25 + 16 / 132)) * MS)
    assert t.bwd_s == pytest.approx((2 / 132 + 4 * 16 / 132) * MS)


def test_stated_fp8_buf_reduce_scatters_move_fp8(monkeypatch):
    # Llama-3-70B at tp 4 in FP8 on 8192 tokens under the NeMo launcher's FP8 config: the
    # pipelines' reduce-scatter is priced on 1 byte an element of the 8192 x 8192 micro-batch
    # (3/4 of it sent a rank), the bulk ones on bf16's 2; a bf16 run's both on 2.
    from sp_planner.cost.links import ring_collective_time_s

    seen = []
    real = tp_times_module.tp_overlap_times
    monkeypatch.setattr(tp_times_module, "tp_overlap_times",
                        lambda ag, rs, *a, **k: seen.append((np.asarray(rs).item(), np.asarray(a[-1]).item()))
                        or real(ag, rs, *a, **k))
    overlap = MEGATRON_RUNTIME.overlap.model_copy(
        update={"tp_comm": True, "tp_comm_cfg": "ub_cfg_h100_fp8_h8192_tp4_mbs1_seqlen8192"})
    runtime = MEGATRON_RUNTIME.model_copy(update={"overlap": overlap})
    h100 = load_hardware("h100-sxm")
    for precision in ("fp8", "bf16"):
        plan = ParallelPlan(tp=4, dp=2, micro_batch=1, precision=precision)
        evaluate(load_model("Llama-3-70B"), h100, Workload(seq_len=8192, global_batch=8), plan, num_nodes=1,
                 gpus_per_node=8, runtime=runtime)
    bf16_rs = float(ring_collective_time_s(h100, "reduce_scatter", 8192 * 8192 * 2 * 3 / 4, 4, 1, 8))
    fp8_rs = float(ring_collective_time_s(h100, "reduce_scatter", 8192 * 8192 * 1 * 3 / 4, 4, 1, 8))
    assert seen == [pytest.approx((bf16_rs, fp8_rs)), pytest.approx((bf16_rs, bf16_rs))]
    assert fp8_rs < bf16_rs
