"""sp-calibrate end to end on 3 gloo ranks (one shared run), refits from saved measurements, and
the exit-2 paths. The whole module launches torchrun once."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sp_planner.calibration.measurements import Measurements
from sp_planner.calibration.schedule import message_sizes
from sp_planner.catalog import load_hardware
from sp_planner.cli import calibrate_cmd, plan_cmd
from sp_planner.specs.calibration import COLLECTIVES

TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
              "intermediate_size": 688, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 4096}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `sp-calibrate --device cpu --nproc-per-node 3 --quick` (3 ranks: group sizes 2 and 3,
    an awkward one, and a rank that sits out the 2-rank group)."""
    tmp = tmp_path_factory.mktemp("calibrate")
    out, raw = tmp / "cpu.yaml", tmp / "raw.json"
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "sp_planner.cli.calibrate_cmd", "--device", "cpu", "--nproc-per-node", "3",
             "--quick", "--out", str(out), "--save-measurements", str(raw)],
            capture_output=True, text=True, timeout=120, cwd=tmp, env=dict(os.environ, TMPDIR=str(tmp)))
        # On a loaded machine (the other test workers) a quick collective timing can fall below a
        # smaller message's, which the fit rightly refuses: measure once more, as a user would.
        if done.returncode == 0 or "times do not grow with message size" not in done.stderr:
            break
    return done, out, raw, tmp


def test_quick_run_writes_a_profile_that_loads(quick_run):
    done, out, _, _ = quick_run
    assert done.returncode == 0, done.stderr
    profile = load_hardware(str(out))
    assert profile.measured_on == datetime.date.today().isoformat()
    env = profile.calibration.environment
    assert (env.backend, env.world_size, env.ranks_per_node, env.dtype) == ("gloo", 3, 3, "bfloat16")
    assert "No built-in profile matches 'cpu" in done.stdout and "Collectives" in done.stdout
    assert "warning: no built-in profile matches" in done.stderr


def test_fitted_bandwidths_are_positive_and_finite(quick_run):
    profile = load_hardware(str(quick_run[1]))
    fits = profile.calibration.collectives
    assert sorted((f.collective, f.group_size) for f in fits) == sorted(
        (c, n) for c in COLLECTIVES for n in (2, 3))
    for fit in fits:
        assert 0 < fit.busbw_bytes_per_s < 1e12 and math.isfinite(fit.busbw_bytes_per_s)  # loopback, not 1 TB/s
        assert 0 <= fit.alpha_s < 1.0
        # sizes are the quick CPU sizes, rounded down to whole bf16 elements per rank; a fit for every
        # collective and group proves gloo runs each of them on bf16 CPU tensors
        sizes = [p.size_bytes for p in fit.points]
        assert all(0 <= want - got < 2 * fit.group_size for got, want in zip(sizes, message_sizes("cpu", True)))
        assert all(0 < p.time_s < 10 for p in fit.points)
    assert 0 < profile.intra_node.bandwidth_bytes_per_s < 1e12


def test_compute_curves_are_measured(quick_run):
    profile = load_hardware(str(quick_run[1]))
    assert [p.tokens for p in profile.efficiency.attention_fwd] == [128, 256, 512]
    assert [p.tokens for p in profile.efficiency.attention_bwd] == [128, 256, 512]
    curves = profile.calibration.attention
    assert sorted((c.direction, c.causal) for c in curves) == [("bwd", False), ("bwd", True), ("fwd", False),
                                                                ("fwd", True)]
    assert [g.name for g in profile.calibration.gemm] == ["qkv", "attn_out", "mlp_up", "mlp_down"]
    assert profile.calibration.copy_bytes_per_s > 0


def test_sp_plan_accepts_the_profile(quick_run, run_main):
    _, out, _, tmp = quick_run
    config = tmp / "tiny" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text(json.dumps(TINY_LLAMA))
    code, stdout, stderr = run_main(plan_cmd, "--model", config, "--hardware", out, "--nodes", "1", "--seq-len", "1k",
                                 "--top", "1", "--format", "json")
    assert code == 0, stderr
    best = json.loads(stdout)["plans"][0]
    assert best["fits"] and 0 < best["step_time_s"] < math.inf


def test_refit_from_saved_measurements_against_a_base(quick_run, run_main, tmp_path):
    _, out, raw, _ = quick_run
    refit = tmp_path / "refit.yaml"
    code, stdout, stderr = run_main(calibrate_cmd, "--measurements", raw, "--base", "H100-SXM", "--out", refit,
                                 "--name", "cpu-vs-h100")
    assert code == 0, stderr
    profile = load_hardware(str(refit))
    assert profile.name == "cpu-vs-h100" and profile.peak_bf16_flops == 989e12
    assert profile.intra_node.bandwidth_bytes_per_s == 450e9  # H100's NVLink line rate; efficiencies tiny
    assert profile.calibration == load_hardware(str(out)).calibration
    assert "H100-SXM predicts" in stdout
    # One warning for the two fields, wrapped to 80 columns.
    assert stderr.count("no inter-node collective") == 1
    assert " ".join(stderr.split()).count("warning: inter_node and efficiency.inter_node: no inter-node "
                                          "collective was measured; using H100-SXM's figures") == 1
    assert max(len(line) for line in stderr.splitlines()) <= 80


