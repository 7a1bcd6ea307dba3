"""Golden files: every framework on every shared case, and both launchers.

Each golden file was checked by hand against the shared reference framework_flags.md (flag spellings,
value sets, validity rules). Regenerate with SP_UPDATE_GOLDEN=1 and review the diff before accepting.
"""

from __future__ import annotations

import pytest

from sp_planner.flags import FRAMEWORKS, render_flags, render_launch


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_golden(case_name, framework, build, golden, flags_text):
    flags = render_flags(framework, build.cases[case_name])
    golden(f"{case_name}.{framework}.txt", flags_text(flags))


@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_launch_golden(launcher, golden):
    text = render_launch(launcher, num_nodes=2, gpus_per_node=8, command='pretrain_gpt.py "${MEGATRON_ARGS[@]}"')
    golden(f"launch.{launcher}.txt", text + "\n")
