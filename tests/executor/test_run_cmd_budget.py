"""sp-run's pre-launch check (sp_planner.cli.run_modes.check_fits): a run whose ranks cannot fit
is refused with one line before torchrun starts; a long reference gets a note."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sp_planner.cli import run_modes
from sp_planner.cli.run_cmd import main
from sp_planner.executor.budget import run_memory
from sp_planner.executor.config import RunConfig
from sp_planner.executor.step_memory import step_peak_bytes
from sp_planner.units import GIB

MIB = 2**20
LLAMA = ["--heads", "32", "--kv-heads", "8", "--head-dim", "128", "--causal"]


def _refusal(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_run_that_does_not_fit_is_refused_before_launch(capsys, monkeypatch):
    """16K tokens of Llama-3-8B attention on 2 ranks need 3.3 GiB a rank: the global fp32 inputs
    and reference 1,280 MiB, the steps 1,570 MiB (the single-device run's bf16 results 320 MiB,
    the rank's bf16 Q, K, V, dO 160 MiB, the step replayed 930 MiB, the validated step's results
    160 MiB), the runtime 512 MiB; 4 GiB shared by the 2 local ranks is 2 GiB each."""
    monkeypatch.setattr(run_modes, "available_bytes", lambda device, plan_file: (4 * GIB, "MemAvailable"))
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a run that cannot fit"))
    cfg = RunConfig(ring=2, ulysses=1, seq_len=16384, num_heads=32, num_kv_heads=8, head_dim=128, causal=True,
                    dtype="bfloat16")
    assert step_peak_bytes(cfg) == 930 * MIB
    err = _refusal(capsys, ["--ring", "2", "--seq-len", "16k", *LLAMA, "--dtype", "bfloat16"])
    assert ("needs about 3.3 GiB per rank (the global fp32 inputs and reference 1.2 GiB, then its sharded steps "
            "(sp-run's step replayed) 1.5 GiB, and 512.0 MiB for the runtime)") in err
    assert "but 2.0 GiB is available per rank (4.0 GiB MemAvailable / 2 local ranks)" in err
    assert "never shrinks a plan" in err and "--device cuda" in err and "smaller --seq-len" in err
    assert "torchrun --nnodes=1 --nproc-per-node=2 --rdzv-backend=c10d" in err


def test_fp32_run_is_refused_by_what_its_steps_hold(capsys, monkeypatch):
    """The same run in fp32 (sp-run's default without --plan) needs 4.6 GiB a rank: inputs and
    reference 1,280 MiB, the steps 2,882 MiB (the single-device run's fp32 results 640 MiB, the
    rank's Q, K, V, dO 320 MiB, the step replayed 1,602 MiB, the validated step's results 320 MiB),
    the runtime 512 MiB. The layer model counted 769 MiB for the steps and no single-device run in
    fp32, 2.5 GiB in all: 3 GiB a rank passed the check and the ranks then ran out of memory."""
    monkeypatch.setattr(run_modes, "available_bytes", lambda device, plan_file: (6 * GIB, "MemAvailable"))
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a run that cannot fit"))
    cfg = RunConfig(ring=2, ulysses=1, seq_len=16384, num_heads=32, num_kv_heads=8, head_dim=128, causal=True)
    assert step_peak_bytes(cfg) == 1602 * MIB
    assert run_memory(cfg).executor_bytes == (640 + 320 + 1602 + 320) * MIB
    err = _refusal(capsys, ["--ring", "2", "--seq-len", "16k", *LLAMA])
    assert err.startswith("error: the run needs about 4.6 GiB per rank (the global fp32 inputs and reference 1.2 GiB, "
                          "then its sharded steps (sp-run's step replayed) 2.8 GiB, and 512.0 MiB for the runtime) "
                          "but 3.0 GiB is available per rank (6.0 GiB MemAvailable / 2 local ranks)")


def test_terabyte_run_is_refused_on_this_machine(capsys, monkeypatch):
    """64M tokens: the global fp32 Q, K, V and dO alone are 64M x 80 heads x 128 x 4 B = 2.5 TiB."""
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a run that cannot fit"))
    err = _refusal(capsys, ["--ring", "2", "--seq-len", "64m", *LLAMA])
    assert "MemAvailable in /proc/meminfo / 2 local ranks" in err


def test_ring_of_a_million_ranks_is_refused_without_replaying_its_step(capsys, monkeypatch):
    """--ring 1048576 (the option's bound): the replay of one step is quadratic in the ring (4096
    ranks took 39 s, a million hung for hours); the inputs, reference and runtime a rank holds
    throughout, 2 GiB + 512 MiB, already exceed 4 GiB / 1048576 local ranks = 4 KiB."""
    monkeypatch.setattr(run_modes, "available_bytes", lambda device, plan_file: (4 * GIB, "MemAvailable"))
    monkeypatch.setattr(run_modes, "run_memory", lambda cfg: pytest.fail("replayed the step of a run that cannot fit"))
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a run that cannot fit"))
    err = _refusal(capsys, ["--ring", "1048576", "--seq-len", "1M", "--heads", "4", "--head-dim", "16"])
    # Q, K, V, dO and O, dQ, dK, dV in fp32: 2 x 1M tokens x (4 + 4 heads) x (16 + 16) x 4 B = 2 GiB
    assert err.startswith("error: the run needs over 2.5 GiB per rank (the global fp32 inputs and reference 2.0 GiB "
                          "and 512.0 MiB for the runtime, before any phase's own) but 4.0 KiB is available per rank "
                          "(4.0 GiB MemAvailable / 1048576 local ranks); sp-run never shrinks a plan")


def test_cpu_memory_is_memavailable():
    have, source = run_modes.available_bytes("cpu", None)
    lines = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
    total = int(lines["MemTotal"].split()[0]) * 1024
    assert 0 < have <= total and source == "MemAvailable in /proc/meminfo"


def _check(cfg: RunConfig, local_ranks: int, monkeypatch) -> str:
    monkeypatch.setattr(run_modes, "available_bytes", lambda device, plan_file: (1024 * GIB, "MemAvailable"))
    console = Console(file=io.StringIO(), width=200)
    run_modes.check_fits(cfg, local_ranks, None, "torchrun ...", 300, console)
    return console.file.getvalue()


def test_long_reference_gets_a_note(monkeypatch):
    """16K causal, 32 heads: 6.6e12 reference flops, one core a rank at 63e9 per second: 106 s."""
    cfg = RunConfig(ring=2, ulysses=1, seq_len=16384, num_heads=32, num_kv_heads=8, head_dim=128, causal=True)
    note = _check(cfg, 2, monkeypatch)
    assert note.startswith("note: each rank computes the full fp32 reference first, about 105.53 s on cpu")
    assert "--timeout 300 s" in note


def test_short_reference_has_no_note(monkeypatch):
    cfg = RunConfig(ring=2, ulysses=1, seq_len=4096, num_heads=32, num_kv_heads=8, head_dim=128, causal=True)
    assert _check(cfg, 2, monkeypatch) == ""  # 4K: 1/16 of the 16K work, about 7 s


def test_reference_longer_than_the_timeout_is_refused(monkeypatch):
    """32K causal, 32 heads: about four times the 16K reference above (its diagonal a little less),
    about 420 s a rank, past 300 s."""
    cfg = RunConfig(ring=2, ulysses=1, seq_len=32768, num_heads=32, num_kv_heads=8, head_dim=128, causal=True)
    with pytest.raises(run_modes.UserInputError) as refused:
        _check(cfg, 2, monkeypatch)
    assert str(refused.value) == ("each rank computes the full fp32 reference first, about 419.68 s on cpu here, "
                                  "longer than --timeout 300 s; raise --timeout to at least 840 or pass a "
                                  "shorter --seq-len")


def test_flags_run_that_does_not_fit_offers_no_plan_advice(capsys, monkeypatch):
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a run that cannot fit"))
    err = _refusal(capsys, ["--ring", "2", "--seq-len", "64m", *LLAMA])
    assert err.rstrip().endswith("or pass a smaller --seq-len") and "--plan" not in err


def test_nproc_other_than_the_ranks_names_the_fix(capsys, monkeypatch):
    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched"))
    args = ["--ulysses", "2", "--ring", "2", "--seq-len", "64", "--heads", "4", "--head-dim", "8", "--nproc"]
    err = _refusal(capsys, [*args, "8"])
    assert err == "error: the run needs ulysses*ring = 4 ranks but --nproc 8; drop --nproc or give --nproc 4\n"
    err = _refusal(capsys, [*args, "3"])
    assert err.startswith("error: the run needs ulysses*ring = 4 ranks but --nproc 3; sp-run never shrinks a plan: "
                          "give --nproc 4 (or drop it), or on a cluster run on every node: torchrun ")


def test_rendezvous_endpoint_without_a_port_is_refused(capsys):
    err = _refusal(capsys, ["--ring", "2", "--seq-len", "64", "--heads", "4", "--head-dim", "8", "--print-launch",
                            "--rdzv-endpoint", "node0"])
    assert err == "error: rendezvous endpoint 'node0' is not HOST:PORT (e.g. node0:29500)\n"
