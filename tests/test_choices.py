"""sp_planner.choices: the options' Literals, defined once and imported by the modules that use them,
loadable without the planner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

from sp_planner import choices, plan, recompute
from sp_planner.cost import attention_kernels
from sp_planner.flags import base, launch

ROOT = Path(__file__).resolve().parents[1]


def test_the_modules_that_defined_the_choices_hold_them():
    # A Literal written again in one of them would be a second source; this catches it once it drifts
    # (typing caches Literals, so an identical copy is the same object).
    assert plan.Precision is choices.Precision and plan.Fp8Recipe is choices.Fp8Recipe
    assert plan.CpComm is choices.CpComm and plan.MAX_DEGREE == choices.MAX_DEGREE == 2**20
    assert recompute.Recompute is choices.Recompute
    assert attention_kernels.AttentionKernel is choices.AttentionKernel
    assert base.Framework is choices.Framework and launch.Launcher is choices.Launcher
    # The tuples derived from them, in the Literals' order (integer codes in candidate arrays).
    assert plan.PRECISIONS == ("bf16", "fp8", "mxfp8")
    assert plan.CP_COMMS == ("p2p", "allgather")
    assert recompute.RECOMPUTE[:3] == ("none", "selective", "full") and len(recompute.RECOMPUTE) == 8
    assert launch.LAUNCHERS == ("torchrun", "slurm") == get_args(choices.Launcher)
    assert attention_kernels.ATTENTION_KERNELS == ("fa2", "fa3", "cudnn", "sdpa", "npu")


def test_importing_the_choices_loads_typing_alone():
    script = ("import sys; before = set(sys.modules); import sp_planner.choices; "
              "print(*sorted(m for m in set(sys.modules) - before if not m.startswith(('typing', '_typing', "
              "'collections'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.stdout.split() == ["sp_planner", "sp_planner.choices"]
