"""sp-plan on MoE models and a rack-scale NVLink domain (issue 15's question): Qwen3-235B-A22B on
GB200 NVL72 racks, expert parallelism in the search, the JSON and the Megatron flags, and the rank
groups of the plan equal to Megatron-Core's RankGenerator."""

from __future__ import annotations

import json

import pytest

from megatron.core.parallel_state import RankGenerator
from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.links import INTRA, group_link
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs.workload import Workload

QUESTION = ["--model", "qwen3-235b-a22b", "--hardware", "gb200-nvl72", "--seq-len", "128k"]
QWEN = load_model("qwen3-235b-a22b")
NVL72 = load_hardware("gb200-nvl72")


def test_one_rack_ranks_plans_with_expert_degrees(sp_plan):
    result = sp_plan(*QUESTION, "--nodes", "18", "--format", "json", "--framework", "all", "--top", "400",
                     "--rank-groups")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    plans = doc["plans"]
    assert plans[0]["fits"]
    # The expert axes are searched: ep over divisors of 128 that fit 72 GPUs (1, 2, 4, 8).
    assert {p["ep"] for p in plans} == {1, 2, 4, 8}
    for entry in plans[:20]:
        plan = ParallelPlan(**{name: entry[name] for name in ParallelPlan.model_fields})
        assert entry["rank_groups"]["ep"] == [list(g) for g in sorted(
            RankGenerator(tp=plan.etp, ep=plan.ep, dp=plan.edp, pp=plan.pp, cp=1, order="tp-cp-ep-dp-pp")
            .get_ranks("ep"))]


def test_two_racks_megatron_plan_uses_expert_parallelism(sp_plan):
    # ZeRO-1 (Megatron's distributed optimizer) pinned: fp32 gradients stay whole on each rank.
    result = sp_plan(*QUESTION, "--nodes", "36", "--zero", "1", "--format", "json", "--top", "400")
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)["plans"]
    entry = next(e for e in plans if e["flags"]["megatron"]["supported"])
    # 144 GPUs, ZeRO-1: the experts must be split to fit 173 GiB.
    assert entry["fits"] and entry["zero"] == 1 and entry["ep"] > 1
    text = entry["flags"]["megatron"]["text"]
    assert f"--expert-model-parallel-size {entry['ep']}" in text
    assert f"--expert-tensor-parallel-size {entry['etp']}" in text
    assert "--num-experts 128" in text and "--moe-router-topk 8" in text


def test_the_nvlink_domain_not_the_host_bounds_intra_links():
    # 72 GPUs in 18 hosts of 4: a Ulysses group of 8 at stride 1 spans two hosts but one NVLink domain.
    assert NVL72.gpus_per_node == 4 and NVL72.link_domain_gpus(4) == 72
    assert group_link(8, 1, NVL72.link_domain_gpus(4)) == INTRA
    workload = Workload(seq_len=131072, global_batch=36)
    plan = ParallelPlan(tp=1, ulysses=8, dp=9, ep=8, zero=3, recompute="full")
    on_rack = evaluate(QWEN, NVL72, workload, plan, num_nodes=18, gpus_per_node=4)
    assert on_rack.comm_links.ulysses_all_to_all == "intra"
    assert on_rack.comm_links.ep_all_to_all == "intra"
    # The same trays without the rack's NVLink domain: every group wider than a host is on the network.
    hosts_only = NVL72.model_copy(update={"nvlink_domain_gpus": None})
    apart = evaluate(QWEN, hosts_only, workload, plan, num_nodes=18, gpus_per_node=4)
    assert apart.comm_links.ulysses_all_to_all == "inter" and apart.comm_links.ep_all_to_all == "inter"
    assert apart.time.ulysses_comm_s > 5 * on_rack.time.ulysses_comm_s
    assert apart.time.moe_comm_s > 5 * on_rack.time.moe_comm_s


@pytest.mark.parametrize("world, domain", [(72, 72), (144, 72), (64, 64), (16, 16), (256, 64), (96, 48)])
def test_a_job_fills_the_nvlink_domains_it_touches_alike(world, domain):
    # 256 GPUs on NVL72 racks: 4 racks of 64 (the most hosts' GPUs that divide the world and fit a rack).
    assert NVL72.link_domain_gpus(4, world) == domain
    assert NVL72.link_domain_gpus(8, world) == 8  # another host size: the host


