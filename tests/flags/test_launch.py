"""Launchers (shared reference framework_flags.md section 7): torchrun c10d and SLURM sbatch."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from sp_planner.errors import UserInputError
from sp_planner.flags import render_launch

COMMAND = 'pretrain_gpt.py "${MEGATRON_ARGS[@]}"'


def torchrun_tokens(text: str) -> list[str]:
    """The torchrun command's words (comments dropped, line continuations joined)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return shlex.split(body.replace("\\\n", " "), posix=True)


def option(tokens: list[str], name: str) -> str:
    return tokens[tokens.index(name) + 1]


def test_torchrun_c10d_line():
    tokens = torchrun_tokens(render_launch("torchrun", num_nodes=4, gpus_per_node=8, command=COMMAND,
                                           rdzv_endpoint="node001:29400", job_name="usp-128k"))
    assert tokens[0] == "torchrun"
    assert option(tokens, "--nnodes") == "4" and option(tokens, "--nproc-per-node") == "8"
    assert option(tokens, "--rdzv-backend") == "c10d"
    assert option(tokens, "--rdzv-endpoint") == "node001:29400"
    assert option(tokens, "--rdzv-id") == "usp-128k"
    assert tokens[-2:] == ["pretrain_gpt.py", "${MEGATRON_ARGS[@]}"]
    assert "--node-rank" not in tokens  # ignored with c10d rendezvous


def test_slurm_script_one_agent_per_node():
    text = render_launch("slurm", num_nodes=4, gpus_per_node=8, command="-m torchtitan.train --job.config_file x.toml")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--job-name=sp-train", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-task=8"):
        assert f"#SBATCH {directive}" in lines
    assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' in lines
    srun = torchrun_tokens("\n".join(lines[lines.index(next(line for line in lines if line.startswith("srun"))):]))
    assert srun[:2] == ["srun", "torchrun"]
    assert option(srun, "--nnodes") == "4" and option(srun, "--nproc-per-node") == "8"
    assert option(srun, "--rdzv-backend") == "c10d" and option(srun, "--rdzv-id") == "$SLURM_JOB_ID"
    assert option(srun, "--rdzv-endpoint") == "$MASTER_ADDR:29500"  # MASTER_ADDR exported from head_node
    assert srun[-3:] == ["torchtitan.train", "--job.config_file", "x.toml"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_scripts_are_valid_bash(launcher, tmp_path):
    path = tmp_path / "launch.sh"
    path.write_text(render_launch(launcher, num_nodes=2, gpus_per_node=8, command=COMMAND) + "\n")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kwargs, message", [
    ({"launcher": "mpirun"}, "unknown launcher 'mpirun'; choose one of: torchrun, slurm"),
    ({"num_nodes": 0}, "num_nodes (0)"),
    ({"command": "  "}, "the training command is empty"),
    ({"rdzv_endpoint": "node001"}, "is not HOST:PORT"),
    ({"rdzv_endpoint": "a b:29500"}, "is not HOST:PORT"),
    # A full-width port (U+FF12 ...) matched \d and was written into the torchrun line as it came.
    ({"rdzv_endpoint": "node001:\uff12\uff19\uff15\uff10\uff10"}, "is not HOST:PORT"),
    ({"job_name": "my job"}, "job name 'my job'"),
])
def test_bad_input_is_one_clear_error(kwargs, message):
    args = {"launcher": "torchrun", "num_nodes": 2, "gpus_per_node": 8, "command": COMMAND, **kwargs}
    launcher = args.pop("launcher")
    with pytest.raises(UserInputError) as err:
        render_launch(launcher, **args)
    assert message in str(err.value)


def test_rack_scale_domains_are_named_in_the_launch_text():
    from sp_planner.flags import render_launch

    text = render_launch("slurm", num_nodes=36, gpus_per_node=4, command="train.py", domain_nodes=18)
    assert "NVLink domains of 18 nodes (72 GPUs)" in text and "#SBATCH --nodes=36" in text
    single = render_launch("torchrun", num_nodes=18, gpus_per_node=4, command="train.py", domain_nodes=18)
    assert "NVLink domains" not in single  # the whole job is one rack, which the launch must say
    assert "# The plan runs its groups over NVLink across all 18 nodes: allocate them\n# in one rack" in single
    assert "one rack" not in render_launch("torchrun", num_nodes=2, gpus_per_node=8, command="train.py")
    for text in (single, render_launch("slurm", num_nodes=36, gpus_per_node=4, command="train.py",
                                       domain_nodes=18)):
        assert max(len(line) for line in text.splitlines() if line.startswith("#")) <= 80
    assert "--nproc-per-node 4" in single  # launchers count the host's GPUs, not the domain's


@pytest.mark.parametrize("num_nodes, said", [
    (2, "# Run on each of the 2 nodes (c10d rendezvous: no --node-rank),\n# with MASTER_ADDR set to the first "
        "node's host name, the same on every node.\n"),
    (1, "# Run on the node,\n# with MASTER_ADDR set to localhost.\n"),
])
def test_the_torchrun_line_says_what_master_addr_must_hold(num_nodes, said):
    # The default endpoint is "$MASTER_ADDR:29500"; the text never said to set it, and unset it reads
    # ":29500", which torchrun refuses (the rendezvous endpoint's host name must be a label or address).
    text = render_launch("torchrun", num_nodes=num_nodes, gpus_per_node=8, command=COMMAND)
    assert text.startswith(said)
    assert max(len(line) for line in text.splitlines()) <= 80
    given = render_launch("torchrun", num_nodes=num_nodes, gpus_per_node=8, command=COMMAND,
                          rdzv_endpoint="node001:29400")
    assert "MASTER_ADDR" not in given and given.splitlines()[0].endswith(".")
