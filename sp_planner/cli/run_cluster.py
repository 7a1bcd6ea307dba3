"""The torchrun line that runs an sp-run on a cluster (--print-launch, and the hint of a run that
does not fit this machine): sp-run's own arguments reproducing the run, and the ranks per node.
Torch-free."""

from __future__ import annotations

from pathlib import Path

from sp_planner.cli.run_model import Layer
from sp_planner.errors import UserInputError
from sp_planner.executor.config import RunConfig
from sp_planner.executor.launch import LaunchSpec, cluster_argv
from sp_planner.planfile import PlanFile

DEFAULT_TIMEOUT_S = 300  # sp-run --timeout (seconds)



def sp_run_args(cfg: RunConfig, plan_path: Path | None, out: Path | None, layer: Layer | None = None,
                plan_scale: float | None = None, device: str = "cuda",
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """sp-run arguments reproducing this run (for the printed cluster command) on `device` (a
    cluster's GPUs unless the user named one); each rank kills a hung run after `timeout_s`."""
    if plan_path is not None:
        args = ["--plan", str(plan_path)] + (["--layer", layer] if layer is not None else [])
        # a scale the plan file does not record (settled_plan) goes with it to every node
        args += ["--softmax-scale", repr(plan_scale)] if plan_scale is not None else []
    else:
        args = ["--ulysses", str(cfg.ulysses), "--ring", str(cfg.ring), "--seq-len", str(cfg.seq_len),
                "--batch", str(cfg.batch), "--heads", str(cfg.num_heads), "--kv-heads", str(cfg.num_kv_heads),
                "--head-dim", str(cfg.head_dim), "--ring-layout", cfg.ring_layout]
        args += ["--cp-comm", cfg.cp_comm] if cfg.cp_comm != "p2p" else []  # p2p is the default
        args += ["--causal"] if cfg.causal else []
        args += ["--v-head-dim", str(cfg.v_head_dim)] if cfg.v_head_dim is not None else []
        args += ["--softmax-scale", repr(cfg.softmax_scale)] if cfg.softmax_scale is not None else []
        args += ["--softcap", str(cfg.softcap)] if cfg.softcap is not None else []
        args += ["--window", str(cfg.window), "--window-kind", cfg.window_kind] if cfg.window is not None else []
    args += ["--device", device, "--dtype", cfg.dtype, "--kernel", cfg.kernel, "--iters", str(cfg.iters)]
    args += ["--timeout", f"{timeout_s:g}"] if timeout_s != DEFAULT_TIMEOUT_S else []
    return args + (["--out", str(out)] if out is not None else [])


def cluster_command(cfg: RunConfig, plan: Path | None, out: Path | None, plan_file: PlanFile | None,
                    rdzv_endpoint: str | None, rdzv_id: str, *, given: bool, layer: Layer | None = None,
                    plan_scale: float | None = None, join_timeout_s: float | None = None,
                    device: str = "cuda", timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """The multi-node torchrun line, also the hint of a local run that does not fit this machine.
    The joined ranks must expect the same ranks per node as the printed line starts (given);
    `join_timeout_s` (--join-timeout) goes into the line's --rdzv-conf, torchrun's default without."""
    per_node = cfg.nproc_per_node or ranks_per_node(cfg.world_size, None, None, plan_file)
    args = sp_run_args(cfg, plan, out, layer, plan_scale, device, timeout_s)
    args += ["--nproc-per-node", str(per_node)] if given else []
    return cluster_argv(LaunchSpec(nproc_per_node=per_node, nnodes=cfg.world_size // per_node,
                                   rdzv_endpoint=rdzv_endpoint or "HEAD_NODE:29500", rdzv_id=rdzv_id,
                                   join_timeout_s=join_timeout_s), args)


def ranks_per_node(world: int, nodes: int | None, nproc_per_node: int | None, plan_file: PlanFile | None) -> int:
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
