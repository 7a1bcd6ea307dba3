"""Megatron-family flags for the pipeline split, virtual stages and GEMM precision of a plan
(shared reference moe_fp8_pipeline_frameworks.md sections 1.4-1.5; Megatron-LM core_v0.16.0).

Pipeline: --num-virtual-stages-per-pipeline-rank N (works with even and uneven splits; the older
--num-layers-per-virtual-pipeline-stage is rejected with uneven stages, arguments.py:529-531);
uneven stages either as --account-for-embedding/loss-in-pipeline-split (embedding and loss each
counted as a layer, so (layers + 2) / pp per stage; the only uneven form that keeps first and
last stages a multiple of vpp when they run one layer fewer) or as --decoder-first/last-pipeline-
num-layers, or, where an explicit split's end stage does not divide by vpp, as
--pipeline-model-parallel-layout (pipeline.SPLIT_LAYOUT), which sets vpp itself. Precision:
Transformer Engine FP8 through --fp8-format / --fp8-recipe (TransformerConfig.fp8, fp8_recipe), on
top of --bf16 for everything TE does not quantize.
"""

from __future__ import annotations

import shlex
from itertools import groupby

from sp_planner.cost.fp8_params import fp8_weights_modelled
from sp_planner.flags.base import FlagRequest
from sp_planner.pipeline import split_kind
from sp_planner.pipeline_chunks import stage_chunk_sizes, virtual_stage_layers
from sp_planner.pipeline_order import micro_batch_group
from sp_planner.plan import PRECISIONS

# --fp8-format per precision: "hybrid" = E4M3 forward, E5M2 gradients (TE Format.HYBRID, the
# format NVIDIA's Megatron/NeMo FP8 recipes use); MXFP8 runs E4M3 throughout (TE MXFP8BlockScaling
# default fp8_format=E4M3). --fp8-recipe: the plan's fp8_recipe for per-tensor FP8, delayed (Megatron's
# default), tensorwise (current scaling) or blockwise (Hopper; TransformerConfig.fp8_recipe choices
# tensorwise, delayed, mxfp8, blockwise, custom at Megatron-LM d98e8a6 transformer_config.py line
# 594); mxfp8 is Blackwell-only.
FP8_FLAGS: dict[str, list[str]] = {
    "bf16": [],
    "fp8": ["--fp8-format hybrid"],
    "mxfp8": ["--fp8-format e4m3", "--fp8-recipe mxfp8"],
}


def fp8_recipe_flags(plan) -> list[str]:
    """--fp8-format and --fp8-recipe for the plan's precision and FP8 recipe. Block scaling takes
    E4M3 throughout, as NVIDIA's Megatron-LM MoE recipes run it (examples/moe_recipes
    qwen3_30b/h100/fp8_32GPU_TP1PP1EP8.yaml: fp8_recipe blockwise, fp8_format e4m3); the format
    does not change the cost."""
    if plan.precision == "fp8" and plan.fp8_recipe == "blockwise":
        return ["--fp8-format e4m3", "--fp8-recipe blockwise"]
    recipe = [f"--fp8-recipe {plan.fp8_recipe}"] if plan.precision == "fp8" else []
    return [*FP8_FLAGS[plan.precision], *recipe]


def split_form(request: FlagRequest) -> str:
    """'even', 'counted' (embedding and loss counted as layers), 'explicit' (first/last counts) or
    'layout' (first/last counts as --pipeline-model-parallel-layout; pipeline.split_kind)."""
    p = request.plan
    kind = int(split_kind(request.model.num_layers, p.pp, p.vpp, p.first_stage_layers or 0, p.last_stage_layers or 0))
    return ("even", "counted", "explicit", "layout")[kind]


