"""Memory of the toy model (conftest) derived by hand."""

import numpy as np
import pytest

from sp_planner.cost.ring_impl import YUNCHANG_RING
from sp_planner.cost.runtime import DEEPSPEED_RUNTIME, MEGATRON_RUNTIME, TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

# Parameters on one of 2 TP ranks (h 64, q 64, 2 KV heads of 16, ffn 128, vocab 100):
#   Q and O projections 2*64*32 = 4096; K and V with one KV head per rank 2*64*16 = 2048;
#   SwiGLU 3*64*128/2 = 12288; two RMSNorms 128 (replicated)  -> 18560 per layer, 37120 for 2;
#   embedding and output 100*64/2 each = 6400; final norm 64   -> 43584.
PARAMS_TP2 = 43584


def test_tp2_no_zero_by_hand(toy_model, hardware):
    plan = ParallelPlan(dp=1, tp=2, zero=0, micro_batch=1)
    est = evaluate(toy_model, hardware, Workload(seq_len=32, global_batch=1), plan,
                   num_nodes=1, gpus_per_node=2)
    mem = est.memory
    assert mem.params_bytes == 2 * PARAMS_TP2
    assert mem.grads_bytes == 4 * PARAMS_TP2  # fp32 main gradients (Megatron with bf16)
    assert mem.optimizer_bytes == 12 * PARAMS_TP2
    # Per layer, 32 tokens: norms 4*2*32*64/2 = 8192; Q 2*32*2*16 = 2048; K+V 2048;
    # O 2048; lse 4*32*2 = 256; MLP 2*3*32*128/2 = 12288 -> 26880; 2 layers, 1 micro-batch.
    assert mem.activations_bytes == 2 * 26880
    assert mem.logits_bytes == 6 * 32 * 100 / 2
    assert mem.comm_buffers_bytes == 2 * 32 * 64  # the TP all-gather buffer
    # The profile's 1e9 plus the runtime parts (cost.runtime_memory): CUDA context 287,047,680 B,
    # sm90-sized cuBLAS workspaces (the toy profile is no known family) 2 x 32 MiB + 1 KiB, and one
    # 2-GPU NCCL communicator (the TP pair) of 544 MB.
    assert mem.reserve_bytes == 1e9 + 287_047_680 + 64 * 2**20 + 1024 + 544e6
    assert est.memory_peak_bytes == pytest.approx(mem.total_bytes)



def test_tp_without_sequence_parallelism_keeps_the_norms_whole_by_hand(toy_model, hardware):
    # The plan above run without sequence parallelism (Megatron-LM before 2022): the norms' 4
    # tensors are whole on each TP rank, 4*2*32*64 = 16384 instead of 8192 per layer (Korthikanti
    # et al. 2022 Table 2), 2 layers; under full recompute the stored layer input 2*32*64 = 4096
    # instead of 2048 per layer, and the rebuilt layer's norms whole too.
    no_sp = MEGATRON_RUNTIME.model_copy(update={"sequence_parallel": False})
    workload = Workload(seq_len=32, global_batch=1)

    def activations(runtime, recompute):
        plan = ParallelPlan(dp=1, tp=2, zero=0, micro_batch=1, recompute=recompute)
        return evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=2,
                        runtime=runtime).memory.activations_bytes

    assert activations(no_sp, "none") - activations(MEGATRON_RUNTIME, "none") == 2 * (16384 - 8192)
    assert activations(no_sp, "full") - activations(MEGATRON_RUNTIME, "full") == 2 * (4096 - 2048) + (16384 - 8192)

