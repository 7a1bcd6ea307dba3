"""Host (CPU) time of eager PyTorch and the part the GPU work does not hide (cost.host)."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.grouped_gemm import with_expert_gemm
from sp_planner.cost.host import exposed_host_s, host_s_per_op, host_syncs_per_layer, layer_host_ops
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

QWEN3_MOE = load_model("Qwen3-30B-A3B")  # 48 MoE layers, 128 experts, no shared expert
DENSE = load_model("Llama-3-70B")


def test_per_op_host_time_is_the_nn_linear_benchmark_of_the_host_cpu():
    # TransformerEngine issue #2053: torch.nn.Linear forward CPU time, 13.48 us on a DGX H100
    # (Xeon 8480C), 37.08 us on GB200 (Grace).
    assert host_s_per_op(load_hardware("h100-sxm")) == 13.48e-6
    assert host_s_per_op(load_hardware("b200")) == 13.48e-6
    assert host_s_per_op(load_hardware("gb200-nvl72")) == 37.08e-6
    # GB300 NVL72 trays carry the same Grace CPUs; DGX/HGX B300 is an x86 host.
    assert host_s_per_op(load_hardware("gb300-nvl72")) == 37.08e-6
    assert host_s_per_op(load_hardware("b300")) == 13.48e-6


def test_dense_layer_ops_by_hand():
    def ops(**kw):
        args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": False, "full_recompute": False} | kw
        fwd, bwd = layer_host_ops(DENSE, **args)
        return float(fwd), float(bwd)

    assert ops() == (12, 20)
    assert ops(low_precision=True) == (12 + 2, 20 + 4)  # quantize the proj/fc2 inputs, 4 output grads
    assert ops(tp=8) == (12 + 2 + 2, 20 + 4 + 2)  # one op per TP all-gather / reduce-scatter
    assert ops(full_recompute=True) == (12, 20 + 12)  # the forward again in the backward
    # torchtitan keeps the gathered inputs (TpGathers.regathers_saved_inputs False): of the 4
    # backward all-gathers only the 2 output gradients' remain (cost.tp_calls).
    assert ops(tp=8, regathers_saved_inputs=False) == (12 + 2 + 2, 20 + 2 + 2)
    assert ops(tp=8, regathers_saved_inputs=False, sequence_parallel=False) == ops(tp=8, sequence_parallel=False)


def test_current_scaling_adds_the_amax_and_scale_kernels_and_the_amax_all_reduces():
    def ops(model, **kw):
        args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": True, "full_recompute": False} | kw
        fwd, bwd = layer_host_ops(model, **args)
        return float(fwd), float(bwd)

    # Dense: 4 quantized inputs forward and 4 output gradients backward, 2 more kernels each
    # (nvte_compute_amax, nvte_compute_scale_from_amax); at tp 8 the 2 + 2 amax all-reduces too.
    assert ops(DENSE, fp8_current=True) == (14 + 8, 24 + 8)
    # (tp 8 itself adds the 2 + 2 forward and 4 + 2 backward TP collectives.)
    assert ops(DENSE, tp=8, fp8_current=True) == (14 + 4 + 8 + 2, 24 + 6 + 8 + 2)
    # Only where the GEMMs run FP8: a bf16 candidate ignores the flag.
    assert ops(DENSE, low_precision=False, fp8_current=True) == ops(DENSE, low_precision=False)
    # Qwen3-30B-A3B (no shared experts): the attention's pair only, its experts not counted.
    delayed = ops(QWEN3_MOE, ep=8)
    assert ops(QWEN3_MOE, ep=8, fp8_current=True) == (delayed[0] + 4, delayed[1] + 4)
    assert ops(QWEN3_MOE, ep=8, tp=2, fp8_current=True)[0] == ops(QWEN3_MOE, ep=8, tp=2)[0] + 5


def test_moe_layer_ops_count_each_local_experts_gemms():
    # 128 experts over ep 8: 16 local experts, two GEMMs each forward (fc1, fc2), four backward;
    # Qwen3's QK norm adds 3 forward (two norms, the key's copy) and 2 backward (cost.qk_norm).
    fwd, bwd = layer_host_ops(QWEN3_MOE, tp=1, ep=8, etp=1, low_precision=False, full_recompute=False)
    assert (float(fwd), float(bwd)) == (12 + 3 + 32 + 16 * 2, 20 + 2 + 13 + 16 * 4)
    # MXFP8 quantizes each expert's input, forward and backward, besides the dense quantizations.
    fwd, bwd = layer_host_ops(QWEN3_MOE, tp=1, ep=8, etp=1, low_precision=True, full_recompute=False)
    assert (float(fwd), float(bwd)) == (14 + 3 + 32 + 16 * 4, 24 + 2 + 13 + 16 * 6)
    # One grouped kernel (torch._grouped_mm, the fused grouped MLP) launches them once for all 16.
    grouped = with_expert_gemm(QWEN3_MOE, "grouped")
    fwd, bwd = layer_host_ops(grouped, tp=1, ep=8, etp=1, low_precision=True, full_recompute=False)
    assert (float(fwd), float(bwd)) == (14 + 3 + 32 + 4, 24 + 2 + 13 + 6)


def test_qk_norm_ops_join_the_layer_and_its_attention_graph():
    # The same model without its QK norm has 3 forward and 2 backward ops fewer; under an "attn"
    # graph they are captured with the attention (one replay either way), so nothing differs.
    plain = QWEN3_MOE.model_copy(update={"qk_norm": False})

    def ops(model, scopes=()):
        fwd, bwd = layer_host_ops(model, tp=1, ep=8, etp=1, low_precision=False, full_recompute=False,
                                  cuda_graphs=frozenset(scopes))
        return float(fwd), float(bwd)

    assert tuple(a - b for a, b in zip(ops(QWEN3_MOE), ops(plain))) == (3, 2)
    assert ops(QWEN3_MOE, ["attn"]) == ops(plain, ["attn"])


def test_unfused_gqa_expansion_ops_join_the_layer_and_its_attention_graph():
    # TE's unfused attention under GQA copies K and V to the query heads (2 forward) and reduces
    # their gradients back (2 backward), in the attention part: 12 + 2, 20 + 2; the forward's 2
    # again in the backward under full recompute; captured by an "attn" graph (one replay either way).
    def ops(gqa, **kw):
        args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": False, "full_recompute": False} | kw
        fwd, bwd = layer_host_ops(DENSE, gqa_ops=(gqa, gqa), **args)
        return float(fwd), float(bwd)

    assert ops(2) == (12 + 2, 20 + 2)
    assert ops(2, full_recompute=True) == (14, 22 + 14)
    assert ops(2, cuda_graphs=frozenset({"attn"})) == ops(0, cuda_graphs=frozenset({"attn"}))


def test_without_syncs_the_host_hides_behind_the_whole_micro_batch():
    # 10 layers, 1 ms + 2 ms host vs 0.5 ms + 1.5 ms GPU per layer, 1 ms of logits:
    # max(0, 10 x 3 - (10 x 2 + 1)) = 9 ms.
    kw = {"host_fwd_s": 1e-3, "host_bwd_s": 2e-3, "gpu_fwd_s": 0.5e-3, "gpu_bwd_s": 1.5e-3, "layers": 10,
          "logits_s": 1e-3, "full_recompute": False}
    assert exposed_host_s(syncs=False, **kw) == pytest.approx(9e-3)
    # A sync per layer forward: 10 x 0.5 ms forward, and the backward pooled: 10 x 0.5 - 1 = 4 ms.
    assert exposed_host_s(syncs=True, **kw) == pytest.approx(5e-3 + 4e-3)


def test_a_sync_per_layer_exposes_forward_host_time_the_backward_would_hide():
    # Forward host-bound (1 ms vs 0.5 ms), backward GPU-bound (1 ms vs 2 ms): without syncs the
    # backward's slack hides it all, with a sync per layer forward 10 x 0.5 ms is exposed.
    kw = {"host_fwd_s": 1e-3, "host_bwd_s": 1e-3, "gpu_fwd_s": 0.5e-3, "gpu_bwd_s": 2e-3, "layers": 10,
          "logits_s": 0.0, "full_recompute": False}
    assert exposed_host_s(syncs=False, **kw) == 0.0
    assert exposed_host_s(syncs=True, **kw) == pytest.approx(5e-3)


def test_full_recompute_syncs_again_in_the_backward():
    # Backward 2 ms host vs 1.5 ms GPU per layer, 10 ms of logits: pooled the logits hide it, but
    # the recomputed MoE forward syncs each layer, so each layer pays its 0.5 ms.
    kw = {"host_fwd_s": 0.0, "host_bwd_s": 2e-3, "gpu_fwd_s": 1e-3, "gpu_bwd_s": 1.5e-3, "layers": 10,
          "logits_s": 10e-3, "syncs": True}
    assert exposed_host_s(full_recompute=False, **kw) == 0.0
    assert exposed_host_s(full_recompute=True, **kw) == pytest.approx(5e-3)


def test_a_sync_exposes_the_op_after_it_however_busy_the_gpu():
    # GPU-bound layers (1 ms host vs 2 ms GPU forward): the queue drains at each layer's sync and the
    # GPU idles until the host issues the dispatch, 13.48 us: 10 x 13.48 us, none without syncs.
    from sp_planner.cost.host import OPS_AFTER_SYNC, exposed_host_parts_s

    after = OPS_AFTER_SYNC * 13.48e-6
    kw = {"host_fwd_s": 1e-3, "host_bwd_s": 1e-3, "gpu_fwd_s": 2e-3, "gpu_bwd_s": 4e-3, "layers": 10,
          "logits_s": 0.0, "after_sync_s": after}
    assert exposed_host_parts_s(syncs=True, full_recompute=False, **kw) == pytest.approx((10 * after, 0.0))
    assert exposed_host_parts_s(syncs=False, full_recompute=False, **kw) == (0.0, 0.0)
    # Full recompute syncs again in each layer's recomputed forward.
    assert exposed_host_parts_s(syncs=True, full_recompute=True, **kw) == pytest.approx((10 * after, 10 * after))
    # Host-bound layers pay their excess, which already covers the op after the sync.
    kw |= {"host_fwd_s": 3e-3}
    assert exposed_host_parts_s(syncs=True, full_recompute=False, **kw)[0] == pytest.approx(10e-3)


def test_moe_layers_sync_unless_padded_to_capacity():
    assert host_syncs_per_layer(QWEN3_MOE)
    capped = QWEN3_MOE.model_copy(update={"moe": QWEN3_MOE.moe.model_copy(update={"capacity_factor": 1.0})})
    assert host_syncs_per_layer(capped)  # the dropped sizes still come back to the host
    padded = QWEN3_MOE.model_copy(update={"moe": capped.moe.model_copy(update={"pad_to_capacity": True})})
    assert not host_syncs_per_layer(padded)
    assert not host_syncs_per_layer(DENSE)


def test_a_large_dense_layer_hides_its_host_time():
    # Llama-3-70B, 8K tokens a micro-batch at tp 8: a layer's GPU work (tens of ms) is far above
    # its 42 ops x 13.48 us of host time.
    est = evaluate(DENSE, load_hardware("h100-sxm"), Workload(seq_len=8192, global_batch=64),
                   ParallelPlan(tp=8, pp=8, dp=1, micro_batch=1, zero=1, recompute="full"), num_nodes=8,
                   gpus_per_node=8)
    assert est.time.host_overhead_s == 0.0


def test_small_moe_micro_batches_are_host_bound():
    # Qwen3-30B-A3B on 8 GB200s (two trays of 4), ep 8, MXFP8: at two 4K sequences a micro-batch a
    # layer's 113 + 135 ops on Grace (37.08 us each, 9.2 ms) outlast its GPU work; at four the GPU work
    # hides them but the op after each layer's sync: 512 / 8 / 4 = 16 micro-batches x 48 layers x
    # 37.08 us. The host time per micro-batch is fixed, the GPU's doubles.
    hw, workload = load_hardware("gb200-nvl72"), Workload(seq_len=4096, global_batch=512)

    def host_s(micro_batch):
        plan = ParallelPlan(dp=8, ep=8, micro_batch=micro_batch, zero=1, precision="mxfp8")
        return evaluate(QWEN3_MOE, hw, workload, plan, num_nodes=2, gpus_per_node=4).time.host_overhead_s

    assert host_s(2) > 16 * 48 * 37.08e-6
    assert host_s(4) == pytest.approx(16 * 48 * 37.08e-6)


def test_ring_steps_add_their_host_ops():
    # Each ring step after the first (cost.ring_impl): Transformer Engine 6 forward (wait, buffer,
    # send/receive, attention, lse and output corrections) and 5 backward (wait, send/receive,
    # attention, dQ and dK/dV accumulations), up to v1.9 a half copy more forward and up to 3
    # backward; yunchang 5 and 8; all-gather CP none. A graph of the attention captures them with it.
    from sp_planner.cost.cuda_graphs import ATTN
    from sp_planner.cost.host import ring_host_ops
    from sp_planner.cost.ring_impl import TE_1_9_RING, TE_RING, YUNCHANG_RING

    assert [float(x) for x in ring_host_ops(TE_RING, ring=4, allgather=False)] == [3 * 6, 3 * 5]
    assert [float(x) for x in ring_host_ops(TE_1_9_RING, ring=4, allgather=False)] == [3 * 7, 3 * 8]
    assert [float(x) for x in ring_host_ops(YUNCHANG_RING, ring=4, allgather=False)] == [3 * 5, 3 * 8]
    assert [float(x) for x in ring_host_ops(TE_RING, ring=4, allgather=True)] == [0, 0]
    assert [float(x) for x in ring_host_ops(TE_RING, ring=1, allgather=False)] == [0, 0]
    args = {"tp": 1, "ep": 1, "etp": 1, "low_precision": False, "full_recompute": False, "ring_ops": (21, 24)}
    assert [float(x) for x in layer_host_ops(DENSE, **args)] == [12 + 21, 20 + 24]
    graphed = [float(x) for x in layer_host_ops(DENSE, **args, cuda_graphs=frozenset({ATTN}))]
    assert graphed == [float(x) for x in layer_host_ops(DENSE, **(args | {"ring_ops": (0, 0)}),
                                                         cuda_graphs=frozenset({ATTN}))]


def test_short_ring_blocks_are_host_bound():
    # Llama-3-8B at 2K tokens over ring 16 and tp 8 on H100: 128-token blocks, a later step's
    # kernels take a few microseconds against (6 + 5) x 13.48 us of host ops, 15 steps a layer:
    # over a millisecond a step left exposed; at 256K the steps hide them.
    hw = load_hardware("h100-sxm")

    def host_s(seq_len):
        plan = ParallelPlan(tp=8, ring=16, dp=1, micro_batch=1, zero=1)
        return evaluate(load_model("Llama-3-8B"), hw, Workload(seq_len=seq_len, global_batch=1), plan,
                        num_nodes=16, gpus_per_node=8).time.host_overhead_s

    assert host_s(2048) > 1e-3
    assert host_s(262144) == 0.0


def test_exposed_host_parts_add_up_and_share_a_joint_stall_by_host_time():
    from sp_planner.cost.host import exposed_host_parts_s

    # No sync: 4 layers x (3 + 5 - 1 - 2) ms - 4 ms of logits = 16 ms, 3:5 by host time.
    fwd, bwd = exposed_host_parts_s(host_fwd_s=3e-3, host_bwd_s=5e-3, gpu_fwd_s=1e-3, gpu_bwd_s=2e-3, layers=4,
                                    logits_s=4e-3, syncs=False, full_recompute=False)
    assert (fwd, bwd) == pytest.approx((6e-3, 10e-3))
    # A sync a layer: each pass its own, the logits off the backward's (4 x 2 ms; 4 x 3 - 4 ms).
    fwd, bwd = exposed_host_parts_s(host_fwd_s=3e-3, host_bwd_s=5e-3, gpu_fwd_s=1e-3, gpu_bwd_s=2e-3, layers=4,
                                    logits_s=4e-3, syncs=True, full_recompute=False)
    assert (fwd, bwd) == pytest.approx((8e-3, 8e-3))
    assert fwd + bwd == pytest.approx(exposed_host_s(host_fwd_s=3e-3, host_bwd_s=5e-3, gpu_fwd_s=1e-3,
                                                     gpu_bwd_s=2e-3, layers=4, logits_s=4e-3, syncs=True,
                                                     full_recompute=False))


QWEN_ZERO3 = dict(tp=2, pp=1, dp=2, ulysses=2, ring=2, ep=4, etp=1, zero=3, recompute="none", micro_batch=1)


def test_data_parallel_traffic_runs_beside_host_stalls_so_more_tokens_take_longer():
    """Qwen3-30B-A3B on 16 H100s under ZeRO-3, host-bound at 4K (a host sync per MoE layer) and
    gather-bound too: the gathers run while the CPU stalls the GPU, so the 4K step is not the sum
    of the two, and 16K tokens (4x the work) no longer take less time than 4K."""
    model, h100 = load_model("qwen3-30b-a3b"), load_hardware("h100")
    steps = {}
    for seq in (4096, 16384):
        est = evaluate(model, h100, Workload(seq_len=seq, global_batch=16), ParallelPlan(**QWEN_ZERO3),
                       num_nodes=2, gpus_per_node=8)
        steps[seq] = est.step_time_s
        if seq == 4096:
            # Exposed host and DP together stay below their sum priced apart: the host part is
            # what the gathers do not already cover.
            assert est.time.host_overhead_s < 0.1 and est.time.dp_comm_exposed_s > 2.0
    assert steps[4096] < steps[16384]


def test_selective_recompute_is_not_faster_than_none_when_host_bound():
    gb200 = load_hardware("gb200-nvl72")
    plans = {rc: ParallelPlan(tp=2, dp=2, ulysses=2, ring=2, zero=0, recompute=rc, micro_batch=1)
             for rc in ("none", "selective")}
    steps = {rc: evaluate(load_model("llama3-8b"), gb200, Workload(seq_len=8192, global_batch=16), plan,
                          num_nodes=4, gpus_per_node=4).step_time_s for rc, plan in plans.items()}
    assert steps["selective"] >= steps["none"] * (1 - 2e-4)  # was 0.5% faster: its DP hid behind the stall