def test_simulator_runs_a_world_that_does_not_fill_whole_racks():
    from sp_planner.sim.simulate import simulate

    # 256 GPUs: 4 racks of 64, as the analytic model takes them (link_domain_gpus); expert groups of
    # 16 and the ZeRO group stay on NVLink or leave a rack as both models say.
    llama = load_model("llama3-8b")
    workload = Workload(seq_len=131072, global_batch=32)
    plan = ParallelPlan(tp=4, ulysses=2, dp=32, zero=1, recompute="full")
    result = simulate(llama, NVL72, workload, plan, num_nodes=64, gpus_per_node=4, detail=False)
    analytic = evaluate(llama, NVL72, workload, plan, num_nodes=64, gpus_per_node=4).step_time_s
    assert result.analytic_step_time_s == pytest.approx(analytic, rel=1e-9)
    assert result.step_time_s == pytest.approx(analytic, rel=0.05)


def test_simulator_runs_expert_parallelism_and_sliding_windows_on_nvl72():
    from sp_planner.sim.simulate import simulate

    # Experts over ep 8 inside the 72-GPU NVLink domain: dispatch and combine on NVLink.
    workload = Workload(seq_len=131072, global_batch=36)
    result = simulate(QWEN, NVL72, workload, ParallelPlan(tp=1, ulysses=8, dp=9, ep=8, zero=3, recompute="full"),
                      num_nodes=18, gpus_per_node=4, detail=False)
    dispatch = {p.name: p for p in result.phases}["ep dispatch/combine all-to-all"]
    assert dispatch.bottleneck == "nvlink" and not dispatch.crosses_nodes
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.02)
    # Sliding windows are simulated (their band kernels, as the analytic model times them).
    gemma = load_model("gemma-2-9b")
    result = simulate(gemma, NVL72, Workload(seq_len=32768, global_batch=9), ParallelPlan(tp=8, dp=9), num_nodes=18,
                      gpus_per_node=4, detail=False)
    assert result.step_time_s == pytest.approx(result.analytic_step_time_s, rel=0.01)


def test_simulator_graph_takes_the_nvlink_domain_as_its_node():
    from sp_planner.sim.simulate import simulate

    llama = load_model("llama3-8b")
    workload = Workload(seq_len=131072, global_batch=9)
    plan = ParallelPlan(tp=4, ulysses=2, dp=9, zero=1, recompute="full")
    result = simulate(llama, NVL72, workload, plan, num_nodes=18, gpus_per_node=4, detail=False)
    # The report keeps the hosts the user named; the Ulysses group (8 ranks, 2 hosts) stays on NVLink,
    # so the simulated step agrees with the analytic one that classifies links by the domain.
    assert (result.num_nodes, result.gpus_per_node) == (18, 4)
    analytic = evaluate(llama, NVL72, workload, plan, num_nodes=18, gpus_per_node=4).step_time_s
    assert result.analytic_step_time_s == pytest.approx(analytic, rel=1e-9)
    assert result.step_time_s == pytest.approx(analytic, rel=0.15)


def test_table_names_the_best_expert_parallel_plan_and_what_it_costs(sp_plan):
    """When no shown plan splits the experts, the table's answer names the best one that does and
    the parts of its step that differ; its time is the one the search ranked for it."""
    table = sp_plan(*QUESTION, "--nodes", "18", "--top", "5")
    assert table.exit_code == 0, table.stderr
    line = " ".join(table.stdout.split())
    assert "Best plan with expert parallelism (ranked" in line and "MoE dispatch/combine +" in line
    doc = json.loads(sp_plan(*QUESTION, "--nodes", "18", "--format", "json", "--top", "200").stdout)
    assert all(p["ep"] == 1 for p in doc["plans"][:5])
    rank, best_ep = next((i, p) for i, p in enumerate(doc["plans"], 1) if p["ep"] > 1 and p["fits"])
    assert f"(ranked {rank} of all plans)" in line
    assert f"{best_ep['step_time_s']:.2f} s per step" in line


@pytest.mark.parametrize("args, message", [
    (["--model", "llama3-8b", "--moe-capacity-factor", "1.25"], "apply to MoE models; Llama-3-8B has no experts"),
    (["--model", "qwen3-235b-a22b", "--moe-pad-to-capacity"], "--moe-pad-to-capacity needs --moe-capacity-factor"),
    (["--model", "qwen3-235b-a22b", "--moe-capacity-factor", "0"], "must be above 0"),
])
def test_capacity_options_refused_in_one_line(sp_plan, args, message):
    result = sp_plan(*args, "--hardware", "gb200-nvl72", "--nodes", "18", "--seq-len", "128k")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_capacity_factor_reaches_the_flags_and_the_step(sp_plan):
    base = [*QUESTION, "--nodes", "18", "--ep", "8", "--format", "json", "--top", "1"]
    dropless = json.loads(sp_plan(*base).stdout)["plans"][0]
    capped = json.loads(sp_plan(*base, "--moe-capacity-factor", "1.0").stdout)["plans"][0]
    assert "--moe-expert-capacity-factor 1" in capped["flags"]["megatron"]["text"]
    assert "capacity" not in dropless["flags"]["megatron"]["text"]
    assert capped["time"]["moe_comm_s"] < dropless["time"]["moe_comm_s"]
    question = json.loads(sp_plan(*base, "--moe-capacity-factor", "1.0", "--moe-pad-to-capacity").stdout)["question"]
    assert question["moe_routing"] == {"routing": "learned", "load_imbalance": 1.25, "capacity_factor": 1.0,
                                       "pad_to_capacity": True, "token_dispatcher": "alltoall"}


