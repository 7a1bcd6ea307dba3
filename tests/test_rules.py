"""One rule set: the vectorized masks, the scalar violations and the executor's checks agree, on
models and workloads where every rule fires (GQA, MoE, heads that are not powers of two)."""

from dataclasses import fields

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.executor.config import RunConfig, config_problems
from sp_planner.plan import ATTENTION_RULES, RULES, ParallelPlan, violations
from sp_planner.space import Axes, Pins, enumerate_candidates, rule_masks
from sp_planner.candidates import Candidates
from sp_planner.specs import ModelSpec, Workload
from sp_planner.specs.attention import WindowSpec

ODD = ModelSpec(name="odd", hidden_size=96, intermediate_size=256, num_layers=6, num_heads=12,
                num_kv_heads=3, head_dim=8, vocab_size=100)
CASES = [
    (load_model("Llama-3-8B"), Workload(seq_len=4100, global_batch=6), 48),
    (load_model("Mixtral-8x7B"), Workload(seq_len=20000, global_batch=12), 24),
    (ODD, Workload(seq_len=1536, global_batch=9), 36),
    (ODD, Workload(seq_len=1536, global_batch=9, causal=False), 36),
]


def _plans(candidates):
    return [candidates.plan(i) for i in range(len(candidates))]


def _concat(*parts: Candidates) -> Candidates:
    return Candidates(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Candidates)})


