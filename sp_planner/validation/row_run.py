"""How a corpus row runs in the cost model: its model (the catalog's or the corpus's own), its
pinned plan, the runtime its framework and recipe imply, the attention kernel it ran, and the
estimate (search.evaluate) that sp_planner.validation.score turns into the published figure.
"""

from __future__ import annotations



from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.attention_kernels import TRITON_PORT, with_attention_kernel
from sp_planner.cost.framework_kernels import default_kernel
from sp_planner.cost.fp8_attention import with_fp8_attention
from sp_planner.cost.grad_buffer import TORCH_FSDP1_GRAD_SYNC
from sp_planner.cost.loss_memory import (
    FLASH_ATTN_FUSED_LOSS,
    FLASH_ATTN_FUSED_LOSS_TRAFFIC_BYTES,
    MEGATRON_OUT_OF_PLACE_LOSS,
    TE_FUSED_INPLACE_LOSS,
    TE_FUSED_INPLACE_LOSS_TRAFFIC_BYTES,
)
from sp_planner.cost.module_recompute import effective_recompute
from sp_planner.cost.ring_impl import RING_IMPLS
from sp_planner.cost.expert_padding import ROUTER_PADS
from sp_planner.cost.runtime import MEGATRON_RUNTIME, TORCHTITAN_RUNTIME, TORCHTITAN_V02_RUNTIME, Runtime
from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.errors import UserInputError
from sp_planner.estimate import PlanEstimate
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload
from sp_planner.validation.corpus import Corpus
from sp_planner.validation.corpus_row import CorpusFramework, CorpusRow

def row_model(row: CorpusRow, corpus: Corpus) -> ModelSpec:
    """The row's architecture, with the multi-token prediction depths it trained and the routing,
    token dispatcher and expert GEMMs its run used (MoE models)."""
    model = corpus.models[row.model] if row.model in corpus.models else load_model(row.model)
    if row.moe_router_dtype is not None and model.moe is None:
        raise ValueError(f"row {row.id}: moe_router_dtype {row.moe_router_dtype} is an MoE router's, and "
                         f"{model.name} has no experts")
    if row.mtp_layers:
        if CORPUS_FRAMEWORK_RUNTIME.get(row.framework) != MEGATRON_RUNTIME:
            raise ValueError(f"row {row.id}: mtp_layers {row.mtp_layers} is Megatron's --mtp-num-layers, and the "
                             f"row's framework is {row.framework}")
        model = model.model_copy(update={"mtp_layers": row.mtp_layers})
    setting = row.moe_setting()
    if setting is None:
        return model
    if model.moe is None:
        raise ValueError(f"row {row.id}: {setting} needs an MoE model, and {model.name} has no experts")
    if row.moe_dispatcher != "alltoall" and CORPUS_FRAMEWORK_RUNTIME.get(row.framework) != MEGATRON_RUNTIME:
        raise ValueError(f"row {row.id}: moe_dispatcher {row.moe_dispatcher} is Megatron's flex dispatcher, and the "
                         f"row's framework is {row.framework}")
    moe = model.moe.model_copy(update={"routing": row.routing, "dispatcher": row.moe_dispatcher,
                                       "dispatcher_sms": row.hybridep_sms,
                                       "expert_gemm": row.expert_gemm})
    return model.model_copy(update={"moe": moe})


# The plan's GEMM precision for each corpus precision (fp16 runs on bf16's tensor-core peak).
PLAN_PRECISION: dict[str, str] = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "mxfp8": "mxfp8"}


def row_plan(row: CorpusRow, model: ModelSpec | None = None) -> ParallelPlan:
    """The row's plan; given its `model`, with the recompute Megatron runs under the row's CUDA graphs
    (cost.module_recompute.effective_recompute: a graphed router turns the pre-MLP norm's off)."""
    recompute = row.recompute if model is None or row.recompute is None else effective_recompute(
        model, row.recompute, frozenset(row.cuda_graph_scope), row.moe_dispatcher)
    return ParallelPlan(dp=row.dp, pp=row.pp, tp=row.tp, ulysses=row.ulysses, ring=row.ring, zero=row.zero,
                        recompute=recompute, micro_batch=row.micro_batch, ring_layout=row.ring_layout,
                        ep=row.ep, etp=row.etp or 1, vpp=row.vpp, first_stage_layers=row.first_stage_layers,
                        last_stage_layers=row.last_stage_layers, cp_comm=row.cp_comm,
                        precision=PLAN_PRECISION[row.precision], fp8_recipe=row.fp8_recipe,
                        fp8_attention=row.fp8_attention, cpu_offload_layers=row.cpu_offload_layers,
                        adam_moments_bf16=row.adam_moments_bf16)


