"""What a framework does at run time, as the cost model times and sizes a plan under it: the
data-parallel communication it overlaps (cost.overlap), the training states it keeps
(cost.states), the CUDA graphs it replays (cost.cuda_graphs), its ring attention's backward
(cost.ring_impl), what its cross entropy holds per logit (cost.loss_memory), the passes its
data-parallel wrapper makes over the gradients (cost.grad_buffer), the recipes whose TP
all-gathers it moves in low precision and whether its linears gather their saved inputs again or
keep them gathered (cost.tp_gathers, cost.saved_inputs), the unpad and pad passes it runs
around its attention kernel (cost.unpad_passes), and the copies that pad each local expert's rows
for FP8 (cost.expert_padding).

The orchestration (search, simulation, reports, validation) passes one `Runtime`; the cost
functions take the pieces they use.
"""

from __future__ import annotations

from typing import Literal

from sp_planner.cost.compiled_layers import (
    EAGER_LAYERS,
    TORCHTITAN_V02_COMPILED,
    TORCHTITAN_V03_COMPILED,
    CompiledLayers,
)
from sp_planner.cost.cuda_graphs import NO_GRAPHS
from sp_planner.cost.expert_padding import GROUPED_MLP_PADS, NO_PADDING, ExpertRowPadding
from sp_planner.cost.gemm_work import LOSS_BYTES_PER_LOGIT
from sp_planner.cost.grad_buffer import DEEPSPEED_GRAD_SYNC, MEGATRON_GRAD_SYNC, TORCH_FSDP2_GRAD_SYNC, GradSync
from sp_planner.cost.loss_memory import (
    MEGATRON_LOSS,
    TORCH_CROSS_ENTROPY_LOSS,
    TORCHTITAN_CHUNKED_LOSS,
    TORCHTITAN_V02_LOSS,
    LossMemory,
)
from sp_planner.cost.overlap import DEEPSPEED_OVERLAP, MEGATRON_OVERLAP, TORCHTITAN_OVERLAP, Overlap
from sp_planner.cost.ring_impl import MINDSPEED_RING, TE_RING, YUNCHANG_RING, RingImpl
from sp_planner.cost.tp_gathers import BF16_TP_GATHERS, TE_TP_GATHERS, TORCHAO_TENSORWISE_TP_GATHERS, TpGathers
from sp_planner.cost.states import (
    DEEPSPEED_STATES,
    MEGATRON_STATES,
    MINDSPEED_STATES,
    TORCH_FSDP_STATES,
    TrainingStates,
)
from sp_planner.specs.base import FrozenModel


class Runtime(FrozenModel):
    """A framework's run-time behaviour, as run with the flags sp-plan emits for it."""

    overlap: Overlap  # what it overlaps (cost.overlap)
    states: TrainingStates  # what it keeps per parameter (cost.states)
    cuda_graphs: frozenset[str] = NO_GRAPHS  # graphed scopes (cost.cuda_graphs); sp-plan emits none
    ring: RingImpl = YUNCHANG_RING  # how its ring attention runs backward (cost.ring_impl)
    # What its cross entropy holds at its peak, per logit and chunk (cost.loss_memory), and moves
    # through HBM per logit (cost.gemm_work).
    loss_memory: LossMemory = MEGATRON_LOSS
    loss_bytes_per_logit: int = LOSS_BYTES_PER_LOGIT
    # Its data-parallel wrapper's gradient and gathered-parameter passes (cost.grad_buffer); None:
    # not counted.
    grad_sync: GradSync | None = None
    # Tensor parallelism with sequence parallelism (Megatron --sequence-parallel, which sp-plan
    # emits with TP; torchtitan's SequenceParallel norms): the norms and residual adds split over
    # the TP ranks (cost.gemm_work, cost.memory). False: runs from before it (Megatron-LM 2021-22).
    sequence_parallel: bool = True
    # Whether its finalize_model_grads all-reduces the sequence-parallel parameters' (and QK norms')
    # gradients over TP once a step, a call of its own (cost.replicated_grads): Megatron's and
    # MindSpeed's; torchtitan's FSDP2 reduces its norms' per parameter (partial_tp_grads).
    sums_sequence_parallel_grads: bool = False
    # Whether its norms' (QK norms', MLA's down projections') gradients are Partial DTensors over TP that
    # FSDP2 all-reduces one parameter at a time in each unit's post-backward (cost.partial_tp_grads):
    # torchtitan's.
    partial_tp_grads: bool = False
    # The recipes whose TP all-gathers it moves in low precision, and whether backward gathers the
    # saved inputs again (cost.tp_gathers: regathers_saved_inputs; cost.saved_inputs): Transformer
    # Engine's quantize-then-gather and re-gather by default.
    tp_gathers: TpGathers = TE_TP_GATHERS
    # The plans whose layers it runs under torch.compile, which saves fewer activations
    # (cost.compiled_layers); eager by default.
    compiled_layers: CompiledLayers = EAGER_LAYERS
    # Whether it unpads q, k, v and pads the output around the attention kernel with nothing padded
    # (llm-foundry's attn_impl flash, cost.unpad_passes); no framework sp-plan emits for does.
    unpads_attention: bool = False
    # The MoE router's GEMM dtype (Megatron --moe-router-dtype, cost.router): None, the input's bf16
    # (Megatron-Core's default; sp-plan emits no flag), or "fp32" (TF32 gradient GEMMs and casts).
    moe_router_dtype: Literal["fp32"] | None = None
    # Who pads each local expert's rows to the FP8/MXFP8 alignment (cost.expert_padding): nobody;
    # its grouped expert MLP with whole-tensor copies (GROUPED_MLP_PADS, Megatron-Core's
    # TEGroupedMLP); or the router with extra routed rows (ROUTER_PADS,
    # --moe-router-padding-for-quantization, which sp-plan emits for dropless alltoall MoE plans,
    # flags.release_runtime; corpus rows state it, moe_router_padding).
    expert_row_padding: ExpertRowPadding = NO_PADDING


