"""cost.layer_times: a layer's TP collectives and the pipeline ends' against a hand count, and
recompute re-running the forward it drops."""

from dataclasses import fields

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.layer_times import (ATTENTION_COLUMNS, GEMM_COLUMNS, UNREAD_COLUMNS, backward_lead_s,
                                         layer_attention, layer_gemm_side, layer_times)
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, MEGATRON_RUNTIME
from sp_planner.cost.overlap import MEGATRON_OVERLAP
from sp_planner.cost.ring_impl import TE_RING
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS
from sp_planner.plan import ParallelPlan
from sp_planner.search import search_axes
from sp_planner.space import Pins, enumerate_candidates
from sp_planner.candidates import Candidates
from sp_planner.layout import CP_AXES, group_size
from sp_planner.specs import Workload

WORKLOAD = Workload(seq_len=4096, global_batch=8)


def _times(model, hardware, plan, tp_gathers=TE_TP_GATHERS):
    c = Candidates.of_plan(plan)
    return layer_times(model, hardware, WORKLOAD, c, gpus_per_node=2, overlap=MEGATRON_OVERLAP, ring_impl=TE_RING,
                       loss_bytes_per_logit=4,
                       sequence_parallel=True, tp_gathers=tp_gathers)


def test_the_pipeline_ends_tp_collectives_by_hand(toy_model, hardware):
    # The output layer's (1 AG forward, 1 AG + 1 RS backward; cost.tp_times) on the loss stage, the
    # embedding's (1 RS + 1 AG) on the loss stage at pp 1, on the first stage otherwise; a call
    # 4096 x 64 x 2 B / 2 at 100 GB/s (tests/cost/test_tp_times.py).
    call = 4096 * 64 * 2 / 2 / 100e9
    t = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1))
    assert float(t.tp_layer_s[0]) == pytest.approx(10 * call)
    assert (float(t.head_tp_s[0]), float(t.first_tp_s[0])) == pytest.approx((5 * call, 0.0))
    piped = _times(toy_model, hardware, ParallelPlan(tp=2, pp=2, micro_batch=1))
    assert (float(piped.head_tp_s[0]), float(piped.first_tp_s[0])) == pytest.approx((3 * call, 2 * call))


def test_a_learned_position_tables_all_gather_on_the_first_stage(toy_model, hardware):
    # Its embedding forward 1 RS + 2 AG worth, backward 1 AG (tests/cost/test_tp_times.py).
    call = 4096 * 64 * 2 / 2 / 100e9
    learned = toy_model.model_copy(update={"position_embedding": "learned_absolute"})
    piped = _times(learned, hardware, ParallelPlan(tp=2, pp=2, micro_batch=1))
    assert (float(piped.head_tp_s[0]), float(piped.first_tp_s[0])) == pytest.approx((3 * call, 3 * call))
    single = _times(learned, hardware, ParallelPlan(tp=2, micro_batch=1))
    assert (float(single.head_tp_s[0]), float(single.first_tp_s[0])) == pytest.approx((6 * call, 0.0))


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_recompute_reruns_the_forward_it_drops(toy_model, hardware, recompute):
    t = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1, recompute=recompute))
    plain = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1))
    # Full: the whole forward again (GEMMs, attention, TP collectives); selective: core attention.
    want = {"none": 0.0, "selective": float(t.attn.fwd_s[0]), "full": float(t.fwd_s[0])}[recompute]
    assert float(t.recompute_s[0]) == pytest.approx(want)
    assert want > 0 or recompute == "none"
    # The layer's parts add up to its forward and backward, recompute inside the backward.
    assert float(t.per_layer_s[0]) == pytest.approx(float(t.fwd_s[0] + t.bwd_s[0]))
    assert float(t.bwd_s[0]) == pytest.approx(float(plain.bwd_s[0]) + want)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_the_first_backward_gathers_are_priced_as_their_own_kind(toy_model, hardware, recompute):
    # MXFP8 at tp 2 (toy: 4096 tokens x h 64, 100 GB/s, no latency; a dense layer, all TE-gathered):
    # forward input row-wise 1 + 1/32 B an element, the output gradient both usages 2 x (1 + 1/32),
    # the saved input again column-wise 1 + 1/32 (cost.gathered_transpose). Before the first
    # backward GEMM, as sim.layer_program orders them: the gradient's gather and the input's again,
    # after the recomputed attention (selective); full recompute: the recomputed forward's gather.
    def call(elem_bytes):
        return 4096 * 64 * elem_bytes / 2 / 100e9

    hardware = hardware.model_copy(update={"peak_fp8_flops": 200e12, "efficiency": hardware.efficiency.model_copy(
        update={"gemm_mxfp8": 0.5})})
    t = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1, precision="mxfp8", recompute=recompute))
    lead = float(backward_lead_s(t, Candidates.of_plan(ParallelPlan(recompute=recompute)).recompute)[0])
    want = {"none": call(2.0625) + call(1.03125), "selective": call(2.0625) + call(1.03125)
            + float(t.attn.fwd_s[0]), "full": call(1.03125)}[recompute]
    assert lead == pytest.approx(want)
    # torchtitan 0.3 (bf16 gathers, the gathered input kept): the gradient's bf16 gather alone.
    kept = _times(toy_model, hardware, ParallelPlan(tp=2, micro_batch=1, precision="mxfp8", recompute=recompute),
                  tp_gathers=BF16_TP_GATHERS)
    lead = float(backward_lead_s(kept, Candidates.of_plan(ParallelPlan(recompute=recompute)).recompute)[0])
    want = {"none": call(2), "selective": call(2) + float(kept.attn.fwd_s[0]), "full": call(2)}[recompute]
    assert lead == pytest.approx(want)


