"""Multi-node launch: the agent's torchrun line, the rendezvous port check, and sp-run's options."""

from __future__ import annotations

import shlex
import socket

import pytest

from sp_planner.cli import run_cmd
from sp_planner.cli.run_cmd import main
from sp_planner.errors import UserInputError
from sp_planner.executor.launch import LaunchSpec, torchrun_args
from sp_planner.executor.multinode import NodeJob, check_port_free, split_endpoint

def pasted(printed: str) -> str:
    """--print-launch's lines as one line: the backslash continuations joined."""
    return printed.strip().replace(" \\\n    ", " ")


USP = ["--ulysses", "2", "--ring", "2", "--seq-len", "64", "--heads", "4", "--head-dim", "8"]


def test_node_agent_uses_c10d_with_timeouts_and_store_host():
    job = NodeJob(nnodes=2, nproc_per_node=2, rdzv_endpoint="192.0.2.1:29400", rdzv_id="j", node_rank=0,
                  join_timeout_s=4.0)
    assert torchrun_args(job.launch_spec()) == [
        "--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=192.0.2.1:29400", "--rdzv-id=j",
        "--rdzv-conf=join_timeout=4,read_timeout=4,is_host=1"]
    other = NodeJob(nnodes=2, nproc_per_node=2, rdzv_endpoint="h:1", rdzv_id="j", node_rank=None, join_timeout_s=9)
    assert torchrun_args(other.launch_spec())[-1] == "--rdzv-conf=join_timeout=9,read_timeout=9"
    assert torchrun_args(LaunchSpec(nproc_per_node=4)) == ["--standalone", "--nnodes=1", "--nproc-per-node=4"]


def test_port_in_use_is_refused_clearly():
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        with pytest.raises(UserInputError, match=f"port {port} on the rendezvous host .* is already in use"):
            check_port_free(f"127.0.0.1:{port}")
    check_port_free(f"127.0.0.1:{port}")  # free again


# 'node0:29²' raised int()'s ValueError (a traceback); the full-width port reached the torchrun line.
@pytest.mark.parametrize("endpoint", ["node0", "node0:", ":29500", "node0:99999", "my host:29500", "node0 :29500",
                                      "node0:29\u00b2", "node0:\uff12\uff19\uff15\uff10\uff10"])
def test_bad_endpoint(endpoint):
    with pytest.raises(UserInputError, match="is not HOST:PORT"):
        split_endpoint(endpoint)


def test_endpoint_port_out_of_range_is_named():
    with pytest.raises(UserInputError) as refused:
        split_endpoint("node0:99999")
    assert str(refused.value) == ("rendezvous endpoint 'node0:99999' is not HOST:PORT: port 99999 is outside "
                                  "1-65535 (e.g. node0:29500)")
    assert split_endpoint("node0:65535") == ("node0", 65535) and split_endpoint("[::1]:1") == ("::1", 1)


def test_print_launch_for_nodes_and_ranks_per_node(capsys):
    with pytest.raises(SystemExit) as done:
        main([*USP, "--print-launch", "--nodes", "2", "--nproc-per-node", "2", "--rdzv-endpoint", "h0:29400"])
    assert done.value.code == 0
    assert pasted(capsys.readouterr().out) == (
        "torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=h0:29400 --rdzv-id=sp-run "
        "-m sp_planner.cli.run_cmd --ulysses 2 --ring 2 --seq-len 64 --batch 1 --heads 4 --kv-heads 4 --head-dim 8 "
        "--ring-layout contiguous --device cuda --dtype float32 --kernel auto --iters 3 --nproc-per-node 2")


def test_print_launch_pastes_back_to_the_same_arguments(capsys, tmp_path, monkeypatch):
    # Printed through rich, ':smile:' in a path became an emoji and a tab spaces: the pasted line
    # named another file.
    out = tmp_path / "run a:smile:\t'$x'.json"
    monkeypatch.setenv("COLUMNS", "30")
    with pytest.raises(SystemExit) as done:
        main([*USP, "--print-launch", "--out", str(out), "--rdzv-id", "job:x:1"])
    assert done.value.code == 0
    argv = shlex.split(pasted(capsys.readouterr().out))
    assert argv[argv.index("--out") + 1] == str(out)
    assert argv[:2] == ["torchrun", "--nnodes=1"] and "--rdzv-id=job:x:1" in argv


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "3", "--nproc-per-node", "2", "--print-launch"],
     "--nodes 3 x --nproc-per-node 2 = 6 ranks, but the run needs ulysses*ring = 4"),
    (["--nodes", "3", "--print-launch"], "ulysses*ring = 4 ranks do not split evenly over --nodes 3"),
    (["--nproc-per-node", "3", "--print-launch"], "ulysses*ring = 4 ranks do not fill whole nodes of 3 ranks"),
    (["--nodes", "2"], "--nodes and --nproc-per-node describe a multi-node run: give --rdzv-endpoint"),
    (["--node-rank", "1", "--nodes", "2"], "--node-rank joins a multi-node run: give --rdzv-endpoint"),
    (["--node-rank", "0", "--nodes", "2", "--rdzv-endpoint", "h0"], "rendezvous endpoint 'h0' is not HOST:PORT"),
])
def test_bad_multinode_options_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as done:
        main([*USP, *args])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ranks_per_node_with_an_endpoint_starts_the_agent(monkeypatch):
    # --nodes defaults to ranks / --nproc-per-node (its help): this was refused with "give
    # --rdzv-endpoint HOST:PORT", the option given.
    started = []
    monkeypatch.setattr(run_cmd, "run_node_agent", lambda job, endpoint, rdzv_id, node_rank, join_timeout_s:
                        started.append((job.cfg.num_nodes, job.cfg.ranks_per_node, endpoint, node_rank)) or 0)
    with pytest.raises(SystemExit) as done:
        main([*USP, "--nproc-per-node", "2", "--rdzv-endpoint", "h0:29400"])
    assert done.value.code == 0 and started == [(2, 2, "h0:29400", None)]


def test_print_launch_with_nodes_only_passes_the_ranks_per_node_on(capsys):
    # Without it the joined ranks would expect the default (min(8, 4) = 4 per node) and abort.
    with pytest.raises(SystemExit) as done:
        main([*USP, "--print-launch", "--nodes", "2"])
    assert done.value.code == 0
    line = pasted(capsys.readouterr().out)
    assert line.startswith("torchrun --nnodes=2 --nproc-per-node=2 ") and line.endswith(" --nproc-per-node 2")
