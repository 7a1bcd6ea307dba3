"""Multi-node launch commands: torchrun with c10d rendezvous, and a SLURM sbatch script
(shared reference framework_flags.md, section 7; torch/distributed/run.py, torchtitan
multinode_trainer.slurm at v0.2.2).
"""

from __future__ import annotations

import re
from typing import get_args

from sp_planner.choices import Launcher
from sp_planner.errors import UserInputError

LAUNCHERS: tuple[str, ...] = get_args(Launcher)
# HOST:PORT where HOST may be a shell variable ("$MASTER_ADDR"); nothing that would break the
# double-quoted word it is written into (quotes, backticks, whitespace).
_ENDPOINT_RE = re.compile(r"^[^\s\"'`:]+:([0-9]{1,5})$")  # an ASCII port, as torchrun reads it
_JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check(
    launcher: str, num_nodes: int, gpus_per_node: int, command: str, rdzv_endpoint: str, job_name: str
) -> None:
    if launcher not in LAUNCHERS:
        raise UserInputError(f"unknown launcher {launcher!r}; choose one of: {', '.join(LAUNCHERS)}")
    if num_nodes < 1 or gpus_per_node < 1:
        raise UserInputError(
            f"num_nodes ({num_nodes}) and gpus_per_node ({gpus_per_node}) must be at least 1"
        )
    if not command.strip():
        raise UserInputError(
            "the training command is empty; give the script and its arguments, e.g. 'train.py --config x'"
        )
    if not _ENDPOINT_RE.match(rdzv_endpoint):
        raise UserInputError(
            f"rendezvous endpoint {rdzv_endpoint!r} is not HOST:PORT "
            "(e.g. '$MASTER_ADDR:29500' or 'node001:29500')"
        )
    if not _JOB_NAME_RE.match(job_name):
        raise UserInputError(f"job name {job_name!r} may use only letters, digits, '.', '_' and '-'")


def _torchrun(num_nodes: int, gpus_per_node: int, command: str, endpoint: str, rdzv_id: str) -> str:
    # c10d rendezvous: every node runs the same line; --node-rank is only for static rendezvous (run.py).
    return "\n".join([
        f"torchrun --nnodes {num_nodes} --nproc-per-node {gpus_per_node} --rdzv-backend c10d \\",
        f'    --rdzv-endpoint "{endpoint}" --rdzv-id {rdzv_id} \\',
        f"    {command.strip()}",
    ])


def _domain_comment(num_nodes: int, gpus_per_node: int, domain_nodes: int) -> list[str]:
    # Comment lines stay within 80 columns (the output is read as well as pasted).
    if domain_nodes <= 1 or num_nodes < domain_nodes:
        return []  # one host per domain
    if num_nodes == domain_nodes:  # the whole job is one domain: its nodes must share one rack
        return [
            f"# The plan runs its groups over NVLink across all {num_nodes} nodes: allocate them",
            "# in one rack (one NVLink domain, e.g. a scheduler block topology).",
        ]
    gpus = domain_nodes * gpus_per_node
    return [
        f"# NVLink domains of {domain_nodes} nodes ({gpus} GPUs): the plan keeps its TP,",
        f"# Ulysses and expert groups within global ranks {gpus}k..{gpus}k+{gpus - 1}: each run",
        f"# of {domain_nodes} node ranks must be one rack. c10d rendezvous orders nodes as",
        "# they join: allocate whole racks in rack order (e.g. a scheduler block",
        "# topology) or use a static rendezvous with --node-rank in rack order.",
    ]


def render_launch(
    launcher: Launcher,
    *,
    num_nodes: int,
    gpus_per_node: int,
    command: str,
    rdzv_endpoint: str = "$MASTER_ADDR:29500",
    job_name: str = "sp-train",
    domain_nodes: int = 1,
) -> str:
    """The launch text for `command` (a script or `-m module`, with its arguments).

    torchrun: one command to run on every node (set MASTER_ADDR to the first node, or pass
    rdzv_endpoint; 'localhost:0' suits a single node); job_name is the rendezvous id.
    slurm: an sbatch script that finds the allocation's first node, exports it as MASTER_ADDR and
    starts one torchrun agent per node with srun; the rendezvous id is the SLURM job id.
    """
    _check(launcher, num_nodes, gpus_per_node, command, rdzv_endpoint, job_name)
    # Rack-scale NVLink domains (GB200 NVL72: 18 hosts of 4): the plan keeps its fast groups within
    # each run of domain_nodes consecutive node ranks, which the launch must map onto one rack.
    racks = _domain_comment(num_nodes, gpus_per_node, domain_nodes)
    if launcher == "torchrun":
        where = "the node"
        if num_nodes > 1:
            where = f"each of the {num_nodes} nodes (c10d rendezvous: no --node-rank)"
        head = [f"# Run on {where}."]
        if rdzv_endpoint.startswith("$MASTER_ADDR:"):  # unset, it reads ":29500": torchrun refuses it
            host = "the first node's host name, the same on every node" if num_nodes > 1 else "localhost"
            head = [f"# Run on {where},", f"# with MASTER_ADDR set to {host}."]
        return "\n".join([
            *head,
            *racks,
            _torchrun(num_nodes, gpus_per_node, command, rdzv_endpoint, job_name),
        ])
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={num_nodes}",
        # --ntasks-per-node=8 would start 8 agents per node, each spawning 8 workers.
        f"# One torchrun agent per node, which starts the {gpus_per_node} workers.",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-task={gpus_per_node}",
        "set -euo pipefail",
        "",
        "# The first node of the allocation hosts the c10d rendezvous.",
        # sed reads every line: `head -n 1` may close the pipe while scontrol still writes, and
        # pipefail turns scontrol's SIGPIPE (exit 141) into a failed script.
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        'export MASTER_ADDR="$head_node"',
        "",
        *racks,
        "# Paste the framework's exports and flag arrays here.",
        "",
        "srun " + _torchrun(num_nodes, gpus_per_node, command, rdzv_endpoint, '"$SLURM_JOB_ID"'),
    ])
