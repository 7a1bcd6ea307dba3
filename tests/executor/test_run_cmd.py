"""sp-run end to end through torchrun, its failure paths, and its torch-free import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sp_planner.cli.run_cmd import main
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.plan import ParallelPlan
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

SMALL = ["--seq-len", "48", "--heads", "4", "--head-dim", "8"]


def _sp_run(args: list[str], tmp_path: Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
    # TMPDIR inside tmp_path: the launcher's temporary directory (and so the ranks' command lines)
    # mention it, which lets the stray-process check find leftovers of this run only.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "sp_planner.cli.run_cmd", *args], capture_output=True,
                          text=True, env=env, timeout=timeout_s, cwd=tmp_path)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_import_does_not_import_torch():
    code = "import sys, sp_planner.cli.run_cmd; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_end_to_end_usp_through_torchrun(tmp_path):
    out = tmp_path / "result.json"
    # USP 2x2, GQA with 1 KV head < ulysses 2 (replicated), causal zigzag, bf16, odd multiple (S = 8*5).
    done = _sp_run(["--ulysses", "2", "--ring", "2", "--seq-len", "40", "--heads", "4", "--kv-heads", "1",
                    "--head-dim", "8", "--causal", "--ring-layout", "zigzag", "--dtype", "bfloat16",
                    "--iters", "1", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["passed"] is True
    assert result["comm_bytes_measured"] == result["comm_bytes_predicted"]
    # all-to-all: 10 tokens x 8 x (4+4+2+2) heads, half sent, x2 passes, 2 bytes = 1920;
    # ring: K block 20 x 1 x 8 = 160; fwd 2*160*2 = 640, bwd 640 + 2*2*160*4 = 3200.
    assert result["comm_bytes_predicted"] == {"all_to_all": 1920, "p2p": 640 + 640 + 2560, "all_gather": 0,
                                              "reduce_scatter": 0}
    assert len(result["ranks"]) == 4
    assert "PASSED" in done.stdout


def test_joins_an_existing_torchrun_launch(tmp_path):
    out = tmp_path / "joined.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "sp_planner.cli.run_cmd", "--ring", "2", "--seq-len", "36", "--heads", "2", "--head-dim", "8",
               "--causal", "--iters", "0", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    # ring 2, fp32: K block 18 x 2 x 8 = 288; fwd 2*288*4, bwd 2*288*4 + 2*2*288*4
    assert result["passed"] and result["comm_bytes_measured"] == {"all_to_all": 0, "p2p": 2304 + 2304 + 4608,
                                                              "all_gather": 0, "reduce_scatter": 0}


def _log_named_in(stderr: str) -> Path:
    log = Path(stderr.rstrip("\n").rsplit(" ", 1)[1])
    assert log.name.startswith("sp-run-") and log.suffix == ".log"
    return log


def test_failing_rank_is_named_and_exit_1(tmp_path):
    done = _sp_run(["--ring", "2", *SMALL, "--debug-fail-rank", "1"], tmp_path)
    assert done.returncode == 1
    # One line: the rank, what it was doing, and where its traceback went; nothing else on the terminal.
    assert done.stderr.startswith("error: rank 1 failed: RuntimeError: debug failure injected")
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" in _log_named_in(done.stderr).read_text()
    assert _processes_mentioning(str(tmp_path)) == []


def test_killed_rank_is_one_line_with_its_exit_code_and_the_log(tmp_path):
    done = _sp_run(["--ring", "2", *SMALL, "--debug-fail-rank", "1", "--debug-fail-mode", "kill"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: rank 1 died while 'debug kill injected' without reporting an error "
                                  "(exit code -9: killed by SIGKILL)"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "SIGKILL" in _log_named_in(done.stderr).read_text()
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize(("sent", "code", "named"), [
    (signal.SIGINT, 130, "Ctrl-C"),  # what Ctrl-C sends to sp-run (the ranks run in their own session)
    (signal.SIGTERM, 143, "SIGTERM"),  # what timeout(1), schedulers and CI send
])
def test_a_stop_signal_stops_every_rank_with_one_line(tmp_path, sent, code, named):
    # Rank 0 ignores SIGTERM (as a rank inside a long kernel does) and rank 1 waits for it in a gloo
    # collective (C++, deaf to signals too): only SIGKILL ends them, and torchrun, which starts each
    # rank in a session of its own, would be gone before it sent that (it waits 30 s).
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "sp_planner.cli.run_cmd", "--ring", "2", *SMALL,
                             "--debug-fail-rank", "0", "--debug-fail-mode", "stuck"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    # Generous waits: on a loaded 2-core machine (the test suite's other worker) starting and
    # stopping two torch ranks has taken over a minute; the assertions, not the waits, are the test.
    deadline = time.monotonic() + 120
    while not any("stuck" in p.read_text() for p in tmp_path.glob("sp-run-*/rank0.stage")):
        assert time.monotonic() < deadline and proc.poll() is None, "the ranks never started"
        time.sleep(0.2)
    assert len(_processes_mentioning(str(tmp_path))) == 3  # torchrun and its two ranks
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == code
    assert err.startswith(f"error: interrupted ({named}); every rank was stopped. rank 0: debug stuck injected; "
                          "rank 1: "), err
    assert err.count("\n") == 1
    assert _log_named_in(err).exists()
    assert _processes_mentioning(str(tmp_path)) == []


def test_hung_rank_is_killed_at_the_timeout(tmp_path):
    done = _sp_run(["--ring", "2", *SMALL, "--debug-fail-rank", "0", "--debug-fail-mode", "hang",
                    "--timeout", "20"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: timed out after 20 s; rank 0: debug hang injected; rank 1: ")
    assert done.stderr.count("\n") == 1, done.stderr
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--ulysses", "3", *SMALL], "num_heads 4 is not divisible by tp*ulysses = 1*3"),
    (["--ring", "4", "--seq-len", "36", "--heads", "4", "--head-dim", "8", "--ring-layout", "zigzag"],
     "seq_len 36 is not divisible by 8 (tp 1 x ulysses 1 x ring 4 x 2 for zigzag)"),
    (["--ulysses", "2", *SMALL[:2], "--heads", "6", "--kv-heads", "3", "--head-dim", "8"],
     "num_kv_heads 3 and tp*ulysses 2 must divide one another"),
    (["--ulysses", "2", "--ring", "2", *SMALL, "--nproc", "2"], "needs ulysses*ring = 4 ranks but --nproc 2"),
    (["--ulysses", "2", "--heads", "4"], "give --seq-len, --head-dim"),
    (["--ring", "2", "--seq-len", "12x", "--heads", "4", "--head-dim", "8"], "is not a token count"),
    # Without a ring axis these ran as contiguous p2p and passed, the summary silent about them.
    (["--ulysses", "2", *SMALL, "--cp-comm", "allgather"],
     "error: --cp-comm allgather shapes the ring axis: give --ring 2 or more, not --ring 1 (or drop it)"),
    (["--ulysses", "2", "--ring", "1", *SMALL, "--ring-layout", "zigzag", "--cp-comm", "allgather"],
     "error: --ring-layout zigzag and --cp-comm allgather shape the ring axis: give --ring 2 or more, not --ring 1 "
     "(or drop them)"),
])
def test_bad_input_exits_2_before_launch(capsys, args, message):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_node_rank_outside_the_nodes_is_refused_at_once(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--ring", "2", *SMALL, "--node-rank", "5", "--nodes", "2", "--rdzv-endpoint", "127.0.0.1:29557"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "error: --node-rank 5 is outside the 2 nodes of --nodes: give 0 to 1, one per node\n")


def test_a_slurm_task_without_a_rendezvous_address_is_one_line(capsys, monkeypatch):
    # srun sets SLURM_NTASKS and SLURM_PROCID (and so does an sbatch script's batch step); the
    # rendezvous address is the job script's to export.
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "0")
    with pytest.raises(SystemExit) as done:
        main(["--ulysses", "2", "--ring", "2", *SMALL])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a SLURM task launch was detected (SLURM_NTASKS=4, SLURM_PROCID=0) but "
                          "MASTER_ADDR and MASTER_PORT are not") and err.count("\n") == 1


def _plan_file(tmp_path: Path, plan: ParallelPlan) -> Path:
    from sp_planner.catalog.hardware import load_hardware

    model = ModelSpec(name="tiny", hidden_size=64, intermediate_size=128, num_layers=2, num_heads=8,
                      num_kv_heads=2, head_dim=8, vocab_size=100)
    plan_file = PlanFile(model=model, hardware=load_hardware("h100-sxm"),
                         workload=Workload(seq_len=256, global_batch=2),
                         num_nodes=max(1, plan.world_size // 2), gpus_per_node=2, plan=plan)
    path = tmp_path / "plan.json"
    write_plan_file(path, plan_file)
    return path


def test_plan_larger_than_local_ranks_says_how_to_launch(tmp_path, capsys):
    path = _plan_file(tmp_path, ParallelPlan(tp=2, ulysses=2, ring=2, dp=1))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--nproc", "2"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "needs ulysses*ring = 4 ranks but --nproc 2; sp-run never shrinks a plan" in err
    assert "torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d" in err


@pytest.mark.parametrize("args, message", [
    (["--nproc", "3"], "needs ulysses*ring = 2 ranks but --nproc 3"),
    (["--device", "cuda"], "2 local ranks on --device cuda need one CUDA device each"),
])
def test_a_refused_plan_run_prints_its_error_only(tmp_path, capsys, monkeypatch, args, message):
    """The plan's 8 ranks (tp 2 x ulysses 2 x dp 2) run as one 2-rank attention group: that note came on
    stdout before the refusal of --nproc 3 (or of ranks this machine has no GPU for), two lines and an
    error for bad input. The note waits for a run that starts, and is said then."""
    from sp_planner.cli import run_modes
    from sp_planner.executor import devices

    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    path = _plan_file(tmp_path, ParallelPlan(tp=2, ulysses=2, ring=1, dp=2))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), *args])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1

    class Started(Exception):
        pass

    def start(*args, **kwargs):
        raise Started

    monkeypatch.setattr(run_modes, "run_local", start)
    with pytest.raises(Started):
        main(["--plan", str(path)])
    out = capsys.readouterr().out
    assert " ".join(out.split()) == ("note: the plan has 8 ranks; sp-run runs one attention group (ulysses*ring = 2 "
                                     "ranks, one TP rank's heads).")
    assert all(line.startswith("      ") for line in out.splitlines()[1:])  # under the text, as write_note's


def test_print_launch_gives_c10d_torchrun_command(tmp_path, capsys):
    path = _plan_file(tmp_path, ParallelPlan(tp=2, ulysses=2, ring=2))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--print-launch", "--rdzv-endpoint", "node0:29400", "--rdzv-id", "job7"])
    assert done.value.code == 0
    line = pasted(capsys.readouterr().out)
    assert line == (f"torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=node0:29400 "
                    f"--rdzv-id=job7 -m sp_planner.cli.run_cmd --plan {path} --device cuda --dtype bfloat16 "
                    f"--kernel auto --iters 3")


def test_ranks_per_node_default_is_the_one_help_states(tmp_path, capsys):
    """--help said "[default: the plan's, else 8]", while 4 ranks printed --nproc-per-node=4 without
    a plan and --nodes 2 split a plan's ranks in two: the help now names those sources."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert ("[default: ranks / --nodes, else the plan's GPUs per node (8 without a plan), at most the ranks]"
            in " ".join(capsys.readouterr().out.split()))
    for args, per_node in ((["--ulysses", "2", "--ring", "2", *SMALL], 4),
                           (["--ulysses", "2", "--ring", "2", *SMALL, "--nodes", "2"], 2)):
        with pytest.raises(SystemExit) as done:
            main([*args, "--print-launch"])
        assert done.value.code == 0
        assert f"--nproc-per-node={per_node} " in pasted(capsys.readouterr().out)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_print_launch_keeps_a_device_the_user_names(tmp_path, capsys, device):
    # Unnamed, a cluster line runs on GPUs (above); a named --device cpu (gloo across nodes) was
    # printed as --device cuda.
    path = _plan_file(tmp_path, ParallelPlan(tp=2, ulysses=2, ring=2))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--print-launch", "--rdzv-endpoint", "node0:29400", "--device", device])
    assert done.value.code == 0
    assert f"--plan {path} --device {device} --dtype bfloat16" in pasted(capsys.readouterr().out)


