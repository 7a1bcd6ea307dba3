"""Every rank checks the world torchrun gave it against the job's plan before attention runs.

The job is one attention group (RunConfig.job_plan): ulysses x ring ranks, `ranks_per_node` per
node. A plan file with dp, pp or tp > 1 is run as one of its cp groups (one TP rank's heads, one
DP replica, one stage), so its world is ulysses*ring too. The checks:

- WORLD_SIZE == dp*pp*tp*ulysses*ring of the job (= ulysses*ring) and LOCAL_WORLD_SIZE == the
  plan's ranks per node, from the environment, before the process group exists;
- every rank runs the same job (a digest of its RunConfig);
- node n holds ranks n*G .. n*G+G-1 (the plan's node of rank r is r // G), on one host;
- the Ulysses and Ring groups rebuilt from the ranks' real process groups equal
  sp_planner.layout.rank_groups of the plan;
- when the plan keeps each Ulysses group inside one node, its ranks share a node and a host.

The pure part (`*_problems`) is torch-free; `gather_places` needs the process group.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct

from sp_planner.errors import UserInputError
from sp_planner.executor.config import RunConfig
from sp_planner.layout import nodes_spanned, rank_groups
from sp_planner.specs.base import FrozenModel

_SIOCGIFADDR = 0x8915  # linux/sockios.h: an interface's IPv4 address


class WorldMismatchError(UserInputError):
    """The launched world differs from the plan (exit 2 when sp-run runs under torchrun)."""


class RankPlace(FrozenModel):
    """Where one rank runs and which groups it really joined."""

    rank: int
    local_rank: int
    node: int  # torchrun's GROUP_RANK (SLURM_NODEID under a bare srun)
    host: str
    address: str | None  # IPv4 of GLOO_SOCKET_IFNAME, the address gloo binds, when set
    pid: int
    job_digest: str
    ulysses_group: tuple[int, ...]
    ring_group: tuple[int, ...]


def job_digest(cfg: RunConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def interface_address(ifname: str) -> str | None:
    """IPv4 address of a network interface (Linux ioctl), None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])  # struct ifreq: 16-byte name, sockaddr_in from byte 16


def gloo_address(env: dict[str, str]) -> str | None:
    ifname = env.get("GLOO_SOCKET_IFNAME", "").split(",")[0]
    return interface_address(ifname) if ifname else None


def node_index(env: dict[str, str]) -> int:
    return int(env.get("GROUP_RANK", env.get("SLURM_NODEID", "0")))


def env_world_problems(cfg: RunConfig, env: dict[str, str]) -> list[str]:
    """WORLD_SIZE and LOCAL_WORLD_SIZE against the job, before any process group exists."""
    problems = []
    world = int(env["WORLD_SIZE"])
    if world != cfg.world_size:
        problems.append(
            f"WORLD_SIZE is {world} but the plan needs dp*pp*tp*ulysses*ring = 1*1*1*{cfg.ulysses}*{cfg.ring} = "
            f"{cfg.world_size} ranks (sp-run runs one attention group of the plan)")
    local = env.get("LOCAL_WORLD_SIZE")
    if local is not None and int(local) != cfg.ranks_per_node:
        problems.append(
            f"LOCAL_WORLD_SIZE is {local} but the plan puts {cfg.ranks_per_node} ranks on each node "
            f"(--nproc-per-node {cfg.ranks_per_node}); start torchrun with --nproc-per-node "
            f"{cfg.ranks_per_node} or give sp-run --nproc-per-node {local}")
    return problems


def _host_list(places: list[RankPlace]) -> str:
    return ", ".join(f"rank {p.rank} on {p.host} (node {p.node})" for p in places)


def layout_problems(cfg: RunConfig, places: list[RankPlace]) -> list[str]:
    """The gathered places of every rank against the job's plan, one line per problem."""
    places = sorted(places, key=lambda p: p.rank)
    problems = []
    digest = job_digest(cfg)
    differ = [p for p in places if p.job_digest != digest]
    if differ:
        problems.append(f"ranks run different jobs: {_host_list(differ)} got other sp-run arguments than "
                        "this rank; give every node the same arguments")
    per_node = cfg.ranks_per_node
    for node in sorted({p.node for p in places}):
        members = [p for p in places if p.node == node]
        want = list(range(node * per_node, (node + 1) * per_node))
        if [p.rank for p in members] != want:
            problems.append(f"node {node} holds ranks {[p.rank for p in members]}, the plan puts ranks "
                            f"{want[0]}..{want[-1]} there ({per_node} per node)")
        hosts = sorted({p.host for p in members})
        if len(hosts) > 1:
            problems.append(f"node {node} spans hosts {', '.join(hosts)}")
    plan = cfg.job_plan()
    expected = rank_groups(plan)
    for axis in ("ulysses", "ring"):
        real_groups = sorted({tuple(getattr(p, f"{axis}_group")) for p in places})
        want_groups = sorted(tuple(g) for g in expected[axis])
        if real_groups != want_groups:
            problems.append(f"{axis} groups are {[list(g) for g in real_groups]}, "
                            f"the plan's are {[list(g) for g in want_groups]}")
    if nodes_spanned(plan, "ulysses", per_node) == 1:
        by_rank = {p.rank: p for p in places}
        for group in expected["ulysses"]:
            members = [by_rank[r] for r in group if r in by_rank]
            if len({(p.node, p.host) for p in members}) > 1:
                problems.append(f"Ulysses group {group} spans nodes: {_host_list(members)}; the plan keeps each "
                                f"Ulysses group inside one node of {per_node} ranks")
    return problems


def check_env_world(cfg: RunConfig, env: dict[str, str] | None = None) -> None:
    problems = env_world_problems(cfg, dict(os.environ) if env is None else env)
    if problems:
        raise WorldMismatchError("the launched world differs from the plan: " + "; ".join(problems))


def check_layout(cfg: RunConfig, places: list[RankPlace]) -> None:
    problems = layout_problems(cfg, places)
    if problems:
        raise WorldMismatchError("the launched world differs from the plan: " + "; ".join(problems))


def gather_places(cfg: RunConfig, groups) -> list[RankPlace]:
    """Every rank's place, on every rank (all_gather_object over the default group)."""
    import torch.distributed as dist

    env = dict(os.environ)
    mine = RankPlace(
        rank=dist.get_rank(), local_rank=int(env.get("LOCAL_RANK", "0")), node=node_index(env),
        host=socket.gethostname(), address=gloo_address(env), pid=os.getpid(), job_digest=job_digest(cfg),
        ulysses_group=tuple(dist.get_process_group_ranks(groups.ulysses_group)),
        ring_group=tuple(dist.get_process_group_ranks(groups.ring_group)),
    )
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine.model_dump(mode="json"))
    return [RankPlace.model_validate(p) for p in gathered]
