"""Userbuffers' multicast collectives: a bulk or pipelined one moves tp / (tp - 1) of a ring's bytes."""

import numpy as np
import pytest

import sp_planner.cost.tp_times as tp_times_module
from sp_planner.catalog import load_hardware
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.cost.tp_overlap import LayerGemms, tp_overlap_times
from sp_planner.cost.tp_overlap_cfg import TE_DEFAULT
from sp_planner.cost.tp_overlap_multicast import multicast_bytes_factor, uses_multicast
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

MS = 1e-3


def test_multicast_bytes_by_hand():
    # A member's busier direction carries S against a ring's (tp - 1)/tp S (NVIDIA/nccl#1083).
    h100 = load_hardware("h100-sxm")
    assert multicast_bytes_factor(h100, np.array([8, 4, 2, 1])) == pytest.approx([8 / 7, 4 / 3, 2.0, 1.0])
    assert multicast_bytes_factor(load_hardware("gb200-nvl72"), 4) == pytest.approx(4 / 3)
    assert multicast_bytes_factor(load_hardware("b200"), 8) == pytest.approx(8 / 7)


def test_no_multicast_before_hopper_or_off_nvlink(hardware):
    # A100 (TE 1.8: sm_arch >= 9 only), PCIe nodes, and profiles of no family keep the ring's bytes.
    for name in ("a100-80gb", "l40s"):
        assert not uses_multicast(load_hardware(name))
        assert multicast_bytes_factor(load_hardware(name), 8) == pytest.approx(1.0)
    assert not uses_multicast(hardware)
    assert uses_multicast(load_hardware("h100-sxm"))


def test_layer_multicast_by_hand():
    # TE's defaults at tp 4, every GEMM 0.4 ms, each collective 1.2 ms as a ring. The margin runs
    # the GEMMs on 116 of 132 SMs (0.4 x 132/116 = 0.4552 ms, 0.1138 ms a pipeline chunk). With
    # multicast each bulk or pipelined collective takes 4/3 x 1.2 = 1.6 ms: a pipeline's 4 chunks
    # of 0.4 ms instead of 0.3 each expose 0.1 ms more (the last whole, the others beyond their
    # 0.1138 ms chunk): 0.4 ms a pipeline, 2 forward; a bulk collective 0.4 ms more beyond its
    # slowed GEMM, 4 backward. The ring exchanges' copy-engine transfers are unchanged.
    gemms = LayerGemms(0.4 * MS, 0.4 * MS, 0.4 * MS, 0.4 * MS)
    ring = tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4)
    mc = tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4, multicast=4 / 3)
    assert mc.fwd_s - ring.fwd_s == pytest.approx(2 * 0.4 * MS)
    assert mc.bwd_s - ring.bwd_s == pytest.approx(4 * 0.4 * MS)


def test_fp8_chunks_and_ring_exchanges_keep_ring_bytes():
    # fp8_buf pipelines reduce-scatter FP8 chunks by a kernel with no multicast branch; a config of
    # ring exchanges and no bulk collective moves nothing on multicast.
    gemms = LayerGemms(0.4 * MS, 0.4 * MS, 0.4 * MS, 0.4 * MS)
    fp8 = TE_DEFAULT._replace(proj_fprop=TE_DEFAULT.proj_fprop._replace(fp8_buf=True),
                              fc2_fprop=TE_DEFAULT.fc2_fprop._replace(fp8_buf=True))
    ring = tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4, cfg=fp8)
    mc = tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4, cfg=fp8, multicast=4 / 3)
    assert mc.fwd_s == pytest.approx(ring.fwd_s)
    exchanges = TE_DEFAULT._replace(proj_fprop=TE_DEFAULT.qkv_fprop, fc2_fprop=TE_DEFAULT.qkv_fprop)
    assert tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4, cfg=exchanges, multicast=4 / 3).fwd_s == pytest.approx(
        tp_overlap_times(1.2 * MS, 1.2 * MS, gemms, 4, cfg=exchanges).fwd_s)


def test_stated_overlap_on_h100_runs_multicast(toy_model, monkeypatch):
    # The toy model at tp 2 (dp 4) on an H100 node: its stated userbuffers overlap prices the bulk
    # and pipelined collectives at twice a ring's bytes, so dropping the factor shortens them.
    h100 = load_hardware("h100-sxm")
    workload, plan = Workload(seq_len=4096, global_batch=32), ParallelPlan(tp=2, dp=4, micro_batch=1)
    overlap = MEGATRON_RUNTIME.overlap.model_copy(update={"tp_comm": True})
    tp_on = MEGATRON_RUNTIME.model_copy(update={"overlap": overlap})
    mc = evaluate(toy_model, h100, workload, plan, num_nodes=1, gpus_per_node=8, runtime=tp_on)
    monkeypatch.setattr(tp_times_module, "multicast_bytes_factor", lambda hardware, tp: np.ones(np.shape(tp)))
    ring = evaluate(toy_model, h100, workload, plan, num_nodes=1, gpus_per_node=8, runtime=tp_on)
    assert mc.time.tp_comm_s > ring.time.tp_comm_s