@pytest.mark.parametrize("model,workload,world", CASES, ids=lambda x: getattr(x, "name", None))
def test_masks_equal_violations_and_every_rule_fires(model, workload, world):
    # The free search enumerates only expert grids that fill a stage; a pinned ep 3 (no model
    # here has a multiple of 3 experts) breaks the expert rules, on dense models too. vpp pinned
    # to 2 so that the interleaving rule fires too (unpinned, the search only tries the vpp values
    # that run).
    experts = model.moe.num_experts if model.moe else 0
    axes = Axes(model.num_layers, num_experts=experts)
    # A sliding window shorter than the sequence, so that the window_ring rule fires where ring > 1.
    model = model.model_copy(update={"window": WindowSpec(window_tokens=workload.seq_len // 3)})
    # MoE models move their tokens with DeepEP, whose group sizes (etp x ep) are a set: ep 3 and ep 1
    # break the deepep_group rule, ep 8 does not; dense models have no dispatcher, and it never fires.
    if model.moe is not None:
        model = model.model_copy(update={"moe": model.moe.model_copy(update={"dispatcher": "deepep"})})
    # Offloading every layer's activations breaks the offload rule (pp 1 and no recompute with it,
    # as ParallelPlan requires).
    offload_all = Pins(pp=1, recompute="none", cpu_offload_layers=model.num_layers)
    # Recompute mla_up_proj pinned on these models without MLA breaks its rule (the free search
    # offers it to MLA models only), moe_act pinned on the dense ones its own (Mixtral may run it),
    # mlp pinned on an all-MoE one (Mixtral) its own (dense layers may run it).
    columns = _concat(enumerate_candidates(workload, world, Pins(vpp=2), axes=axes),
                      enumerate_candidates(workload, world, Pins(ep=3, vpp=2), axes=axes),
                      enumerate_candidates(workload, world, offload_all, axes=axes),
                      enumerate_candidates(workload, world, Pins(pp=1, dp=1, recompute="mla_up_proj"), axes=axes),
                      enumerate_candidates(workload, world, Pins(pp=1, dp=1, recompute="moe_act"), axes=axes),
                      enumerate_candidates(workload, world, Pins(pp=1, dp=1, recompute="mlp"), axes=axes),
                      # HSDP replicas that do not divide edp break expert_replicas on the MoE model (never on a
                      # dense one).
                      enumerate_candidates(workload, world, Pins(pp=1, zero=3, dp_replicate=2), axes=axes))
    masks = rule_masks(model, workload, columns)
    n = len(columns)
    found = [{v.rule for v in violations(plan, model, workload)} for plan in _plans(columns)]
    broken = np.array([[rule in rules for rule in RULES] for rules in found])
    assert broken.shape == (n, len(RULES))
    for j, rule in enumerate(RULES):
        assert (masks[rule] == broken[:, j]).all(), rule
        if rule == "moe_act" and experts:
            assert broken[:, j].sum() == 0, "moe_act fires on an MoE model"
            continue
        if rule == "mlp" and model.num_moe_layers < model.num_layers:
            assert broken[:, j].sum() == 0, "mlp fires on a model with dense layers"
            continue
        if rule == "dsa_cp":  # no model here has sparse attention (test_dsa_cp_masks_equal_violations_...)
            assert not broken[:, j].any()
            continue
        if rule in ("deepep_group", "expert_replicas") and model.moe is None:
            assert not broken[:, j].any()
            continue
        assert 0 < broken[:, j].sum() < n, f"rule {rule} never fires or always fires"


@pytest.mark.parametrize("model,workload,world", CASES[2:], ids=["causal", "full"])
def test_executor_checks_are_the_planners_attention_rules(model, workload, world):
    fired = set()
    for plan in _plans(enumerate_candidates(workload, world, Pins(pp=1, dp=1, micro_batch=1, zero=1),
                                            axes=Axes(model.num_layers))):
        cfg = RunConfig(tp=plan.tp, ulysses=plan.ulysses, ring=plan.ring, ring_layout=plan.ring_layout,
                        seq_len=workload.seq_len, num_heads=model.num_heads, num_kv_heads=model.num_kv_heads,
                        head_dim=model.head_dim, nproc_per_node=plan.ulysses * plan.ring)
        planner = [v.message for v in violations(plan, model, workload) if v.rule in ATTENTION_RULES]
        assert config_problems(cfg) == planner
        fired |= {v.rule for v in violations(plan, model, workload)}
    assert set(ATTENTION_RULES) <= fired


def test_the_mlp_width_splits_evenly_over_tp_and_an_experts_over_etp():
    # Megatron's linear layers divide() their width by the TP degree (an assertion): Llama-3-8B's
    # 14336 over tp 3 cannot; Qwen3-30B-A3B's experts, 768 wide, cannot split over etp 5.
    from sp_planner.plan import ParallelPlan

    llama, qwen = load_model("Llama-3-8B"), load_model("Qwen3-30B-A3B")
    work = Workload(seq_len=4096, global_batch=60)
    messages = {v.rule: v.message for v in violations(ParallelPlan(tp=3, ulysses=1, dp=1), llama, work)}
    assert messages["ffn"].startswith("the MLP's hidden width 14336 is not divisible by tp 3")
    assert "ffn" not in {v.rule for v in violations(ParallelPlan(tp=4), llama, work)}
    expert = {v.rule: v.message for v in violations(ParallelPlan(tp=1, dp=5, ep=1, etp=5), qwen, work)}
    assert expert["ffn"].startswith("an expert's hidden width 768 is not divisible by etp 5")


def test_hsdp_replicas_over_routed_experts_must_divide_edp():
    # Megatron-Core shards the routed experts' states over edp / dp_replicate ranks (parallel_state.py
    # intra-partial expert data-parallel group, asserting dp_replicate divides edp): Qwen3-30B-A3B at
    # tp 1 x ulysses 4 x ring 2 x dp 4 x ep 32 on 32 GPUs has edp 32 / 32 = 1, which 4 replicas
    # cannot split; ep 8 leaves edp 4, which they can (one expert shard rank a replica).
    from sp_planner.plan import ParallelPlan

    qwen, llama = load_model("Qwen3-30B-A3B"), load_model("Llama-3-8B")
    work = Workload(seq_len=131072, global_batch=32)
    hsdp = ParallelPlan(tp=1, ulysses=4, ring=2, dp=4, ep=32, etp=1, zero=3, dp_replicate=4)
    messages = {v.rule: v.message for v in violations(hsdp, qwen, work)}
    assert messages["expert_replicas"] == (
        "dp_replicate 4 (HSDP) does not divide the expert-data-parallel degree edp 1 = 32 GPUs a stage / (ep 32 x "
        "etp 1): the routed experts shard over edp / dp_replicate ranks (Megatron asserts edp % "
        "num_distributed_optimizer_instances == 0, parallel_state.py); use a dp_replicate that divides 1, or a "
        "smaller ep x etp")
    for fits in (hsdp.model_copy(update={"dp_replicate": 1}), hsdp.model_copy(update={"ep": 8})):
        assert "expert_replicas" not in {v.rule for v in violations(fits, qwen, work)}
    dense = ParallelPlan(tp=1, ulysses=4, ring=2, dp=4, zero=3, dp_replicate=4)
    assert "expert_replicas" not in {v.rule for v in violations(dense, llama, work)}


def test_dsa_cp_masks_equal_violations_and_fire_on_ulysses_and_ring_p2p_only():
    # DeepSeek-V3.2's sparse attention: Megatron's DSAttention runs all-gather CP only.
    model, workload = load_model("deepseek-v3.2-exp"), Workload(seq_len=8192, global_batch=64)
    columns = enumerate_candidates(workload, 64, Pins(pp=1, ep=8), axes=Axes(model.num_layers,
                                                                            num_experts=model.moe.num_experts))
    mask = rule_masks(model, workload, columns)["dsa_cp"]
    found = np.array(["dsa_cp" in {v.rule for v in violations(plan, model, workload)} for plan in _plans(columns)])
    assert (mask == found).all()
    expected = (columns.ulysses > 1) | ((columns.ring > 1) & ~columns.allgather)
    assert (mask == expected).all() and 0 < mask.sum() < len(mask) and (columns.allgather & ~mask).any()


def test_a_plans_micro_batch_group_must_be_one_megatron_accepts():
    # pp 4 x vpp 2, 10 micro-batches: Megatron accepts N 5, 6 and 10 (pp <= N <= m, m % N zero or at
    # least pp: schedules.py lines 1160-1180 at d98e8a6), which a plan may name (sp-plan --vpp-group);
    # 4 (a last group of 2), 7-9 (3, 2, 1), 3 (below pp) and 11 (above m) break the vpp rule, as does
    # a group without interleaving. 3 micro-batches: no group at all.
    model, workload = load_model("Llama-3-8B"), Workload(seq_len=4096, global_batch=10)

    def rules(**plan):
        return [v.rule for v in violations(ParallelPlan(pp=4, tp=2, **plan), model, workload)]
    assert rules(vpp=2) == []
    assert [n for n in range(1, 13) if rules(vpp=2, vpp_group=n) == []] == [5, 6, 10]
    assert rules(vpp=2, vpp_group=4) == ["vpp"] and rules(vpp=2, vpp_group=11) == ["vpp"]
    assert rules(vpp_group=5) == ["vpp"]
    assert [v.rule for v in violations(ParallelPlan(pp=4, tp=2, vpp=2), model,
                                       Workload(seq_len=4096, global_batch=3))] == ["vpp"]
