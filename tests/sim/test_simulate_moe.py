"""The simulator with expert parallelism: dispatch/combine all-to-alls on the expert groups' links,
etp token collectives, the busiest rank's expert GEMMs, and the routed experts' gradients over the
expert-data-parallel group, in step with the analytic model where nothing contends."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload

H100 = load_hardware("h100-sxm")
WORKLOAD = Workload(seq_len=32768, global_batch=16)
CASES = [
    ("qwen3-30b-a3b", ParallelPlan(tp=1, dp=8, ep=8, zero=1), 1),  # ep inside a node
    ("qwen3-30b-a3b", ParallelPlan(tp=1, dp=16, ep=16, zero=1), 2),  # ep across two nodes
    ("qwen3-30b-a3b", ParallelPlan(tp=2, dp=4, ep=2, etp=2, zero=1), 1),  # expert tensor parallelism
    ("qwen3-30b-a3b", ParallelPlan(tp=2, dp=8, ep=8, zero=1, recompute="full"), 2),
    ("mixtral-8x7b", ParallelPlan(tp=1, dp=16, ep=8, zero=1), 2),
]


@pytest.mark.parametrize("name,plan,nodes", CASES)
def test_expert_parallel_plans_agree_with_the_analytic_model(name, plan, nodes):
    model = load_model(name)
    sim = simulate(model, H100, WORKLOAD, plan, num_nodes=nodes, gpus_per_node=8, detail=False)
    est = evaluate(model, H100, WORKLOAD, plan, num_nodes=nodes, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    # With one stage nothing hides the MoE collectives: all of them lie on the critical path, full
    # recompute's forward's again among them, which the model counts as moe_comm_s too (stop 64).
    assert sim.critical_path_by_kind_s["moe_comm"] == pytest.approx(est.time.moe_comm_s, rel=0.01)
    names = {p.name for p in sim.phases}
    assert {"ep dispatch/combine all-to-all", "edp grad reduce-scatter"} <= names


def test_dispatch_across_nodes_is_slower_than_inside_one():
    model = load_model("qwen3-30b-a3b")
    inside = simulate(model, H100, WORKLOAD, ParallelPlan(tp=1, dp=16, ep=8, zero=1), num_nodes=2, gpus_per_node=8,
                      detail=False)
    across = simulate(model, H100, WORKLOAD, ParallelPlan(tp=1, dp=16, ep=16, zero=1), num_nodes=2, gpus_per_node=8,
                      detail=False)
    a2a = [{p.name: p for p in r.phases}["ep dispatch/combine all-to-all"] for r in (inside, across)]
    assert (a2a[0].crosses_nodes, a2a[1].crosses_nodes) == (False, True)
    assert a2a[1].bottleneck == "nic"


B200 = load_hardware("b200")
SHORT = Workload(seq_len=8192, global_batch=16)  # short enough that no MFU ceiling holds the step


@pytest.mark.parametrize("routing", [
    {"capacity_factor": 0.5},  # half the mean kept: expert GEMMs drop even without expert parallelism
    {"capacity_factor": 2.0, "pad_to_capacity": True},  # padded: every expert computes twice the mean
    {"routing": "balanced"},
])
@pytest.mark.parametrize("ep", [1, 8])
def test_routing_reaches_the_simulated_layer_as_in_the_analytic_model(routing, ep):
    qwen = load_model("qwen3-30b-a3b")
    model = qwen.model_copy(update={"moe": qwen.moe.model_copy(update=routing)})
    plan = ParallelPlan(tp=1, dp=8, ep=ep, zero=1)
    sim = simulate(model, B200, SHORT, plan, num_nodes=1, gpus_per_node=8, detail=False)
    est = evaluate(model, B200, SHORT, plan, num_nodes=1, gpus_per_node=8)
    dropless = simulate(qwen, B200, SHORT, plan, num_nodes=1, gpus_per_node=8, detail=False)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    # The busiest rank's expert GEMMs move with the load (cost.moe busiest_rank_load): at ep 1
    # dropless and balanced routing are the same load 1, capped or padded ones are not. Compared
    # on the GPU's work: at ep 1 the 128 local experts' GEMM launches make the step host-bound
    # (cost.host), which the load does not change.
    def gpu_s(result):
        return result.step_time_s - result.critical_path_by_kind_s.get("host_overhead", 0.0)

    if ep == 1 and routing == {"routing": "balanced"}:
        assert sim.step_time_s == pytest.approx(dropless.step_time_s, rel=1e-9)
    else:
        assert abs(gpu_s(sim) / gpu_s(dropless) - 1) > 0.05


def test_chunked_local_attention_simulates_as_the_analytic_model():
    # Llama 4 Scout: 3 of 4 layers attend within 8192-token chunks (cost.window), without a ring.
    scout = load_model("llama-4-scout-17b-16e")
    plan = ParallelPlan(tp=1, dp=1, ulysses=8, zero=1)
    sim = simulate(scout, H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, detail=False)
    assert sim.step_time_s == pytest.approx(sim.analytic_step_time_s, rel=0.005)
    full = simulate(scout.model_copy(update={"window": None}), H100, WORKLOAD, plan, num_nodes=1, gpus_per_node=8,
                    detail=False)
    assert sim.step_time_s < full.step_time_s


def test_small_expert_gemms_reach_the_simulated_layer_as_in_the_analytic_model():
    # Qwen3-30B-A3B at 4K tokens, ep 1: 4096 x 8 copies over 128 experts = 256 rows each, which
    # run at 0.68 of the large-shape GEMM rate (cost.grouped_gemm); both models time it alike.
    qwen = load_model("qwen3-30b-a3b")
    plan = ParallelPlan(tp=1, dp=8, zero=1)
    workload = Workload(seq_len=4096, global_batch=16)
    sim = simulate(qwen, B200, workload, plan, num_nodes=1, gpus_per_node=8, detail=False)
    est = evaluate(qwen, B200, workload, plan, num_nodes=1, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    bigger = evaluate(qwen, B200, workload.model_copy(update={"seq_len": 65536}), plan, num_nodes=1, gpus_per_node=8)
    # Per token the GEMMs of 256-row experts take longer than those of 4096-row ones.
    assert est.time.gemm_s / 4096 > 1.2 * bigger.time.gemm_s / 65536


def test_host_bound_moe_steps_carry_the_analytic_host_time():
    # Qwen3-30B-A3B at two 4K sequences a micro-batch in MXFP8 on 8 GB200s (Grace hosts) is
    # host-bound (cost.host): the simulator, which schedules GPU work only, ends with the same
    # exposed host seconds and agrees with the analytic step. HybridEP's dispatcher, as
    # Megatron-Bridge's GB200 MXFP8 recipes run it.
    base = load_model("qwen3-30b-a3b")
    qwen = base.model_copy(update={"moe": base.moe.model_copy(update={"dispatcher": "hybridep"})})
    gb200 = load_hardware("gb200-nvl72")
    plan = ParallelPlan(tp=1, dp=8, ep=8, zero=1, micro_batch=2, precision="mxfp8")
    workload = Workload(seq_len=4096, global_batch=64)
    sim = simulate(qwen, gb200, workload, plan, num_nodes=2, gpus_per_node=4, detail=False)
    est = evaluate(qwen, gb200, workload, plan, num_nodes=2, gpus_per_node=4)
    assert est.time.host_overhead_s > 0.1 * est.step_time_s
    assert sim.critical_path_by_kind_s["host_overhead"] == pytest.approx(est.time.host_overhead_s, rel=1e-9)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)


def test_hybridep_inside_an_nvlink_domain_simulates_as_the_analytic_model():
    # GB200 NVL72, EP 16 in one NVLink domain: HybridEP's measured speed in both models (cost.hybridep).
    qwen = load_model("qwen3-30b-a3b")
    model = qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": "hybridep"})})
    gb200 = load_hardware("gb200-nvl72")
    plan = ParallelPlan(tp=1, dp=16, ep=16, zero=1)
    sim = simulate(model, gb200, SHORT, plan, num_nodes=4, gpus_per_node=4, detail=False)
    est = evaluate(model, gb200, SHORT, plan, num_nodes=4, gpus_per_node=4)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    assert sim.critical_path_by_kind_s["moe_comm"] == pytest.approx(est.time.moe_comm_s, rel=0.01)
    assert "ep dispatch/combine all-to-all" not in {p.name for p in sim.phases}


@pytest.mark.parametrize(("name", "ep", "nodes"), [("h100-sxm", 8, 2), ("h100-sxm", 16, 2), ("b200", 16, 2)])
def test_deepep_simulates_as_the_analytic_model(name, ep, nodes):
    # DeepEP inside a node and across two (cost.deepep): its measured speed in both models.
    qwen = load_model("qwen3-30b-a3b")
    model = qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": "deepep"})})
    hardware = load_hardware(name)
    plan = ParallelPlan(tp=1, dp=8 * nodes, ep=ep, zero=1)
    sim = simulate(model, hardware, SHORT, plan, num_nodes=nodes, gpus_per_node=8, detail=False)
    est = evaluate(model, hardware, SHORT, plan, num_nodes=nodes, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    assert sim.critical_path_by_kind_s["moe_comm"] == pytest.approx(est.time.moe_comm_s, rel=0.01)
    assert "ep dispatch/combine all-to-all" not in {p.name for p in sim.phases}



@pytest.mark.parametrize(("dispatcher", "name", "nodes", "gpus_per_node"),
                         [("hybridep", "gb200-nvl72", 4, 4), ("deepep", "h100-sxm", 2, 8)])
def test_group_limited_routing_simulates_as_the_analytic_model(dispatcher, name, nodes, gpus_per_node):
    # Qwen3-30B-A3B's 128 experts routed within 4 of 8 groups (DeepSeek-V3's limit) at EP 16: a
    # token reaches fewer ranks and nodes (cost.hybridep.ranks_reached_per_token), in both models.
    qwen = load_model("qwen3-30b-a3b")
    free = qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": dispatcher})})
    grouped = free.model_copy(update={"moe": free.moe.model_copy(update={"router_groups": 8, "router_group_topk": 4})})
    hardware = load_hardware(name)
    plan = ParallelPlan(tp=1, dp=16, ep=16, zero=1)
    sim = simulate(grouped, hardware, SHORT, plan, num_nodes=nodes, gpus_per_node=gpus_per_node, detail=False)
    est = evaluate(grouped, hardware, SHORT, plan, num_nodes=nodes, gpus_per_node=gpus_per_node)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    assert sim.critical_path_by_kind_s["moe_comm"] == pytest.approx(est.time.moe_comm_s, rel=0.01)
    assert est.time.moe_comm_s < evaluate(free, hardware, SHORT, plan, num_nodes=nodes,
                                          gpus_per_node=gpus_per_node).time.moe_comm_s


def test_hybridep_with_etp_spreads_its_ep_group_over_the_nodes():
    # EP 8 with etp 2 on 2 x 8 B200: the EP group's members are 2 ranks apart (etp is the faster
    # axis), so it spans both nodes and HybridEP's single-domain benchmark does not time it; both
    # models run NCCL's all-to-all across the nodes (until stop 42 the simulator took stride 1 and
    # timed it as inside one node, 56% under the analytic step).
    qwen = load_model("qwen3-30b-a3b")
    model = qwen.model_copy(update={"moe": qwen.moe.model_copy(update={"dispatcher": "hybridep"})})
    b200 = load_hardware("b200")
    plan = ParallelPlan(tp=1, dp=16, ep=8, etp=2, zero=1)
    workload = Workload(seq_len=8192, global_batch=64)
    sim = simulate(model, b200, workload, plan, num_nodes=2, gpus_per_node=8, detail=False)
    est = evaluate(model, b200, workload, plan, num_nodes=2, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)
    assert "ep dispatch/combine all-to-all" in {p.name for p in sim.phases}


def test_the_ep_overlap_is_refused_not_simulated_as_exposed():
    from sp_planner.cost.runtime import MEGATRON_RUNTIME

    runtime = MEGATRON_RUNTIME.model_copy(update={"overlap": MEGATRON_RUNTIME.overlap.model_copy(
        update={"ep_comm": True})})
    with pytest.raises(ValueError, match="EP all-to-all overlap"):
        simulate(load_model("qwen3-30b-a3b"), H100, WORKLOAD, ParallelPlan(tp=1, dp=8, ep=8, zero=1), num_nodes=1,
                 gpus_per_node=8, detail=False, runtime=runtime)


def test_the_tp_overlap_is_refused_not_simulated_as_exposed():
    # The simulator runs every TP collective exposed; under --tp-comm-overlap the analytic model
    # hides most of them (cost.tp_overlap): Llama-3-70B tp 4 pp 4 vpp 2 on 64 H100s was 9.1% apart
    # before the MFU ceiling.
    from sp_planner.cost.runtime import MEGATRON_RUNTIME

    runtime = MEGATRON_RUNTIME.model_copy(update={"overlap": MEGATRON_RUNTIME.overlap.model_copy(
        update={"tp_comm": True})})
    with pytest.raises(ValueError, match="userbuffers TP overlap"):
        simulate(load_model("llama-3-8b"), H100, WORKLOAD, ParallelPlan(tp=2, dp=4, zero=1), num_nodes=1,
                 gpus_per_node=8, detail=False, runtime=runtime)


@pytest.mark.parametrize("zero", [1, 3])
def test_hsdp_over_routed_experts_agrees_with_the_analytic_model(zero):
    # dp 16, ep 4 on 2 nodes: edp 4 (ranks 4 apart), 2 replicas: the experts reduce-scatter over
    # the pair inside a node and all-reduce their shard with the dense one's over the next node's
    # rank (cost.fsdp.expert_shard_size). Step 5.050 s (ZeRO-1) and 5.028 s (ZeRO-3) both ways.
    model = load_model("qwen3-30b-a3b")
    plan = ParallelPlan(tp=1, dp=16, ep=4, zero=zero, dp_replicate=2)
    sim = simulate(model, H100, WORKLOAD, plan, num_nodes=2, gpus_per_node=8, detail=False)
    est = evaluate(model, H100, WORKLOAD, plan, num_nodes=2, gpus_per_node=8)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.001)
    assert sim.dp_exposed_s == pytest.approx(est.time.dp_comm_exposed_s, rel=0.01)
    assert {"edp grad reduce-scatter", "hsdp shard all-reduce"} <= {p.name for p in sim.phases}
