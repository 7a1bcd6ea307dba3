"""One node of a multi-node sp-run: start this node's torchrun agent, join the c10d rendezvous,
and report this node's share of the outcome (torch-free).

Every node runs the same `sp-run --nodes N --nproc-per-node G --rdzv-endpoint HOST:PORT ...`.
torchrun's elastic agent does the rendezvous (c10d backend: a TCPStore at HOST:PORT) and assigns
ranks; `--node-rank 0` only says that this node hosts the store (c10d ignores torchrun's own
--node-rank, run.py), so sp-run can check the port first and torchrun need not guess from host
names. The agent's workers are sp_planner.executor.worker, as in a local run.
"""

from __future__ import annotations

import errno
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from sp_planner.errors import UserInputError
from sp_planner.executor.failure import read_traces
from sp_planner.executor.launch import LaunchOutcome, LaunchSpec, describe_failure, local_command, run_local


# Seconds for torchrun and its workers to start (interpreter + torch import on a busy machine).
AGENT_START_S = 10.0


@dataclass(frozen=True)
class NodeJob:
    nnodes: int
    nproc_per_node: int
    rdzv_endpoint: str
    rdzv_id: str
    node_rank: int | None  # 0: this node hosts the rendezvous store; None: torchrun decides
    join_timeout_s: float
    nccl: bool = False  # the ranks run NCCL groups (a rank that dies silently most likely timed out)

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec(nproc_per_node=self.nproc_per_node, nnodes=self.nnodes, rdzv_endpoint=self.rdzv_endpoint,
                          rdzv_id=self.rdzv_id, join_timeout_s=self.join_timeout_s,
                          is_host=None if self.node_rank is None else self.node_rank == 0)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    # A host name holds no space (RFC 1123); 'my host:29500' would reach torchrun as a host that never resolves.
    # The port in ASCII digits, as torchrun reads it: str.isdigit() passes '29²' (int() then raised) and
    # full-width digits (written into the printed torchrun line as they came).
    if not sep or not host or any(c.isspace() for c in host) or not re.fullmatch(r"[0-9]+", port):
        raise UserInputError(f"rendezvous endpoint {endpoint!r} is not HOST:PORT (e.g. node0:29500)")
    if not 0 < int(port) < 65536:
        raise UserInputError(f"rendezvous endpoint {endpoint!r} is not HOST:PORT: port {int(port)} is outside "
                             "1-65535 (e.g. node0:29500)")
    return host.strip("[]"), int(port)


def check_port_free(endpoint: str) -> None:
    """On the rendezvous host: fail now, clearly, if the store's port is taken (torchrun would
    report only 'The connection to the C10d store has failed')."""
    host, port = split_endpoint(endpoint)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))  # the TCPStore server listens on every address of the port
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise UserInputError(
                f"port {port} on the rendezvous host {socket.gethostname()} ({host}) is already in use; "
                f"stop what holds it or pick a free port for --rdzv-endpoint {host}:PORT on every node"
            ) from None


def run_node(job: NodeJob, config_path: Path, result_dir: Path, timeout_s: float, *, log_path: Path | None = None,
             watch=None) -> LaunchOutcome:
    """Run this node's agent until the job ends, or kill it after join timeout + timeout."""
    if job.node_rank == 0:
        check_port_free(job.rdzv_endpoint)
    host = socket.gethostname()
    command = local_command(job.launch_spec(), config_path, result_dir, timeout_s)
    start = time.monotonic()
    wall_s = job.join_timeout_s + timeout_s
    # torchrun ends a rendezvous at its join timeout, but a store client that reached a port held by
    # something else blocks past its read timeout (seen with torch 2.13): bound the start ourselves.
    outcome = run_local(command, result_dir=result_dir, world_size=job.nnodes * job.nproc_per_node,
                        timeout_s=wall_s, ranks=[], host=host,
                        start_deadline_s=job.join_timeout_s + AGENT_START_S,
                        nccl_timeout_s=timeout_s if job.nccl else None, log_path=log_path, watch=watch)
    if outcome.failure is None or outcome.interrupted:
        return outcome
    ranks = [t.rank for t in read_traces(result_dir)]  # this node's ranks: torchrun assigned them
    failure: str | None
    if not ranks:
        waited_s = time.monotonic() - start
        failure = (f"no rank started on host {host}: the c10d rendezvous at {job.rdzv_endpoint} (id {job.rdzv_id}) "
                   f"did not gather {job.nnodes} nodes in {waited_s:.1f} s (join timeout {job.join_timeout_s:g} s); "
                   f"a node never joined, or cannot reach {job.rdzv_endpoint}")
    elif outcome.timed_out:
        failure = describe_failure(result_dir, 0, timed_out=True, timeout_s=wall_s, ranks=ranks, host=host)
    else:
        failure = outcome.failure
    return LaunchOutcome(returncode=outcome.returncode or 1, timed_out=outcome.timed_out, failure=failure)
