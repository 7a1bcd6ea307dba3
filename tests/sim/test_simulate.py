import json

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.sim import SimResult, simulate
from sp_planner.sim.result import CRITICAL_PATH_KINDS
from sp_planner.specs.hardware import FabricSpec
from sp_planner.specs.workload import Workload

MODEL = load_model("llama3-8b")
A800 = load_hardware("a800")
WORKLOAD = Workload(seq_len=131072, global_batch=8)

# Plans whose groups never share a link with another group of the same collective: the rings
# that leave a node each use their own NIC (rail-optimized, one NIC per GPU).
UNCONTENDED = [
    (ParallelPlan(dp=1, ulysses=8), 1),
    (ParallelPlan(dp=1, ulysses=4, ring=2, ring_layout="contiguous"), 1),
    (ParallelPlan(dp=1, tp=2, ulysses=4, ring=2), 2),
    (ParallelPlan(dp=2, ulysses=8, pp=2, recompute="full"), 4),
    (ParallelPlan(dp=2, tp=2, ulysses=2, ring=2, pp=2, recompute="selective"), 4),
    (ParallelPlan(dp=8, ulysses=8, zero=0), 8),
]


@pytest.mark.parametrize("plan,nodes", UNCONTENDED)
def test_without_contention_the_simulator_matches_the_analytic_model(plan, nodes):
    result = simulate(MODEL, A800, WORKLOAD, plan, num_nodes=nodes, gpus_per_node=8)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)
    # The critical path accounts for the whole step, under the same keys for every plan.
    assert sum(result.critical_path_by_kind_s.values()) == pytest.approx(result.step_time_s, rel=1e-9)
    assert tuple(result.critical_path_by_kind_s) == CRITICAL_PATH_KINDS


def test_a_model_without_rope_simulates_as_the_analytic_model_and_faster():
    # RoPE's bytes and launches leave both models alike (cost.rope): the twin with learned
    # positions is faster by them in the simulator as in the analytic model (0.166 of 108 s here).
    learned = MODEL.model_copy(update={"position_embedding": "learned_absolute"})
    plan = ParallelPlan(dp=1, tp=2, ulysses=4)
    result = simulate(learned, A800, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)
    rope = simulate(MODEL, A800, WORKLOAD, plan, num_nodes=1, gpus_per_node=8, detail=False)
    saved_s = rope.step_time_s - result.step_time_s
    assert saved_s > 0 and saved_s == pytest.approx(rope.analytic_step_time_s - result.analytic_step_time_s, rel=0.01)



@pytest.mark.parametrize("kernel,plan,workload", [
    (None, ParallelPlan(dp=1, tp=2, ulysses=2, pp=2, recompute="selective"), WORKLOAD),
    (UNFUSED, ParallelPlan(dp=2, tp=2, pp=2), Workload(seq_len=4096, global_batch=16)),
])
def test_dropout_and_a_learned_position_table_simulate_as_the_analytic_model(kernel, plan, workload):
    # A Megatron GPT-style twin (cost.dropout, cost.embedding_work): the hidden dropouts ride with
    # the layers' memory-bound ops, the unfused kernel's dropout with the attention, the position
    # add, table passes and embedding dropout with the first stage's embedding. The simulator
    # counts what the analytic model counts, and the dropouts slow both alike.
    hw = A800 if kernel is None else with_attention_kernel(A800, kernel)
    learned = MODEL.model_copy(update={"position_embedding": "learned_absolute"})
    drop = learned.model_copy(update={"hidden_dropout": 0.1, "attention_dropout": 0.1})
    runs = [simulate(m, hw, workload, plan, num_nodes=1, gpus_per_node=8, detail=False) for m in (learned, drop)]
    for result in runs:
        assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)
    slower_s = runs[1].step_time_s - runs[0].step_time_s
    assert slower_s > 0
    assert slower_s == pytest.approx(runs[1].analytic_step_time_s - runs[0].analytic_step_time_s, rel=1e-3)

