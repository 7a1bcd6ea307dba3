"""cost.stage_states: each stage's model-state bytes (parameters, gradients, optimizer states as
ZeRO shards them, gathered copies, FP8 weight copies) by hand, through the estimate's memory."""

import pytest

from sp_planner.cost.runtime import TORCHTITAN_V02_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload


@pytest.mark.parametrize("zero, divided", [(1, ("optimizer",)), (2, ("optimizer", "grads")),
                                           (3, ("optimizer", "grads", "params"))])
def test_zero_shards_over_dp_times_cp(toy_model, hardware, zero, divided):
    workload = Workload(seq_len=64, global_batch=2)
    base = evaluate(toy_model, hardware, workload, ParallelPlan(dp=2, ulysses=2, zero=0),
                    num_nodes=1, gpus_per_node=4).memory
    est = evaluate(toy_model, hardware, workload, ParallelPlan(dp=2, ulysses=2, zero=zero),
                   num_nodes=1, gpus_per_node=4).memory
    # ZeRO-3 adds its root unit (tp 1: embedding and output layer 6400 each, final norm 64),
    # gathered, and the output layer's and final norm's gradients held (test_hsdp_... below).
    extra = {"params": 2 * (2 * 6400 + 64), "grads": 4 * (6400 + 64)} if zero == 3 else {}
    for part in ("params", "grads", "optimizer"):
        want = getattr(base, f"{part}_bytes") / (4 if part in divided else 1) + extra.get(part, 0)
        assert getattr(est, f"{part}_bytes") == pytest.approx(want)


def test_hsdp_shards_over_dp_shard_times_cp_and_kept_parameters_add_a_copy(toy_model, hardware):
    workload = Workload(seq_len=64, global_batch=4)
    base = evaluate(toy_model, hardware, workload, ParallelPlan(dp=4, ulysses=2, zero=0),
                    num_nodes=2, gpus_per_node=4).memory
    hsdp = ParallelPlan(dp=4, ulysses=2, zero=3, dp_replicate=2)  # shards over 2 dp x 2 cp = 4 ranks
    est = evaluate(toy_model, hardware, workload, hsdp, num_nodes=2, gpus_per_node=4).memory
    # The root unit (embedding 6400, output layer 6400, final norm 64 at tp 1) stays gathered, and
    # the output layer's and final norm's fp32 gradients (6464) wait for the root's reduce-scatter
    # after the backward (cost.stage_states module docstring).
    root, output_layer = 2 * 6400 + 64, 6400 + 64
    assert est.optimizer_bytes == pytest.approx(base.optimizer_bytes / 4)
    assert est.params_bytes == pytest.approx(base.params_bytes / 4 + 2 * root)
    assert est.grads_bytes == pytest.approx(base.grads_bytes / 4 + 4 * output_layer)
    kept = evaluate(toy_model, hardware, workload, hsdp.model_copy(update={"reshard_after_forward": False}),
                    num_nodes=2, gpus_per_node=4).memory
    assert kept.params_bytes == pytest.approx(base.params_bytes * (1 + 1 / 4))  # the gathered stage too
    assert kept.grads_bytes == pytest.approx(base.grads_bytes / 4 + 4 * output_layer)


def test_zero3_root_unit_by_stage(toy_model, hardware):
    """pp 2, tp 2, one layer a stage: the last stage's root unit is the output layer (3200) and
    the final norm (64), gathered with its gradients held through backward; the first stage's is
    the embedding (3200), gathered, its gradients produced last (none held). The busier stage
    here is the first (its activations: 2 micro-batches in flight), so the first's numbers."""
    workload = Workload(seq_len=64, global_batch=4)
    plan = ParallelPlan(dp=2, pp=2, tp=2, zero=3, micro_batch=1)
    mem = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=8).memory
    flat = evaluate(toy_model, hardware, workload, plan.model_copy(update={"reshard_after_forward": False}),
                    num_nodes=1, gpus_per_node=8).memory
    layer, embedding = 18560, 3200
    first = layer + embedding
    assert mem.params_bytes == pytest.approx(2 * first / 2 + 2 * embedding)
    assert mem.grads_bytes == pytest.approx(4 * first / 2)
    assert flat.params_bytes == pytest.approx(2 * first / 2 + 2 * first)  # the whole stage kept



def _fp8_weight_copies(model, hardware_name, plan):
    """params_bytes of torchtitan 0.2.x's runtime less the same with TE's once-a-step FP8 weight
    cache (TpGathers.caches_weight_casts): the FP8 weight copies cost.stage_states counts for TE."""
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.fsdp import candidates_as_run
    from sp_planner.cost.memory import memory_columns
    from sp_planner.candidates import Candidates

    runtime = TORCHTITAN_V02_RUNTIME
    cached = runtime.tp_gathers.model_copy(update={"caches_weight_casts": True})
    c = candidates_as_run(Candidates.of_plan(plan), runtime.states.param_shard_stage)

    def params(gathers):
        return float(memory_columns(model, load_hardware(hardware_name), Workload(seq_len=8192, global_batch=8), c,
                                    runtime.states, domain_gpus=8, loss_memory=runtime.loss_memory,
                                    tp_gathers=gathers).params_bytes[0])
    return params(cached) - params(runtime.tp_gathers)


def test_torchao_keeps_no_fp8_weight_copy():
    # torchao's linears save the bf16 weight and cast it every micro-batch (cost.stage_states docstring):
    # none of TE's FP8 copies. Llama 3 8B at tp 2: a layer's GEMM weights on a rank are (q 4096 x
    # 4096, k and v 4096 x 1024, o 4096 x 4096, gate, up and down 4096 x 14336) / 2 = 109,051,904;
    # TE keeps 2 B of each on an H100 (FP8 data and transpose), 1 B on a B200, for 32 layers.
    from sp_planner.catalog import load_model

    llama = load_model("llama3-8b")
    plan = ParallelPlan(dp=4, tp=2, zero=1, micro_batch=1, precision="fp8", fp8_recipe="tensorwise")
    assert _fp8_weight_copies(llama, "h100", plan) == 2 * 32 * 109_051_904
    assert _fp8_weight_copies(llama, "b200", plan) == 32 * 109_051_904
    # Qwen3-30B-A3B at ep 8: 19,136,512 attention and router weights and 16 experts of 3 x 2048 x 768
    # (75,497,472) a layer, 48 layers; the experts' copies go too.
    qwen = load_model("Qwen3-30B-A3B")
    plan = ParallelPlan(dp=8, ep=8, zero=1, micro_batch=1, precision="fp8", fp8_recipe="tensorwise")
    assert _fp8_weight_copies(qwen, "h100", plan) == 2 * 48 * (19_136_512 + 75_497_472)
