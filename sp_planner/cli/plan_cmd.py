"""`sp-plan`: rank parallel plans for one model, sequence length and cluster, and print the flags.

Exit codes: 0 a plan that fits; 1 no plan fits, an all-pinned one included (the closest plan and
checked fixes are shown, no plan file is written), or none that fits can be expressed in the chosen
--framework (its reason is shown, no plan file is written); 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

# Only what the options declare is imported here: --help and the parser's errors need nothing else.
# The command loads the planner (pandas, numpy, the cost model: most of a second) when it runs.
from sp_planner.choices import (MAX_DEGREE, AttentionKernel, CpComm, Fp8Recipe, Launcher, Precision, Recompute,
                                Framework as FrameworkName)
from sp_planner.cli.common import MAX_TOP, file_name, folder_name, run_app
from sp_planner.errors import UserInputError
from sp_planner.specs.hardware_limits import MAX_GPUS_PER_NODE
from sp_planner.specs.model_limits import MAX_LAYERS as MAX_MTP_LAYERS
from sp_planner.specs.attention import IndexerLossChoice
from sp_planner.specs.moe import MoEDispatcher, MoERouting
from sp_planner.specs.workload import MAX_GLOBAL_BATCH
from sp_planner.cli.help_format import PlainHelpCommand

EXIT_NO_FIT = 1

EPILOG = """\
Examples:

  sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k

  sp-plan --model ./config.json --hardware ./my_cluster.yaml --nodes 4 --seq-len 1M --framework all --launcher slurm

  sp-plan --model llama3-70b --hardware h100 --nodes 8 --seq-len 256k --tp 4 --ulysses 2 --ring 8 --explain

  sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k --format json --out plan.json

  sp-plan --model llama3-8b --hardware h100 --nodes 4 --seq-len 256k --simulate 5

  sp-plan --model llama3-70b --hardware h100 --nodes 16 --seq-len 128k --ring 8 --cp-comm allgather --zero 2