def test_a_refit_is_dated_by_its_measurements(quick_run, run_main, tmp_path):
    # Measured on one day, refitted on another: the profile says when it was measured.
    data = json.loads(quick_run[2].read_text())
    assert data["environment"]["measured_on"] is not None  # the measuring ranks date them
    data["environment"]["measured_on"] = "2025-06-01"
    raw = tmp_path / "old.json"
    raw.write_text(json.dumps(data))
    code, _, stderr = run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "refit.yaml")
    assert code == 0, stderr
    profile = load_hardware(str(tmp_path / "refit.yaml"))
    assert profile.measured_on == "2025-06-01" and profile.name.endswith("2025-06-01")
    # Measurements from before they were dated: today's date, with a warning.
    del data["environment"]["measured_on"]
    raw.write_text(json.dumps(data))
    code, _, stderr = run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "undated.yaml")
    assert code == 0 and "the measurements carry no date" in " ".join(stderr.split())


def test_missing_curve_needs_a_base(quick_run, run_main, tmp_path):
    data = json.loads(quick_run[2].read_text())
    data["attention"] = [a for a in data["attention"] if a["direction"] == "fwd"]
    raw = tmp_path / "no-bwd.json"
    raw.write_text(json.dumps(data))
    code, _, stderr = run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "x.yaml")
    assert code == 2
    assert stderr == ("error: efficiency.attention_bwd: no full-mask attention bwd curve was measured and there "
                      "is no base profile to take it from; pass --base NAME (a built-in profile of a similar "
                      "machine)\n")
    code, _, stderr = run_main(calibrate_cmd, "--measurements", raw, "--base", "A100-80GB",
                               "--out", tmp_path / "x.yaml")
    assert code == 0
    assert ("warning: efficiency.attention_bwd: no full-mask attention bwd curve was measured; using A100-80GB's"
            in " ".join(stderr.split()))


def test_import_does_not_import_torch():
    code = "import sys, sp_planner.cli.calibrate_cmd; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _raw_with(tmp_path: Path, make_measurements, value) -> Path:
    data = make_measurements().model_dump(mode="json")
    data["attention"][0]["time_s"] = value
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(data))
    return path


