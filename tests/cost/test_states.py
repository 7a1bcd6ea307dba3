"""cost.states: each framework's training-state bytes and ZeRO sharding, derived by hand, and the
memory model using them (toy model of tests/cost/conftest.py, an MPT-30B-sized model)."""

import numpy as np
import pytest

from sp_planner.cost.runtime import MEGATRON_RUNTIME
from sp_planner.cost.states import (
    DEEPSPEED_STATES,
    MEGATRON_STATES,
    TORCH_FSDP_STATES,
    sharded_state_bytes,
    whole_compute_copy,
)
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import ModelSpec, Workload


def test_bytes_per_parameter_by_framework():
    # Megatron: bf16 weights 2 + fp32 main grads 4 + fp32 master, Adam m, v 12 (its
    # dist_optimizer.md table: 18 unsharded). torch FSDP mixed precision: fp32 sharded parameters
    # 4 + fp32 gradients 4 + m, v 8. DeepSpeed bf16: 2 + bf16 gradients 2 + 12 (ZeRO paper, K = 12).
    assert (MEGATRON_STATES.param_bytes, MEGATRON_STATES.grad_bytes, MEGATRON_STATES.optimizer_bytes) == (2, 4, 12)
    assert (TORCH_FSDP_STATES.param_bytes, TORCH_FSDP_STATES.grad_bytes, TORCH_FSDP_STATES.optimizer_bytes) == (4, 4, 8)
    assert (DEEPSPEED_STATES.param_bytes, DEEPSPEED_STATES.grad_bytes, DEEPSPEED_STATES.optimizer_bytes) == (2, 2, 12)
    assert [s.bytes_per_param for s in (MEGATRON_STATES, TORCH_FSDP_STATES, DEEPSPEED_STATES)] == [18, 16, 16]
    assert TORCH_FSDP_STATES.separate_compute_copy and not MEGATRON_STATES.separate_compute_copy


def test_30b_parameters_under_zero3_over_8_gpus():
    # 30e9 parameters over 8 ranks: torchtitan 16 B x 30e9 / 8 = 60 GB; Megatron-FSDP 18 B -> 67.5 GB.
    fsdp = sharded_state_bytes(TORCH_FSDP_STATES, 3, 30e9, 8)
    megatron = sharded_state_bytes(MEGATRON_STATES, 3, 30e9, 8)
    assert fsdp == pytest.approx((15e9, 15e9, 30e9))
    assert sum(fsdp) == pytest.approx(60e9)
    assert megatron == pytest.approx((7.5e9, 15e9, 45e9))
    assert sum(megatron) == pytest.approx(67.5e9)


def test_zero1_shards_only_the_optimizer_and_zero2_also_the_gradients():
    # Megatron's distributed optimizer: 2 + 4 whole + 12/8 per parameter ("6 + 12/d").
    assert sharded_state_bytes(MEGATRON_STATES, 1, 30e9, 8) == pytest.approx((60e9, 120e9, 45e9))
    assert sharded_state_bytes(MEGATRON_STATES, 2, 30e9, 8) == pytest.approx((60e9, 15e9, 45e9))
    assert sharded_state_bytes(DEEPSPEED_STATES, 1, 30e9, 8) == pytest.approx((60e9, 60e9, 45e9))
    # FSDP shards everything whenever it shards (torchtitan's ZeRO-1/2 run FSDP2 without resharding).
    assert sharded_state_bytes(TORCH_FSDP_STATES, 1, 30e9, 8) == pytest.approx((15e9, 15e9, 30e9))
    assert sharded_state_bytes(TORCH_FSDP_STATES, 0, 30e9, 8) == pytest.approx((120e9, 120e9, 240e9))