# What each corpus framework runs with (cost.runtime). Overlap (cost.overlap): Megatron-family runs
# with their DDP/distributed-optimizer overlap, FSDP trainers with FSDP's layer-wise prefetch and
# post-backward reduce-scatter (torchtitan's FSDP2 behaviour; Composer wraps torch FSDP). Training
# states (cost.states): Megatron-family runs keep Megatron's bf16 weights, fp32 main gradients and
# fp32 master + Adam; torchtitan (FSDP2) and llm-foundry's Composer (torch FSDP1, MP mode DEFAULT:
# bf16 param_dtype, fp32 reduce_dtype) keep fp32 sharded parameters as the optimizer's, fp32
# gradients and Adam's moments.
CORPUS_FRAMEWORK_RUNTIME: dict[CorpusFramework, Runtime] = {
    "Megatron-LM": MEGATRON_RUNTIME,
    "NeMo (Megatron-Core)": MEGATRON_RUNTIME,
    "Megatron-Bridge (Megatron-Core)": MEGATRON_RUNTIME,
    # The corpus' torchtitan (9dec370, 2024-12) applies torchao's float8 TP styles to every float8
    # run (parallelisms/parallelize_llama.py lines 148-161): FP8 TP gathers, as 0.2.x's tensorwise;
    # its loss is 0.2.x's too (train.py lines 131-133 and 304-307: F.cross_entropy on an fp32 copy
    # under loss_parallel, `del pred` before the backward; cost.loss_memory).
    "torchtitan": TORCHTITAN_V02_RUNTIME,
    # llm-foundry's MPT loss is flash-attn's fused cross entropy (loss_fn 'fused_crossentropy',
    # its default; cost.loss_memory).
    # Composer wraps torch FSDP1 (cost.grad_buffer).
    "Composer FSDP": TORCHTITAN_RUNTIME.model_copy(update={"loss_memory": FLASH_ATTN_FUSED_LOSS,
                                                           "loss_bytes_per_logit": FLASH_ATTN_FUSED_LOSS_TRAFFIC_BYTES,
                                                           "grad_sync": TORCH_FSDP1_GRAD_SYNC}),
}