def test_two_batches_at_one_length_are_named(run_main, tmp_path, make_measurements):
    # Two runs' attention samples mixed in one file failed in the fit as "invalid AttentionCurve:
    # attention curve tokens must be strictly increasing, got [128, 128, ...]", naming neither file nor cause.
    data = make_measurements().model_dump(mode="json")
    first = data["attention"][0]
    data["attention"].append({**first, "batch": first["batch"] * 2, "time_s": first["time_s"] * 2})
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(data))
    code, stdout, stderr = run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "p.yaml")
    shape = "full-mask" if not first["causal"] else "causal"
    assert (code, stdout) == (2, "")
    assert stderr == (f"error: measurements file {raw} is invalid: attention {first['direction']} {shape}, "
                      f"{first['heads']} heads x head_dim {first['head_dim']} at {first['tokens']} tokens was timed "
                      f"at batches {first['batch']}, {first['batch'] * 2}; a curve takes one batch per length: "
                      "keep the samples of one run\n")
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "p.json"], "--out p.json must end in .yaml or .yml"),
    # An extension alone: it was told it "must end in .yaml or .yml", which it does.
    (["--out", ".yaml"], "Invalid value for '--out': .yaml is an extension alone, with no file name before .yaml"),
    (["--out", "p.yaml", "--base", "H1000"], "unknown hardware 'H1000'"),
    (["--out", "p.yaml", "--base", "corrupt.yaml"], "hardware profile file corrupt.yaml is malformed"),
    (["--out", "p.yaml", "--nproc-per-node", "0"], "Invalid value for '--nproc-per-node'"),
    (["--out", "p.yaml", "--measurements", "nan"], "attention.0.time_s: Input should be a finite number"),
    (["--out", "p.yaml", "--measurements", "negative"], "attention.0.time_s: Input should be greater than 0"),
    (["--device", "cpu"], "Missing option '--out'"),
    (["--out", "p.yaml", "--nproc-per-node", "1"], "one CPU rank times no collective"),
    (["--out", "p.yaml", "--timeout", "inf"], "--timeout inf: must be a finite number of seconds"),
    (["--out", "p.yaml", "--device", "cuda", "--model", "wide.json"],
     "--model wide.json: head dim 320: CUDA flash attention needs a multiple of 8 up to 256"),
    # A profile named as a built-in one is timed with that GPU's kernel tables (cost.families.profile_key):
    # measurements of a CPU named H100-SXM planned 30% slower than the same ones under the default name.
    (["--out", "p.yaml", "--measurements", "valid", "--name", "h100-sxm"],
     "--name h100-sxm names the built-in profile H100-SXM, whose kernel tables and best published MFU sp-plan "
     "would apply to these measurements; give another name, e.g. H100-SXM-measured"),
    (["--out", "p.yaml", "--measurements", "valid", "--name", " "], "--name is empty"),  # was the default, unsaid
])
def test_bad_input_exits_2_with_one_line(run_main, args, message, tmp_path, monkeypatch, make_measurements):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.yaml").write_text("name: H100\npeak_bf16_flops: [989e12\n")
    (tmp_path / "wide.json").write_text(json.dumps({  # a Hugging Face config.json with head_dim 320
        "model_type": "llama", "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 320, "vocab_size": 1000}))
    valid = make_measurements().attention[0].time_s
    args = [str(_raw_with(tmp_path, make_measurements, {"nan": math.nan, "negative": -1e-3, "valid": valid}[a]))
            if a in ("nan", "negative", "valid") else a for a in args]
    code, stdout, stderr = run_main(calibrate_cmd, *args)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert not (tmp_path / "p.yaml").exists()


def test_more_cpu_ranks_than_memory_holds_are_refused_before_launch(run_main, tmp_path, monkeypatch):
    """--nproc-per-node 1000 started 1000 CPU ranks of 512 MiB each (Python, torch and gloo:
    executor.budget.RUNTIME_OVERHEAD_BYTES) on a machine with 22 GiB free; 4 GiB holds 8."""
    monkeypatch.setattr(calibrate_cmd, "available_bytes", lambda device, plan_file: (4 * 2**30, "MemAvailable"))
    monkeypatch.setattr(calibrate_cmd, "run_local", lambda *a, **k: pytest.fail("launched ranks that cannot fit"))
    code, stdout, stderr = run_main(calibrate_cmd, "--out", tmp_path / "p.yaml", "--nproc-per-node", "1000")
    assert (code, stdout) == (2, "")
    assert stderr == ("error: --nproc-per-node 1000: 1000 CPU ranks need about 500.0 GiB (512.0 MiB a rank for "
                      "Python, torch and gloo) but 4.0 GiB is available (MemAvailable); give --nproc-per-node 8 or "
                      "fewer\n")
    code, _, stderr = run_main(calibrate_cmd, "--out", tmp_path / "p.yaml", "--nproc-per-node", "9")
    assert code == 2 and stderr.endswith("give --nproc-per-node 8 or fewer\n")
    assert not (tmp_path / "p.yaml").exists()


def test_measurements_that_cannot_be_saved_are_kept_and_named(run_main, tmp_path, monkeypatch, make_measurements):
    # deliver_text's line reads "the <what> is kept at": it said "the measurements is kept".
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    raw = _raw_with(tmp_path, make_measurements, make_measurements().attention[0].time_s)
    code, stdout, stderr = run_main(calibrate_cmd, "--measurements", raw, "--out", tmp_path / "p.yaml",
                                    "--save-measurements", "/dev/full")
    assert (code, stdout) == (2, "") and stderr.count("\n") == 1
    assert stderr.startswith("error: could not write /dev/full: No space left on device; the measurements JSON is "
                             f"kept at {tmp_path}/")
    assert Measurements.model_validate_json(Path(stderr.split()[-1]).read_text()) == make_measurements()
    assert not (tmp_path / "p.yaml").exists()


def test_measurements_no_profile_can_be_built_from_are_kept(run_main, tmp_path, monkeypatch, make_measurements):
    """One all-gather whose times fall as its messages grow (1 s less 1 ps a byte) has no bandwidth to fit:
    the run ended on that line after minutes of measuring, its measurements gone unless
    --save-measurements was given. They are kept, and the line says how to refit them."""
    raw = make_measurements()
    falling = tuple(c.model_copy(update={"time_s": 1.0 - c.size_bytes * 1e-12})
                    if (c.collective, c.link, c.group_size) == ("all_gather", "intra", 2) else c
                    for c in raw.collectives)
    measured = raw.model_copy(update={"collectives": falling})
    monkeypatch.setattr(calibrate_cmd, "_measure", lambda **options: measured)
    code, stdout, stderr = run_main(calibrate_cmd, "--out", tmp_path / "p.yaml")
    assert (code, stdout) == (2, "") and stderr.count("\n") == 1
    assert stderr.startswith("error: all_gather on 2 ranks (intra-node): times do not grow with message size")
    kept = Path(stderr.split("the measurements are kept at ")[1].split(":")[0])
    assert stderr.endswith(f"sp-calibrate --measurements {kept} builds the profile from them without measuring "
                           "again\n")
    assert Measurements.model_validate_json(kept.read_text()) == measured
    kept.unlink()
    assert not (tmp_path / "p.yaml").exists()


def test_model_help_names_the_cpu_default(run_main):
    """--help named only the GPU default (Llama-3-8B's layer); without --model a CPU times a small
    dense layer (calibration.schedule.CPU_DEFAULT_SHAPE), hidden 512."""
    code, stdout, _ = run_main(calibrate_cmd, "--help")
    assert code == 0 and "[default: (Llama-3-8B's on GPUs, a small dense layer on CPU)]" in " ".join(stdout.split())