@pytest.mark.parametrize("states, zero, reshard, whole", [
    (MEGATRON_STATES, 0, True, False), (MEGATRON_STATES, 2, True, False),
    (MEGATRON_STATES, 3, True, False), (MEGATRON_STATES, 3, False, True),
    (TORCH_FSDP_STATES, 0, True, True),  # DDP + autocast: the bf16 casts saved for backward
    (TORCH_FSDP_STATES, 2, True, True),  # FSDP without resharding after forward
    (TORCH_FSDP_STATES, 3, True, False), (TORCH_FSDP_STATES, 3, False, True),
])
def test_whole_bf16_copy(states, zero, reshard, whole):
    assert bool(whole_compute_copy(states, np.array([zero]), np.array([reshard]))[0]) is whole


# The toy model at tp 1: per layer Q, O 2*64*64 = 8192, K, V 2*64*32 = 4096, SwiGLU 3*64*128 = 24576,
# norms 128 -> 36992; 2 layers 73984; embedding and output 6400 each, final norm 64 -> 86848.
PARAMS = 86848
ROOT, OUTPUT_LAYER = 2 * 6400 + 64, 6400 + 64  # ZeRO-3's root unit; the gradients it holds


def _memory(toy_model, hardware, states, zero, **plan):
    workload = Workload(seq_len=64, global_batch=2)
    p = ParallelPlan(dp=2, ulysses=2, zero=zero, **plan)  # ZeRO shards over dp x cp = 4 ranks
    runtime = MEGATRON_RUNTIME.model_copy(update={"states": states})
    return evaluate(toy_model, hardware, workload, p, num_nodes=1, gpus_per_node=4, runtime=runtime).memory


def test_toy_model_states_by_hand(toy_model, hardware):
    assert toy_model.num_params == PARAMS
    fsdp3 = _memory(toy_model, hardware, TORCH_FSDP_STATES, 3)
    assert fsdp3.params_bytes == pytest.approx(4 * PARAMS / 4 + 2 * ROOT)  # fp32 shard + gathered bf16 root
    assert fsdp3.grads_bytes == pytest.approx(4 * PARAMS / 4 + 4 * OUTPUT_LAYER)
    assert fsdp3.optimizer_bytes == pytest.approx(8 * PARAMS / 4)
    mega3 = _memory(toy_model, hardware, MEGATRON_STATES, 3)
    assert mega3.params_bytes == pytest.approx(2 * PARAMS / 4 + 2 * ROOT)
    assert mega3.optimizer_bytes == pytest.approx(12 * PARAMS / 4)
    assert mega3.total_bytes - fsdp3.total_bytes == pytest.approx(2 * PARAMS / 4)
    # FSDP's ZeRO-2 (SHARD_GRAD_OP, torchtitan reshard "never"): everything sharded, the gathered
    # bf16 parameters held whole from forward to backward, the root unit's gradients through backward.
    fsdp2 = _memory(toy_model, hardware, TORCH_FSDP_STATES, 2)
    assert fsdp2.params_bytes == pytest.approx(4 * PARAMS / 4 + 2 * PARAMS)
    assert fsdp2.grads_bytes == pytest.approx(4 * PARAMS / 4 + 4 * OUTPUT_LAYER)
    # Unsharded (torchtitan's DDP): fp32 parameters, autocast's bf16 copy, fp32 gradients, m and v.
    fsdp0 = _memory(toy_model, hardware, TORCH_FSDP_STATES, 0)
    assert (fsdp0.params_bytes, fsdp0.grads_bytes, fsdp0.optimizer_bytes) == pytest.approx(
        (6 * PARAMS, 4 * PARAMS, 8 * PARAMS))
    # DeepSpeed ZeRO-2: bf16 gradient partitions.
    ds2 = _memory(toy_model, hardware, DEEPSPEED_STATES, 2)
    assert (ds2.params_bytes, ds2.grads_bytes, ds2.optimizer_bytes) == pytest.approx(
        (2 * PARAMS, 2 * PARAMS / 4, 12 * PARAMS / 4))