def row_runtime(row: CorpusRow) -> Runtime:
    """The row's framework's runtime with what its recipe changes: the parameter all-gather, the
    gradient reduction or the interleaved pipeline's sends not overlapped (cost.overlap), bf16
    gradient reduction (cost.states), TP userbuffers overlap and its configuration (cost.tp_overlap), the EP all-to-all
    overlap (cost.ep_overlap), FP8 weights (cost.fp8_params), the CUDA graph scopes it states
    (cost.cuda_graphs), the cross entropy it ran (cost.loss_memory), TP without sequence
    parallelism (cost.gemm_work, cost.memory), the MoE router's fp32 GEMMs (cost.router), the router's
    padding in place of the experts' FP8 padding copies (cost.expert_padding); its TP
    gathers are the framework's (cost.tp_gathers); the unpad and pad passes around llm-foundry's
    flash-attn kernel (CORPUS_UNPADDED_KERNELS)."""
    runtime = CORPUS_FRAMEWORK_RUNTIME[row.framework]
    overlap, states = runtime.overlap, runtime.states
    megatron_family = runtime == MEGATRON_RUNTIME
    if not row.overlap_param_gather:
        overlap = overlap.model_copy(update={"param_gather": False})
    if not row.overlap_grad_reduce:
        overlap = overlap.model_copy(update={"grad_all_reduce": False, "grad_reduce": False})
    if not row.overlap_p2p_comm:
        overlap = overlap.model_copy(update={"pp_p2p": False})
    if not row.grad_reduce_in_fp32:
        if not megatron_family:
            raise ValueError(f"row {row.id}: grad_reduce_in_fp32 false is a Megatron setting, and the row's "
                             f"framework is {row.framework}")
        states = states.model_copy(update={"grad_bytes": BF16_BYTES})
    if not row.sequence_parallel and not megatron_family:
        raise ValueError(f"row {row.id}: sequence_parallel false describes a Megatron-family run's tensor "
                         f"parallelism, and the row's framework is {row.framework}")
    if row.tp_comm_overlap:
        if not megatron_family or row.tp == 1 or not row.sequence_parallel:
            raise ValueError(f"row {row.id}: tp_comm_overlap is Megatron's TP userbuffers overlap, which needs "
                             f"a Megatron-family framework, TP > 1 and sequence parallelism")
        cfg = {"tp_comm_cfg": row.tp_comm_overlap_cfg} if row.tp_comm_overlap_cfg is not None else {}
        overlap = overlap.model_copy(update={"tp_comm": True, **cfg})
    if row.ep_comm_overlap:
        if not megatron_family or row.ep == 1 or (row.pp > 1 and row.vpp == 1) or row.recompute == "full":
            raise ValueError(f"row {row.id}: ep_comm_overlap is Megatron's --overlap-moe-expert-parallel-comm, "
                             "timed for a Megatron-family run with EP > 1, interleaving where pp > 1, and no "
                             "full recompute (cost.ep_overlap)")
        overlap = overlap.model_copy(update={"ep_comm": True})
    if row.cpu_offload_layers and not megatron_family:
        raise ValueError(f"row {row.id}: cpu_offload_layers is Megatron's --cpu-offloading-num-layers, and the "
                         f"row's framework is {row.framework}")
    if row.fp8_param_gather and not megatron_family:
        raise ValueError(f"row {row.id}: fp8_param_gather is Megatron's --fp8-param-gather, and the row's "
                         f"framework is {row.framework}")
    sync = runtime.grad_sync
    megatron_ddp = sync is not None and sync.wrapper == "megatron"
    if (not row.check_for_nan_in_grad or row.average_in_collective or row.grad_wrapper) and not megatron_ddp:
        raise ValueError(f"row {row.id}: check_for_nan_in_grad, average_in_collective and grad_wrapper describe a "
                         f"Megatron-family run's DDP, and the row's framework is {row.framework}")
    if sync is not None and megatron_ddp:
        sync = sync.model_copy(update={
            "check_for_nan_in_grad": row.check_for_nan_in_grad, "average_in_collective": row.average_in_collective,
            "fp16_grad_scaler": row.precision == "fp16",  # Megatron's fp16 optimizer (cost.grad_buffer)
            # torch DDP's own passes are not modelled (cost.grad_buffer)
            "wrapper": {"apex": "apex", "torch-ddp": "uncounted"}.get(row.grad_wrapper or "", "megatron")})
    # FP8 weights only where the recipe states them (cost.fp8_params; sp-plan's Megatron runs them).
    states = states.model_copy(update={"fp8_param_gather": row.fp8_param_gather})
    if row.adam_moments_bf16 and not megatron_family:  # the plan carries it (row_plan; cost.states)
        raise ValueError(f"row {row.id}: adam_moments_bf16 is Megatron's precision-aware optimizer, and the "
                         f"row's framework is {row.framework}")
    ring = RING_IMPLS[row.ring_impl] if row.ring_impl is not None else runtime.ring
    loss_memory, loss_bytes = runtime.loss_memory, runtime.loss_bytes_per_logit
    if (row.megatron_ce_out_of_place or row.te_fused_cross_entropy) and not megatron_family:
        raise ValueError(f"row {row.id}: megatron_ce_out_of_place and te_fused_cross_entropy are Megatron "
                         f"settings, and the row's framework is {row.framework}")
    if row.megatron_ce_out_of_place and row.te_fused_cross_entropy:
        raise ValueError(f"row {row.id}: megatron_ce_out_of_place is Megatron's own cross entropy, "
                         "te_fused_cross_entropy Transformer Engine's; state one")
    if row.megatron_ce_out_of_place:
        loss_memory = MEGATRON_OUT_OF_PLACE_LOSS
    if row.te_fused_cross_entropy:
        loss_memory, loss_bytes = TE_FUSED_INPLACE_LOSS, TE_FUSED_INPLACE_LOSS_TRAFFIC_BYTES
    unpads = row.attention_kernel in CORPUS_UNPADDED_KERNELS.get(row.framework, frozenset())
    if row.moe_router_dtype is not None and not megatron_family:
        raise ValueError(f"row {row.id}: moe_router_dtype is Megatron's --moe-router-dtype, and the row's "
                         f"framework is {row.framework}")
    if row.moe_router_padding and not megatron_family:
        raise ValueError(f"row {row.id}: moe_router_padding is Megatron's --moe-router-padding-for-quantization, "
                         f"and the row's framework is {row.framework}")
    return Runtime(overlap=overlap, states=states, cuda_graphs=frozenset(row.cuda_graph_scope), ring=ring,
                   loss_memory=loss_memory, loss_bytes_per_logit=loss_bytes, grad_sync=sync,
                   sequence_parallel=row.sequence_parallel,
                   sums_sequence_parallel_grads=runtime.sums_sequence_parallel_grads,
                   partial_tp_grads=runtime.partial_tp_grads, tp_gathers=runtime.tp_gathers,
                   unpads_attention=unpads, moe_router_dtype=row.moe_router_dtype,
                   expert_row_padding=ROUTER_PADS if row.moe_router_padding else runtime.expert_row_padding)


