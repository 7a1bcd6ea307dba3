"""The sbatch script of sp_planner.flags.launch runs the two-host USP job: its body is run by bash
with the SLURM variables set by hand, `srun` replaced by a stub that starts the command once in
each network namespace (as slurmstepd would on each node) and `scontrol` by a stub naming them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from sp_planner.flags.launch import render_launch

from .jobs import PER_RANK, USP_ARGS
from ..netns import HOSTNAMES, TwoHosts, kill_group, processes_mentioning

NODELIST = "sp-node[0-1]"


def _script(out: Path) -> str:
    command = shlex.join(["-m", "sp_planner.cli.run_cmd", *USP_ARGS, "--timeout", "60", "--out", str(out)])
    return render_launch("slurm", num_nodes=2, gpus_per_node=2, command=command, job_name="usp-test")


def test_sbatch_script_is_valid_bash(tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(_script(tmp_path / "out.json"))
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --nodes=2" in path.read_text()


def _stubs(hosts: TwoHosts, bin_dir: Path) -> None:
    bin_dir.mkdir()
    starts = []
    for node, (ns, host, veth) in enumerate(zip(hosts.namespaces, HOSTNAMES, hosts.veths)):
        starts.append(
            f"ip netns exec {ns} unshare --uts sh -c 'hostname \"$0\" && exec \"$@\"' {host} "
            f"env SLURM_NODEID={node} SLURM_PROCID={node} SLURM_LOCALID=0 SLURM_NTASKS=2 "
            f"GLOO_SOCKET_IFNAME={veth} \"$@\" &\npids+=($!)")
    (bin_dir / "srun").write_text("\n".join([
        "#!/bin/bash",
        "# srun stub: one task per node (--ntasks-per-node=1), each in its host's namespace.",
        "pids=()", *starts,
        "rc=0",
        'for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done',
        "exit $rc", ""]))
    (bin_dir / "scontrol").write_text("\n".join([
        "#!/bin/bash",
        "# scontrol stub: only `scontrol show hostnames <the allocation's node list>`.",
        f'[ "$1 $2 $3" = "show hostnames {NODELIST}" ] || {{ echo "scontrol stub: $*" >&2; exit 1; }}',
        # One line at a time, as scontrol writes them: a reader that stops early (head -n 1) would
        # end it with SIGPIPE, which `set -o pipefail` makes fatal.
        *(f"echo {host}; sleep 0.2" for host in HOSTNAMES), ""]))
    for stub in ("srun", "scontrol"):
        (bin_dir / stub).chmod(0o755)


def test_sbatch_body_runs_the_job_on_two_hosts(two_hosts, tmp_path):
    out = tmp_path / "out.json"
    script = tmp_path / "job.sbatch"
    script.write_text(_script(out))
    _stubs(two_hosts, tmp_path / "bin")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               SLURM_JOB_NODELIST=NODELIST, SLURM_NNODES="2", SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="4242",
               SLURM_JOB_NAME="usp-test", TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(["bash", str(script)], env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, stderr[-3000:]
    # Each node's local rank 0 prints the summary: the job ran on both hosts and passed.
    assert stdout.count("sp-run PASSED: ulysses 2 x ring 2 (4 ranks, cpu)") == 2
    result = json.loads(out.read_text())
    assert result["passed"] is True
    assert [r["host"] for r in result["ranks"]] == [HOSTNAMES[0]] * 2 + [HOSTNAMES[1]] * 2
    assert [r["comm_bytes_measured"] for r in result["ranks"]] == [
        PER_RANK.model_dump()] * 4
    assert two_hosts.pids() == [] and processes_mentioning(str(tmp_path)) == []
