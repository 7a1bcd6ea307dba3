"""`sp-run`: run Ulysses, Ring or USP attention on real torch.distributed ranks, validate it against
an fp32 reference and measure bytes, time and memory next to the cost model's prediction.

Importable without torch: torch is imported only inside the launched ranks (sp_planner.executor).
Exit codes: 0 passed; 1 a rank failed or hung, or validation failed; 2 bad input.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from sp_planner.cli.common import run_app
from sp_planner.errors import UserInputError
from sp_planner.executor.budget import LONG_REFERENCE_S, reference_time_s, run_memory
from sp_planner.executor.config import RunConfig, check_config
from sp_planner.executor.devices import check_local_gpus
from sp_planner.executor.launch import LaunchSpec, cluster_command, local_command, run_local
from sp_planner.executor.multinode import NodeJob, run_node, split_endpoint
from sp_planner.executor.predict import predict
from sp_planner.executor.result import RankResult, RunResult, summarize
from sp_planner.executor.summary import print_summary
from sp_planner.executor.worker import RESULTS_FILE, run_worker
from sp_planner.fileio import write_text_atomic
from sp_planner.planfile import PlanFile, read_plan_file
from sp_planner.units import format_bytes, format_seconds, parse_tokens

EXIT_FAILED = 1
EPILOG = """\
[bold]Examples[/bold]

  sp-run --ulysses 2 --ring 2 --seq-len 4k --heads 8 --kv-heads 2 --head-dim 64 --causal --ring-layout zigzag

  sp-run --ring 4 --seq-len 4k --heads 8 --kv-heads 2 --head-dim 64 --causal --ring-layout zigzag --cp-comm allgather

  sp-run --plan plan.json --device cuda --out result.json

  sp-run --plan plan.json --print-launch --rdzv-endpoint node0:29500

  sp-run --plan plan.json --nodes 2 --rdzv-endpoint node0:29500 --node-rank 0   (on node0; --node-rank 1 on node1)

Exit codes: 0 passed, 1 a rank failed/hung or results disagree with the reference, 2 bad input.
"""


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Layout(str, Enum):
    contiguous = "contiguous"
    zigzag = "zigzag"


class CpCommChoice(str, Enum):
    p2p = "p2p"
    allgather = "allgather"


class DTypeChoice(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class KernelChoice(str, Enum):
    auto = "auto"
    math = "math"


app = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False)


def _config_from_plan(plan_file: PlanFile, **run_options) -> RunConfig:
    model, plan = plan_file.model, plan_file.plan
    return RunConfig(
        ulysses=plan.ulysses, ring=plan.ring, tp=plan.tp, ring_layout=plan.ring_layout, cp_comm=plan.cp_comm,
        batch=plan.micro_batch, seq_len=plan_file.workload.seq_len, causal=plan_file.workload.causal,
        num_heads=model.num_heads, num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, **run_options,
    )


def _cli_args(cfg: RunConfig, plan_path: Path | None, out: Path | None) -> list[str]:
    """sp-run arguments reproducing this run (for the printed cluster command)."""
    if plan_path is not None:
        args = ["--plan", str(plan_path)]
    else:
        args = ["--ulysses", str(cfg.ulysses), "--ring", str(cfg.ring), "--seq-len", str(cfg.seq_len),
                "--batch", str(cfg.batch), "--heads", str(cfg.num_heads), "--kv-heads", str(cfg.num_kv_heads),
                "--head-dim", str(cfg.head_dim), "--ring-layout", cfg.ring_layout, "--cp-comm", cfg.cp_comm]
        args += ["--causal"] if cfg.causal else []
    args += ["--device", "cuda", "--dtype", cfg.dtype, "--kernel", cfg.kernel, "--iters", str(cfg.iters)]
    return args + (["--out", str(out)] if out is not None else [])


def _joined_launch() -> bool:
    """True under torchrun/SLURM (RANK and WORLD_SIZE set, or a multi-task srun)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def _local_slots(device: str) -> int | None:
    """CUDA devices on this machine (None for CPU, where any number of processes can run)."""
    if device != "cuda":
        return None
    import torch  # lazily: only once a CUDA run is asked for

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _finish(cfg: RunConfig, ranks: list[RankResult], plan_file: PlanFile | None, out: Path | None,
            console: Console) -> int:
    prediction = predict(cfg, plan_file.hardware if plan_file else None,
                         plan_file.gpus_per_node if plan_file else None)
    result: RunResult = summarize(cfg, ranks, prediction)
    print_summary(result, console)
    if out is not None:
        write_text_atomic(out, result.model_dump_json(indent=2) + "\n")
    return 0 if result.passed else EXIT_FAILED