def test_balanced_routing_reaches_the_json_flags_and_step(sp_plan):
    base = [*QUESTION, "--nodes", "18", "--ep", "8", "--format", "json", "--top", "1"]
    learned = json.loads(sp_plan(*base).stdout)
    balanced = json.loads(sp_plan(*base, "--moe-routing", "balanced").stdout)
    assert learned["question"]["moe_routing"]["routing"] == "learned"
    assert balanced["question"]["moe_routing"] == {"routing": "balanced", "load_imbalance": 1.0,
                                                   "capacity_factor": None, "pad_to_capacity": False,
                                                   "token_dispatcher": "alltoall"}
    plan = balanced["plans"][0]
    assert "--moe-router-force-load-balancing" in plan["flags"]["megatron"]["text"]
    # Same pins and search: the balanced dispatch moves 1/1.25 of the learned router's bytes.
    degrees = ("dp", "pp", "tp", "ulysses", "ring", "ep", "etp", "zero", "recompute", "micro_batch")
    assert [plan[k] for k in degrees] == [learned["plans"][0][k] for k in degrees]
    assert plan["comm_bytes"]["ep_all_to_all"] == pytest.approx(
        learned["plans"][0]["comm_bytes"]["ep_all_to_all"] / 1.25, rel=1e-9)


def test_balanced_routing_of_a_dense_model_is_refused(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--moe-routing", "balanced", "--hardware", "h100-sxm", "--nodes", "1",
                     "--seq-len", "8k")
    assert result.exit_code == 2 and "--moe-dispatcher apply to MoE models" in result.stderr


def test_a_framework_without_expert_parallelism_says_so(sp_plan):
    # DeepSpeed refuses ep > 1 (flags/experts.py): the note names the framework instead of a plan;
    # torchtitan 0.3.0 expresses no Qwen3-235B plan at all, so it prints no note.
    text = " ".join(sp_plan(*QUESTION, "--nodes", "18", "--framework", "deepspeed").stdout.split())
    assert "No plan with expert parallelism (ep > 1) that deepspeed can express fits" in text
    titan = " ".join(sp_plan(*QUESTION, "--nodes", "18", "--framework", "torchtitan").stdout.split())
    assert "expert parallelism (ep > 1)" not in titan


def test_hybridep_dispatcher_reaches_the_json_flags_and_step(sp_plan):
    # The same pinned plan under HybridEP: the flex dispatcher's flags, no permutation passes
    # (cost.moe: gemm_s moves), its own all-to-all kernels (not slowed by NCCL's measured curve at
    # the message size, cost.collective_sizes: moe_comm_s moves), and the JSON names the dispatcher.
    pins = [*QUESTION, "--nodes", "18", "--tp", "1", "--pp", "1", "--ulysses", "1", "--ring", "8", "--dp", "9",
            "--ep", "8", "--etp", "1", "--zero", "3", "--recompute", "full", "--micro-batch", "1",
            "--format", "json", "--top", "1"]
    alltoall = json.loads(sp_plan(*pins).stdout)
    hybridep = json.loads(sp_plan(*pins, "--moe-dispatcher", "hybridep").stdout)
    assert alltoall["question"]["moe_routing"]["token_dispatcher"] == "alltoall"
    assert hybridep["question"]["moe_routing"]["token_dispatcher"] == "hybridep"
    fused, plain = hybridep["plans"][0], alltoall["plans"][0]
    text = fused["flags"]["megatron"]["text"]
    assert "--moe-token-dispatcher-type flex" in text and "--moe-flex-dispatcher-backend hybridep" in text
    assert "--moe-permute-fusion" not in text and "--moe-permute-fusion" in plain["flags"]["megatron"]["text"]
    assert fused["time"]["gemm_s"] < plain["time"]["gemm_s"]
    assert fused["time"]["moe_comm_s"] < plain["time"]["moe_comm_s"]
    for framework in ("mindspeed", "torchtitan"):
        assert not fused["flags"][framework]["supported"]
        assert "token dispatcher hybridep cannot be expressed" in fused["flags"][framework]["reason"]