def layout_string(request: FlagRequest) -> str:
    """The plan's --pipeline-model-parallel-layout: per virtual stage (pipeline_chunks.virtual_stage_layers)
    its decoder layers as t, the embedding E in the first, the model's MTP depths (one m each) and
    the loss L in the last, '|' between them; runs of like virtual stages as (...|)*n and of more
    than two layers as t*n (pipeline_parallel_layer_layout.py parse_str_to_list unrolls both), as
    Megatron-Bridge writes "Et*4|(t*4|)*14tmL", "Et*3|(t*4|)*14ttL" and "Et|(tt|)*30mL". MTP stays
    in the last virtual stage, as validate_layer_layout requires of all of its layers."""
    p, m = request.plan, request.model
    counts = virtual_stage_layers(m.num_layers, p.pp, p.vpp, p.first_stage_layers or 0, p.last_stage_layers or 0)
    stages = [("E" if v == 0 else "") + ("t" * n if n <= 2 else f"t*{n}")
              + ("m" * m.mtp_layers + "L" if v == len(counts) - 1 else "") for v, n in enumerate(counts)]
    runs = [(stage, len(list(group))) for stage, group in groupby(stages[:-1])]
    return "".join(f"({stage}|)*{k}" if k > 1 else f"{stage}|" for stage, k in runs) + stages[-1]


def pipeline_flags(request: FlagRequest, *, vpp_as_layers: bool = False) -> list[str]:
    """Virtual stages, their micro-batch group where it is not pp, and the uneven split; the plan's
    rules have already checked them. `vpp_as_layers` spells vpp as
    --num-layers-per-virtual-pipeline-stage (even splits only), the form MindSpeed-LLM documents."""
    p = request.plan
    flags = []
    form = split_form(request)
    if form == "layout":
        # Megatron refuses the layout with --decoder-first/last-pipeline-num-layers, account-for-*
        # (transformer_config.py __post_init__, "PP layout") and a second vpp flag (arguments.py
        # validate_args, "Uneven virtual pipeline parallelism"): it is the one flag.
        return [f"--pipeline-model-parallel-layout {shlex.quote(layout_string(request))}", *group_flags(request)]
    if p.vpp > 1 and vpp_as_layers:
        flags.append(f"--num-layers-per-virtual-pipeline-stage {request.model.num_layers // (p.pp * p.vpp)}")
    elif p.vpp > 1:
        flags.append(f"--num-virtual-stages-per-pipeline-rank {p.vpp}")
    flags += group_flags(request)
    if form == "counted":
        flags += ["--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"]
    elif form == "explicit":
        flags += [f"--decoder-first-pipeline-num-layers {p.first_stage_layers}",
                  f"--decoder-last-pipeline-num-layers {p.last_stage_layers}"]
    return flags


def micro_batch_group_of(request: FlagRequest) -> int:
    """The interleaved schedule's micro-batch group N the plan is priced with: the plan's own
    vpp_group (sp-plan --vpp-group), else pipeline_order.micro_batch_group's."""
    return int(micro_batch_group(request.plan.pp, request.num_micro_batches, request.plan.vpp_group))


def group_flags(request: FlagRequest) -> list[str]:
    """--microbatch-group-size-per-virtual-pipeline-stage N where N is not Megatron's default pp,
    which needs m a multiple of pp (schedules.py at d98e8a6 lines 1160-1180; the flag is
    TransformerConfig's argparse_meta, model_parallel_config.py lines 431-434)."""
    p = request.plan
    group = micro_batch_group_of(request)
    return [f"--microbatch-group-size-per-virtual-pipeline-stage {group}"] if p.vpp > 1 and group != p.pp else []


def pipeline_comment(request: FlagRequest) -> str:
    p, layers = request.plan, request.model.num_layers
    form = split_form(request)
    schedule = f"interleaved 1F1B, {p.vpp} virtual stages per rank" if p.vpp > 1 else "1F1B"
    if form == "even":
        return f"pipeline: {schedule}, {layers // p.pp} layers per stage"
    if p.pp == 2:  # no middle stage
        return (f"pipeline: {schedule}, {p.first_stage_layers} layers on the first stage, "
                f"{p.last_stage_layers} on the last")
    middle = (layers - (p.first_stage_layers or 0) - (p.last_stage_layers or 0)) // (p.pp - 2)
    return (f"pipeline: {schedule}, {p.first_stage_layers} layers on the first stage, {middle} on each "
            f"middle one, {p.last_stage_layers} on the last")