def test_groups_straddling_nodes_unevenly_simulate_as_the_analytic_model():
    # 3 nodes of 8, ring 3 after ulysses 4 (ring groups 4 apart: 0, 4 on one node and 8 on the
    # next) and after ulysses 2 (2 apart: 6 on one node, 8 and 10 on the next): groups whose nodes
    # hold different numbers of members (cost.node_loads.node_occupancy). With PXN a hop to another
    # rail relays only through a GPU of its own group (sim.cluster.Cluster.routes): the simulator
    # used to relay 12 -> 16 through rank 8, of group 0-4-8, whose NIC also sends 8 -> 0: +0.7%.
    workload = Workload(seq_len=98304, global_batch=12)
    for plan in (ParallelPlan(dp=2, ulysses=4, ring=3), ParallelPlan(dp=4, ulysses=2, ring=3, zero=3)):
        result = simulate(MODEL, A800, workload, plan, num_nodes=3, gpus_per_node=8, detail=False)
        assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.001)


@pytest.mark.parametrize("plan,nodes", [
    (ParallelPlan(dp=1, ulysses=16), 2),  # an all-to-all across PCIe nodes (was 3.8% over)
    (ParallelPlan(dp=4, ulysses=2, ring=4), 4),  # ring steps and the dp-cp group across nodes
])
def test_pcie_plans_across_nodes_simulate_as_the_analytic_model(plan, nodes):
    # L40S nodes reach their NICs through each GPU's x16 link (sim.cluster): the simulator and the
    # analytic model count the same traffic on it (sim.flows.ring_exit_rides_local_hop,
    # cost.links.all_to_all_time_s and p2p_time_s).
    result = simulate(MODEL, load_hardware("l40s"), WORKLOAD, plan, num_nodes=nodes, gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=1e-6)


@pytest.mark.parametrize("profile", ["l40s", "l20"])
def test_uneven_all_to_all_on_pcie_nodes_simulates_as_the_analytic_model(profile):
    # Ulysses 12 on 3 PCIe nodes of 8 (groups of 8 + 4 and 4 + 8 GPUs): the ranks of the 8-GPU
    # nodes, with 7 of their 11 shares on the slow PCIe all-to-all, bound the call in both models
    # (cost.links.all_to_all_time_s over every node population). The model used to take the
    # 4-GPU nodes' ranks: steps 2% (L40S) and 30% (L20) short of the simulator's.
    plan = ParallelPlan(dp=1, ulysses=12, pp=2, recompute="full")
    result = simulate(load_model("gpt-3-175b"), load_hardware(profile), Workload(seq_len=24576, global_batch=4),
                      plan, num_nodes=3, gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.005)


def test_contention_makes_the_simulator_slower_than_the_analytic_model():
    # One node per pod and a core oversubscribed 4:1: the 8 ring groups crossing between the two
    # nodes share each leaf's uplink, a quarter of the NICs below it.
    plan = ParallelPlan(dp=1, ulysses=8, ring=2)
    free = simulate(MODEL, A800, WORKLOAD, plan, num_nodes=2, gpus_per_node=8)
    fabric = FabricSpec(topology="rail_optimized", nodes_per_pod=1, oversubscription=4.0)
    tight = A800.model_copy(update={"fabric": fabric})
    shared = simulate(MODEL, tight, WORKLOAD, plan, num_nodes=2, gpus_per_node=8)
    ring_free = {p.name: p for p in free.phases}["ring K/V step"]
    ring_shared = {p.name: p for p in shared.phases}["ring K/V step"]
    assert (ring_free.bottleneck, ring_shared.bottleneck) == ("nic", "core")
    latency = A800.inter_node.latency_s
    assert ring_shared.duration_s - latency == pytest.approx(4 * (ring_free.duration_s - latency))
    assert free.step_time_s == pytest.approx(free.analytic_step_time_s, rel=0.01)
    assert shared.step_time_s > free.step_time_s


