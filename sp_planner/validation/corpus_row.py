"""One row of the validation corpus and its source: every degree of a published run, what its
figure means (which quantity, and for FLOP-based figures which FLOP convention), and whether the
cost model can express it (sp_planner.validation.corpus reads the files).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sp_planner.cost.attention_kernels import ATTENTION_KERNELS, CORPUS_ONLY_KERNELS
from sp_planner.cost.cuda_graphs import FULL_ITERATION, GRAPH_SCOPES
from sp_planner.cost.fp8_params import fp8_weights_modelled
from sp_planner.cost.tp_overlap_cfg import UbConfigName
from sp_planner.plan import PRECISIONS, CpComm, Fp8Recipe, Recompute, RingLayout, offload_problem
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.moe import MoEDispatcher, MoEExpertGemm, MoERouting

# What the published number is. mfu_percent is model FLOPs over the source's stated peak.
Figure = Literal["model_tflops_per_gpu", "mfu_percent", "tokens_per_s_per_gpu", "step_time_s"]
FLOP_FIGURES: frozenset[str] = frozenset({"model_tflops_per_gpu", "mfu_percent"})
# Which FLOPs a FLOP-based figure counts:
#   megatron_full_square: 6 x params x tokens plus attention over the full s x s square, no
#     recompute (Narayanan et al. 2021 eq. 3 without the recompute pass; Korthikanti et al. 2022
#     "model FLOPs"; Megatron-LM num_floating_point_operations before 8873b55d, 2025-03-06, i.e.
#     core_v0.11 and earlier); the cost model's model_tflops_per_gpu.
#   causal_model: the same with attention over the causal half only, no recompute (Megatron-LM
#     from 8873b55d, core_v0.12.0; Megatron-Bridge).
#   megatron_2021_recompute: Narayanan et al. 2021 (arXiv 2104.04473) eq. 3, 96 B s l h^2
#     (1 + s/(6h) + V/(16lh)): the full-square count plus the forward that full recompute
#     repeats (the logits not repeated); flop_conventions.megatron_2021_flops_per_step.
#   usp_v5: the USP paper's arXiv v5 count, causal attention without the K and V projections
#     (flop_conventions.usp_v5_flops_per_step).
#   not_stated: the source does not say (such rows cannot be scored).
#   none: the figure is not FLOP-based (step time, tokens/s).
Convention = Literal["megatron_full_square", "causal_model", "megatron_2021_recompute", "usp_v5", "not_stated",
                     "none"]
# The trainer that ran the row: each has its runtime (validation.row_run CORPUS_FRAMEWORK_RUNTIME)
# and attention kernel; a name without them cannot be scored, so the file is refused on loading.
CorpusFramework = Literal["Megatron-LM", "NeMo (Megatron-Core)", "Megatron-Bridge (Megatron-Core)", "torchtitan",
                          "Composer FSDP"]
# fp8: per-tensor FP8 GEMMs (Transformer Engine delayed or current scaling, torchao Float8);
# mxfp8: MXFP8 block-scaled GEMMs (Blackwell).
Precision = Literal["bf16", "fp16", "fp8", "mxfp8"]
# fp16 mixed precision scores as bf16: the same tensor-core peak on A100/H100 and the same
# 2-byte activations and 16 bytes/param of weights, gradients and Adam state.
EXPRESSIBLE_PRECISIONS: frozenset[str] = frozenset({"bf16", "fp16", "fp8", "mxfp8"})


class Source(FrozenModel):
    id: str = Field(min_length=1, max_length=10, pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = Field(min_length=1)
    where: str = Field(min_length=1, description="table/figure/section holding the figures")
    url: str = Field(min_length=1)
    read_from: str = Field(min_length=1, description="the document the figures were transcribed from")
    setup: str = Field(min_length=1, description="what the source states about the runs")


class CorpusRow(FrozenModel):
    # Lengths keep sp-validate's table within 80 columns.
    id: str = Field(min_length=1, max_length=22, pattern=r"^[a-z0-9][a-z0-9.-]*$")
    source: str
    table: str = Field(min_length=1, description="where in the source: table and row")
    model: str
    hardware: str
    num_nodes: int = Field(gt=0)
    gpus_per_node: int = Field(gt=0)
    tp: int = Field(ge=1)
    pp: int = Field(ge=1)
    dp: int = Field(ge=1)
    ulysses: int = Field(ge=1)
    ring: int = Field(ge=1)
    ring_layout: RingLayout = "zigzag"
    # None: the source does not state it (only allowed on rows that are not scored).
    zero: int | None = Field(default=None, ge=0, le=3)
    recompute: Recompute | None = None
    micro_batch: int | None = Field(default=None, ge=1)
    global_batch: int = Field(gt=0, description="sequences per optimizer step")
    seq_len: int = Field(gt=0)
    precision: Precision
    framework: CorpusFramework
    figure: Figure
    convention: Convention
    peak_tflops: float | None = Field(default=None, gt=0, description="the peak an MFU figure divides by")
    measured: float = Field(gt=0)
    expressible: bool = True
    reason: str | None = None
    # The maintainers' filing that this measurement is a performance regression (issue or pull
    # request, with what it says and how it matches the row): the row is kept but not scored.
    regression: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1, max_length=28)
    notes: str | None = None
    # Expert parallelism (MoE runs): ep, and etp when the source states it (None: not stated).
    ep: int = Field(default=1, ge=1)
    etp: int | None = Field(default=1, ge=1)
    # Interleaved pipeline: virtual stages per rank; uneven splits as Megatron states them.
    vpp: int = Field(default=1, ge=1)
    first_stage_layers: int | None = Field(default=None, ge=1)
    last_stage_layers: int | None = Field(default=None, ge=1)
    cp_comm: CpComm = "p2p"
    # The attention kernel the run used where it is not its framework's default today
    # (cost.attention_kernels; "unfused" for Megatron-LM before FlashAttention,
    # "flash-attn-triton" for llm-foundry's Triton FlashAttention).
    attention_kernel: str | None = Field(default=None, min_length=1)
    # Settings the source leaves unstated and the row takes from the framework's documented
    # defaults for that recipe: which fields, and the file (with commit) that states them.
    assumed: str | None = Field(default=None, min_length=1)
    # MoE routing load (MoESpec.routing): "balanced" for benchmarks that force-balance the router
    # (Megatron moe_router_force_load_balancing), else the learned router's assumed imbalance.
    routing: MoERouting = "learned"
    # False where the run's recipe turns Megatron's --overlap-param-gather off (cost.overlap).
    overlap_param_gather: bool = True
    # False where the run reduces gradients only after the whole backward (Megatron-LM 2021's
    # local DDP: allreduce_gradients() after forward_backward_func), not bucket by bucket during it.
    overlap_grad_reduce: bool = True
    # False where an interleaved run's pipeline sends block (cost.overlap.Overlap.pp_p2p): Megatron-
    # LM before overlap_p2p_comm became its default (4eeff55d1f, 2023-10-23; the option itself came
    # in f9283c5a8a, 2023-05-31), or NeMo 1.x, whose model config defaults it off.
    overlap_p2p_comm: bool = True
    # False where the run's recipe reduces gradients in bf16 (Megatron DDP grad_reduce_in_fp32
    # False): bf16 main gradients, 2 B a parameter instead of cost.states' fp32 4, in memory and in
    # the data-parallel reductions. Megatron-family rows only.
    grad_reduce_in_fp32: bool = True
    # Megatron DDP's gradient passes (cost.grad_buffer): False where the run's recipe turns the
    # NaN check of the gradient buckets off (Megatron-LM --no-check-for-nan-in-loss-and-grad,
    # DistributedDataParallelConfig.check_for_nan_in_grad False); True where it averages in the
    # collective instead of scaling the buffer (--ddp-average-in-collective). Megatron-family only.
    check_for_nan_in_grad: bool = True
    average_in_collective: bool = False
    # The run's gradients go through another wrapper than its framework's (cost.grad_buffer):
    # "apex" for NeMo 1.x's Apex DistributedFusedAdam, "torch-ddp" for Megatron-LM 2021's
    # --DDP-impl torch (its passes are not counted; an fp16 run's optimizer passes still are).
    grad_wrapper: Literal["apex", "torch-ddp"] | None = None
    # True where the run's recipe turns on Megatron's --tp-comm-overlap (Transformer Engine
    # userbuffers; Megatron-Bridge CommOverlapConfig(tp_comm_overlap=True)): the TP collectives
    # hide behind their GEMMs (cost.tp_overlap). Megatron-family rows with TP > 1 only.
    tp_comm_overlap: bool = False
    # The userbuffers configuration a tp_comm_overlap row's recipe passes Transformer Engine by name
    # (Megatron-Bridge training/comm_overlap.py userbuffers_*, NeMo-Framework-Launcher
    # tp_overlap/ub_cfg_*.yaml; cost.tp_overlap_cfg), or te_1.8_default where a recipe without one ran
    # a Transformer Engine up to v1.8 (its own defaults: no SM margin); None: TE 2.x's defaults.
    tp_comm_overlap_cfg: UbConfigName | None = None
    # False where the run's TP ran without Megatron's sequence parallelism (Megatron-LM before
    # --sequence-parallel, 2021-22: tensor-parallel all-reduces, norms and dropouts on every TP
    # rank; Runtime.sequence_parallel, cost.gemm_work, cost.memory). Megatron-family rows only.
    sequence_parallel: bool = True
    # True where the run's recipe turns on Megatron's --overlap-moe-expert-parallel-comm
    # (Megatron-Bridge comm_overlap.overlap_moe_expert_parallel_comm / moe_a2a_overlap): the MoE
    # dispatch/combine run beside another micro-batch's compute (cost.ep_overlap). Megatron-family
    # MoE rows with EP > 1, no full recompute, and interleaving where pp > 1 (Megatron's checks).
    ep_comm_overlap: bool = False
    # True where the run's Megatron subtracts the logits' max out of place in its cross entropy
    # (Megatron between 55817ec, 2022-09-27, and 9634c0e, 2024-06-13): 10 bytes per logit at the
    # loss instead of 6 (cost.loss_memory). Megatron-family rows only.
    megatron_ce_out_of_place: bool = False
    # True where the run's recipe fuses the loss with Transformer Engine before v2.18 (Megatron
    # --cross-entropy-loss-fusion --cross-entropy-fusion-impl te; Megatron-Bridge's performance
    # scripts from v0.2.0): the gradient written into the bf16 logits, 2 bytes a logit and 10 of
    # traffic (cost.loss_memory). Megatron-family rows only.
    te_fused_cross_entropy: bool = False
    # True where the run's recipe turns on Megatron's --fp8-param-gather (Megatron-Bridge
    # MixedPrecisionConfig.fp8_param_gather, NeMo fp8_params): the GEMM weights are Transformer
    # Engine FP8 tensors, gathered in FP8 by the distributed optimizer (cost.fp8_params).
    # Megatron-family FP8/MXFP8 rows with zero 1 only (Megatron-FSDP's FP8 weights are not modelled).
    fp8_param_gather: bool = False
    # How the run's per-tensor FP8 sets its scales (plan.fp8_recipe): delayed (Megatron's default
    # and NeMo 2's) or tensorwise (current scaling: Megatron --fp8-recipe tensorwise, Megatron-Bridge
    # FP8-CS, torchao float8 tensorwise). fp8 rows only.
    fp8_recipe: Fp8Recipe = "delayed"
    # True where the run's recipe turns on FP8 core attention (Megatron-Bridge
    # MixedPrecisionConfig.fp8_dot_product_attention; Megatron-LM has no flag for it; cost.fp8_attention). FP8 and
    # MXFP8 rows on the Blackwell profiles with a cuDNN FP8 SDPA curve only.
    fp8_attention: bool = False
    # True where the run's recipe keeps Adam's moments in bf16 (Megatron
    # --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16, fp32 master
    # parameters and main gradients): 4 + 2 + 2 optimizer bytes a parameter instead of 12, and its
    # step passes over them (cost.states). Megatron-family rows only.
    adam_moments_bf16: bool = False
    # Layers whose activations the run's recipe offloads to host memory (Megatron
    # --cpu-offloading-num-layers, Megatron-Bridge cpu_offloading_num_layers; cost.offload). pp 1,
    # no recompute (ParallelPlan), Megatron-family rows on a profile with a measured host link.
    cpu_offload_layers: int = Field(default=0, ge=0)
    # The CUDA graph scopes the run's recipe sets (Megatron cuda_graph_scope, or full_iteration;
    # cost.cuda_graphs); empty: eager, as sp-plan assumes.
    cuda_graph_scope: tuple[str, ...] = ()
    # Megatron's MoE token dispatcher the recipe runs (specs.moe MoESpec.dispatcher, cost.moe):
    # alltoall, or the flex dispatcher's HybridEP or DeepEP backend (--moe-token-dispatcher-type flex,
    # --moe-flex-dispatcher-backend hybridep / deepep). MoE rows of the Megatron family only.
    moe_dispatcher: MoEDispatcher = "alltoall"
    # The SMs the recipe gives HybridEP (moe_hybridep_num_sms / moe_flex_dispatcher_num_sms;
    # MoESpec.dispatcher_sms, cost.hybridep); None: HybridEP's default. hybridep rows only.
    hybridep_sms: int | None = Field(default=None, gt=0, le=1024)
    # Multi-token prediction depths the run trained (Megatron --mtp-num-layers; ModelSpec.mtp_layers,
    # cost.mtp): 0, Megatron's default, where the recipe sets none.
    mtp_layers: int = Field(default=0, ge=0, le=64)
    # How the run launched the expert GEMMs (MoESpec.expert_gemm, cost.gemm_shapes): per_expert
    # (Megatron-Core's TEGroupedMLP on Transformer Engine's GroupedLinear, the default) or grouped
    # (one kernel for every expert: the recipe's fused grouped MLP, or torch._grouped_mm). MoE rows.
    expert_gemm: MoEExpertGemm = "per_expert"
    # The ring attention the run used where it is not its framework's (cost.ring_impl): the USP
    # paper's runs put yunchang's ring inside Megatron-LM; containers with Transformer Engine up
    # to v1.9 copy the zigzag halves (transformer_engine_1.9). None: the framework's.
    ring_impl: Literal["yunchang", "transformer_engine", "transformer_engine_1.9"] | None = None
    # The MoE router's GEMM dtype the recipe sets (Megatron --moe-router-dtype,
    # TransformerConfig.moe_router_dtype; cost.router): "fp32" runs the router's gradient GEMMs on
    # TF32 tensor cores with fp32 casts; None: Megatron-Core's default (the input's bf16).
    # Megatron-family MoE rows only.
    moe_router_dtype: Literal["fp32"] | None = None
    # The recipe sets --moe-router-padding-for-quantization (TransformerConfig
    # moe_router_padding_for_quantization, alias moe_router_padding_for_fp8): the router pads each
    # expert's count, so TEGroupedMLP's FP8 padding copies nothing (cost.expert_padding). False:
    # Megatron-Core's default. Megatron-family rows only.
    moe_router_padding: bool = False

    def moe_setting(self) -> str | None:
        """The first MoE run setting the row states beyond the defaults (routing learned, the
        alltoall dispatcher, per-expert GEMMs), as the row writes it; None where it states none."""
        if self.routing != "learned":
            return f"routing {self.routing}"
        if self.moe_dispatcher != "alltoall":
            return f"moe_dispatcher {self.moe_dispatcher}"
        if self.expert_gemm != "per_expert":
            return f"expert_gemm {self.expert_gemm}"
        return None

    @model_validator(mode="after")
    def _check(self) -> "CorpusRow":
        degrees = self.tp * self.pp * self.dp * self.ulysses * self.ring
        if degrees != self.num_nodes * self.gpus_per_node:
            raise ValueError(
                f"tp*pp*dp*ulysses*ring = {degrees} but num_nodes*gpus_per_node = "
                f"{self.num_nodes * self.gpus_per_node}"
            )
        kernels = (*ATTENTION_KERNELS, *CORPUS_ONLY_KERNELS)
        if self.attention_kernel is not None and self.attention_kernel not in kernels:
            # Checked here, where the file and row are named, not first when the row is scored.
            raise ValueError(f"attention_kernel {self.attention_kernel!r} is not one of "
                             f"{', '.join(kernels)}")
        unknown = sorted(set(self.cuda_graph_scope) - set(GRAPH_SCOPES))
        if unknown:
            raise ValueError(f"cuda_graph_scope {', '.join(unknown)} is not one of {', '.join(GRAPH_SCOPES)}")
        if self.cuda_graph_scope and FULL_ITERATION not in self.cuda_graph_scope and self.recompute == "full":
            # Megatron-Core core_v0.15.0 (0d7e02bd) transformer_config.py __post_init__, lines 1397-1403:
            # with cuda_graph_impl set, any recompute_granularity but selective (with the attn scope)
            # raises "CUDA graphs not supported with activation recomputation."
            raise ValueError("per-layer CUDA graphs do not run with full recompute (only full_iteration does)")
        # Corpus rows reshard after forward (ZeRO-3 is Megatron-FSDP's; they name no torch FSDP2).
        if self.fp8_param_gather and not fp8_weights_modelled(PRECISIONS.index(self.precision), self.zero, True):
            # Megatron-LM validate_args asserts the distributed optimizer or an FSDP for the flag;
            # cost.fp8_params models it with the distributed optimizer and Megatron-FSDP's shards.
            raise ValueError(f"fp8_param_gather needs precision fp8 or mxfp8 with zero 1 (the distributed "
                             f"optimizer) or fp8 with zero 3 (Megatron-FSDP), not {self.precision} with zero "
                             f"{self.zero}")
        offload = offload_problem(self.cpu_offload_layers, self.pp, self.recompute)
        if offload:  # checked here, where the file and row are named, not first when the row is scored
            raise ValueError(offload)
        if self.tp_comm_overlap_cfg is not None and not self.tp_comm_overlap:
            raise ValueError(f"tp_comm_overlap_cfg {self.tp_comm_overlap_cfg} names a userbuffers configuration, "
                             "which only a tp_comm_overlap row runs")
        if self.fp8_attention and self.precision not in ("fp8", "mxfp8"):
            raise ValueError(f"fp8_attention needs precision fp8 or mxfp8, not {self.precision}")
        if self.fp8_recipe != "delayed" and self.precision != "fp8":
            raise ValueError(f"fp8_recipe {self.fp8_recipe} is for precision fp8 rows, not {self.precision}")
        if (self.figure in FLOP_FIGURES) == (self.convention == "none"):
            raise ValueError(f"figure {self.figure} with convention {self.convention}: FLOP-based figures "
                             "name their FLOP convention, others use 'none'")
        if (self.figure == "mfu_percent") != (self.peak_tflops is not None):
            raise ValueError("peak_tflops is required for mfu_percent figures and only for them")
        if not self.expressible:
            if not self.reason:
                raise ValueError("a row with expressible: false needs a reason")
            if self.regression is not None:
                raise ValueError("regression is for expressible rows (a row not expressible is skipped anyway)")
            return self
        if self.reason is not None:
            raise ValueError("reason is only for rows with expressible: false")
        missing = [name for name in ("zero", "recompute", "micro_batch", "etp") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not stated: mark the row expressible: false")
        if self.precision not in EXPRESSIBLE_PRECISIONS:
            raise ValueError(f"precision {self.precision} cannot be scored: mark the row expressible: false")
        if self.convention == "not_stated":
            raise ValueError("the FLOP convention is not stated: mark the row expressible: false")
        return self

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def scored(self) -> bool:
        """Whether sp-validate predicts the row (not one it cannot express, nor a filed regression)."""
        return self.expressible and self.regression is None
