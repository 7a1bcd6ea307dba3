"""`sp-run`: run Ulysses, Ring or USP attention on real torch.distributed ranks, validate it against
an fp32 reference and measure bytes, time and memory next to the cost model's prediction.

Importable without torch: torch is imported only inside the launched ranks (sp_planner.executor).
Exit codes: 0 passed; 1 a rank failed or hung, or validation failed; 2 bad input.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Optional

import typer

from sp_planner.cli.common import check_finite_seconds, file_name, run_app
from sp_planner.cli.joined import joined_launch
from sp_planner.cli.run_cluster import DEFAULT_TIMEOUT_S, cluster_command, ranks_per_node
from sp_planner.cli.run_config import config_from_flags, config_from_plan, finite_positive
from sp_planner.cli.run_model import Layer, settled_plan
from sp_planner.cli.run_modes import Job, run_here, run_joined, run_node_agent
from sp_planner.cli.terminal import stdout_console
from sp_planner.destination import check_file_destination, refuse_reading_file_as_output
from sp_planner.errors import UserInputError
from sp_planner.executor.config import MAX_ITERS, DType, Kernel, WindowKind, check_config
from sp_planner.executor.config import Device
from sp_planner.executor.multinode import split_endpoint
from sp_planner.plan import MAX_DEGREE, CpComm, RingLayout
from sp_planner.specs.model import MAX_HEAD_DIM, MAX_HEADS
from sp_planner.specs.workload import MAX_GLOBAL_BATCH
from sp_planner.planfile_checks import check_plan_file_runs
from sp_planner.cli.help_format import PlainHelpCommand, wrap_argv

EPILOG = """\
Examples:

  sp-run --ulysses 2 --ring 2 --seq-len 4k --heads 8 --kv-heads 2 --head-dim 64 --causal --ring-layout zigzag

  sp-run --ring 4 --seq-len 4k --heads 8 --kv-heads 2 --head-dim 64 --causal --ring-layout zigzag --cp-comm allgather

  sp-run --plan plan.json --device cuda --out result.json

  sp-run --plan plan.json --print-launch --rdzv-endpoint node0:29500

On node0 of two (on node1 the same with --node-rank 1):

  sp-run --plan plan.json --nodes 2 --rdzv-endpoint node0:29500 --node-rank 0

