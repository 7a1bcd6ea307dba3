"""Userbuffers' memory passes and MXFP8's side traffic under TP overlap, by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.tp_overlap import LayerGemms, tp_overlap_times
from sp_planner.cost.tp_overlap_buffers import (
    NO_MX,
    BufferCopies,
    MxSideTraffic,
    buffer_copies,
    external_gather_s,
    fp8_buf_rs_elem_bytes,
    mx_side_traffic,
)
from sp_planner.cost.precision import BF16, FP8, MXFP8
from sp_planner.cost.tp_gathers import TE_TP_GATHERS as TE

MS = 1e-3
GB200_MEMORY_BOUND_BYTES_PER_S = 8.0e12 * 0.73  # gb200-nvl72.yaml: HBM x efficiency.memory_bound


def test_ring_exchange_reduce_sums_tp_chunks_into_one():
    # Llama-3-70B at tp 2 on 8192 tokens: a rank's shard is 4096 x 8192 elements; the ring
    # exchange's reduce reads the 2 bf16 chunks and writes the rank's: 3 x 2 B an element.
    shard = 8192 * 8192 / 2
    copies = buffer_copies(load_hardware("gb200-nvl72"), shard_elements=shard, gather_elem_bytes=1.0, tp=2)
    assert float(copies.reduce_s) == pytest.approx(3 * 2 * shard / GB200_MEMORY_BOUND_BYTES_PER_S)
    assert float(copies.gather_s) == pytest.approx(2 * shard / GB200_MEMORY_BOUND_BYTES_PER_S)


def test_mx_side_traffic_of_llama3_70b_at_tp2_on_gb200():
    # The same shard in MXFP8: its scales, 1 B per 32 elements, all-gathered through NCCL (each rank
    # sends its 1,048,576 B); the column-wise cast reads 2 B and writes 1 + 1/32 an element, of which
    # the main stream's cast (cost.precision) had charged the write.
    hardware, shard = load_hardware("gb200-nvl72"), 8192 * 8192 / 2
    mx = mx_side_traffic(hardware, shard_elements=shard, tp=2, tp_stride=1, gpus_per_node=4, mx=np.array([True]),
                         share=1.0)
    assert float(mx.scale_gather_s) == pytest.approx(float(ring_collective_time_s(hardware, "all_gather",
                                                                                  shard / 32, 2, 1, 4)))
    assert float(mx.col_cast_s) == pytest.approx(shard * 3.03125 / GB200_MEMORY_BOUND_BYTES_PER_S)
    assert float(mx.main_write_saved_s) == pytest.approx(shard * 1.03125 / GB200_MEMORY_BOUND_BYTES_PER_S)
    off = mx_side_traffic(hardware, shard_elements=shard, tp=2, tp_stride=1, gpus_per_node=4, mx=np.array([False]),
                          share=1.0)
    assert off.share.tolist() == [0.0] and mx.share.tolist() == [1.0]


def test_external_gather_follows_the_ring_transfers():
    # After the ring exchange's 1 ms of transfers: a 0.2 ms cast, a 0.1 ms copy, 0.05 ms of scales and
    # the 1 ms transfer end at 2.35 ms, 0.35 ms past a 2 ms dgrad; half of it on an MoE layer's
    # TE share of 0.5; nothing past a 3 ms dgrad.
    mx = MxSideTraffic(scale_gather_s=0.05 * MS, col_cast_s=0.2 * MS, main_write_saved_s=0.1 * MS, share=1.0)
    assert external_gather_s(2 * MS, 1 * MS, 0.1 * MS, mx) == pytest.approx(0.35 * MS)
    assert external_gather_s(2 * MS, 1 * MS, 0.1 * MS, mx._replace(share=0.5)) == pytest.approx(0.175 * MS)
    assert external_gather_s(3 * MS, 1 * MS, 0.1 * MS, mx) == 0.0


def test_mxfp8_layer_pays_its_scales_and_column_wise_gathers_by_hand():
    # TE's defaults, GEMMs 2 ms, AG 1.2 ms, RS 1 ms, tp 2, a 0.1 ms copy: forward 2 scale gathers
    # more; backward 4, less the 2 column-wise writes, and each column-wise gather past its dgrad
    # ring exchange (2 ms, the 1.2 ms transfer 0.2 ms past the 1 ms chunk beside it, 1.2/132 ms of
    # its SM): 1.2 + 0.2 + 0.1 + 0.05 + 1.2 = 2.75 ms from the dgrad's start.
    gemms, copies = LayerGemms(2 * MS, 2 * MS, 2 * MS, 2 * MS), BufferCopies(0.1 * MS, 0.0)
    mx = MxSideTraffic(scale_gather_s=0.05 * MS, col_cast_s=0.2 * MS, main_write_saved_s=0.1 * MS, share=1.0)
    base = tp_overlap_times(1.2 * MS, 1 * MS, gemms, 2, copies=copies, mx=NO_MX)
    t = tp_overlap_times(1.2 * MS, 1 * MS, gemms, 2, copies=copies, mx=mx)
    assert t.fwd_s - base.fwd_s == pytest.approx(2 * 0.05 * MS)
    past = 2.75 - (2 + 0.2 + 1.2 / 132)
    assert t.bwd_s - base.bwd_s == pytest.approx((4 * 0.05 - 2 * 0.1 + 2 * past) * MS)


def test_fp8_buf_reduce_scatter_moves_fp8_under_per_tensor_fp8_only():
    # TE v1.8 writes an fp8_buf pipeline's GEMM output as FP8 only in its per-tensor FP8 path: 1 byte
    # an element there; bf16, MXFP8 (TE 2.x) and blockwise FP8 keep bf16's 2. On Qwen3-235B-A22B's
    # MoE layers TE gathers half the tensors (cost.gathered_transpose.fp8_share 0.5): 2 - 0.5 x 1.
    dense = load_model("Llama-3-70B")
    got = fp8_buf_rs_elem_bytes(dense, gathers=TE, tp=np.array([4, 4, 4, 1]),
                                precision=np.array([FP8, BF16, MXFP8, FP8]))
    assert got.tolist() == [1.0, 2.0, 2.0, 2.0]
    assert fp8_buf_rs_elem_bytes(dense, gathers=TE, tp=4, precision=FP8, fp8_blockwise=True) == 2.0
    assert fp8_buf_rs_elem_bytes(load_model("Qwen3-235B-A22B"), gathers=TE, tp=4, precision=FP8) == 1.5