@app.command(epilog=EPILOG)
def run(
    *,
    plan: Annotated[Optional[Path], typer.Option(help="A plan.json written by sp-plan --out.")] = None,
    ulysses: Annotated[Optional[int], typer.Option(min=1, help="Ulysses degree \\[default: 1].")] = None,
    ring: Annotated[Optional[int], typer.Option(min=1, help="Ring degree \\[default: 1].")] = None,
    nproc: Annotated[Optional[int], typer.Option(min=1, help="Local processes \\[default: ulysses*ring].")] = None,
    device: Annotated[Device, typer.Option(help="cpu (gloo) or cuda (NCCL).")] = Device.cpu,
    seq_len: Annotated[Optional[str], typer.Option(help="Global tokens per sequence: 4096, 4k.")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="Sequences \\[default: 1].")] = None,
    heads: Annotated[Optional[int], typer.Option(min=1, help="Query heads.")] = None,
    kv_heads: Annotated[Optional[int], typer.Option(min=1, help="KV heads \\[default: heads].")] = None,
    head_dim: Annotated[Optional[int], typer.Option(min=1, help="Head dimension.")] = None,
    causal: Annotated[Optional[bool], typer.Option("--causal", help="Causal mask \\[default: full].")] = None,
    ring_layout: Annotated[Optional[Layout], typer.Option(help="Ring sharding \\[default: contiguous].")] = None,
    cp_comm: Annotated[Optional[CpCommChoice], typer.Option(
        help="Ring axis: pass K/V round the ring (p2p) or all-gather them \\[default: p2p].")] = None,
    dtype: Annotated[Optional[DTypeChoice], typer.Option(
        help="Run dtype \\[default: bfloat16 with --plan, else float32].")] = None,
    kernel: Annotated[KernelChoice, typer.Option(help="auto: flash kernel with LSE; math: explicit.")] = (
        KernelChoice.auto),
    iters: Annotated[int, typer.Option(min=0, help="Timed iterations after the validated step.")] = 3,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds before a hung run is killed.")] = 300,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
    print_launch: Annotated[bool, typer.Option(
        "--print-launch", help="Print the multi-node torchrun command for a cluster and exit.")] = False,
    nodes: Annotated[Optional[int], typer.Option(
        min=1, help="Nodes of a multi-node run \\[default: ranks / --nproc-per-node].")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(
        "--nproc-per-node", "--gpus-per-node", min=1,
        help="Ranks (GPUs) per node of a multi-node run \\[default: the plan's, else 8].")] = None,
    node_rank: Annotated[Optional[int], typer.Option(
        min=0, help="Start this node's torchrun agent and join; 0 hosts the rendezvous store.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option(
        help="HOST:PORT of the c10d rendezvous (the node-rank-0 host) \\[default for --print-launch: "
             "HEAD_NODE:29500].")] = None,
    rdzv_id: Annotated[str, typer.Option(help="Rendezvous id, the same on every node.")] = "sp-run",
    join_timeout: Annotated[float, typer.Option(
        min=1, help="Seconds a node waits for the others at the rendezvous.")] = 300,
    debug_fail_rank: Annotated[Optional[int], typer.Option(hidden=True)] = None,
    debug_fail_mode: Annotated[str, typer.Option(hidden=True)] = "raise",
) -> int:
    """Run and validate sequence-parallel attention (Ulysses, Ring, USP) on real ranks."""
    run_options = dict(device=device.value, kernel=kernel.value, iters=iters, debug_fail_rank=debug_fail_rank,
                       debug_fail_mode=debug_fail_mode)
    plan_file = None
    if plan is not None:
        given = [name for name, value in (("--ulysses", ulysses), ("--ring", ring), ("--seq-len", seq_len),
                                          ("--batch", batch), ("--heads", heads), ("--kv-heads", kv_heads),
                                          ("--head-dim", head_dim), ("--causal", causal),
                                          ("--ring-layout", ring_layout), ("--cp-comm", cp_comm))
                 if value is not None]
        if given:
            raise UserInputError(f"--plan sets degrees and shapes; drop {', '.join(given)} or drop --plan")
        plan_file = read_plan_file(plan)
        cfg = _config_from_plan(plan_file, dtype=(dtype or DTypeChoice.bfloat16).value, **run_options)
    else:
        missing = [n for n, v in (("--seq-len", seq_len), ("--heads", heads), ("--head-dim", head_dim)) if v is None]
        if missing:
            raise UserInputError(f"give {', '.join(missing)} (or --plan plan.json)")
        cfg = RunConfig(
            ulysses=ulysses or 1, ring=ring or 1, seq_len=parse_tokens(seq_len), batch=batch or 1,
            num_heads=heads, num_kv_heads=kv_heads or heads, head_dim=head_dim, causal=bool(causal),
            ring_layout=(ring_layout or Layout.contiguous).value, dtype=(dtype or DTypeChoice.float32).value,
            cp_comm=(cp_comm or CpCommChoice.p2p).value,
            **run_options,
        )
    console = Console()
    world = cfg.world_size
    agent = node_rank is not None or (nodes is not None and rdzv_endpoint is not None and not print_launch)
    if agent or print_launch or _joined_launch():
        cfg = cfg.model_copy(update={"nproc_per_node": _ranks_per_node(world, nodes, nproc_per_node, plan_file)})
    elif nodes is not None or nproc_per_node is not None:
        raise UserInputError("--nodes and --nproc-per-node describe a multi-node run: give --rdzv-endpoint "
                             "HOST:PORT (and start sp-run on every node), or use --print-launch")
    check_config(cfg)
    # The multi-node layout, also for the hint of a local run that does not fit this machine.
    per_node = cfg.nproc_per_node or _ranks_per_node(world, None, None, plan_file)
    # The joined ranks must expect the same ranks per node as the printed torchrun line starts.
    given = nproc_per_node is not None or nodes is not None
    sp_run_args = _cli_args(cfg, plan, out) + (["--nproc-per-node", str(per_node)] if given else [])
    cluster = cluster_command(
        LaunchSpec(nproc_per_node=per_node, nnodes=world // per_node, rdzv_endpoint=rdzv_endpoint or "HEAD_NODE:29500",
                   rdzv_id=rdzv_id), sp_run_args)
    if print_launch:
        console.print(cluster, soft_wrap=True, markup=False, highlight=False)
        return 0
    if plan_file is not None and plan_file.plan.world_size > world:
        console.print(f"note: the plan has {plan_file.plan.world_size} ranks; sp-run runs one attention group "
                      f"(ulysses*ring = {world} ranks, one TP rank's heads).")
    if _joined_launch():
        ranks = run_worker(cfg, None, timeout)
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # one summary per node
            return 0
        return _finish(cfg, ranks, plan_file, out, console)
    if agent:
        if rdzv_endpoint is None:
            raise UserInputError("--node-rank joins a multi-node run: give --rdzv-endpoint HOST:PORT of node rank 0")
        split_endpoint(rdzv_endpoint)
        slots = _local_slots(cfg.device)
        if slots is not None and slots < per_node:
            raise UserInputError(f"--nproc-per-node {per_node} but this node has {slots} CUDA devices")
        _check_fits(cfg, per_node, plan_file, cluster, timeout, console)
        job = NodeJob(nnodes=cfg.num_nodes, nproc_per_node=per_node, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id,
                      node_rank=node_rank, join_timeout_s=join_timeout, nccl=cfg.device == "cuda")
        return _launch(cfg, plan_file, out, console, lambda config_path, result_dir: run_node(
            job, config_path, result_dir, timeout))
    slots = nproc if nproc is not None else _local_slots(cfg.device)
    if slots is not None and slots != world:
        have = f"--nproc {nproc}" if nproc is not None else f"{slots} CUDA devices here"
        raise UserInputError(
            f"the run needs ulysses*ring = {world} ranks but {have}; sp-run never shrinks a plan. "
            f"On a cluster run on every node: {cluster}"
        )
    check_local_gpus(cfg.device, world, cluster)  # --nproc skips the count above
    _check_fits(cfg, world, plan_file, cluster, timeout, console)
    return _launch(cfg, plan_file, out, console, lambda config_path, result_dir: run_local(
        local_command(LaunchSpec(nproc_per_node=world), config_path, result_dir, timeout), result_dir=result_dir,
        world_size=world, timeout_s=timeout, nccl_timeout_s=timeout if cfg.device == "cuda" else None))