Exit codes: 0 passed, 1 a rank failed/hung or results disagree with the reference, 2 bad input.
"""




app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)

DEFAULT_RDZV_ID = "sp-run"
DEFAULT_JOIN_TIMEOUT_S = 300.0


def _check_joined_environment() -> None:
    """A joined launch needs torch.distributed's rendezvous address: torchrun sets MASTER_ADDR and
    MASTER_PORT, srun does not (the job script exports them)."""
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if not missing:
        return
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        how = f"RANK={os.environ['RANK']} and WORLD_SIZE={os.environ['WORLD_SIZE']} are set"
    else:
        how = (f"a SLURM task launch was detected (SLURM_NTASKS={os.environ.get('SLURM_NTASKS')}, "
               f"SLURM_PROCID={os.environ.get('SLURM_PROCID')})")
    raise UserInputError(f"{how} but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: export "
                         "them (the first node's address and a free port) before srun, or, in a batch script, "
                         "run sp-run under srun or with SLURM_NTASKS unset")


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def run(
    *,
    plan: Annotated[Optional[Path], typer.Option(help="A plan.json written by sp-plan --out.")] = None,
    ulysses: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_DEGREE, help="Ulysses degree [default: 1].")] = None,
    ring: Annotated[Optional[int], typer.Option(min=1, max=MAX_DEGREE, help="Ring degree [default: 1].")] = None,
    nproc: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_DEGREE, help="Local processes [default: ulysses*ring].")] = None,
    device: Annotated[Optional[Device], typer.Option(
        help="cpu (gloo) or cuda (NCCL) [default: cpu; cuda in a printed cluster line].")] = None,
    seq_len: Annotated[Optional[str], typer.Option(help="Global tokens per sequence: 4096, 4k.")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, max=MAX_GLOBAL_BATCH, help="Sequences [default: 1].")] = None,
    heads: Annotated[Optional[int], typer.Option(min=1, max=MAX_HEADS, help="Query heads.")] = None,
    kv_heads: Annotated[Optional[int], typer.Option(min=1, max=MAX_HEADS, help="KV heads [default: heads].")] = None,
    head_dim: Annotated[Optional[int], typer.Option(min=1, max=MAX_HEAD_DIM, help="Head dimension of Q and K.")] = None,
    v_head_dim: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_HEAD_DIM, help="Head dimension of V and the output where it differs from Q/K's (MLA: "
        "--head-dim 192 --v-head-dim 128) [default: --head-dim].")] = None,
    softmax_scale: Annotated[Optional[float], typer.Option(
        help="Factor on q.k before the softmax (Gemma-2-27B: 144**-0.5 = 0.0833; DeepSeek-V3: 0.1352) "
             "[default: 1/sqrt(--head-dim)]. With --plan, for a plan file written before plan files "
             "recorded it.")] = None,
    softcap: Annotated[Optional[float], typer.Option(
        help="Attention logit softcap c > 0: scores -> c*tanh(scores/c) (Gemma 2: 50).")] = None,
    window: Annotated[Optional[str], typer.Option(
        help="Local attention: each query sees this many keys ending at itself (needs --causal; below "
             "--seq-len).")] = None,
    window_kind: Annotated[Optional[WindowKind], typer.Option(
        help="sliding: the keys ending at the query; chunked: the query's own chunk [default: sliding].")] = None,
    layer: Annotated[Optional[Layer], typer.Option(
        help="With --plan, a model with local-attention layers: run a local or a global one [default: local].")] = None,
    causal: Annotated[Optional[bool], typer.Option("--causal", help="Causal mask [default: full].")] = None,
    ring_layout: Annotated[Optional[RingLayout], typer.Option(help="Ring sharding [default: contiguous].")] = None,
    cp_comm: Annotated[Optional[CpComm], typer.Option(
        help="Ring axis: pass K/V round the ring (p2p) or all-gather them [default: p2p].")] = None,
    dtype: Annotated[Optional[DType], typer.Option(
        help="Run dtype [default: bfloat16 with --plan, else float32].")] = None,
    kernel: Annotated[Kernel, typer.Option(help="auto: flash kernel with LSE; math: explicit.")] = "auto",
    iters: Annotated[int, typer.Option(min=0, max=MAX_ITERS, help="Timed iterations after the validated step.")] = 3,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds before a hung run is killed.")] = DEFAULT_TIMEOUT_S,
    out: Annotated[Optional[Path], typer.Option(
        parser=file_name, metavar="<path>", help="Write the result as JSON here.")] = None,
    print_launch: Annotated[bool, typer.Option(
        "--print-launch", help="Print the multi-node torchrun command for a cluster and exit.")] = False,
    nodes: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_DEGREE, help="Nodes of a multi-node run [default: ranks / --nproc-per-node].")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(
        "--nproc-per-node", "--gpus-per-node", min=1, max=MAX_DEGREE,
        help="Ranks (GPUs) per node of a multi-node run [default: ranks / --nodes, else the plan's GPUs "
             "per node (8 without a plan), at most the ranks].")] = None,
    node_rank: Annotated[Optional[int], typer.Option(
        min=0, max=MAX_DEGREE, help="Start this node's torchrun agent and join; 0 hosts the rendezvous store.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option(
        help="HOST:PORT of the c10d rendezvous (the node-rank-0 host) [default for --print-launch: "
             "HEAD_NODE:29500].")] = None,
    rdzv_id: Annotated[Optional[str], typer.Option(
        help=f"Rendezvous id, the same on every node [default: {DEFAULT_RDZV_ID}].")] = None,
    join_timeout: Annotated[Optional[float], typer.Option(
        min=1, help=f"Seconds a node waits for the others at the rendezvous [default: {DEFAULT_JOIN_TIMEOUT_S:g}]."
    )] = None,
    debug_fail_rank: Annotated[Optional[int], typer.Option(hidden=True)] = None,
    debug_fail_mode: Annotated[str, typer.Option(hidden=True)] = "raise",
) -> int:
    """Run and validate sequence-parallel attention (Ulysses, Ring, USP) on real ranks."""
    run_options = dict(device=device or "cpu", kernel=kernel, iters=iters, debug_fail_rank=debug_fail_rank,
                       debug_fail_mode=debug_fail_mode)
    shape = {"--ulysses": ulysses, "--ring": ring, "--seq-len": seq_len, "--batch": batch, "--heads": heads,
             "--kv-heads": kv_heads, "--head-dim": head_dim, "--causal": causal, "--ring-layout": ring_layout,
             "--cp-comm": cp_comm, "--v-head-dim": v_head_dim, "--softmax-scale": softmax_scale, "--softcap": softcap,
             "--window": window, "--window-kind": window_kind}
    layer_note = None
    if plan is not None:
        finite_positive(softmax_scale, "--softmax-scale")
        plan_file, plan_note = settled_plan(plan, softmax_scale)
        # As sp-simulate and sp-report refuse it: degrees that do not multiply to the plan's GPUs (a hand-edited
        # ring or num_nodes ran, and passed, as another plan) or a broken hard rule.
        check_plan_file_runs(plan_file)
        if plan_note is not None:
            sys.stderr.write(f"note: {plan_note}\n")
        plan_shape = {name: value for name, value in shape.items() if name != "--softmax-scale"}
        cfg, layer_note = config_from_plan(plan_file, plan_shape, layer, dtype=dtype or "bfloat16", **run_options)
    else:
        if layer is not None:
            raise UserInputError("--layer picks a layer of a plan's model (--plan); without one give --window or not")
        plan_file, cfg = None, config_from_flags(shape, dtype=dtype or "float32", **run_options)
    if out is not None:
        check_file_destination(out, option="--out")  # before the run, so its result has somewhere to go
        refuse_reading_file_as_output(out, option="--out", inputs=(("--plan", plan),))
    # --nodes defaults to ranks / --nproc-per-node: either one with --rdzv-endpoint starts this node's agent.
    sized = nodes is not None or nproc_per_node is not None
    agent = node_rank is not None or (sized and rdzv_endpoint is not None and not print_launch)
    if node_rank is not None and nodes is not None and node_rank >= nodes:
        raise UserInputError(f"--node-rank {node_rank} is outside the {nodes} nodes of --nodes: give 0 to "
                             f"{nodes - 1}, one per node")
    if agent or print_launch or joined_launch():
        cfg = cfg.model_copy(update={"nproc_per_node": ranks_per_node(cfg.world_size, nodes, nproc_per_node,
                                                                      plan_file)})
    elif nodes is not None or nproc_per_node is not None:
        raise UserInputError("--nodes and --nproc-per-node describe a multi-node run: give --rdzv-endpoint "
                             "HOST:PORT (and start sp-run on every node), or use --print-launch")
    check_config(cfg)
    if not print_launch and (joined_launch() or not agent):
        _refuse_rendezvous_options({"--rdzv-endpoint": rdzv_endpoint, "--rdzv-id": rdzv_id,
                                    "--join-timeout": join_timeout}, joined=joined_launch())
    check_finite_seconds("--timeout", timeout)
    check_finite_seconds("--join-timeout", join_timeout)
    if rdzv_endpoint is not None:
        split_endpoint(rdzv_endpoint)  # HOST:PORT, before any line is printed or rank started
    rdzv_id = DEFAULT_RDZV_ID if rdzv_id is None else rdzv_id
    cluster = cluster_command(cfg, plan, out, plan_file, rdzv_endpoint, rdzv_id,
                              given=nproc_per_node is not None or nodes is not None, layer=layer,
                              plan_scale=softmax_scale if plan is not None else None, join_timeout_s=join_timeout,
                              device=device or "cuda", timeout_s=timeout)
    notes = []  # printed once the run has passed the checks that refuse it (run_modes), not before a refusal
    if plan_file is not None and plan_file.plan.world_size > cfg.world_size:
        notes.append(f"the plan has {plan_file.plan.world_size} ranks; sp-run runs one attention group "
                     f"(ulysses*ring = {cfg.world_size} ranks, one TP rank's heads).")
    if layer_note is not None:
        notes.append(f"{layer_note}.")
    job = Job(cfg=cfg, plan_file=plan_file, out=out, timeout_s=timeout, console=stdout_console(),
              cluster=shlex.join(cluster), notes=tuple(notes))
    if print_launch:  # lines of the terminal's width, joined by backslashes: pasted, one command
        # Written as they are, not through rich, which turns ':smile:' in a path into an emoji,
        # expands a tab and drops a carriage return: the pasted command would name another file.
        job.console.file.write("\n".join(wrap_argv(cluster, job.console.width)) + "\n")
        return 0
    if joined_launch():
        _check_joined_environment()
        return run_joined(job)
    if agent:
        return run_node_agent(job, rdzv_endpoint, rdzv_id, node_rank,
                              DEFAULT_JOIN_TIMEOUT_S if join_timeout is None else join_timeout)
    return run_here(job, nproc)


def _refuse_rendezvous_options(options: Mapping[str, str | float | None], *, joined: bool) -> None:
    """The rendezvous options set up a node's torchrun agent (--node-rank, or --nodes with
    --rdzv-endpoint) or the line --print-launch prints; a run on this machine alone, or a rank of
    a launch whose launcher held the rendezvous, would take them and do nothing with them (refused
    as --cp-comm allgather with --ring 1 is)."""
    given = [f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"
             for name, value in options.items() if value is not None]
    if not given:
        return
    named = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
    verb, them = ("is", "it") if len(given) == 1 else ("are", "them")
    if joined:
        raise UserInputError(f"{named} {verb} for a multi-node run that sp-run starts, and this process is already a "
                             f"rank of a torchrun/SLURM launch: drop {them} (the launcher's own options set its "
                             "rendezvous)")
    raise UserInputError(f"{named} {verb} for a multi-node run, and this one starts every rank here: give --nodes N "
                         f"with --rdzv-endpoint HOST:PORT (one sp-run per node) or --print-launch, or drop {them}")


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-run", once_per_node=True)


if __name__ == "__main__":
    main()
