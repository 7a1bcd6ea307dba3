"""sp-run's rendezvous options (--rdzv-endpoint, --rdzv-id, --join-timeout) set up a node's
torchrun agent or the line --print-launch prints; a run that would ignore them is refused in one
line (exit 2) before any rank starts, as --cp-comm allgather with --ring 1 is."""

from __future__ import annotations

import pytest

from sp_planner.cli import run_cmd, run_modes
from tests.cli.launch_stub import Launched

USP = ["--ulysses", "2", "--ring", "2", "--seq-len", "64", "--heads", "4", "--head-dim", "8"]
LOCAL_FIX = "give --nodes N with --rdzv-endpoint HOST:PORT (one sp-run per node) or --print-launch, or drop"


pytestmark = pytest.mark.usefixtures("no_launches")


@pytest.mark.parametrize(("extra", "stderr"), [
    (["--rdzv-id", "job7"], f"error: --rdzv-id job7 is for a multi-node run, and this one starts every rank here: "
                            f"{LOCAL_FIX} it\n"),
    (["--join-timeout", "60"], f"error: --join-timeout 60 is for a multi-node run, and this one starts every rank "
                               f"here: {LOCAL_FIX} it\n"),
    # --rdzv-endpoint without --nodes (or --node-rank) ran every rank here too.
    (["--rdzv-endpoint", "node0:29500", "--rdzv-id", "job7", "--join-timeout", "1.5"],
     f"error: --rdzv-endpoint node0:29500, --rdzv-id job7 and --join-timeout 1.5 are for a multi-node run, and this "
     f"one starts every rank here: {LOCAL_FIX} them\n"),
])
def test_rendezvous_options_of_a_run_on_this_machine_are_refused(run_main, extra, stderr):
    result = run_main(run_cmd, *USP, *extra)
    assert (result.exit_code, result.stderr, result.stdout) == (2, stderr, "")


def test_rendezvous_options_of_a_rank_of_a_launch_are_refused(run_main, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    result = run_main(run_cmd, *USP, "--rdzv-id", "job7")
    assert result.exit_code == 2
    assert result.stderr == ("error: --rdzv-id job7 is for a multi-node run that sp-run starts, and this process is "
                             "already a rank of a torchrun/SLURM launch: drop it (the launcher's own options set its "
                             "rendezvous)\n")


@pytest.mark.parametrize("option, extra", [("--join-timeout", ["--print-launch"]), ("--timeout", [])])
def test_timeouts_must_be_finite(run_main, option, extra):
    # typer's min=1 refuses nan but lets inf by; the ranks would fail on int(inf)
    result = run_main(run_cmd, *USP, *extra, option, "inf")
    assert (result.exit_code, result.stderr) == (2, f"error: {option} inf: must be a finite number of seconds\n")


def test_print_launch_carries_the_rendezvous_options_into_the_torchrun_line(run_main):
    # torchrun's c10d rendezvous takes the join timeout in --rdzv-conf, as sp-run's own agent passes it.
    result = run_main(run_cmd, *USP, "--print-launch", "--rdzv-id", "job7", "--join-timeout", "60")
    assert result.exit_code == 0, result.stderr
    line = result.stdout.replace(" \\\n    ", " ").strip()
    assert line.startswith("torchrun --nnodes=1 --nproc-per-node=4 --rdzv-backend=c10d "
                           "--rdzv-endpoint=HEAD_NODE:29500 --rdzv-id=job7 "
                           "--rdzv-conf=join_timeout=60,read_timeout=60 -m sp_planner.cli.run_cmd ")
    # Without them the line is as before: torchrun's default join timeout, sp-run's id.
    plain = run_main(run_cmd, *USP, "--print-launch").stdout.replace(" \\\n    ", " ")
    assert "--rdzv-id=sp-run -m sp_planner.cli.run_cmd" in plain and "--rdzv-conf" not in plain


def test_print_launch_carries_the_hang_timeout_to_the_ranks(run_main):
    # Each joined rank kills a hung run after --timeout: the printed line dropped it, so the
    # cluster's ranks waited the default 300 s whatever the user gave.
    line = run_main(run_cmd, *USP, "--print-launch", "--timeout", "77.5").stdout.replace(" \\\n    ", " ")
    assert line.strip().endswith("--kernel auto --iters 3 --timeout 77.5")
    plain = run_main(run_cmd, *USP, "--print-launch", "--timeout", "300").stdout.replace(" \\\n    ", " ")
    assert plain.strip().endswith("--kernel auto --iters 3")


def test_a_node_agent_takes_them(run_main, monkeypatch):
    # --nodes with --rdzv-endpoint is one node's agent: the options reach its (stubbed) launch.
    started = []

    def run_node(node, *args, **kwargs):
        started.append(node)
        raise Launched

    monkeypatch.setattr(run_modes, "run_node", run_node)
    with pytest.raises(Launched):
        run_main(run_cmd, *USP, "--nodes", "2", "--rdzv-endpoint", "127.0.0.1:29599", "--rdzv-id", "job7",
                 "--join-timeout", "60")
    with pytest.raises(Launched):
        run_main(run_cmd, *USP, "--nodes", "2", "--rdzv-endpoint", "127.0.0.1:29599")
    assert [(n.rdzv_endpoint, n.rdzv_id, n.join_timeout_s) for n in started] == [
        ("127.0.0.1:29599", "job7", 60.0), ("127.0.0.1:29599", "sp-run", 300.0)]