Exit codes: 0 answer, 1 no plan fits or none the chosen --framework can express (the closest plan
and verified fixes, or the framework's reason, are shown), 2 bad input.
"""


# The choices are the specs' own Literals (typer >= 0.19 takes a Literal as a set of choices).
OutputFormat = Literal["table", "json", "csv"]
FrameworkChoice = Literal[FrameworkName, "all"]


PrecisionChoice = Literal[Precision, "auto"]


app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


MAX_NODES = 2**20  # as plan.MAX_DEGREE: far above any cluster, exact in int64 counts


def _pin(what: str, *, min: int = 1, max: int = MAX_DEGREE) -> typer.models.OptionInfo:  # noqa: A002 - typer's names
    return typer.Option(min=min, max=max, show_default=False, help=f"Pin the {what}.")


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def plan(
    *,
    model: Annotated[str, typer.Option(help="Built-in model name or a Hugging Face config.json.")],
    hardware: Annotated[str, typer.Option(help="Built-in hardware name or a profile .yaml.")],
    nodes: Annotated[int, typer.Option(min=1, max=MAX_NODES, help="Number of nodes.")],
    seq_len: Annotated[str, typer.Option(help="Tokens per sequence: 131072, 128k, 1M (k, M = 1024, 1024^2).")],
    gpus_per_node: Annotated[
        Optional[int], typer.Option(min=1, max=MAX_GPUS_PER_NODE, show_default="the profile's", help="GPUs per node.")
    ] = None,
    global_batch: Annotated[
        Optional[int],
        typer.Option(min=1, max=MAX_GLOBAL_BATCH,
                     show_default="4M tokens per step (Llama 3), rounded so dp divides it",
                     help="Sequences per optimizer step."),
    ] = None,
    micro_batch: Annotated[Optional[int], _pin("micro batch", max=MAX_GLOBAL_BATCH)] = None,
    tp: Annotated[Optional[int], _pin("tensor-parallel degree")] = None,
    pp: Annotated[Optional[int], _pin("pipeline degree")] = None,
    dp: Annotated[Optional[int], _pin("data-parallel degree")] = None,
    ulysses: Annotated[Optional[int], _pin("Ulysses degree")] = None,
    ring: Annotated[Optional[int], _pin("ring degree")] = None,
    ep: Annotated[Optional[int], _pin("expert-parallel degree (MoE)")] = None,
    etp: Annotated[Optional[int], _pin("expert tensor-parallel degree (MoE)")] = None,
    moe_capacity_factor: Annotated[Optional[float], typer.Option(
        show_default="dropless", help="MoE: cap each expert at this factor x its mean tokens and drop the "
        "rest (Megatron --moe-expert-capacity-factor).")] = None,
    moe_pad_to_capacity: Annotated[bool, typer.Option(
        "--moe-pad-to-capacity", help="MoE: pad every expert to its capacity (Megatron "
        "--moe-pad-expert-input-to-capacity; needs --moe-capacity-factor).")] = False,
    moe_routing: Annotated[MoERouting, typer.Option(
        help="MoE: learned (the router's own choices; the busiest expert-parallel rank assumed at 1.25x "
        "the mean) or balanced (forced even for benchmarking: Megatron --moe-router-force-load-balancing).")
    ] = "learned",
    moe_dispatcher: Annotated[MoEDispatcher, typer.Option(
        help="MoE: Megatron's token dispatcher, alltoall (with fused permutations), hybridep (the flex "
        "dispatcher's HybridEP backend, which permutes inside its own kernels) or deepep (its DeepEP backend: "
        "Hopper and 8-GPU Blackwell nodes); hybridep and deepep megatron only).")
    ] = "alltoall",
    first_stage_layers: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_MTP_LAYERS, show_default=False, help="Pin the decoder layers on the first pipeline stage "
        "(with --last-stage-layers and --pp; Megatron --decoder-first-pipeline-num-layers, or with --vpp a "
        "--pipeline-model-parallel-layout where a stage does not divide by vpp).")] = None,
    last_stage_layers: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_MTP_LAYERS, show_default=False, help="Pin the decoder layers on the last pipeline stage "
        "(with --first-stage-layers and --pp; e.g. DeepSeek-V3 with --mtp-layers 1 over --pp 16: 4 and 1).")] = None,
    mtp_layers: Annotated[int, typer.Option(
        min=0, max=MAX_MTP_LAYERS, help="Multi-token prediction depths to train with the model, on the last "
        "pipeline stage (Megatron --mtp-num-layers; DeepSeek-V3's recipes train 1; megatron or mindspeed).")] = 0,
    dsa_indexer_loss: Annotated[IndexerLossChoice, typer.Option(
        help="DSA models: train the indexer with its sparse KL loss (sparse, DeepSeek-V3.2's sparse "
        "stage) or not (none, Megatron's default); dense has no tilelang kernel.")] = "none",
    zero: Annotated[Optional[int], _pin("ZeRO stage", min=0, max=3)] = None,
    recompute: Annotated[Optional[Recompute], typer.Option(show_default=False, metavar="<choice>", help=(
        "Pin activation recompute: none, selective (core attention), full, mla_up_proj (MLA models: Megatron's "
        "--recompute-modules mla_up_proj), moe_act or moe_act+layernorm (MoE models: --recompute-modules moe_act "
        "[layernorm]), mlp (models with dense layers: --recompute-modules mlp) or mla_up_proj+mlp (MLA models with "
        "dense layers)."))] = None,
    cp_comm: Annotated[Optional[CpComm], typer.Option(
        show_default=False, help="Pin how the ring axis moves K/V: p2p (ring attention) or allgather "
        "(all-gather CP, Llama 3 / TE all_gather).")] = None,
    dp_replicate: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_DEGREE, show_default=False, help="Pin HSDP's replicate degree (dp = dp_replicate x "
        "dp_shard; ZeRO shards over dp_shard x cp).")] = None,
    reshard_after_forward: Annotated[Optional[bool], typer.Option(
        "--reshard-after-forward/--no-reshard-after-forward", show_default=False,
        help="Pin ZeRO-3/FSDP's reshard after forward (no: keep the gathered parameters for backward).")] = None,
    vpp: Annotated[Optional[int], typer.Option(min=1, max=64, show_default="searched over 1, 2, 4, 8",
                                               help="Pin the virtual pipeline stages per rank (interleaved "
                                               "1F1B; 1 = plain 1F1B).")] = None,
    vpp_group: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_GLOBAL_BATCH, show_default="pp where it divides the micro-batches, else the least N "
        "Megatron runs", help="Pin the interleaved schedule's micro-batch group N (with --vpp 2 or more; "
        "Megatron --microbatch-group-size-per-virtual-pipeline-stage, which takes pp <= N <= m micro-batches "
        "with m % N zero or at least pp).")] = None,
    precision: Annotated[PrecisionChoice, typer.Option(help="GEMM precision: bf16, fp8 (Transformer Engine, "
                                                      "Hopper+), mxfp8 (Blackwell), or auto to search what the "
                                                      "hardware runs. Attention stays bf16.")] = "bf16",
    fp8_recipe: Annotated[Optional[Fp8Recipe], typer.Option(
        show_default="delayed; tensorwise for --framework torchtitan",
        help="How fp8 sets its scales: delayed (Megatron's default, amax from earlier steps), tensorwise "
             "(current scaling: an amax pass before each cast; torchao's only kind) or blockwise (1x128 "
             "and 128x128 blocks; Hopper).")] = None,
    fp8_attention: Annotated[bool, typer.Option(
        "--fp8-attention", help="Run core attention in FP8 too (cuDNN's FP8 SDPA, Megatron's "
        "TransformerConfig.fp8_dot_product_attention, which has no command-line flag; Blackwell, "
        "--precision fp8 or mxfp8; --framework all).")] = False,
    cpu_offload_layers: Annotated[int, typer.Option(
        min=0, max=MAX_DEGREE, help="Offload the first N layers' activations to host memory (Megatron "
        "--cpu-offloading-num-layers; pins pp 1 and no recompute; megatron only).")] = 0,
    bf16_adam_moments: Annotated[bool, typer.Option(
        "--bf16-adam-moments", help="Keep Adam's moments in bf16 (Megatron --use-precision-aware-optimizer; "
        "pins ZeRO-1; megatron only).")] = False,
    framework: Annotated[FrameworkChoice, typer.Option(
        help="Rank only the plans this framework can express and print its flags (all: every plan, every "
             "framework's flags).")] = "megatron",
    framework_version: Annotated[
        Optional[str], typer.Option(show_default="0.3.0", help="torchtitan release whose interface to emit: 0.3.0 "
                                    "(--module/--config overrides, 0.3.x) or 0.2.2 (TOML sections, 0.2.x).")
    ] = None,
    attention_kernel: Annotated[Optional[AttentionKernel], typer.Option(
        show_default="the framework's", help="Attention kernel to time: the framework's own by default "
        "(cuDNN for Megatron on Hopper, FA2 on Ampere and for yunchang/DeepSpeed, SDPA for torchtitan) "
        "where a curve is published for the GPU, else the profile's. Given, the flags select it where they "
        "can (Megatron's --attention-backend, yunchang's attn_type) and a note says what they cannot.")] = None,
    launcher: Annotated[Optional[Launcher], typer.Option(show_default=False, help="Also print a launch script.")]
    = None,
    top: Annotated[int, typer.Option(min=1, max=MAX_TOP, help="How many plans to show.")] = 10,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table for people; json or csv for tools.")]
    = "table",
    explain: Annotated[
        bool, typer.Option("--explain", help="Table output: the first plan's memory and time breakdowns and the "
                           "pruning (json already holds them).")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Table output: also tokens/s, TFLOPS per GPU and the full-square model MFU "
                           "(within 120 columns; --explain shows them too).")
    ] = False,
    out: Annotated[Optional[Path], typer.Option(
        parser=file_name, metavar="<path>", help="Write the first plan to this plan.json (read by sp-run).")]
    = None,
    report: Annotated[Optional[Path], typer.Option(
        parser=folder_name, metavar="<path>", help="Write a report (tables, CSV, plots) to this folder.")]
    = None,
    full_rank_groups: Annotated[
        bool, typer.Option("--rank-groups", help="Also list every rank group in full in plan.json, --format json "
                           "and summary.json (they always hold the groups' generator: axis order and degrees).")
    ] = False,
    simulate: Annotated[
        Optional[int], typer.Option(min=1, max=1000, show_default=False, help="Re-rank the best K plans by the event "
                                    "simulator's step time (both times are shown).")
    ] = None,
) -> int:
    """Rank parallel plans (TP, PP, DP, Ulysses, Ring or all-gather CP, ZeRO/FSDP/HSDP, recompute)
    for long-context training.

    Pinned options narrow the search; with every degree pinned the plan is evaluated and shown even
    if it does not fit (exit 1, no plan file).
    """
    from sp_planner.cli.option_checks import (check_framework_options, check_framework_version,
                                              check_model_framework, check_plan_file_framework, resolve_fp8_recipe)
    from sp_planner.cli.plan_kernel import set_up_kernel
    from sp_planner.cli.plan_notes import plan_notes
    from sp_planner.cli.question import check_outputs, default_batch_note, resolve_question
    from sp_planner.cli.terminal import write_note
    from sp_planner.cost.families import on_npu
    from sp_planner.plan_messages import empty_chunks_text

    fp8_recipe_given = fp8_recipe is not None
    fp8_recipe = resolve_fp8_recipe(fp8_recipe, framework, precision)
    question = resolve_question(
        model=model, hardware=hardware, num_nodes=nodes, gpus_per_node=gpus_per_node, seq_len=seq_len,
        global_batch=global_batch, degrees={"tp": tp, "pp": pp, "dp": dp, "ulysses": ulysses, "ring": ring},
        zero=zero, recompute=recompute, micro_batch=micro_batch, cp_comm=cp_comm, dp_replicate=dp_replicate,
        reshard_after_forward=reshard_after_forward, vpp=vpp, vpp_group=vpp_group, precision=precision,
        fp8_recipe=fp8_recipe,
        fp8_attention=fp8_attention,
        expert_degrees={"ep": ep, "etp": etp},
        moe_capacity_factor=moe_capacity_factor, moe_pad_to_capacity=moe_pad_to_capacity,
        moe_routing=moe_routing, moe_dispatcher=moe_dispatcher, mtp_layers=mtp_layers,
        dsa_indexer_loss=dsa_indexer_loss,
        split=None if first_stage_layers is None and last_stage_layers is None else (first_stage_layers,
                                                                                     last_stage_layers),
        cpu_offload_layers=cpu_offload_layers,
        adam_moments_bf16=bf16_adam_moments,
    )
    table_only = [name for name, given in (("--explain", explain), ("--wide", wide)) if given]
    if table_only and output_format != "table":
        verb = "shape" if len(table_only) > 1 else "shapes"
        raise UserInputError(f"{' and '.join(table_only)} {verb} the table for people; --format {output_format} is "
                             "for tools and has no table to shape: drop one of them")
    if launcher is not None and output_format != "table":
        raise UserInputError(f"--launcher prints a launch script under the table; --format {output_format} has no "
                             "place for it (the JSON holds every framework's flags): drop one of them")
    if full_rank_groups and output_format != "json" and out is None and report is None:
        # The groups go only where a document does (plan.json, --format json, summary.json): without
        # one the flag did nothing, silently.
        raise UserInputError(f"--rank-groups lists the rank groups in plan.json (--out), --format json or the "
                             f"report's summary.json (--report); --format {output_format} shows no groups: add "
                             "one of them or drop --rank-groups")
    check_outputs(out=out, report=report, inputs=(("--model", model), ("--hardware", hardware)))
    check_framework_version(framework, framework_version)
    check_framework_options(framework, moe_dispatcher=moe_dispatcher, mtp_layers=mtp_layers, recompute=recompute,
                            bf16_adam_moments=bf16_adam_moments, cpu_offload_layers=cpu_offload_layers,
                            precision=precision, moe_capacity_factor=moe_capacity_factor,
                            npu=on_npu(question.hardware))
    check_model_framework(framework, question.model)
    setup = set_up_kernel(question, framework=framework, attention_kernel=attention_kernel,
                          framework_version=framework_version, ulysses=ulysses, ring=ring, fp8_attention=fp8_attention)
    question = setup.question.model_copy(update={"fp8_recipe_given": fp8_recipe_given})
    check_plan_file_framework(framework, writes_plan_file=out is not None, choices=question.flag_choices,
                              model=question.model, hardware=question.hardware, timed=question.attention_kernel)
    # After every input check: a refused question prints only its error.
    # The question's own notes, then those sp-simulate prints for the plan file too (cli.plan_notes).
    for note in (setup.curves_note, default_batch_note(question),
                 *plan_notes(question.model, question.hardware, num_nodes=question.num_nodes,
                             gpus_per_node=question.gpus_per_node, kernel=setup.kernel_notes)):
        if note is not None:
            write_note(note, sys.stderr)
    # The search and its output load pandas: once the question is known good (bad input is refused without).
    from sp_planner.cli.plan_output import emit_answer, write_outputs
    from sp_planner.cli.plan_solve import solve

    answer = solve(question, top=top, simulate=simulate, framework=framework, launcher=launcher,
                   every_row=report is not None)
    # A pinned split Megatron parses but that leaves model chunks idle (the rules do not refuse it).
    if answer.ranked and (note := empty_chunks_text(question.model.num_layers, answer.chosen.plan)) is not None:
        write_note(note, sys.stderr)
    try:
        emit_answer(answer, output_format=output_format, explain=explain, wide=wide, full_rank_groups=full_rank_groups)
    finally:  # the files the user named, even when stdout is gone (a closed pipe)
        write_outputs(answer, out=out, report=report, full_rank_groups=full_rank_groups)
    if simulate is not None and not answer.fits:  # rerank_by_simulation times fitting plans only
        why = "the pinned plan does not fit" if question.all_degrees_pinned else "no plan fits"
        write_note(f"--simulate {simulate} simulated no plan: {why}", sys.stderr)
    # A plan the chosen framework cannot run is no answer either: exit 1, as no plan file is written.
    expressed = framework == "all" or bool(answer.framework_ranked)
    return 0 if answer.fits and expressed else EXIT_NO_FIT


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-plan")