def _ranks_per_node(world: int, nodes: int | None, nproc_per_node: int | None, plan_file: PlanFile | None) -> int:
    """Ranks per node of a multi-node run: --nproc-per-node, else world/--nodes, else the plan's
    GPUs per node (8 without a plan), at most the world."""
    if nodes is not None and nproc_per_node is not None and nodes * nproc_per_node != world:
        raise UserInputError(f"--nodes {nodes} x --nproc-per-node {nproc_per_node} = {nodes * nproc_per_node} "
                             f"ranks, but the run needs ulysses*ring = {world}")
    if nproc_per_node is not None:
        return nproc_per_node
    if nodes is not None:
        if world % nodes != 0:
            raise UserInputError(f"ulysses*ring = {world} ranks do not split evenly over --nodes {nodes}")
        return world // nodes
    return min(plan_file.gpus_per_node if plan_file else 8, world)


def _available_bytes(device: str, plan_file: PlanFile | None) -> tuple[int, str] | None:
    """Memory one local rank can use before the launch: CPU, MemAvailable of /proc/meminfo (shared
    by the local ranks); CUDA, the first device's total memory (each rank has its own), else the
    plan's HBM. None where neither can be read (no check)."""
    if device == "cpu":
        try:
            lines = Path("/proc/meminfo").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
        return None
    import torch  # lazily: only once a CUDA run is asked for

    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory), "on CUDA device 0"
    if plan_file is not None:
        return int(plan_file.hardware.hbm_bytes), f"HBM of {plan_file.hardware.name} in the plan"
    return None