def test_fsdp_zero1_holds_a_layers_unsharded_gradients(toy_model, hardware):
    # FSDP reduce-scatters gradients at ZeRO-1 too: one layer's (36992) fp32 gradients before
    # their reduce-scatter; Megatron's ZeRO-1 all-reduces into its whole gradient buffer instead.
    fsdp = _memory(toy_model, hardware, TORCH_FSDP_STATES, 1).comm_buffers_bytes
    megatron = _memory(toy_model, hardware, MEGATRON_STATES, 1).comm_buffers_bytes
    assert fsdp - megatron == pytest.approx(4 * 36992)


def test_mpt_30b_on_8_gpus_holds_2_bytes_a_parameter_less_under_fsdp(hardware):
    # MPT-30B (llm-foundry mpt-30b.yaml: d_model 7168, 56 heads, 48 layers, expansion 4, vocab
    # 50368, tied, no biases), ZeRO-3 over 8 GPUs: FSDP keeps 16 B a parameter sharded where
    # Megatron keeps 18, 2 x 29.95e9 / 8 = 7.5 GB less; the root unit and activations are the same.
    mpt = ModelSpec(name="MPT-30B", hidden_size=7168, intermediate_size=28672, num_layers=48, num_heads=56,
                    num_kv_heads=56, head_dim=128, vocab_size=50368, tie_word_embeddings=True, mlp="gelu")
    workload = Workload(seq_len=8192, global_batch=168)
    plan = ParallelPlan(dp=8, zero=3, micro_batch=1, recompute="full")

    def peak(states):
        runtime = MEGATRON_RUNTIME.model_copy(update={"states": states})
        return evaluate(mpt, hardware, workload, plan, num_nodes=2, gpus_per_node=4, runtime=runtime).memory_peak_bytes
    assert mpt.num_params == pytest.approx(29.95e9, rel=1e-3)
    assert peak(MEGATRON_STATES) - peak(TORCH_FSDP_STATES) == pytest.approx(2 * mpt.num_params / 8, rel=1e-9)


def test_an_adam_step_moves_each_frameworks_states_once():
    # Megatron: read the fp32 gradient (4), read and write master + m + v (2 x 12), write the bf16
    # parameter (2); FSDP: the fp32 shard is the master (2 x (8 + 4)) and there is no copy to write;
    # DeepSpeed: bf16 gradients (2).
    assert MEGATRON_STATES.optimizer_step_bytes == 4 + 2 * 12 + 2
    assert TORCH_FSDP_STATES.optimizer_step_bytes == 4 + 2 * (8 + 4)
    assert DEEPSPEED_STATES.optimizer_step_bytes == 2 + 2 * 12 + 2


def test_bf16_adam_moments_by_master_kind():
    # Megatron: fp32 master + two fp32 moments = 12 B; bf16 moments with the master as a 16-bit
    # remainder (bf16 and delayed-FP8 plans) 2 + 2 + 2 = 6; MXFP8 / tensorwise / block FP8 keep an fp32
    # master in Megatron-Core, 4 + 2 + 2 = 8. torch FSDP's master is the stored fp32 parameter: 8 -> 4.
    from sp_planner.cost.states import (
        MEGATRON_STATES,
        TORCH_FSDP_STATES,
        optimizer_bytes_per_param,
        optimizer_step_bytes_per_param,
    )

    got = optimizer_bytes_per_param(MEGATRON_STATES, np.array([False, True, True]), np.array([True, True, False]))
    assert got.tolist() == [12, 6, 8]
    assert optimizer_bytes_per_param(TORCH_FSDP_STATES, True, True) == 4
    # Adam reads the fp32 gradient, reads and writes what it holds, writes the bf16 parameters.
    assert optimizer_step_bytes_per_param(MEGATRON_STATES, 6) == 4 + 2 * 6 + 2
    assert MEGATRON_STATES.optimizer_step_bytes == 4 + 2 * 12 + 2