def test_peak_is_the_larger_of_the_loss_and_a_layers_backward(toy_model, hardware):
    """Full recompute on the toy model, tp 2, 32 tokens: at the loss the two layers' inputs
    (2 x 2*32*64/2 = 4096) and the logits (6 x 32 x 100/2 = 9600) are held; in the first
    layer's backward the inputs and the rebuilt layer (26880, test_tp2_no_zero_by_hand), the
    logits freed. The backward moment is larger, so the peak holds it and no logits."""
    workload = Workload(seq_len=32, global_batch=1)
    full = evaluate(toy_model, hardware, workload, ParallelPlan(dp=1, tp=2, zero=0, recompute="full"),
                    num_nodes=1, gpus_per_node=2)
    mem = full.memory
    assert mem.activations_bytes == 4096 + 26880
    assert mem.logits_bytes == 0.0
    assert mem.comm_buffers_bytes == 2 * 32 * 64  # the TP all-gather buffer, held at both
    assert full.memory_peak_bytes == pytest.approx(mem.total_bytes)
    # Without recompute the loss is the larger moment: every layer's activations and the logits.
    none = evaluate(toy_model, hardware, workload, ParallelPlan(dp=1, tp=2, zero=0),
                    num_nodes=1, gpus_per_node=2).memory
    assert (none.activations_bytes, none.logits_bytes) == (2 * 26880, 9600)
    # Ulysses 2 on 4 GPUs (tp 2): its send and receive buffers (2 x 2 B x 16 tokens x 2 heads x 16)
    # are the attention's, live in a layer's backward, not at the loss: 2048 < the logits' 4800.
    uly = evaluate(toy_model, hardware, workload, ParallelPlan(dp=1, tp=2, ulysses=2, zero=0),
                   num_nodes=1, gpus_per_node=4).memory
    assert uly.logits_bytes == 6 * 16 * 100 / 2
    assert uly.comm_buffers_bytes == 2 * 16 * 64


@pytest.mark.parametrize("runtime, loss_bytes", [
    (MEGATRON_RUNTIME, 6 * 32 * 100 / 2), (DEEPSPEED_RUNTIME, 14 * 32 * 100 / 2),
    (TORCHTITAN_V02_RUNTIME, 16 * 32 * 100 / 2),
    # 0.3.x: the fp32 gradient buffer 4 x 32 x 64, then the end (its bf16 cast 2 x 32 x 64 and the
    # last chunk's bf16 logits 2 x 4 x 50) outweighs a chunk's loss (18 x 4 x 50 = 3600).
    (TORCHTITAN_RUNTIME, 4 * 32 * 64 + 2 * 32 * 64 + 2 * 4 * 50)])
def test_logits_hold_the_frameworks_cross_entropy_bytes(toy_model, hardware, runtime, loss_bytes):
    # cost.loss_memory: Megatron's in-place fp32 copy 6 B a logit; PyTorch's cross entropy on an
    # fp32 copy (Hugging Face models under DeepSpeed) 14 B in its backward, beside the bf16 logits
    # the loop holds; torchtitan 0.2.x's loss_parallel 16 B;
    # torchtitan 0.3.x's eight chunks of 4 tokens. 32 tokens x 100 / 2 vocab.
    plan = ParallelPlan(dp=1, tp=2, zero=0, micro_batch=1)
    est = evaluate(toy_model, hardware, Workload(seq_len=32, global_batch=1), plan,
                   num_nodes=1, gpus_per_node=2, runtime=runtime)
    assert est.memory.logits_bytes == loss_bytes


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


def test_recompute_keeps_less(toy_model, hardware):
    workload = Workload(seq_len=64, global_batch=1)

    def activations(recompute, ulysses):
        plan = ParallelPlan(ulysses=ulysses, recompute=recompute)
        return evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=ulysses).memory

    none, selective, full = (activations(r, 2).activations_bytes for r in ("none", "selective", "full"))
    # 32 tokens per rank, ulysses 2: selective frees flash-attention's O copy (2*32*4*16) and lse
    # (4*32*4); full keeps each layer's input (2*32*64 per layer) plus one rebuilt layer.
    assert none - selective == 2 * (2 * 32 * 4 * 16 + 4 * 32 * 4)
    assert full == 2 * (2 * 32 * 64) + none / 2