def fp8_weights(request: FlagRequest) -> bool:
    """FP8 primary weights (cost.fp8_params.fp8_weights_modelled): an FP8 or MXFP8 plan with the
    distributed optimizer, or an FP8 plan (per-tensor or block scaling) under Megatron-FSDP with sharded
    parameters (ZeRO-3 resharding after forward; keeping them is torch FSDP2, with bf16 weights)."""
    p = request.plan
    return bool(fp8_weights_modelled(PRECISIONS.index(p.precision), p.zero, p.reshard_after_forward))


def precision_flags(request: FlagRequest, *, explicit_te: bool = False, fp8_params: bool = False) -> list[str]:
    """--bf16 plus the FP8 flags; `explicit_te` adds --transformer-impl transformer_engine, which
    MindSpeed requires for FP8 (mindspeed/features_manager/megatron_basic/transformer_engine_basic.py)
    and Megatron-LM has as its default. `fp8_params` (Megatron-LM) adds --fp8-param-gather where
    the plan has the distributed optimizer or, FP8, Megatron-FSDP's sharded parameters
    (validate_args asserts one of them, arguments.py at d98e8a6 lines 1095-1097; the model's FP8
    weights, cost.fp8_params), as Megatron-Bridge's FP8 presets
    set it (v0.2.0 training/mixed_precision.py lines 218, 251, 289), and for MXFP8 with
    --reuse-grad-buf-for-mxfp8-param-ag, as bf16_with_mxfp8_mixed pairs them (line 252;
    Megatron-Bridge asserts the pair, lines 88-91; megatron-core's OptimizerConfig warns that MXFP8
    without it "will use significant amount additional GPU memory", optimizer_config.py at
    0d8e0714 lines 230-236)."""
    p = request.plan
    te = ["--transformer-impl transformer_engine"] if explicit_te and p.precision != "bf16" else []
    weights = []
    if fp8_params and fp8_weights(request):
        weights = ["--fp8-param-gather"] + (["--reuse-grad-buf-for-mxfp8-param-ag"] if p.precision == "mxfp8" else [])
    # FP8 core attention has no flag (flags.option_refusals.FP8_ATTENTION_NO_FLAG): such plans are refused.
    return ["--bf16", *te, *fp8_recipe_flags(p), *weights]


