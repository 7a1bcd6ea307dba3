"""The gathered FP8 tensors' transposes (cost.gathered_transpose) by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
import sp_planner.cost.gemm_work as gemm_work_module
from sp_planner.cost.gathered_transpose import gathered_tensors_per_layer, gathered_transpose_s
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.sim.simulate import analytic_step_time_s, simulate
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
H100_MEMORY_BOUND_BYTES_PER_S = 3.35e12 * 0.76  # h100-sxm.yaml: HBM x efficiency.memory_bound


def test_tensors_per_layer_by_model():
    # Dense: LN1 and LN2 outputs (QKV, FC1 inputs), projection and FC2 output gradients.
    assert gathered_tensors_per_layer(load_model("llama3-70b")) == 4.0
    # Qwen3-30B-A3B: every layer MoE without shared experts, the attention's pair only.
    assert gathered_tensors_per_layer(load_model("qwen3-30b-a3b")) == 2.0


def test_llama3_70b_at_tp8_on_h100_by_hand():
    # 4 tensors x 4,096 tokens x 8,192: read + write 1 byte each, less the 1 byte on the rank's
    # 512 tokens the local cast was charged: 4 x 4096 x 8192 x (2 - 1/8) B = 251.7 MB, 98.9 us.
    model, h100 = load_model("llama3-70b"), load_hardware("h100")
    got = gathered_transpose_s(model, h100, tokens=4096, tp=np.array([8]), precision=np.array([FP8]))
    expected = 4 * 4096 * 8192 * (2 - 1 / 8) / H100_MEMORY_BOUND_BYTES_PER_S
    assert got[0] == pytest.approx(expected)
    assert got[0] == pytest.approx(98.9e-6, rel=1e-3)


def test_only_per_tensor_fp8_with_sequence_parallel_tp_on_hopper_pays():
    model, h100, b200 = load_model("llama3-70b"), load_hardware("h100"), load_hardware("b200")
    tp = np.array([4, 4, 4, 1, 4])
    precision = np.array([FP8, BF16, MXFP8, FP8, FP8])
    block = np.array([False, False, False, False, True])
    got = gathered_transpose_s(model, h100, tokens=8192, tp=tp, precision=precision, fp8_blockwise=block)
    assert got[0] == pytest.approx(4 * 8192 * 8192 * (2 - 1 / 4) / H100_MEMORY_BOUND_BYTES_PER_S)
    assert got[1:].tolist() == [0.0, 0.0, 0.0, 0.0]
    # Blackwell's FP8 GEMMs take either layout; TP without sequence parallelism gathers nothing.
    assert gathered_transpose_s(model, b200, tokens=8192, tp=np.array([4]), precision=np.array([FP8]))[0] == 0.0
    assert gathered_transpose_s(model, h100, tokens=8192, tp=np.array([4]), precision=np.array([FP8]),
                                sequence_parallel=False)[0] == 0.0


def test_step_pays_each_layers_transposes_in_both_models(monkeypatch):
    # Llama-3-8B, 32 layers, tp 4 x dp 2, 2 micro-batches a rank: 32 x 2 x 4 x 8192 x 4096 x
    # (2 - 1/4) B at H100's memory-bound rate on the analytic step, and the simulator agrees.
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=8192, global_batch=4)
    plan = ParallelPlan(tp=4, dp=2, zero=1, precision="fp8", fp8_recipe="tensorwise")
    with_sim = simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
    with_ana = analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8)
    zero = lambda model, hardware, *, tp, **_: np.zeros(np.shape(tp))  # noqa: E731
    monkeypatch.setattr(gemm_work_module, "gathered_transpose_s", zero)
    without_sim = simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
    without_ana = analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8)
    expected = 32 * 2 * 4 * 8192 * 4096 * (2 - 1 / 4) / H100_MEMORY_BOUND_BYTES_PER_S
    assert with_ana - without_ana == pytest.approx(expected, rel=1e-6)
    assert with_sim - without_sim == pytest.approx(expected, rel=0.05)