def test_result_is_json_serialisable_and_round_trips():
    plan = ParallelPlan(dp=2, tp=2, ulysses=2, ring=2, pp=2)
    result = simulate(MODEL, A800, WORKLOAD, plan, num_nodes=4, gpus_per_node=8)
    text = result.model_dump_json()
    assert SimResult.model_validate_json(text) == result
    data = json.loads(text)
    stages = {e["stage"] for e in data["events"]}
    assert stages == {0, 1}
    assert {s["stream"] for s in data["streams"]} == {"compute", "comm", "dp_comm"}
    # Each stage runs 2 x m blocks (forward and backward of every micro-batch).
    blocks = [e for e in data["events"] if e["kind"] in ("forward", "backward")]
    assert len(blocks) == 2 * 2 * result.num_micro_batches


def test_plan_that_does_not_fill_the_cluster_is_a_user_error():
    with pytest.raises(UserInputError,
                       match="16 GPUs but the cluster has 1 node x 8 = 8; make the plan.s degrees multiply to 8"):
        simulate(MODEL, A800, WORKLOAD, ParallelPlan(dp=2, ulysses=8), num_nodes=1, gpus_per_node=8)


def test_plan_breaking_a_rule_is_a_user_error():
    with pytest.raises(UserInputError, match="num_heads 32 is not divisible"):
        simulate(MODEL, A800, WORKLOAD, ParallelPlan(dp=1, tp=1, ulysses=8, ring=1, pp=1).model_copy(
            update={"ulysses": 64}), num_nodes=8, gpus_per_node=8)


@pytest.mark.parametrize("name", ["gemma2-9b", "mistral-7b"])
@pytest.mark.parametrize("plan,nodes", [(ParallelPlan(dp=1, ulysses=8), 1), (ParallelPlan(dp=2, tp=2, ulysses=4), 2)])
def test_sliding_window_models_simulate_their_band_kernels(name, plan, nodes):
    # Local layers run the band kernel the analytic model times (cost.window), blended with the
    # global layers over the model's pattern: the two agree, and the window makes the step shorter
    # than full attention everywhere.
    model = load_model(name)
    workload = Workload(seq_len=32768, global_batch=8)
    windowed = simulate(model, A800, workload, plan, num_nodes=nodes, gpus_per_node=8, detail=False)
    assert windowed.step_time_s == pytest.approx(windowed.analytic_step_time_s, rel=0.001)
    full = simulate(model.model_copy(update={"window": None}), A800, workload, plan, num_nodes=nodes,
                    gpus_per_node=8, detail=False)
    assert windowed.step_time_s < full.step_time_s


def test_fp8_weights_cast_once_a_step_as_in_the_analytic_model():
    # Llama-3-8B FP8 (delayed scaling) on 8 H100s, one stage: the GEMM weights' once-a-step cast
    # (cost.fp8_params.weight_cast_s; per-tensor FP8 on Hopper reads 2 B and writes 1 B and its
    # transpose) runs on the compute stream, so the two models agree to the data-parallel tail.
    h100 = load_hardware("h100-sxm")
    workload = Workload(seq_len=8192, global_batch=64)
    fp8 = simulate(MODEL, h100, workload, ParallelPlan(dp=8, zero=1, precision="fp8"), num_nodes=1,
                   gpus_per_node=8, detail=False)
    assert fp8.step_time_s == pytest.approx(fp8.analytic_step_time_s, rel=1e-4)
    casts = [e for e in fp8.events if e.name == "weight_cast"]
    assert len(casts) == 1 and casts[0].kind == "gemm" and casts[0].end_s > casts[0].start_s
    bf16 = simulate(MODEL, h100, workload, ParallelPlan(dp=8, zero=1), num_nodes=1, gpus_per_node=8, detail=False)
    assert not [e for e in bf16.events if e.name == "weight_cast"]


