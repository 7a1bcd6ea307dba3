"""What sp-plan's Megatron flags make its grouped expert MLP pad is what the cost model assumes
(flags.release_runtime, cost.expert_padding): --moe-router-padding-for-quantization emitted exactly
where the runtime sp-plan times the plan with charges no Fp8Padding copies, read back from the
rendered text."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.expert_padding import GROUPED_MLP_PADS, NO_PADDING, ROUTER_PADS
from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.flags import FlagRequest, release_runtime, render_flags
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs.workload import Workload
from tests.flags.conftest import parse_bash_array

QWEN3_30B = load_model("Qwen3-30B-A3B")
FLAG = "--moe-router-padding-for-quantization"


def _moe(**update):
    return QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update=update)})


MODELS = {"dropless alltoall": QWEN3_30B, "hybridep": _moe(dispatcher="hybridep"),
          "capacity 1.25": _moe(capacity_factor=1.25), "padded to capacity": _moe(capacity_factor=1.0,
                                                                                  pad_to_capacity=True)}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("precision", ["fp8", "mxfp8"])
def test_flags_pad_in_the_router_exactly_where_the_runtime_charges_no_copies(name, precision):
    model = MODELS[name]
    plan = ParallelPlan(tp=1, dp=8, ep=8, etp=1, precision=precision)
    request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64), plan=plan, num_nodes=1,
                          gpus_per_node=8)
    emitted = FLAG in parse_bash_array(render_flags("megatron", request).text)
    assert emitted == (name == "dropless alltoall")
    for framework in ("megatron", "all"):
        assert release_runtime(framework, model=model).expert_row_padding == (
            ROUTER_PADS if emitted else GROUPED_MLP_PADS)
    # Otherwise the runtime is Megatron's, and the corpus' Megatron rows keep its default padding.
    assert release_runtime("megatron", model=model).model_copy(
        update={"expert_row_padding": GROUPED_MLP_PADS}) == MEGATRON_RUNTIME
    assert MEGATRON_RUNTIME.expert_row_padding == GROUPED_MLP_PADS


def test_sp_plan_times_its_fp8_moe_plans_without_the_copies():
    hw = load_hardware("b200")
    workload = Workload(seq_len=4096, global_batch=64)
    plan = ParallelPlan(dp=8, ep=8, etp=1, zero=1, precision="fp8", fp8_recipe="tensorwise")
    kw = dict(num_nodes=1, gpus_per_node=8)
    model = _moe(routing="balanced")  # an even load: every rank computes its 8 copies a token
    planned = evaluate(model, hw, workload, plan, runtime=release_runtime("megatron", model=model), **kw)
    default = evaluate(model, hw, workload, plan, runtime=MEGATRON_RUNTIME, **kw)
    unpadded = evaluate(model, hw, workload, plan,
                        runtime=MEGATRON_RUNTIME.model_copy(update={"expert_row_padding": NO_PADDING}), **kw)
    # Qwen3-30B-A3B (hidden 2048, 48 MoE layers, 128 experts, top 8): 8 micro-batches x 48 layers x
    # (forward + backward) x 4096 tokens x 8 copies x 2 x 2 x 2048 x 2 B, copied with probability
    # 1 - 16^-16 (16 local experts), at the memory-bound share of HBM (cost.expert_padding).
    per_pass = 4096 * 8 * 2 * 2 * 2048 * 2 * (1 - 16.0 ** -16) / (
        hw.hbm_bandwidth_bytes_per_s * hw.efficiency.memory_bound)
    assert default.time.gemm_s - unpadded.time.gemm_s == pytest.approx(8 * 48 * 2 * per_pass, rel=1e-9)
    # The router's padding rows instead (tests/cost/test_router_padding.py): more than nothing,
    # less than the copies here.
    assert unpadded.time.gemm_s < planned.time.gemm_s < default.time.gemm_s
    # A dense model's runtime is Megatron's as before.
    assert release_runtime("megatron", model=load_model("Llama-3-8B")) == MEGATRON_RUNTIME