def _check_fits(cfg: RunConfig, local_ranks: int, plan_file: PlanFile | None, cluster: str, timeout_s: float,
                console: Console) -> None:
    """Refuse (exit 2) a run whose ranks cannot fit this machine's memory, before torchrun starts
    anything; note a long reference. sp-run never shrinks a plan to make it fit."""
    need = run_memory(cfg).peak_bytes
    available = _available_bytes(cfg.device, plan_file)
    if available is not None:
        have, source = available
        per_rank = have // local_ranks if cfg.device == "cpu" else have
        if need > per_rank:
            shared = f" / {local_ranks} local ranks" if cfg.device == "cpu" and local_ranks > 1 else ""
            raise UserInputError(
                f"the run needs about {format_bytes(need)} per rank (every rank holds the global fp32 inputs, the "
                f"fp32 reference and its shard) but {format_bytes(per_rank)} is available per rank "
                f"({format_bytes(have)} {source}{shared}); sp-run never shrinks a plan: run it where it fits, "
                f"e.g. on the cluster with --device cuda: {cluster} ; or pass a smaller --seq-len with explicit "
                f"--ulysses/--ring/--heads/--kv-heads/--head-dim instead of --plan")
    seconds = reference_time_s(cfg, local_ranks=local_ranks, cpu_cores=os.cpu_count() or 1)
    if seconds > LONG_REFERENCE_S:
        also = "" if cfg.dtype == "float32" else " and then runs the kernel once on the full sequence in the dtype"
        console.print(f"note: each rank computes the full fp32 reference first, about {format_seconds(seconds)} "
                      f"on {cfg.device} here{also} (--timeout {timeout_s:g} s bounds the whole run; raise it if "
                      "that is too short)", soft_wrap=True, highlight=False)


def _launch(cfg: RunConfig, plan_file: PlanFile | None, out: Path | None, console: Console, start) -> int:
    """Write the config, start the ranks (start(config_path, result_dir) -> LaunchOutcome), and
    summarize the results this node received."""
    with tempfile.TemporaryDirectory(prefix="sp-run-") as tmp:
        result_dir = Path(tmp)
        config_path = result_dir / "config.json"
        config_path.write_text(cfg.model_dump_json())
        outcome = start(config_path, result_dir)
        if outcome.failure is not None:
            sys.stderr.write(f"error: {outcome.failure}\n")
            return EXIT_FAILED
        ranks = [RankResult.model_validate(r) for r in json.loads((result_dir / RESULTS_FILE).read_text())]
    return _finish(cfg, ranks, plan_file, out, console)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-run")


if __name__ == "__main__":
    main()
