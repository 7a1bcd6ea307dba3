"""The MoE dispatcher's permutations (cost.moe.permutation_bytes_per_token): bytes by hand from
Megatron-Core's alltoall dispatcher and TE's permute kernels, their time in the step, and the
HybridEP dispatcher that fuses them away."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.moe import moe_times, permutation_bytes_per_token
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload
from sp_planner.specs.moe import MoESpec

QWEN3_30B = load_model("Qwen3-30B-A3B")  # hidden 2048, 128 experts, top-8, all 48 layers MoE
BALANCED = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update={"routing": "balanced"})})


def test_bytes_by_hand():
    # ep 8: 16 local experts, so the received copies are sorted and unsorted. Per source token:
    # permute 1 + 8 rows, unpermute 8 + 1, sort and unsort 2 x 8 each at the balanced load 1.0:
    # 18 + 32 = 50 rows of 2048 bf16 elements.
    assert float(permutation_bytes_per_token(BALANCED, 8, 1, 2)) == 50 * 2048 * 2
    # The learned router's busiest rank receives 1.25 x the mean: 18 + 4 x 8 x 1.25 = 58 rows.
    assert float(permutation_bytes_per_token(QWEN3_30B, 8, 1, 2)) == 58 * 2048 * 2
    # ep 128: one expert per rank, nothing to sort: 18 rows.
    assert float(permutation_bytes_per_token(BALANCED, 128, 1, 2)) == 18 * 2048 * 2
    # etp 2: each rank sorts the copies gathered over etp, twice as many: 18 + 4 x 16 = 82 rows.
    assert float(permutation_bytes_per_token(BALANCED, 8, 2, 2)) == 82 * 2048 * 2
    assert float(permutation_bytes_per_token(load_model("Llama-3-8B"), 8, 1, 2)) == 0.0


def test_padded_routing_sorts_the_capacity():
    padded = QWEN3_30B.model_copy(update={"moe": MoESpec(num_experts=128, top_k=8, moe_intermediate_size=768,
                                                         capacity_factor=1.5, pad_to_capacity=True)})
    # Every rank receives capacity x the mean: 18 + 4 x 8 x 1.5 = 66 rows.
    assert float(permutation_bytes_per_token(padded, 8, 1, 2)) == 66 * 2048 * 2


def _with_dispatcher(model, dispatcher):
    return model.model_copy(update={"moe": model.moe.model_copy(update={"dispatcher": dispatcher})})


@pytest.mark.parametrize("dispatcher,expected_rows", [("alltoall", 50), ("hybridep", 0)])
def test_time_is_one_memory_pass(dispatcher, expected_rows):
    hw = load_hardware("b200")
    tokens = 4096
    times = moe_times(hw, _with_dispatcher(BALANCED, dispatcher), tokens_per_tp_rank=tokens, ep=8, etp=1,
                      ep_stride=1, elem_bytes=2, gpus_per_node=8)
    expected = expected_rows * 2048 * 2 * tokens / (hw.hbm_bandwidth_bytes_per_s * hw.efficiency.memory_bound)
    assert float(times.permute_s) == pytest.approx(expected, rel=1e-12)


def test_step_charges_the_permutations_forward_and_backward():
    hw = load_hardware("b200")
    workload = Workload(seq_len=4096, global_batch=64)
    plan = ParallelPlan(dp=8, ep=8, etp=1, zero=1)
    runs = {d: evaluate(_with_dispatcher(BALANCED, d), hw, workload, plan, num_nodes=1, gpus_per_node=8)
            for d in ("alltoall", "hybridep")}
    # 8 micro-batches x 48 layers x (forward + backward) x one pass of 50 rows a token.
    per_pass = 50 * 2048 * 2 * 4096 / (hw.hbm_bandwidth_bytes_per_s * hw.efficiency.memory_bound)
    extra = runs["alltoall"].time.gemm_s - runs["hybridep"].time.gemm_s
    assert extra == pytest.approx(8 * 48 * 2 * per_pass, rel=1e-9)
    # HybridEP's own kernels move the tokens: its all-to-all is not slowed by NCCL's measured curve
    # at the message size (cost.collective_sizes), the alltoall dispatcher's NCCL call is.
    assert runs["alltoall"].time.moe_comm_s > runs["hybridep"].time.moe_comm_s
    others = [name for name in type(runs["alltoall"].time).model_fields
              if name not in ("gemm_s", "host_overhead_s", "moe_comm_s")]
    for name in others:
        assert getattr(runs["alltoall"].time, name) == pytest.approx(getattr(runs["hybridep"].time, name)), name
    assert np.isfinite(runs["alltoall"].step_time_s)