class _Recording(Candidates):
    """Candidates that note every column read, and whose rows taken note theirs."""

    def __getattribute__(self, name):
        if name in _COLUMNS:
            _READ.add(name)
        return super().__getattribute__(name)

    def take(self, index):
        """The rows at `index`, still recording: a take copies every column, reading none for a price
        (layer_times takes the distinct rows of its parts' keys)."""
        return _Recording(**{name: object.__getattribute__(self, name)[index] for name in _COLUMNS})


_COLUMNS = frozenset(f.name for f in fields(Candidates))
_READ: set[str] = set()


@pytest.mark.parametrize("runtime", [*FRAMEWORK_RUNTIME.values(), MEGATRON_RUNTIME.model_copy(update={
    "overlap": MEGATRON_RUNTIME.overlap.model_copy(update={"tp_comm": True, "ep_comm": True}),
    "moe_router_dtype": "fp32"})], ids=[*FRAMEWORK_RUNTIME, "megatron-tp-ep-overlap-fp32-router"])
def test_layer_times_reads_none_of_the_columns_it_is_deduplicated_without(runtime):
    # candidate_layer_times prices one row per distinct rest of the columns: sound only while
    # layer_times reads none of UNREAD_COLUMNS, on any framework's runtime (MoE, FP8 and BF16 rows).
    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("H100-SXM")
    workload = Workload(seq_len=8192, global_batch=64)
    c = enumerate_candidates(workload, 16, Pins(precision=None), 8, axes=search_axes(model, hardware))
    recording = _Recording(**{f.name: getattr(c, f.name) for f in fields(c)})
    _READ.clear()
    layer_times(model, hardware, workload, recording, gpus_per_node=8,
                overlap=runtime.overlap, ring_impl=runtime.ring, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers,
                moe_router_dtype=runtime.moe_router_dtype)
    assert {"tp", "micro_batch", "precision", "ep"} <= _READ  # the recording sees the reads
    assert not _READ & UNREAD_COLUMNS


@pytest.mark.parametrize("runtime", [*FRAMEWORK_RUNTIME.values(), MEGATRON_RUNTIME.model_copy(update={
    "overlap": MEGATRON_RUNTIME.overlap.model_copy(update={"tp_comm": True, "ep_comm": True}),
    "moe_router_dtype": "fp32"})], ids=[*FRAMEWORK_RUNTIME, "megatron-tp-ep-overlap-fp32-router"])
def test_each_part_reads_only_the_columns_of_its_key(runtime):
    # layer_times prices its GEMM side once per distinct GEMM_COLUMNS and cp (ulysses x ring, passed
    # in: the side reads neither ulysses nor ring) and core attention once per distinct
    # ATTENTION_COLUMNS: sound only while each reads no other column.
    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("H100-SXM")
    workload = Workload(seq_len=8192, global_batch=64)
    c = enumerate_candidates(workload, 16, Pins(precision=None), 8, axes=search_axes(model, hardware))
    recording = _Recording(**{f.name: getattr(c, f.name) for f in fields(c)})
    cp = group_size(c, CP_AXES)
    _READ.clear()
    layer_gemm_side(model, hardware, workload, recording, cp=cp, tokens=c.micro_batch * workload.seq_len / cp,
                    gpus_per_node=8, overlap=runtime.overlap, loss_bytes_per_logit=runtime.loss_bytes_per_logit,
                    sequence_parallel=runtime.sequence_parallel, tp_gathers=runtime.tp_gathers,
                    unpads_attention=runtime.unpads_attention, moe_router_dtype=runtime.moe_router_dtype,
                    expert_row_padding=runtime.expert_row_padding)
    assert {"tp", "micro_batch", "precision", "ep"} <= _READ <= set(GEMM_COLUMNS)
    _READ.clear()
    layer_attention(model, hardware, workload, recording, gpus_per_node=8, ring_impl=runtime.ring)
    assert {"tp", "ulysses", "ring", "micro_batch"} <= _READ <= set(ATTENTION_COLUMNS)


def test_tp_comm_overlap_at_tp_1_prices_no_tp_collective():
    # Userbuffers overlap has nothing to hide at tp 1 (Megatron turns sequence parallelism off there
    # and asserts it for --tp-comm-overlap): the layer's TP time stays 0, not the buffer copies of a
    # whole shard (Qwen3-30B-A3B ep 8 on 16 H100s: 0.0994 s a step before).
    model, hardware = load_model("Qwen3-30B-A3B"), load_hardware("H100-SXM")
    overlapped = MEGATRON_OVERLAP.model_copy(update={"tp_comm": True})
    times = {}
    for tp in (1, 2):
        c = Candidates.of_plan(ParallelPlan(tp=tp, dp=8 // tp, ep=8 // tp))
        times[tp] = [layer_times(model, hardware, WORKLOAD, c, gpus_per_node=8,
                                 overlap=overlap, ring_impl=TE_RING, loss_bytes_per_logit=4, sequence_parallel=True,
                                 tp_gathers=TE_TP_GATHERS) for overlap in (MEGATRON_OVERLAP, overlapped)]
    plain, over = times[1]
    assert float(plain.tp_layer_s[0]) == 0.0 and float(over.tp_layer_s[0]) == 0.0
    assert float(over.per_layer_s[0]) == float(plain.per_layer_s[0])
    plain, over = times[2]  # at tp 2 the overlap still prices its own way
    assert float(over.tp_layer_s[0]) != float(plain.tp_layer_s[0])