# Megatron's CP (--cp-comm-type p2p) is Transformer Engine's ring (cost.ring_impl); MindSpeed's own
# ring has its backward (bf16 dK/dV for R-1 hops, none home) but neither its half copies nor its
# bf16 merges (cost.ring_impl.MINDSPEED_RING).
# DeepSpeed and yunchang run yunchang's (ring-flash-attention); torchtitan's PyTorch CP accumulates
# in fp32 as it does (torch/distributed/tensor/experimental/_attention.py:
# _ContextParallelOptions.convert_to_f32 = True, accum_dtype of _templated_ring_attention_backward).
MEGATRON_RUNTIME = Runtime(overlap=MEGATRON_OVERLAP, states=MEGATRON_STATES, ring=TE_RING, grad_sync=MEGATRON_GRAD_SYNC,
                           expert_row_padding=GROUPED_MLP_PADS, sums_sequence_parallel_grads=True)
# Megatron-LM's training loop, DDP and optimizer, without --fp8-param-gather (cost.states).
MINDSPEED_RUNTIME = Runtime(overlap=MEGATRON_OVERLAP, states=MINDSPEED_STATES, ring=MINDSPEED_RING,
                            grad_sync=MEGATRON_GRAD_SYNC, sums_sequence_parallel_grads=True)
# MindSpeed runs Megatron-Core's cross entropy; DeepSpeed's Ulysses wraps Hugging Face models, whose
# loss is PyTorch's cross entropy on an fp32 copy, its backward beside the bf16 logits the loop keeps
# (cost.loss_memory).
DEEPSPEED_RUNTIME = Runtime(overlap=DEEPSPEED_OVERLAP, states=DEEPSPEED_STATES,
                            loss_memory=TORCH_CROSS_ENTROPY_LOSS, grad_sync=DEEPSPEED_GRAD_SYNC)
# torchtitan 0.3.x (sp-plan's default) converts to rowwise float8 or MXFP8, gathered in bf16; 0.2.x
# (--framework-version 0.2.2, whose TOML sp-plan writes with tensorwise float8) gathers FP8 through
# torchao's float8 TP styles (cost.tp_gathers), its Float8Linear under torch.compile, whose casts
# are priced as traced (cost.tp_gathers.fp8_weight_cast_bytes; flags.torchtitan_v02.compiles;
# docs/cost-model.md stop 47). Both keep the gathered inputs, the output layer's too, for the weight gradients
# (DTensor TP) and gather none again; both cast their weights every micro-batch and leave the
# routed experts bf16 (torchao's linears, cost.tp_gathers); both compile the low-precision plans' layers
# (0.2.x's MXFP8 at tp 1 only), which then save fewer activations (cost.compiled_layers). 0.3.x's loss
# runs in 8 sequence chunks, 0.2.x's on the whole logits, torch's loss_parallel under TP (cost.loss_memory).
TORCHTITAN_RUNTIME = Runtime(overlap=TORCHTITAN_OVERLAP, states=TORCH_FSDP_STATES,
                             loss_memory=TORCHTITAN_CHUNKED_LOSS, grad_sync=TORCH_FSDP2_GRAD_SYNC,
                             tp_gathers=BF16_TP_GATHERS, compiled_layers=TORCHTITAN_V03_COMPILED,
                             partial_tp_grads=True)
TORCHTITAN_V02_RUNTIME = TORCHTITAN_RUNTIME.model_copy(update={"tp_gathers": TORCHAO_TENSORWISE_TP_GATHERS,
                                                             "loss_memory": TORCHTITAN_V02_LOSS,
                                                             "compiled_layers": TORCHTITAN_V02_COMPILED})
# By torchtitan config interface (flags.torchtitan.resolve_version's keys).
TORCHTITAN_RUNTIMES: dict[str, Runtime] = {"0.3": TORCHTITAN_RUNTIME, "0.2": TORCHTITAN_V02_RUNTIME}

FRAMEWORK_RUNTIME: dict[str, Runtime] = {
    "megatron": MEGATRON_RUNTIME,
    "mindspeed": MINDSPEED_RUNTIME,
    "deepspeed": DEEPSPEED_RUNTIME,
    "torchtitan": TORCHTITAN_RUNTIME,
    # yunchang leaves data parallelism and the training loop to the caller; its note names
    # DeepSpeed, whose behaviour (the stricter overlap) is assumed.
    "yunchang": DEEPSPEED_RUNTIME,
}


def framework_runtime(framework: str, interface: str | None = None) -> Runtime:
    """The framework's runtime; "all" (sp-plan's every-framework answer) is Megatron's.
    `interface`: torchtitan's config interface, "0.3" (None, the default) or "0.2"
    (flags.torchtitan.resolve_version); the other frameworks have one."""
    if framework == "all":
        return MEGATRON_RUNTIME
    if framework not in FRAMEWORK_RUNTIME:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORK_RUNTIME)}")
    if framework == "torchtitan" and interface is not None:
        if interface not in TORCHTITAN_RUNTIMES:
            raise ValueError(f"unknown torchtitan interface {interface!r}; expected one of "
                             f"{', '.join(TORCHTITAN_RUNTIMES)}")
        return TORCHTITAN_RUNTIMES[interface]
    return FRAMEWORK_RUNTIME[framework]
