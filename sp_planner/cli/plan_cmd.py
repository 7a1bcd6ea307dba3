"""`sp-plan`: rank parallel plans for one model, sequence length and cluster, and print the flags.

Exit codes: 0 an answer (including an all-pinned plan that does not fit, reported with fits
false); 1 the search found no plan that fits (the closest one and checked fixes are shown);
2 bad input (one line on stderr).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sp_planner.cli.common import run_app
from sp_planner.cli.plan_output import Answer, emit_answer, write_outputs
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.question import check_framework_version, check_outputs, resolve_question
from sp_planner.present.advice import suggest_fits
from sp_planner.search import search
from sp_planner.sim.rerank import rerank_by_simulation

EXIT_NO_FIT = 1

EPILOG = """\
[bold]Examples[/bold]

  sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k

  sp-plan --model ./config.json --hardware ./my_cluster.yaml --nodes 4 --seq-len 1M --framework all --launcher slurm

  sp-plan --model llama3-70b --hardware h100 --nodes 8 --seq-len 256k --tp 8 --ulysses 4 --ring 2 --explain

  sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k --format json --out plan.json

  sp-plan --model llama3-8b --hardware h100 --nodes 4 --seq-len 256k --simulate 5

Exit codes: 0 answer, 1 no plan fits (the closest plan and verified fixes are shown), 2 bad input.
"""


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Framework(str, Enum):
    megatron = "megatron"
    mindspeed = "mindspeed"
    deepspeed = "deepspeed"
    yunchang = "yunchang"
    torchtitan = "torchtitan"
    all = "all"


class Launcher(str, Enum):
    torchrun = "torchrun"
    slurm = "slurm"


class RecomputeChoice(str, Enum):
    none = "none"
    selective = "selective"
    full = "full"


class PrecisionChoice(str, Enum):
    bf16 = "bf16"
    fp8 = "fp8"
    mxfp8 = "mxfp8"
    auto = "auto"


app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False)


def _pin(what: str, **limits: int) -> typer.models.OptionInfo:
    return typer.Option(**({"min": 1} | limits), show_default=False, help=f"Pin the {what}.")


@app.command(epilog=EPILOG)
def plan(
    *,
    model: Annotated[str, typer.Option(help="Built-in model name or a Hugging Face config.json.")],
    hardware: Annotated[str, typer.Option(help="Built-in hardware name or a profile .yaml.")],
    nodes: Annotated[int, typer.Option(min=1, help="Number of nodes.")],
    seq_len: Annotated[str, typer.Option(help="Tokens per sequence: 131072, 128k, 1M (k, M = 1024, 1024^2).")],
    gpus_per_node: Annotated[
        Optional[int], typer.Option(min=1, show_default="the profile's", help="GPUs per node.")
    ] = None,
    global_batch: Annotated[
        Optional[int],
        typer.Option(min=1, show_default="4M tokens per step (Llama 3), rounded so dp divides it",
                     help="Sequences per optimizer step."),
    ] = None,
    micro_batch: Annotated[Optional[int], _pin("micro batch")] = None,
    tp: Annotated[Optional[int], _pin("tensor-parallel degree")] = None,
    pp: Annotated[Optional[int], _pin("pipeline degree")] = None,
    dp: Annotated[Optional[int], _pin("data-parallel degree")] = None,
    ulysses: Annotated[Optional[int], _pin("Ulysses degree")] = None,
    ring: Annotated[Optional[int], _pin("ring degree")] = None,
    zero: Annotated[Optional[int], _pin("ZeRO stage", min=0, max=3)] = None,
    recompute: Annotated[Optional[RecomputeChoice], typer.Option(show_default=False, help="Pin activation recompute.")]
    = None,
    vpp: Annotated[Optional[int], typer.Option(min=1, show_default="searched over 1, 2, 4, 8",
                                               help="Pin the virtual pipeline stages per rank (interleaved "
                                               "1F1B; 1 = plain 1F1B).")] = None,
    precision: Annotated[PrecisionChoice, typer.Option(help="GEMM precision: bf16, fp8 (Transformer Engine, "
                                                      "Hopper+), mxfp8 (Blackwell), or auto to search what the "
                                                      "hardware runs. Attention stays bf16.")]
    = PrecisionChoice.bf16,
    framework: Annotated[Framework, typer.Option(help="Whose flags to print.")] = Framework.megatron,
    framework_version: Annotated[
        Optional[str], typer.Option(show_default="0.3.0", help="torchtitan release whose interface to emit: 0.3.0 "
                                    "(--module/--config overrides, 0.3.x) or 0.2.2 (TOML sections, 0.2.x).")
    ] = None,
    launcher: Annotated[Optional[Launcher], typer.Option(show_default=False, help="Also print a launch script.")]
    = None,
    top: Annotated[int, typer.Option(min=1, help="How many plans to show.")] = 10,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table for people; json or csv for tools.")]
    = OutputFormat.table,
    explain: Annotated[
        bool, typer.Option("--explain", help="Table output: the first plan's memory and time breakdowns and the "
                           "pruning (json already holds them).")
    ] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the first plan to this plan.json (read by sp-run).")]
    = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a report (tables, CSV, plots) to this folder.")]
    = None,
    simulate: Annotated[
        Optional[int], typer.Option(min=1, show_default=False, help="Re-rank the best K plans by the event "
                                    "simulator's step time (both times are shown).")
    ] = None,
) -> int:
    """Rank parallel plans (TP, PP, DP, Ulysses, Ring, ZeRO, recompute) for long-context training.

    Pinned options narrow the search; with every degree pinned the plan is evaluated even if it
    does not fit.
    """
    question = resolve_question(
        model=model, hardware=hardware, num_nodes=nodes, gpus_per_node=gpus_per_node, seq_len=seq_len,
        global_batch=global_batch, degrees={"tp": tp, "pp": pp, "dp": dp, "ulysses": ulysses, "ring": ring},
        zero=zero, recompute=None if recompute is None else recompute.value, micro_batch=micro_batch,
        vpp=vpp, precision=precision.value,
    )
    check_outputs(out=out, report=report)
    check_framework_version(framework.value, framework_version)
    with delayed_progress("searching plans"):
        result = search(
            question.model, question.hardware, question.workload, num_nodes=question.num_nodes,
            gpus_per_node=question.gpus_per_node, pins=question.pins, top_k=max(top, simulate or 0),
        )
        if simulate is not None:
            result = rerank_by_simulation(
                result, question.model, question.hardware, question.workload, num_nodes=question.num_nodes,
                gpus_per_node=question.gpus_per_node, top_k=simulate,
            )
        fits = bool(result.ranked) and result.ranked[0].fits
        suggestions = () if fits else suggest_fits(
            question.model, question.hardware, question.workload, num_nodes=question.num_nodes,
            gpus_per_node=question.gpus_per_node, pins=question.pins,
            batch_scales_with_gpus=question.default_batch,
        )
    answer = Answer(
        question=question, result=result, suggestions=suggestions, top_k=top,
        framework=framework.value, launcher=None if launcher is None else launcher.value,
        framework_version=framework_version,
    )
    emit_answer(answer, output_format=output_format.value, explain=explain)
    write_outputs(answer, out=out, report=report)
    return 0 if fits or question.all_degrees_pinned else EXIT_NO_FIT


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-plan")
