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