def precision_notes(request: FlagRequest, *, fp8_params: bool = False) -> list[str]:
    p = request.plan
    if p.precision == "bf16":
        return []
    if fp8_params and fp8_weights(request):
        gathered = ("in FP8, 1 byte a parameter" if p.precision == "fp8"
                    else "in bf16 through the gradient buffer, then quantized")
        # ZeRO-3 keeping the parameters (torch FSDP2) has bf16 weights (below); ZeRO-3 otherwise runs
        # Megatron-FSDP.
        gatherer = ("the distributed optimizer gathers" if p.zero != 3 else
                    "Megatron-FSDP shards and gathers unit by unit")
        comm = (f"the GEMM weights are FP8 tensors with no bf16 copy (--fp8-param-gather), which "
                f"{gatherer} {gathered}; other communication stays bf16, as planned.")
    elif fp8_params and p.zero == 3 and not p.reshard_after_forward:
        # arguments.py at d98e8a6 lines 1051-1056; cost.fp8_params.torch_fsdp2_casts.
        comm = ("torch FSDP2 (--use-torch-fsdp2) gathers the GEMM weights in bf16, 2 bytes a parameter (Megatron "
                "turns --fp8-param-gather off there from Transformer Engine 2.0), and Transformer Engine casts them "
                "to FP8 in every forward and backward; all communication stays bf16, as planned.")
    else:
        comm = "all communication stays bf16, as planned."
    attention = "attention stays bf16"
    notes = ["FP8 runs the layers' GEMMs through Transformer Engine (--transformer-impl transformer_engine, "
             f"Megatron's default); {attention}; the output layer stays bf16; {comm}"]
    if p.precision == "fp8" and p.fp8_recipe == "delayed":
        notes.append("--fp8-recipe delayed is Megatron's default; tensorwise (current scaling, planned with "
                     "--fp8-recipe tensorwise) reads each quantized tensor once more for its amax; blockwise "
                     "(Hopper, planned with --fp8-recipe blockwise) runs its GEMMs at 0.83 of per-tensor FP8's "
                     "(TE's H200 GEMM profile: 1.69x / 1.58x / 1.40x over bf16 for delayed / current / block).")
    elif p.precision == "fp8" and p.fp8_recipe == "blockwise":
        notes.append("--fp8-recipe blockwise (Hopper) scales each 1x128 block of activations and gradients and "
                     "each 128x128 block of weights, as planned: GEMMs at 0.83 of per-tensor FP8's (TE's H200 GEMM "
                     "profile); on Blackwell Transformer Engine emulates it through MXFP8: use --precision mxfp8.")
    elif p.precision == "fp8":
        notes.append("--fp8-recipe tensorwise (current scaling) takes each tensor's amax in a pass before its "
                     "cast, as planned; delayed, Megatron's default, uses the previous steps' amax instead.")
    else:
        notes.append("--fp8-recipe mxfp8 needs a Blackwell GPU and Transformer Engine >= 2.0.")
    return notes


def pipeline_notes(request: FlagRequest) -> list[str]:
    p = request.plan
    notes = []
    group = micro_batch_group_of(request)
    if p.vpp > 1 and group == p.pp:
        notes.append(f"Interleaved 1F1B needs the micro-batches per step ({request.num_micro_batches}) to be a "
                     f"multiple of pp {p.pp} (Megatron's default micro-batch group size).")
    elif p.vpp > 1:
        # A pinned N (--vpp-group) where pp would run, else the smallest N Megatron accepts.
        why = " (--vpp-group)" if request.num_micro_batches % p.pp == 0 else ", which needs a multiple of pp"
        notes.append(f"Interleaved 1F1B runs the {request.num_micro_batches} micro-batches per step in groups of "
                     f"{group}, not Megatron's default pp {p.pp}{why}: "
                     f"(vpp - 1)(N - pp) = {(p.vpp - 1) * (group - p.pp)} more chunk forwards before the first "
                     "backward, whose activations the plan holds.")
    if split_form(request) == "counted":
        notes.append("The first and last stages run one decoder layer fewer: Megatron counts the embedding "
                     "and the loss as one layer each (the Llama 3 paper's split).")
    if split_form(request) == "layout":
        # The chunks as the layout string and the cost model place them (pipeline_chunks): a stage that
        # divides by vpp splits evenly, so "every chunk a middle stage's" was not always so (Llama-3-8B,
        # pp 4 x vpp 3, 8/6: the last stage's 6 are 2, 2, 2, not 3, 3, 0).
        sizes = stage_chunk_sizes(request.model.num_layers, p.pp, p.vpp, p.first_stage_layers or 0,
                                  p.last_stage_layers or 0)
        shown = [("first", sizes[0])] + ([("middle", sizes[1])] if p.pp > 2 else []) + [("last", sizes[-1])]
        chunks = "; ".join(f"{where} {', '.join(map(str, counts))}" for where, counts in shown)
        notes.append(f"--pipeline-model-parallel-layout places the {p.first_stage_layers}/{p.last_stage_layers} "
                     f"first/last stage layers in model chunks of ({chunks}; chunk 0 first): a stage that does "
                     "not divide by vpp keeps the rest in the first stage's chunk 0 or another stage's last chunk "
                     "(Megatron-Bridge's DeepSeek-V3 layouts); it sets the virtual stages itself.")
    return notes
