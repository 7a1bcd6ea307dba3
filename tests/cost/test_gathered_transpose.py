"""The gathered FP8 tensors' transposes (cost.gathered_transpose) by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
import sp_planner.cost.gemm_work as gemm_work_module
from sp_planner.cost.comm import comm_columns
from sp_planner.cost.gathered_transpose import (
    GatherElemBytes,
    cast_after_gather_elements,
    gathered_tensors_per_layer,
    gathered_transpose_s,
    layer_gather_bytes,
    ub_gather_elem_bytes,
)
from sp_planner.cost.links import ring_collective_time_s
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.cost.tp_gathers import TE_TP_GATHERS as TE
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.candidates import Candidates
from sp_planner.sim.simulate import analytic_step_time_s, simulate
from sp_planner.specs import Workload

BF16, FP8, MXFP8 = (PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8"))
H100_MEMORY_BOUND_BYTES_PER_S = 3.35e12 * 0.76  # h100-sxm.yaml: HBM x efficiency.memory_bound


def test_tensors_per_layer_by_model():
    # Dense: LN1 and LN2 outputs (QKV, FC1 inputs), projection and FC2 output gradients.
    assert gathered_tensors_per_layer(load_model("llama3-70b")) == 4.0
    # Qwen3-30B-A3B: every layer MoE without shared experts, the attention's pair only.
    assert gathered_tensors_per_layer(load_model("qwen3-30b-a3b")) == 2.0


def test_a_framework_gathering_bf16_casts_the_gathered_tensors_whole():
    # torchtitan 0.3.x (rowwise float8, MXFP8) casts after the bf16 gather: the 4 gathered tensors of
    # a dense layer (2 forward, 2 backward) on all 8192 tokens instead of the 8192/4 cost.precision
    # charges: 2 x 8192 x 4096 x 3/4 = 50,331,648 elements more each way; Qwen3-30B-A3B's MoE
    # layers the attention's pair alone. Transformer Engine and 0.2.x's float8 styles cast the shard.
    tp, precision = np.array([4, 4, 1, 4]), np.array([FP8, MXFP8, FP8, BF16])
    got = cast_after_gather_elements(load_model("llama3-8b"), tokens=8192, tp=tp, precision=precision,
                                     gathers=BF16_TP_GATHERS)
    assert [v.tolist() for v in got] == [[50_331_648.0, 50_331_648.0, 0.0, 0.0]] * 2
    moe = cast_after_gather_elements(load_model("qwen3-30b-a3b"), tokens=8192, tp=tp, precision=precision,
                                     gathers=BF16_TP_GATHERS)
    assert moe[0][0] == moe[1][0] == 8192 * 2048 * 3 / 4  # hidden 2048, one tensor each way
    tensorwise = cast_after_gather_elements(load_model("llama3-8b"), tokens=8192, tp=tp, precision=precision,
                                            gathers=TORCHAO_TENSORWISE_TP_GATHERS)
    assert [v.tolist() for v in tensorwise] == [[0.0, 50_331_648.0, 0.0, 0.0]] * 2
    te = cast_after_gather_elements(load_model("llama3-8b"), tokens=8192, tp=tp, precision=precision, gathers=TE)
    assert [v.tolist() for v in te] == [[0.0] * 4] * 2


def test_llama3_70b_at_tp8_on_h100_by_hand():
    # 4 tensors x 4,096 tokens x 8,192: read + write 1 byte each, less the 1 byte on the rank's
    # 512 tokens the local cast was charged: 4 x 4096 x 8192 x (2 - 1/8) B = 251.7 MB, 98.9 us.
    model, h100 = load_model("llama3-70b"), load_hardware("h100")
    got = gathered_transpose_s(model, h100, gathers=TE, tokens=4096, tp=np.array([8]), precision=np.array([FP8]))
    expected = 4 * 4096 * 8192 * (2 - 1 / 8) / H100_MEMORY_BOUND_BYTES_PER_S
    assert got[0] == pytest.approx(expected)
    assert got[0] == pytest.approx(98.9e-6, rel=1e-3)


def test_only_per_tensor_fp8_with_sequence_parallel_tp_on_hopper_pays():
    model, h100, b200 = load_model("llama3-70b"), load_hardware("h100"), load_hardware("b200")
    tp = np.array([4, 4, 4, 1, 4])
    precision = np.array([FP8, BF16, MXFP8, FP8, FP8])
    block = np.array([False, False, False, False, True])
    got = gathered_transpose_s(model, h100, gathers=TE, tokens=8192, tp=tp, precision=precision, fp8_blockwise=block)
    assert got[0] == pytest.approx(4 * 8192 * 8192 * (2 - 1 / 4) / H100_MEMORY_BOUND_BYTES_PER_S)
    assert got[1:].tolist() == [0.0, 0.0, 0.0, 0.0]
    # Blackwell's FP8 GEMMs take either layout; TP without sequence parallelism gathers nothing.
    one = dict(gathers=TE, tokens=8192, tp=np.array([4]), precision=np.array([FP8]))
    assert gathered_transpose_s(model, b200, **one)[0] == 0.0
    assert gathered_transpose_s(model, h100, **one, sequence_parallel=False)[0] == 0.0


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


def test_layer_gathers_move_fp8_under_per_tensor_fp8_with_sequence_parallel():
    # Dense: all six gathers move FP8 (1 byte); Qwen3-30B-A3B (MoE, no shared experts): the
    # attention's 2 tensors of a dense layer's 4 FP8, the dispatcher's bf16: 1.5 bytes on average.
    dense, moe = load_model("llama3-70b"), load_model("qwen3-30b-a3b")
    tp = np.array([8, 8, 8, 1])
    precision = np.array([FP8, BF16, FP8, FP8])
    block = np.array([False, False, True, False])
    got = layer_gather_bytes(dense, gathers=TE, tp=tp, precision=precision, fp8_blockwise=block)
    assert [v.tolist() for v in got] == [[1.0, 2.0, 2.0, 2.0]] * 3
    assert layer_gather_bytes(moe, gathers=TE, tp=np.array([4]), precision=np.array([FP8])).grad.tolist() == [1.5]
    # Without sequence parallelism TP all-reduces the bf16 outputs: nothing gathered in FP8.
    assert layer_gather_bytes(dense, gathers=TE, tp=np.array([8]), precision=np.array([FP8]),
                              sequence_parallel=False).fwd.tolist() == [2.0]


def test_mxfp8_gathers_their_scales_and_both_usages_of_the_output_gradient():
    # MXFP8: a usage is 1 byte of data and an E8M0 scale per 32 elements. Forward the input row-wise
    # and backward the saved input column-wise (1 + 1/32); the output gradient both ways (2 + 2/32,
    # more than bf16). MoE (half the gathers TE's): 2 - (2 - 1.03125)/2 and 2 - (2 - 2.0625)/2.
    dense, moe = load_model("llama3-70b"), load_model("qwen3-30b-a3b")
    mx = np.array([MXFP8])
    got = layer_gather_bytes(dense, gathers=TE, tp=np.array([8]), precision=mx)
    assert [float(v[0]) for v in got] == [1.03125, 2.0625, 1.03125]
    got = layer_gather_bytes(moe, gathers=TE, tp=np.array([4]), precision=mx)
    assert [float(v[0]) for v in got] == [1.515625, 2.03125, 1.515625]
    assert layer_gather_bytes(dense, gathers=TE, tp=np.array([1]), precision=mx).grad.tolist() == [2.0]
    # Userbuffers' buffers hold one usage's FP8 data alone (the scales gathered apart): 1 byte.
    got = ub_gather_elem_bytes(dense, gathers=TE, tp=np.array([8, 8, 8]), precision=np.array([MXFP8, FP8, BF16]))
    assert got.tolist() == [1.0, 1.0, 2.0]


def _llama3_8b_tp4(precision):
    """Llama-3-8B (32 layers, h 4096) at 8K, tp 4 x dp 2, 2 micro-batches a rank, one node."""
    workload = Workload(seq_len=8192, global_batch=4)
    plan = ParallelPlan(tp=4, dp=2, zero=1, precision=precision, fp8_recipe="tensorwise")
    return load_model("llama3-8b"), load_hardware("h100"), workload, plan


def _saved_by_low_precision_gathers(monkeypatch, model, hardware, workload, plan):
    """(analytic, simulated) step time the plan's low-precision layer gathers save against every
    layer gather in bf16 (layer_gather_bytes patched to 2 bytes in each of its readers)."""
    import sp_planner.cost.comm as comm_module
    import sp_planner.cost.tp_times as tp_times_module
    import sp_planner.sim.step_work as step_work_module

    def steps():
        sim = simulate(model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, detail=False).step_time_s
        return analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8), sim

    low_ana, low_sim = steps()
    bf16 = lambda model, *, tp, **_: GatherElemBytes(*(np.full(np.shape(tp), 2.0),) * 3)  # noqa: E731
    for module in (comm_module, tp_times_module, step_work_module):
        monkeypatch.setattr(module, "layer_gather_bytes", bf16)
    bf16_ana, bf16_sim = steps()
    return bf16_ana - low_ana, bf16_sim - low_sim


def test_comm_bytes_count_the_layers_gathers_in_fp8_and_the_ends_in_bf16():
    # One gather sends 3/4 of 8192 x 4096 elements: 50,331,648 B in bf16. Per micro-batch the 32
    # layers make 6 gathers each, the embedding 1 and the output layer 2 (pp 1): 195, x 2.
    model, _, workload, plan = _llama3_8b_tp4("bf16")
    bf16 = comm_columns(model, workload, Candidates.of_plan(plan), gpus_per_node=8).sent_bytes.tp_all_gather[0]
    fp8_plan = plan.model_copy(update={"precision": "fp8"})
    fp8 = comm_columns(model, workload, Candidates.of_plan(fp8_plan), gpus_per_node=8).sent_bytes.tp_all_gather[0]
    one_bf16 = 8192 * 4096 * 2 * 3 // 4
    assert bf16 == 390 * one_bf16
    assert fp8 == 2 * (32 * 6 * one_bf16 // 2 + 3 * one_bf16)


def test_step_pays_the_fp8_gathers_in_both_models(monkeypatch):
    # The same run: each of the 32 x 2 x 6 layer gathers takes the ring time of 25.2 MB sent
    # instead of 50.3 MB (no TP overlap: every gather exposed), on the analytic step and the
    # simulator alike.
    model, hardware, workload, plan = _llama3_8b_tp4("fp8")
    saved_ana, saved_sim = _saved_by_low_precision_gathers(monkeypatch, model, hardware, workload, plan)
    one_bf16 = 8192 * 4096 * 2 * 3 / 4
    saved = ring_collective_time_s(hardware, "all_gather", one_bf16, 4, 1, 8) \
        - ring_collective_time_s(hardware, "all_gather", one_bf16 / 2, 4, 1, 8)
    assert saved_ana == pytest.approx(32 * 2 * 6 * saved, rel=1e-6)
    assert saved_sim == pytest.approx(32 * 2 * 6 * saved, rel=0.05)


def test_comm_bytes_count_mxfp8_gathers_by_tensor():
    # The same run in MXFP8: per micro-batch each layer gathers 2 inputs and 2 saved inputs at
    # 1.03125 B and 2 output gradients at 2.0625 B an element; the ends 3 gathers in bf16.
    model, _, workload, plan = _llama3_8b_tp4("mxfp8")
    mx = comm_columns(model, workload, Candidates.of_plan(plan), gpus_per_node=8).sent_bytes.tp_all_gather[0]
    one_elem = 8192 * 4096 * 3 // 4
    assert mx == pytest.approx(2 * (32 * (4 * 1.03125 + 2 * 2.0625) * one_elem + 3 * 2 * one_elem), rel=1e-12)


def test_step_pays_the_mxfp8_gathers_in_both_models(monkeypatch):
    # Llama-3-8B at tp 4 on B200 in MXFP8, no TP overlap: each layer's 4 one-usage gathers take the
    # ring time of 1.03125/2 of the bf16 bytes, its 2 output-gradient gathers 2.0625/2, on the
    # analytic step and the simulator alike.
    model, _, workload, plan = _llama3_8b_tp4("mxfp8")
    hardware = load_hardware("b200")
    saved_ana, saved_sim = _saved_by_low_precision_gathers(monkeypatch, model, hardware, workload, plan)
    one_bf16 = 8192 * 4096 * 2 * 3 / 4
    ring = lambda sent: ring_collective_time_s(hardware, "all_gather", sent, 4, 1, 8)  # noqa: E731
    saved = 4 * (ring(one_bf16) - ring(one_bf16 * 1.03125 / 2)) + 2 * (ring(one_bf16) - ring(one_bf16 * 2.0625 / 2))
    assert saved_ana == pytest.approx(32 * 2 * saved, rel=1e-6)
    assert saved_sim == pytest.approx(32 * 2 * saved, rel=0.05)


def test_the_embeddings_backward_gather_stays_bf16_on_the_interleaved_drain(monkeypatch):
    # The first stage's backward beyond its layers (its TP all-gather and gradient passes) reaches
    # the interleaved drain and the ZeRO edges: its gather is the embedding's, bf16 under FP8 as in
    # cost.layer_times' first_tp_s and the simulator, not the layers' FP8 one.
    import sp_planner.cost.step_layers as step_module  # the layers' path: cost.step_layers.layer_parts

    seen = []
    path = step_module.compute_path_s
    monkeypatch.setattr(step_module, "compute_path_s",
                        lambda *a, bwd_extra_s, **k: seen.append(bwd_extra_s[0]) or
                        path(*a, bwd_extra_s=bwd_extra_s, **k))
    model, hardware, workload = load_model("llama3-8b"), load_hardware("h100"), Workload(seq_len=8192, global_batch=16)
    for precision in ("bf16", "fp8"):
        plan = ParallelPlan(tp=2, pp=4, vpp=2, zero=1, precision=precision, fp8_recipe="tensorwise")
        analytic_step_time_s(model, hardware, workload, plan, gpus_per_node=8)
    bf16, fp8 = (float(np.ravel(s)[0]) for s in seen)
    assert fp8 > 0 and fp8 == pytest.approx(bf16, rel=1e-12)


def test_torchtitan_gathers_the_shared_experts_input_in_bf16():
    # DeepSeek-V3: 61 layers, 58 of them MoE with a shared expert. TE's MoE layer gathers the
    # attention's pair and the shared experts' in FP8: share 1, 1 byte an element. torchtitan 0.2.2
    # gathers the MoE block's input with a plain bf16 style and its shared experts take it
    # replicated (llama4/infra/parallelize.py lines 521-527, 543-547): an MoE layer's FP8 share is
    # the attention's 1 of 2, so (3 x 2 + 58 x 1) / 2 / 61 = 32/61 of the tensors at 1 byte, the
    # rest at 2: 2 - 32/61 = 90/61 bytes an element.
    deepseek = load_model("deepseek-v3")
    one = dict(tp=np.array([8]), precision=np.array([FP8]))
    assert layer_gather_bytes(deepseek, gathers=TE, **one).fwd.tolist() == [1.0]
    got = layer_gather_bytes(deepseek, gathers=TORCHAO_TENSORWISE_TP_GATHERS, **one)
    assert [v.tolist() for v in got] == [[pytest.approx(90 / 61)]] * 3
    # Qwen3-30B-A3B has no shared experts: the same 1.5 bytes either way.
    qwen = load_model("qwen3-30b-a3b")
    assert layer_gather_bytes(qwen, gathers=TORCHAO_TENSORWISE_TP_GATHERS, **one).grad.tolist() == [1.5]
