"""cost.runtime: one framework's overlap, training states and CUDA graphs, looked up once."""

from __future__ import annotations

import pytest

from sp_planner.cost.cuda_graphs import NO_GRAPHS
from sp_planner.cost.grad_buffer import DEEPSPEED_GRAD_SYNC, MEGATRON_GRAD_SYNC, TORCH_FSDP2_GRAD_SYNC
from sp_planner.cost.overlap import DEEPSPEED_OVERLAP, MEGATRON_OVERLAP, TORCHTITAN_OVERLAP
from sp_planner.cost.ring_impl import MINDSPEED_RING, TE_RING, YUNCHANG_RING
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, MEGATRON_RUNTIME, Runtime, framework_runtime
from sp_planner.cost.states import DEEPSPEED_STATES, MEGATRON_STATES, MINDSPEED_STATES, TORCH_FSDP_STATES
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS
from sp_planner.flags import FRAMEWORKS


def test_every_framework_sp_plan_emits_flags_for_has_a_runtime():
    assert set(FRAMEWORK_RUNTIME) == set(FRAMEWORKS)


@pytest.mark.parametrize("framework, overlap, states", [
    ("megatron", MEGATRON_OVERLAP, MEGATRON_STATES),
    # Megatron-LM's DDP and optimizer, without --fp8-param-gather (its flags do not emit it).
    ("mindspeed", MEGATRON_OVERLAP, MINDSPEED_STATES),
    ("deepspeed", DEEPSPEED_OVERLAP, DEEPSPEED_STATES),
    ("yunchang", DEEPSPEED_OVERLAP, DEEPSPEED_STATES),  # its note names DeepSpeed's training loop
    ("torchtitan", TORCHTITAN_OVERLAP, TORCH_FSDP_STATES),
    ("all", MEGATRON_OVERLAP, MEGATRON_STATES),  # sp-plan's every-framework answer: Megatron's
])
def test_framework_runtime(framework, overlap, states):
    runtime = framework_runtime(framework)
    assert (runtime.overlap, runtime.states, runtime.cuda_graphs) == (overlap, states, NO_GRAPHS)


def test_megatron_runtime_is_the_default_and_runs_eager():
    assert framework_runtime("all") is MEGATRON_RUNTIME
    assert MEGATRON_RUNTIME == Runtime(overlap=MEGATRON_OVERLAP, states=MEGATRON_STATES, cuda_graphs=frozenset(),
                                       ring=TE_RING, grad_sync=MEGATRON_GRAD_SYNC,
                                       expert_row_padding="grouped_mlp", sums_sequence_parallel_grads=True)


def test_only_megatron_pads_the_experts_rows_for_fp8():
    # Megatron-Core's TEGroupedMLP pads with TE's Fp8Padding (cost.expert_padding); the others'
    # expert MLPs are not TEGroupedMLP (MindSpeed's is its own GMM kernel, cost.grouped_gemm).
    assert [framework_runtime(f).expert_row_padding for f in ("megatron", "mindspeed", "deepspeed", "torchtitan")] == [
        "grouped_mlp", "none", "none", "none"]


@pytest.mark.parametrize("framework, ring", [
    ("megatron", TE_RING), ("all", TE_RING),  # Transformer Engine's CP (--cp-comm-type p2p)
    ("mindspeed", MINDSPEED_RING),  # its own ring: bf16 dK/dV, R-1 hops, no half copies (cost.ring_impl)
    ("deepspeed", YUNCHANG_RING), ("yunchang", YUNCHANG_RING),
    ("torchtitan", YUNCHANG_RING),
])
def test_framework_ring(framework, ring):
    assert framework_runtime(framework).ring == ring


@pytest.mark.parametrize("framework, sync", [
    ("megatron", MEGATRON_GRAD_SYNC), ("mindspeed", MEGATRON_GRAD_SYNC),  # Megatron DDP / Megatron-FSDP
    ("torchtitan", TORCH_FSDP2_GRAD_SYNC),
    ("deepspeed", DEEPSPEED_GRAD_SYNC), ("yunchang", DEEPSPEED_GRAD_SYNC),  # yunchang runs under DeepSpeed
])
def test_framework_gradient_wrapper(framework, sync):
    assert framework_runtime(framework).grad_sync == sync


def test_an_unknown_framework_is_named():
    with pytest.raises(ValueError, match="unknown framework 'nemo'; expected one of megatron, mindspeed"):
        framework_runtime("nemo")


@pytest.mark.parametrize("framework, interface, gathers", [
    ("megatron", None, TE_TP_GATHERS), ("mindspeed", None, TE_TP_GATHERS), ("all", None, TE_TP_GATHERS),
    # torchtitan 0.3.x converts to rowwise float8 or MXFP8, gathered in bf16; 0.2.x's tensorwise
    # float8 (the TOML sp-plan writes) takes torchao's float8 TP styles (cost.tp_gathers).
    ("torchtitan", None, BF16_TP_GATHERS), ("torchtitan", "0.3", BF16_TP_GATHERS),
    ("torchtitan", "0.2", TORCHAO_TENSORWISE_TP_GATHERS),
    # DeepSpeed refuses FP8 and yunchang tp > 1: the default, never reached by their plans.
    ("deepspeed", None, TE_TP_GATHERS), ("yunchang", None, TE_TP_GATHERS),
])
def test_framework_tp_gathers(framework, interface, gathers):
    assert framework_runtime(framework, interface).tp_gathers == gathers


@pytest.mark.parametrize("framework, interface, regathers", [
    # Megatron-Core / TE gather the saved sequence shards again for the weight gradients; torchtitan's
    # DTensor TP keeps the gathered inputs in every release (cost.saved_inputs).
    ("megatron", None, True), ("mindspeed", None, True), ("all", None, True),
    ("torchtitan", "0.3", False), ("torchtitan", "0.2", False),
])
def test_which_frameworks_gather_the_saved_inputs_again(framework, interface, regathers):
    assert framework_runtime(framework, interface).tp_gathers.regathers_saved_inputs is regathers


def test_an_unknown_torchtitan_interface_is_named():
    with pytest.raises(ValueError, match="unknown torchtitan interface '0.1'; expected one of 0.3, 0.2"):
        framework_runtime("torchtitan", "0.1")
