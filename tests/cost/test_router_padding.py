"""The router's FP8 padding (cost.expert_padding router_pad_rows_per_expert, router_pad_load; Megatron
--moe-router-padding-for-quantization, moe_utils.pad_routing_map): its expected rows by hand and from
a port of pad_routing_map, and what they add to a plan's expert GEMMs, all-to-alls and permutations."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.expert_padding import (GROUPED_MLP_PADS, NO_PADDING, ROUTER_PADS, padding_align_rows,
                                            router_pad_load, router_pad_rows_per_expert)
from sp_planner.cost.links import all_to_all_time_s
from sp_planner.cost.moe import moe_times, permutation_bytes_per_token, routed_gemm_flops_per_token
from sp_planner.cost.precision import gemm_peak_flops
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload

QWEN3_30B = load_model("Qwen3-30B-A3B")  # hidden 2048, 128 experts, top-8, 48 layers all MoE
BALANCED = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update={"routing": "balanced"})})
B200 = load_hardware("b200")


def _pad_routing_map(routing_map, pad_multiple):
    """Megatron-LM moe_utils.pad_routing_map (d98e8a64 lines 731-764), in numpy."""
    by_expert = routing_map.T.copy()  # (tokens, experts) -> (experts, tokens)
    num_to_pad = (-by_expert.sum(axis=1)) % pad_multiple
    zero_ranks = np.cumsum(by_expert == 0, axis=1)
    by_expert[zero_ranks <= num_to_pad[:, None]] = 1
    return by_expert.T


def test_expected_pad_rows_by_hand():
    # (-c) mod a over a uniform remainder: 0, a-1, ..., 1, mean (a - 1) / 2.
    assert np.mean([(-c) % 32 for c in range(32)]) == 15.5
    assert router_pad_rows_per_expert(QWEN3_30B, 4096, 32) == 15.5  # MXFP8
    assert router_pad_rows_per_expert(QWEN3_30B, 4096, 16) == 7.5  # FP8 delayed/current scaling
    assert router_pad_rows_per_expert(QWEN3_30B, 4096, 0) == 0.0  # nothing pads
    # At most the tokens not routed to the expert: 10 tokens, 8 of 128 experts each.
    assert router_pad_rows_per_expert(QWEN3_30B, 10, 32) == 10 * (1 - 8 / 128)
    # Padded to capacity the pad entries fill the capacity; HybridEP does not pad the routing map.
    moe = QWEN3_30B.moe
    for update in ({"capacity_factor": 1.0, "pad_to_capacity": True}, {"dispatcher": "hybridep"}):
        model = QWEN3_30B.model_copy(update={"moe": moe.model_copy(update=update)})
        assert router_pad_rows_per_expert(model, 4096, 32) == 0.0
    # 128 experts x 15.5 rows over 8192 tokens x 8 copies: 3.03% more copies under MXFP8, 1.46% FP8.
    assert router_pad_load(QWEN3_30B, 8192, 32) == 128 * 15.5 / (8192 * 8)
    assert router_pad_load(QWEN3_30B, 8192, 16) == 128 * 7.5 / (8192 * 8)


def test_pad_routing_map_adds_distinct_rows_averaging_half_the_alignment():
    rng = np.random.default_rng(0)
    # 256 copies an expert on average, spread by ~15.5: far more than half the alignment, so the
    # remainders are near uniform (cost.expert_padding; at 60 copies an expert they are not).
    tokens, experts, k, align = 4096, 128, 8, 32
    pads = []
    for _ in range(10):
        chosen = np.argsort(rng.random((tokens, experts)), axis=1)[:, :k]  # random top-k
        routing_map = np.zeros((tokens, experts), dtype=np.int64)
        np.put_along_axis(routing_map, chosen, 1, axis=1)
        padded = _pad_routing_map(routing_map, align)
        assert set(np.unique(padded)) <= {0, 1}  # each pad is a token not yet routed there
        assert (padded.sum(axis=0) % align == 0).all()
        pads.extend(padded.sum(axis=0) - routing_map.sum(axis=0))
    assert max(pads) <= align - 1
    assert np.mean(pads) == pytest.approx(float(router_pad_rows_per_expert(QWEN3_30B, tokens, align)), abs=1.0)


def test_only_the_padder_gets_the_alignment():
    codes = np.array([PRECISIONS.index(p) for p in ("bf16", "fp8", "mxfp8")])
    assert [a.tolist() for a in padding_align_rows(codes, ROUTER_PADS)] == [[0, 0, 0], [0, 16, 32]]
    assert [a.tolist() for a in padding_align_rows(codes, GROUPED_MLP_PADS)] == [[0, 16, 32], [0, 0, 0]]
    assert [a.tolist() for a in padding_align_rows(codes, NO_PADDING)] == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="'both' is none of"):
        padding_align_rows(codes, "both")


def test_pad_rows_ride_the_gemms_all_to_alls_and_permutations():
    n, ep = 4096, 8
    kw = dict(tokens_per_tp_rank=n, ep=ep, etp=1, ep_stride=1, elem_bytes=2, gpus_per_node=8, gemm_flops_per_s=1e15)
    padded = moe_times(B200, BALANCED, router_pad_align_rows=16.0, **kw)
    plain = moe_times(B200, BALANCED, **kw)
    p = 128 * 7.5 / (n * 8)  # the pad copies per routed copy
    # Expert GEMMs: p x the routed FLOPs at the flat rate (per_expert GEMMs on B200: no grouped curve).
    flops = 2 * 3 * 2048 * 8 * 768 * n * p
    assert routed_gemm_flops_per_token(BALANCED) * n * p == pytest.approx(flops)
    assert float(padded.extra_expert_gemm_fwd_s - plain.extra_expert_gemm_fwd_s) == pytest.approx(
        flops / 1e15, rel=1e-9)
    # Dispatch/combine: (1 + p) x the rank's n x 8 copies of 2048 bf16, 7/8 sent away.
    sent = n * 8 * 2048 * 2 * (1 + p) * (ep - 1) / ep
    assert float(padded.all_to_all_s) == pytest.approx(float(all_to_all_time_s(B200, sent, ep, 1, 8)), rel=1e-12)
    # Permutations: permute and unpermute 2 (8 (1 + p) + 1), sort and unsort 4 x 8 (1 + p) rows.
    assert float(permutation_bytes_per_token(BALANCED, ep, 1, 2, p)) == pytest.approx((50 + 48 * p) * 2048 * 2)


def test_a_router_padded_fp8_plan_costs_its_pad_rows():
    workload = Workload(seq_len=4096, global_batch=64)
    plan = ParallelPlan(dp=8, ep=8, etp=1, zero=1, precision="fp8", fp8_recipe="tensorwise")
    kw = dict(num_nodes=1, gpus_per_node=8)
    runs = {padding: evaluate(BALANCED, B200, workload, plan, runtime=MEGATRON_RUNTIME.model_copy(
        update={"expert_row_padding": padding}), **kw) for padding in (ROUTER_PADS, NO_PADDING)}
    # 8 micro-batches x 48 layers: the forward's extra expert GEMMs (3 x backward and forward) and
    # permutations (forward and backward), at the FP8 rate and the memory-bound share of HBM.
    kwm = dict(tokens_per_tp_rank=4096, ep=8, etp=1, ep_stride=1, elem_bytes=2, gpus_per_node=8)
    rate = float(gemm_peak_flops(B200, np.array([PRECISIONS.index("fp8")]))[0])
    delta = [moe_times(B200, BALANCED, gemm_flops_per_s=rate, router_pad_align_rows=align, **kwm)
             for align in (16.0, 0.0)]
    gemm = float(delta[0].extra_expert_gemm_fwd_s - delta[1].extra_expert_gemm_fwd_s)
    permute = float(delta[0].permute_s - delta[1].permute_s)
    assert gemm > 0 and permute > 0
    assert runs[ROUTER_PADS].time.moe_comm_s > runs[NO_PADDING].time.moe_comm_s
    assert runs[ROUTER_PADS].time.gemm_s - runs[NO_PADDING].time.gemm_s == pytest.approx(
        8 * 48 * (3 * gemm + 2 * permute), rel=1e-9)


def test_the_simulator_charges_them_as_the_analytic_model():
    runtime = MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": ROUTER_PADS})
    workload = Workload(seq_len=8192, global_batch=16)
    plan = ParallelPlan(tp=1, dp=8, ep=8, zero=1, precision="mxfp8")
    sim = simulate(QWEN3_30B, B200, workload, plan, num_nodes=1, gpus_per_node=8, detail=False, runtime=runtime)
    est = evaluate(QWEN3_30B, B200, workload, plan, num_nodes=1, gpus_per_node=8, runtime=runtime)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    unpadded = simulate(QWEN3_30B, B200, workload, plan, num_nodes=1, gpus_per_node=8, detail=False,
                        runtime=MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": NO_PADDING}))
    assert sim.step_time_s > unpadded.step_time_s


def test_the_routers_pad_rows_are_saved_as_routed_copies():
    # moe_activation_bytes with pad_load p: the permuted copies n/tp x k x etp x (load + p) of width
    # h in bf16, and the routed FFN's mlp_matrices x k x ffn x (load + p - 1) beyond the MLP term.
    from sp_planner.cost.activations import moe_activation_bytes
    from sp_planner.cost.moe import busiest_rank_load

    n, tp, ep, etp, p = 8192.0, 1, 8, 1, router_pad_load(QWEN3_30B, 8192, 32)
    moe, load = QWEN3_30B.moe, busiest_rank_load(QWEN3_30B, ep)
    per_load = 2 * n * moe.top_k * (QWEN3_30B.hidden_size + QWEN3_30B.num_mlp_matrices * moe.moe_intermediate_size)
    extra = moe_activation_bytes(QWEN3_30B, n, tp=tp, ep=ep, etp=etp, pad_load=p) - moe_activation_bytes(
        QWEN3_30B, n, tp=tp, ep=ep, etp=etp)
    assert extra == pytest.approx(p * per_load, rel=1e-12) and load > 1.0
    # A plan's memory: the router-padded MXFP8 runtime stores those rows per layer, in flight per
    # micro-batch (no recompute, pp 1: one micro-batch's layers); the copies' runtime stores none.
    plan = ParallelPlan(tp=1, ep=8, dp=8, zero=1, precision="mxfp8")
    workload = Workload(seq_len=8192, global_batch=64)
    router = MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": ROUTER_PADS})
    copies = MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": GROUPED_MLP_PADS})
    a, b = (evaluate(QWEN3_30B, B200, workload, plan, num_nodes=1, gpus_per_node=8, runtime=r)
            for r in (router, copies))
    assert a.memory.activations_bytes - b.memory.activations_bytes == pytest.approx(
        QWEN3_30B.num_layers * p * per_load, rel=1e-6)