# The attention kernel each corpus framework ran (cost.attention_kernels): Megatron-family and
# torchtitan by sp-plan's framework defaults. llm-foundry's MPT runs used flash-attn 2 (rows with
# attention_kernel fa2) or, by default, its copy of flash-attn's Triton FlashAttention (attn_impl
# triton), timed at FlashAttention v1's measured speed (validation/corpus/mosaic_mpt_h100.yaml header).
CORPUS_FRAMEWORK_KERNEL: dict[CorpusFramework, str] = {
    "Megatron-LM": "megatron", "NeMo (Megatron-Core)": "megatron", "Megatron-Bridge (Megatron-Core)": "megatron",
    "torchtitan": "torchtitan",
}
CORPUS_KERNEL: dict[CorpusFramework, str] = {"Composer FSDP": TRITON_PORT}
# The stated kernels each corpus framework runs behind unpad and pad passes (cost.unpad_passes):
# llm-foundry's attn_impl flash, the rows with attention_kernel fa2 (flash-attn 2.4.2's varlen
# kernel through flash_attn_fn, 5e85bd6 attention.py lines 216-370); its Triton port does not.
CORPUS_UNPADDED_KERNELS: dict[CorpusFramework, frozenset[str]] = {"Composer FSDP": frozenset({"fa2"})}


def row_hardware(row: CorpusRow) -> HardwareProfile:
    """The row's profile with the attention kernel its framework ran, in FP8 where the row says
    so (cost.fp8_attention)."""
    hardware = _row_kernel(row, load_hardware(row.hardware))
    return with_fp8_attention(hardware) if row.fp8_attention else hardware


def _row_kernel(row: CorpusRow, hardware: HardwareProfile) -> HardwareProfile:
    if row.attention_kernel is not None:
        return with_attention_kernel(hardware, row.attention_kernel)
    if row.framework in CORPUS_KERNEL:
        return with_attention_kernel(hardware, CORPUS_KERNEL[row.framework])
    return with_attention_kernel(hardware, default_kernel(CORPUS_FRAMEWORK_KERNEL[row.framework], hardware))


def row_workload(row: CorpusRow) -> Workload:
    """The row's sequence length and global batch, causal (every corpus run trains a decoder)."""
    return Workload(seq_len=row.seq_len, global_batch=row.global_batch, causal=True)


def predict_row(row: CorpusRow, corpus: Corpus) -> PlanEstimate:
    """The cost model's estimate of the row's pinned plan (search.evaluate), run as its framework
    and recipe run it (row_runtime)."""
    model = row_model(row, corpus)
    return evaluate(model, row_hardware(row), row_workload(row), row_plan(row, model),
                    num_nodes=row.num_nodes, gpus_per_node=row.gpus_per_node, runtime=row_runtime(row))


def check_rows(corpus: Corpus) -> None:
    """Refuse (UserInputError, one line) a row whose settings its model or framework cannot run
    (row_model's and row_runtime's ValueErrors), before any row is scored: a corpus of the user's
    own gets the message, not a traceback half-way through the scoring."""
    for row in (r for r in corpus.rows if r.scored):
        try:
            row_model(row, corpus), row_hardware(row), row_plan(row), row_runtime(row)
        except ValueError as err:  # pydantic's ValidationError is one
            message = " ".join(str(err).split())
            raise UserInputError(f"corpus {message}" if message.startswith(f"row {row.id}")
                                 else f"corpus row {row.id}: {message}") from None