def test_print_launch_wraps_to_the_terminal_and_pastes_as_one_command(tmp_path, capsys, monkeypatch):
    # 60 columns, and paths with spaces: every line fits, and a shell reads the lines back as the
    # one command (a backslash ends each line but the last, no quoted argument is split).
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.chdir(tmp_path)
    folder = Path("my plans")
    folder.mkdir()
    path = _plan_file(folder, ParallelPlan(tp=2, ulysses=2, ring=2))
    out = folder / "the result.json"
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--print-launch", "--rdzv-endpoint", "node0:29400", "--out", str(out)])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1]) and not lines[-1].endswith("\\")
    script = "\n".join(lines).replace("torchrun", "printf '%s\\0'", 1)
    argv = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
    assert argv == ["--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400",
                    "--rdzv-id=sp-run", "-m", "sp_planner.cli.run_cmd", "--plan", str(path), "--device", "cuda",
                    "--dtype", "bfloat16", "--kernel", "auto", "--iters", "3", "--out", str(out)]


def pasted(printed: str) -> str:
    """--print-launch's lines as one line: the backslash continuations joined."""
    return printed.strip().replace(" \\\n    ", " ")


def test_plan_and_shape_flags_conflict(tmp_path, capsys):
    path = _plan_file(tmp_path, ParallelPlan(ulysses=2))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--ring", "2"])
    assert done.value.code == 2
    assert "drop --ring or drop --plan" in capsys.readouterr().err