@pytest.mark.parametrize("hardware", ["h100-sxm", "b200"])
def test_megatron_fsdp_fp8_shards_as_in_the_analytic_model(hardware):
    # ZeRO-3 with Megatron-FSDP's FP8 parameters (cost.fp8_params): layer units gathered with
    # their GEMM weights at 1 B, the root units (embedding, output layer) in bf16, and on Hopper
    # the transpose rebuilt every micro-batch; the simulator times each unit at its own width.
    hw = load_hardware(hardware)
    workload = Workload(seq_len=8192, global_batch=64)
    result = simulate(MODEL, hw, workload, ParallelPlan(dp=8, zero=3, precision="fp8"), num_nodes=1,
                      gpus_per_node=8, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=1e-4)


def test_exposed_offload_copies_end_the_simulated_step_as_in_the_analytic_one():
    # Llama-3-8B with 31 of 32 layers offloaded over an H100's PCIe: one kept set, so every copy
    # is exposed (cost.offload); the simulator, which schedules GPU work only, carries the same
    # seconds as a block and agrees with the analytic step.
    from sp_planner.search import evaluate

    model, h100 = load_model("llama3-8b"), load_hardware("h100-sxm")
    plan = ParallelPlan(dp=8, zero=1, cpu_offload_layers=31)
    workload = Workload(seq_len=8192, global_batch=16)
    sim = simulate(model, h100, workload, plan, num_nodes=1, gpus_per_node=8, detail=False)
    est = evaluate(model, h100, workload, plan, num_nodes=1, gpus_per_node=8)
    assert est.time.offload_s > 0.2 * est.step_time_s
    assert sim.critical_path_by_kind_s["activation_offload"] == pytest.approx(est.time.offload_s, rel=1e-9)
    assert sim.step_time_s == pytest.approx(est.step_time_s, rel=0.005)


@pytest.mark.parametrize("hardware, nodes, plan, framework", [
    # activation offloading's exposed copies and host time, on one H100 node (Megatron's runtime)
    ("h100-sxm", 1, ParallelPlan(dp=8, zero=1, cpu_offload_layers=31), "megatron"),
    # 76 GB200s fill no whole NVL72 domain (19 of 4 GPUs), and torch FSDP runs ZeRO-1 as ZeRO-3 kept
    ("gb200-nvl72", 19, ParallelPlan(dp=19, tp=4, zero=1), "torchtitan"),
])
def test_an_estimates_analytic_figures_are_those_the_simulator_computes(hardware, nodes, plan, framework):
    # sp-simulate hands the simulator search.evaluate's figures (AnalyticStep.of) instead of timing the
    # plan twice: they are the same floats, and the simulated step is the same with them.
    from sp_planner.flags import release_runtime
    from sp_planner.search import evaluate
    from sp_planner.sim import AnalyticStep
    from sp_planner.sim.simulate import analytic_step

    model, hw = load_model("llama3-8b"), load_hardware(hardware)
    workload = Workload(seq_len=8192, global_batch=2 * plan.dp)
    gpus_per_node = hw.gpus_per_node
    runtime = release_runtime(framework, model=model)
    est = evaluate(model, hw, workload, plan, num_nodes=nodes, gpus_per_node=gpus_per_node, runtime=runtime)
    domain = hw.link_domain_gpus(gpus_per_node, nodes * gpus_per_node)
    given = AnalyticStep.of(est)
    assert given == analytic_step(model, hw, workload, plan, gpus_per_node=domain, runtime=runtime)
    assert given.step_time_s == est.step_time_s and given.offload_s == est.time.offload_s
    where = dict(num_nodes=nodes, gpus_per_node=gpus_per_node, detail=False, runtime=runtime)
    assert simulate(model, hw, workload, plan, **where, analytic=given) == simulate(model, hw, workload, plan, **where)
