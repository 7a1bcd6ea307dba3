"""Expert parallelism in every framework: Megatron/MindSpeed emit it, torchtitan has the degrees,
DeepSpeed and yunchang refuse a plan that splits experts with their reason."""

from __future__ import annotations

import tomllib

import pytest

from sp_planner.catalog import load_model
from sp_planner.flags import FlagRequest, render_all, render_flags
from sp_planner.flags.torchtitan_v02 import parallelism_items
from sp_planner.plan import ParallelPlan
from sp_planner.specs.workload import Workload

QWEN3_30B = load_model("Qwen3-30B-A3B")


def _request(plan: ParallelPlan, framework_version: str | None = None) -> FlagRequest:
    return FlagRequest(model=QWEN3_30B, workload=Workload(seq_len=32768, global_batch=8), plan=plan,
                       num_nodes=plan.world_size // 8, gpus_per_node=8, framework_version=framework_version)


def test_split_experts_per_framework():
    flags = render_all(_request(ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1)))
    assert flags["megatron"].supported and "--expert-model-parallel-size 8" in flags["megatron"].text
    assert flags["mindspeed"].supported and "--expert-model-parallel-size 8" in flags["mindspeed"].text
    # torchtitan 0.3.0 ships no Qwen3-30B-A3B config function; 0.2.2's TOML sections carry the degrees.
    assert not flags["torchtitan"].supported and "no config function" in flags["torchtitan"].reason
    toml = render_flags("torchtitan", _request(ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1), "0.2.2"))
    assert toml.supported
    assert "expert_parallel_degree = 8" in toml.text
    assert "expert_tensor_parallel_degree = 1" in toml.text
    assert not flags["deepspeed"].supported and "ep 8 x etp 1 cannot be expressed" in flags["deepspeed"].reason
    assert not flags["yunchang"].supported and "no expert parallelism" in flags["yunchang"].reason


def test_torchtitan_refuses_an_expert_grid_it_cannot_fold():
    # ETP 2 with TP 4: torchtitan's ETP is 1 or TP.
    flags = render_all(_request(ParallelPlan(tp=4, ring=2, dp=2, ep=2, etp=2, zero=1), "0.2.2"))
    assert not flags["torchtitan"].supported and "etp 2 cannot be expressed" in flags["torchtitan"].reason
    assert flags["megatron"].supported  # Megatron's expert grid is independent of tp


def test_hsdp_replicas_over_routed_experts_are_expressed_where_they_divide_edp():
    """Megatron shards routed experts over edp / dp_replicate (parallel_state.py intra-partial expert
    group; --num-distributed-optimizer-instances), torchtitan over efsdp = dp_shard*cp*tp // (ep*etp)
    inside one replica (v0.2.2 parallel_dims.py build_mesh; llama4/infra/parallelize.py apply_fsdp's
    edp_mesh ["dp_replicate", "efsdp"], HSDP): dp 8, ep 4 has edp 2, which 2 replicas split and 4
    cannot (the plan rule expert_replicas refuses that first, in every framework)."""
    for plan in (ParallelPlan(dp=8, dp_replicate=4, ep=4, zero=3),
                 ParallelPlan(tp=2, dp=4, dp_replicate=2, ep=4, etp=2, zero=1)):  # edp 8 / (4 x 2) = 1
        for name, flags in render_all(_request(plan, "0.2.2")).items():
            assert not flags.supported and "does not divide the expert-data-parallel degree" in flags.reason, name
    for zero, megatron in ((3, "--use-megatron-fsdp"), (1, "--use-distributed-optimizer")):
        flags = render_all(_request(ParallelPlan(dp=8, dp_replicate=2, ep=4, zero=zero), "0.2.2"))
        assert flags["megatron"].supported and megatron in flags["megatron"].text
        assert "--num-distributed-optimizer-instances 2" in flags["megatron"].text
        titan = flags["torchtitan"]
        assert titan.supported, titan.reason
        for line in ("data_parallel_replicate_degree = 2", "data_parallel_shard_degree = 4",
                     "expert_parallel_degree = 4"):
            assert line in titan.text
    assert render_flags("torchtitan", _request(ParallelPlan(dp=8, ep=4, zero=3), "0.2.2")).supported


def test_unsplit_experts_pass_everywhere_a_dense_plan_would():
    flags = render_all(_request(ParallelPlan(tp=1, ulysses=4, dp=2, zero=1)))
    assert flags["deepspeed"].supported and flags["yunchang"].supported