def test_first_stage_holds_pp_micro_batches(toy_model, hardware):
    workload = Workload(seq_len=32, global_batch=8)
    one = evaluate(toy_model, hardware, workload, ParallelPlan(pp=1, dp=1), num_nodes=1, gpus_per_node=1)
    two = evaluate(toy_model, hardware, workload, ParallelPlan(pp=2, dp=1), num_nodes=1, gpus_per_node=2)
    # pp 2: one layer per stage, 2 micro-batches in flight on the first stage -> same as pp 1.
    assert two.memory.activations_bytes == one.memory.activations_bytes


def test_kv_heads_replicated_beyond_kv_count(toy_model, hardware):
    """tp 4 > 2 KV heads: each rank keeps a full KV head, so K/V weights do not shrink."""
    workload = Workload(seq_len=64, global_batch=1)
    tp2 = evaluate(toy_model, hardware, workload, ParallelPlan(tp=2), num_nodes=1, gpus_per_node=2)
    tp4 = evaluate(toy_model, hardware, workload, ParallelPlan(tp=4), num_nodes=1, gpus_per_node=4)
    # per layer: tp2 6144 attention params, tp4 2*64*16 (Q, O) + 2*64*16 (K, V) = 4096
    layer_delta = (6144 + 12288 + 128) - (4096 + 6144 + 128)
    embed_delta = 2 * (3200 - 1600)
    assert tp2.memory.params_bytes - tp4.memory.params_bytes == 2 * (2 * layer_delta + embed_delta)
    assert np.isfinite(tp4.step_time_s)


def test_hsdp_shards_over_dp_shard_times_cp_and_kept_parameters_add_a_copy(toy_model, hardware):
    workload = Workload(seq_len=64, global_batch=4)
    base = evaluate(toy_model, hardware, workload, ParallelPlan(dp=4, ulysses=2, zero=0),
                    num_nodes=2, gpus_per_node=4).memory
    hsdp = ParallelPlan(dp=4, ulysses=2, zero=3, dp_replicate=2)  # shards over 2 dp x 2 cp = 4 ranks
    est = evaluate(toy_model, hardware, workload, hsdp, num_nodes=2, gpus_per_node=4).memory
    # The root unit (embedding 6400, output layer 6400, final norm 64 at tp 1) stays gathered, and
    # the output layer's and final norm's fp32 gradients (6464) wait for the root's reduce-scatter
    # after the backward (cost.memory module docstring).
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



def test_allgather_buffers_hold_the_gathered_kv_and_the_full_grads(toy_model, hardware):
    workload = Workload(seq_len=64, global_batch=1)
    plan = ParallelPlan(tp=2, ring=4, cp_comm="allgather")
    mem = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=8).memory
    # 16 tokens per rank x 1 KV head x 16 = 256 elements per local K block; the whole sequence is
    # 4 x 256. K and V gathered (bf16) plus their reordered copy (bf16) plus the full dK, dV, bf16
    # in Megatron's Transformer Engine (cost.ring_impl): 2 x 1024 x (2 + 2 + 2) = 12288; the TP
    # all-gather buffer 2 x 16 x 64 = 2048.
    assert mem.comm_buffers_bytes == 12288 + 2048
    # yunchang's width (the executor's): fp32 dK, dV, 2 x 1024 x (2 + 2 + 4) = 16384.
    yunchang = MEGATRON_RUNTIME.model_copy(update={"ring": YUNCHANG_RING})
    mem = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=8, runtime=yunchang).memory
    assert mem.comm_buffers_bytes == 16384 + 2048


@pytest.mark.parametrize("zero, reshard, layers_gathered, grad_buffer", [
    (1, True, 0, False), (2, True, 0, True), (3, True, 2, True), (3, False, 0, True)])