def test_plan_whose_rank_groups_disagree_with_its_degrees_is_refused(tmp_path, capsys):
    from sp_planner.layout import rank_groups

    plan = ParallelPlan(ulysses=2, ring=2)
    path = _plan_file(tmp_path, plan)
    doc = json.loads(path.read_text())
    doc["rank_groups"] = rank_groups(plan)
    doc["rank_groups"]["ulysses"] = [[0, 2], [1, 3]]  # edited by hand: ring and ulysses swapped
    path.write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "rank_groups['ulysses'] [[0, 2], [1, 3]] disagree with the degrees (dp 1 pp 1 tp 1 ulysses 2 ring 2), " \
           "which give [[0, 1], [2, 3]]" in err


@pytest.mark.parametrize("edit, message", [
    ({"plan": {"ring": 1}}, "plan uses dp*pp*tp*ulysses*ring = 2 GPUs but the cluster has 2 nodes x 2 = 4"),
    ({"num_nodes": 4}, "plan uses dp*pp*tp*ulysses*ring = 4 GPUs but the cluster has 4 nodes x 2 = 8"),
])
def test_a_plan_whose_degrees_do_not_make_its_cluster_is_refused(tmp_path, capsys, edit, message):
    # sp-simulate and sp-report refused such a hand-edited plan file; sp-run ran it, and passed.
    path = _plan_file(tmp_path, ParallelPlan(ulysses=2, ring=2))
    doc = json.loads(path.read_text())
    for key, value in edit.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    doc.pop("rank_layout", None)
    doc.pop("rank_groups", None)
    path.write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