def test_torchtitan_0_3_overrides_carry_the_expert_degree_it_has():
    # 0.3.0 names expert_parallel_degree on the command line (--parallelism.expert_parallel_degree)
    # and removed expert_tensor_parallel_degree (shared reference section 3.2); 0.2.2 has both.
    request = _request(ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1))
    items = dict(parallelism_items(request, rotate_method=False))
    assert items["expert_parallel_degree"] == 8 and "expert_tensor_parallel_degree" not in items
    assert dict(parallelism_items(request, rotate_method=True))["expert_tensor_parallel_degree"] == 1
    from sp_planner.flags.torchtitan import _expert_tp_failure
    assert _expert_tp_failure(request) is None
    etp = request.model_copy(update={"plan": ParallelPlan(tp=2, ring=2, dp=4, ep=4, etp=2, zero=1)})
    assert _expert_tp_failure(etp) == ("etp 2 cannot be expressed on torchtitan 0.3.0: it removed "
                                       "expert_tensor_parallel_degree (its experts fold over dp_shard x cp x tp); "
                                       "use etp 1 or --framework-version 0.2.2")


def test_force_balanced_routing_per_framework():
    # Megatron: --moe-router-force-load-balancing (TransformerConfig field, checked with megatron-core
    # in test_megatron_moe); MindSpeed's Megatron-Core 0.12.1 lacks it; torchtitan 0.2.2: [debug].
    balanced = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update={"routing": "balanced"})})
    plan = ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1)
    request = _request(plan).model_copy(update={"model": balanced})
    flags = render_all(request)
    assert "--moe-router-force-load-balancing" in flags["megatron"].text
    assert "force-balanced dropless routing" in flags["megatron"].text
    assert not flags["mindspeed"].supported and "Megatron-Core 0.12.1" in flags["mindspeed"].reason
    toml = render_flags("torchtitan", request.model_copy(update={"framework_version": "0.2.2"})).text
    assert tomllib.loads(toml.split("\n", 1)[1])["debug"] == {"moe_force_load_balance": True}
    learned = render_all(_request(plan))
    assert "force" not in learned["megatron"].text and "[debug]" not in render_flags(
        "torchtitan", _request(plan, "0.2.2")).text


@pytest.mark.parametrize("dispatcher", ["hybridep", "deepep"])
def test_flex_dispatchers_are_megatron_only(dispatcher):
    # MoESpec.dispatcher hybridep: Megatron emits the flex dispatcher; every other framework refuses
    # with the same reason, even where the plan does not split the experts (ep 1).
    # (DeepEP needs an expert-parallel group of at least 2 ranks: plan_rules "deepep_group".)
    moe = QWEN3_30B.moe.model_copy(update={"dispatcher": dispatcher})
    model = QWEN3_30B.model_copy(update={"moe": moe})
    plan = ParallelPlan(tp=2, ring=2, dp=2, zero=1, ep=1 if dispatcher == "hybridep" else 2, etp=1)
    request = FlagRequest(model=model, workload=Workload(seq_len=32768, global_batch=8), plan=plan, num_nodes=1,
                          gpus_per_node=8, framework_version="0.2.2")
    flags = render_all(request)
    assert flags["megatron"].supported and f"--moe-flex-dispatcher-backend {dispatcher}" in flags["megatron"].text
    for framework in ("mindspeed", "deepspeed", "yunchang", "torchtitan"):
        assert not flags[framework].supported, framework
        # DeepSpeed and yunchang refuse ep 2 before they reach the dispatcher.
        if dispatcher == "hybridep" or framework in ("mindspeed", "torchtitan"):
            assert f"token dispatcher {dispatcher} cannot be expressed" in flags[framework].reason, framework


def test_torchtitan_float8_moe_plans_convert_the_linears_only():
    # 0.2.2's float8 converter swaps nn.Linear (components/quantization/utils.py module_filter_fn):
    # no grouped-GEMM converter is emitted, and the plan says its routed experts run bf16.
    fp8 = render_flags("torchtitan", _request(ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1, precision="fp8",
                                                           fp8_recipe="tensorwise"), "0.2.2"))
    config = tomllib.loads(fp8.text)
    assert config["model"] == {"converters": ["float8"]} and "grouped_mm" not in config["quantize"]
    assert any("routed experts (GroupedExperts) run in bf16" in note for note in fp8.notes)
    bf16 = render_flags("torchtitan", _request(ParallelPlan(tp=2, ring=2, dp=4, ep=8, etp=1, zero=1), "0.2.2"))
    assert not any("GroupedExperts" in note for note in bf16.notes)


def test_token_dropping_is_refused_where_the_flags_cannot_set_it():
    # A capacity factor changes the estimate at ep 1 too; DeepSpeed's ds_config and yunchang's
    # attention groups cannot set it, so those plans are not called expressible (as torchtitan).
    moe = QWEN3_30B.moe.model_copy(update={"capacity_factor": 0.5})
    request = _request(ParallelPlan(tp=1, ulysses=4, dp=2, zero=1)).model_copy(
        update={"model": QWEN3_30B.model_copy(update={"moe": moe})})
    flags = render_all(request)
    for framework in ("deepspeed", "yunchang"):
        assert not flags[framework].supported, framework
        assert "capacity factor 0.5 cannot be expressed" in flags[framework].reason, framework
    assert flags["megatron"].supported and "--moe-expert-capacity-factor 0.5" in flags["megatron"].text