def test_zero_transients_by_hand(toy_model, hardware, zero, reshard, layers_gathered, grad_buffer):
    """ZeRO-2/3 hold one layer's unsharded fp32 gradients until its reduce-scatter; ZeRO-3 with
    reshard also the gathered bf16 parameters of the computing and the prefetched layer."""
    workload = Workload(seq_len=64, global_batch=2)
    base = ParallelPlan(dp=2, tp=2, zero=0)
    plan = base.model_copy(update={"zero": zero, "reshard_after_forward": reshard})
    mem = evaluate(toy_model, hardware, workload, plan, num_nodes=1, gpus_per_node=4).memory
    without = evaluate(toy_model, hardware, workload, base, num_nodes=1, gpus_per_node=4).memory
    # One layer on a tp-2 rank: 18560 parameters (PARAMS_TP2's derivation).
    layer = 18560
    want = 4 * layer * grad_buffer + 2 * layer * layers_gathered  # fp32 gradients, bf16 parameters
    assert mem.comm_buffers_bytes - without.comm_buffers_bytes == want


def test_zero_buffers_hold_the_largest_layers_not_the_average():
    # Llama 4 Maverick: MoE on every 2nd layer (128 routed experts of 8192 + 1 shared, router
    # 5120 x 128) and dense SwiGLU 16384 between; attention 40 heads and 8 KV heads of 128, two
    # RMSNorms of 5120. tp 2, ep 4, etp 1.
    from sp_planner.catalog import load_model
    from sp_planner.cost.memory import zero_buffer_bytes
    from sp_planner.cost.params import layer_params_per_rank

    maverick = load_model("Llama-4-Maverick-17B-128E")
    h, tp, ep = 5120, 2, 4
    attn = (2 * h * 40 * 128 + 2 * h * 8 * 128) / tp + 2 * h  # q, o and k, v over tp; the norms whole
    dense = 3 * h * 16384 / tp
    moe = 128 * 3 * h * 8192 / ep + 3 * h * 8192 / tp + h * 128
    # ZeRO-2: one layer's fp32 gradients before their reduce-scatter, the MoE layer's (about twice
    # the average layer, which the buffer was sized by before).
    zero2 = float(zero_buffer_bytes(maverick, tp=tp, zero=2, reshard=False, ep=ep))
    assert zero2 == pytest.approx(4 * (attn + moe), rel=1e-12)
    assert zero2 / (4 * float(layer_params_per_rank(maverick, tp, ep))) == pytest.approx(1.93, abs=0.005)
    # ZeRO-3 with reshard: plus the bf16 parameters of the computing layer and the prefetched
    # one, neighbours: one MoE and one dense layer (never two MoE layers on Maverick).
    zero3 = float(zero_buffer_bytes(maverick, tp=tp, zero=3, reshard=True, ep=ep))
    assert zero3 == pytest.approx(4 * (attn + moe) + 2 * (2 * attn + moe + dense), rel=1e-12)


def _fp8_weight_copies(model, hardware_name, plan):
    """params_bytes of torchtitan 0.2.x's runtime less the same with TE's once-a-step FP8 weight
    cache (TpGathers.caches_weight_casts): the FP8 weight copies cost.memory counts for TE."""
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.fsdp import candidates_as_run
    from sp_planner.cost.memory import memory_columns
    from sp_planner.space import Candidates

    runtime = TORCHTITAN_V02_RUNTIME
    cached = runtime.tp_gathers.model_copy(update={"caches_weight_casts": True})
    c = candidates_as_run(Candidates.of_plan(plan), runtime.states.param_shard_stage)

    def params(gathers):
        return float(memory_columns(model, load_hardware(hardware_name), Workload(seq_len=8192, global_batch=8), c,
                                    runtime.states, domain_gpus=8, loss_memory=runtime.loss_memory,
                                    tp_gathers=gathers).params_bytes[0])
    return params(cached) - params(runtime.tp_gathers)


def test_torchao_keeps_no_fp8_weight_copy():
    # torchao's linears save the bf16 weight and cast it every micro-batch (cost.memory docstring):
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