def test_hybridep_on_a_dense_model_is_refused(sp_plan):
    result = sp_plan("--model", "llama3-8b", "--moe-dispatcher", "hybridep", "--hardware", "h100-sxm", "--nodes",
                     "1", "--seq-len", "8k")
    assert result.exit_code == 2 and "apply to MoE models; Llama-3-8B has no experts" in result.stderr


def test_hybridep_for_another_framework_is_refused(sp_plan):
    result = sp_plan(*QUESTION, "--nodes", "18", "--moe-dispatcher", "hybridep", "--framework", "torchtitan")
    assert result.exit_code == 2
    expected = "--moe-dispatcher hybridep is Megatron's flex dispatcher, and torchtitan has no such backend"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_mtp_for_a_framework_without_it_is_refused(sp_plan):
    result = sp_plan(*QUESTION, "--nodes", "18", "--mtp-layers", "1", "--framework", "torchtitan")
    assert result.exit_code == 2
    assert "--mtp-layers is Megatron's --mtp-num-layers, and torchtitan has no multi-token prediction" in result.stderr
    assert "Traceback" not in result.stderr


def test_mla_up_proj_for_a_framework_without_it_is_refused(sp_plan):
    result = sp_plan("--model", "DeepSeek-V3", "--hardware", "H100-SXM", "--nodes", "32", "--seq-len", "4k",
                     "--recompute", "mla_up_proj", "--framework", "torchtitan")
    assert result.exit_code == 2
    assert "--recompute mla_up_proj is Megatron's --recompute-modules mla_up_proj, and torchtitan" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model, recompute", [
    ("Llama-3-8B", "mla_up_proj"),  # no MLA
    ("Llama-3-8B", "moe_act"),  # no MoE layer
    ("Qwen3-30B-A3B", "mlp"),  # no dense layer
])
def test_a_recompute_pin_that_breaks_its_rule_is_refused_before_the_search(sp_plan, model, recompute):
    # Like --ep 2 on a dense model: the pin alone breaks a hard rule (plan rules mla_up_proj,
    # moe_act, mlp), so exit 2 before any search, not a ranked table of plans that all break it and exit 1.
    result = sp_plan("--model", model, "--hardware", "H100-SXM", "--nodes", "1", "--seq-len", "4k",
                     "--recompute", recompute)
    assert result.exit_code == 2
    assert f"the pinned plan breaks the {recompute} rule" in result.stderr
    assert "Traceback" not in result.stderr


def test_moe_module_recompute_for_a_framework_without_it_and_an_unknown_set_are_refused(sp_plan):
    result = sp_plan("--model", "Qwen3-30B-A3B", "--hardware", "H100-SXM", "--nodes", "1", "--seq-len", "4k",
                     "--recompute", "moe_act+layernorm", "--framework", "torchtitan")
    assert result.exit_code == 2
    assert ("--recompute moe_act+layernorm is Megatron's --recompute-modules moe_act layernorm, and torchtitan"
            in result.stderr)
    unknown = sp_plan("--model", "Qwen3-30B-A3B", "--hardware", "H100-SXM", "--nodes", "1", "--seq-len", "4k",
                      "--recompute", "shared_experts")
    assert unknown.exit_code == 2 and "moe_act+layernorm" in unknown.stderr and "Traceback" not in unknown.stderr


def test_mlp_recompute_for_torchtitan_is_refused(sp_plan):
    titan = sp_plan("--model", "Llama-3-8B", "--hardware", "H100-SXM", "--nodes", "1", "--seq-len", "4k",
                    "--recompute", "mlp", "--framework", "torchtitan")
    assert titan.exit_code == 2
    assert "--recompute mlp is Megatron's --recompute-modules mlp, and torchtitan" in titan.stderr


@pytest.mark.parametrize("model, recompute, modules", [
    ("Llama-3-8B", "mlp", "mlp"),
    ("Qwen3-30B-A3B", "moe_act+layernorm", "moe_act layernorm"),
])
def test_a_module_recompute_pin_plans_and_emits_the_modules(sp_plan, model, recompute, modules):
    result = sp_plan("--model", model, "--hardware", "H100-SXM", "--nodes", "1", "--seq-len", "4k",
                     "--recompute", recompute, "--framework", "megatron", "--format", "json")
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)["plans"]
    assert plans and all(p["recompute"] == recompute for p in plans)
    assert f"--recompute-modules {modules}" in plans[0]["flags"]["megatron"]["text"]
