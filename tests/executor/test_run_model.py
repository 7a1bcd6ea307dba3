"""What sp-run runs of a plan's model beyond plain attention (sp_planner.cli.run_model): MLA's q/k and
v head dims, Gemma 2's logit softcap and its local layers' window, and the flags that ask for
them; then two plans end to end through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sp_planner.catalog.hardware import load_hardware
from sp_planner.catalog.models import load_model
from sp_planner.cli.run_cmd import main
from sp_planner.cli.run_config import config_from_plan
from sp_planner.cli.run_model import model_attention, settled_plan
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import PlanFile, write_plan_file
from sp_planner.specs.attention import MLASpec, WindowSpec
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def test_deepseek_v3_runs_q_k_at_192_and_v_at_128_at_its_yarn_softmax_scale():
    fields, note = model_attention(load_model("deepseek-v3"), 4096, None)
    # mscale = 0.1 * 1.0 * ln 40 + 1 = 1.36889; scale = mscale^2 / sqrt(192) = 1.87385 / 13.8564
    assert fields == {"head_dim": 192, "v_head_dim": 128, "softmax_scale": pytest.approx(0.135234, rel=1e-5)}
    assert note is None


@pytest.mark.parametrize(("name", "scale"), [("gemma-2-27b", 1 / 12), ("gemma-3-27b", 0.0771517)])
def test_gemma_27b_models_run_their_query_pre_attn_scalar(name, scale):
    # query_pre_attn_scalar 144 (Gemma 2) and 168 (Gemma 3), not head_dim 128: 144**-0.5, 168**-0.5
    fields, _ = model_attention(load_model(name), 32768, None)
    assert fields["head_dim"] == 128 and fields["softmax_scale"] == pytest.approx(scale, rel=1e-6)


def test_gemma_2_runs_a_capped_local_layer_or_asked_for_a_global_one():
    gemma = load_model("gemma-2-9b")
    fields, note = model_attention(gemma, 32768, None)
    assert fields == {"head_dim": 256, "softcap": 50.0, "window": 4096, "window_kind": "sliding"}
    assert note == ("Gemma-2-9B has 21 sliding-window (4K-token) layers of 42; sp-run runs one local layer "
                    "(--layer global runs the other kind)")
    fields, note = model_attention(gemma, 32768, "global")
    assert fields == {"head_dim": 256, "softcap": 50.0} and "runs one global layer" in note
    fields, note = model_attention(gemma, 4096, None)  # the window spans the sequence: all layers alike
    assert fields == {"head_dim": 256, "softcap": 50.0} and "every layer runs as full attention" in note


def test_layer_choices_a_model_does_not_have_are_refused():
    with pytest.raises(UserInputError, match="every layer of Mistral-7B is a sliding-window"):
        model_attention(load_model("mistral-7b"), 32768, "global")
    with pytest.raises(UserInputError, match="has no local-attention layers"):
        model_attention(load_model("llama3-8b"), 32768, "local")


@pytest.mark.parametrize(("args", "message"), [
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--window", "8"],
     "a sliding window (8 tokens) is a causal model's local attention; add --causal"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--layer", "global"],
     "--layer picks a layer of a plan's model (--plan)"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--softcap", "0"],
     "--softcap 0: must be a finite positive number"),
    # nan passed typer's range and was refused as "nan is out of range: it must be at most 1e+06"
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--softcap", "nan"],
     "--softcap nan: must be a finite positive number"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--softmax-scale", "nan"],
     "--softmax-scale nan: must be a finite positive number"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--softmax-scale", "-0.1"],
     "--softmax-scale -0.1: must be a finite positive number"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--softmax-scale", "inf"],
     "--softmax-scale inf: must be a finite positive number"),
    # A window not shorter than the sequence masks nothing: it ran full attention and passed as windowed.
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--causal", "--window", "48"],
     "a sliding window of 48 tokens covers the whole 48-token sequence, which is full causal attention"),
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--causal", "--window", "64",
      "--window-kind", "chunked"],
     "a chunked window of 64 tokens covers the whole 48-token sequence"),
    # A window kind without a window ran plain attention and passed.
    (["--seq-len", "48", "--heads", "4", "--head-dim", "8", "--causal", "--window-kind", "chunked"],
     "--window-kind chunked shapes a local window: give --window"),
])
def test_bad_mod_flags_exit_2_before_launch(capsys, args, message):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_print_launch_carries_the_mod_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--ring", "2", "--seq-len", "48", "--heads", "4", "--head-dim", "12", "--v-head-dim", "8", "--causal",
              "--softmax-scale", "0.3", "--softcap", "30", "--window", "16", "--window-kind", "chunked",
              "--print-launch"])
    assert done.value.code == 0
    line = capsys.readouterr().out
    assert "--v-head-dim 8 --softmax-scale 0.3 --softcap 30.0 --window 16 --window-kind chunked" in line


TINY = dict(hidden_size=64, intermediate_size=128, num_layers=2, vocab_size=100)


def _plan(tmp_path: Path, model: ModelSpec, plan: ParallelPlan, seq_len: int, causal: bool = True) -> Path:
    plan_file = PlanFile(model=model, hardware=load_hardware("h100-sxm"),
                         workload=Workload(seq_len=seq_len, global_batch=1, causal=causal), num_nodes=1,
                         gpus_per_node=2, plan=plan)
    path = tmp_path / f"{model.name}.json"
    write_plan_file(path, plan_file)
    return path


def _sp_run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "sp_planner.cli.run_cmd", *args], capture_output=True, text=True,
                          env=env, timeout=180, cwd=tmp_path)


@pytest.mark.timeout(200)
def test_a_gemma_like_plan_runs_its_local_layer_capped_and_windowed(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    model = ModelSpec(name="tiny-gemma", num_heads=4, num_kv_heads=2, head_dim=8, **TINY,
                      window=WindowSpec(window_tokens=8, local_layers=1, global_layers=1, logit_softcapping=5.0))
    path = _plan(tmp_path, model, ParallelPlan(ulysses=2), seq_len=32)
    out = tmp_path / "result.json"
    done = _sp_run(["--plan", str(path), "--iters", "0", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["passed"] and result["kernel"].startswith("math")
    assert (result["config"]["softcap"], result["config"]["window"]) == (5.0, 8)
    note = " ".join(line.strip() for line in done.stdout.split("sp-run PASSED")[0].splitlines())
    assert "note: tiny-gemma has 1 sliding-window (8-token) layers of 2; sp-run runs one local layer" in note
    assert max(map(len, done.stdout.splitlines())) <= 80  # the note was one line of 90-130 columns
    assert "logit softcap 5, sliding window 8" in done.stdout


def test_a_plan_hand_edited_to_non_causal_for_a_windowed_model_is_one_line(tmp_path, capsys):
    """It was told "add --causal", and then, with --causal, "drop --causal or drop --plan"."""
    model = ModelSpec(name="tiny-gemma", num_heads=4, num_kv_heads=2, head_dim=8, **TINY,
                      window=WindowSpec(window_tokens=8, local_layers=1, global_layers=1))
    path = _plan(tmp_path, model, ParallelPlan(ulysses=2), seq_len=32, causal=False)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--iters", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err == ("error: the plan file's workload is not causal (\"causal\": false), but tiny-gemma's sliding-window "
                   "layers are a causal model's local attention: set \"causal\": true in the plan file's workload "
                   "(or run a global layer with --layer global)\n")


@pytest.mark.parametrize("extra", [[], ["--print-launch"], ["--nodes", "2", "--nproc-per-node", "1",
                                                  "--rdzv-endpoint", "node0:29500", "--node-rank", "0"]])
def test_an_alibi_plan_is_refused_in_one_line_before_any_launch(tmp_path, capsys, monkeypatch, extra):
    """sp-run's kernels add no ALiBi bias: the plan ran plain attention and passed, saying nothing."""
    from sp_planner.cli import run_modes

    for name in ("run_local", "run_node", "run_worker"):
        monkeypatch.setattr(run_modes, name, lambda *a, **k: pytest.fail("launched an ALiBi plan"))
    model = ModelSpec(name="tiny-mpt", num_heads=4, num_kv_heads=4, head_dim=8, **TINY, position_embedding="alibi")
    path = _plan(tmp_path, model, ParallelPlan(ulysses=2), seq_len=32)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--iters", "0", *extra])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: tiny-mpt biases its attention scores with ALiBi (position_embedding \"alibi\"), "
                            "which sp-run's attention does not apply (it applies a logit softcap and local windows "
                            "only); for plain attention at the plan's shapes, give them as flags instead of --plan\n")
    assert captured.out == ""


def test_a_sink_softmax_plan_is_refused_in_one_line_before_any_launch(tmp_path, capsys, monkeypatch):
    """gpt-oss's sinks add a logit to each softmax row that sp-run's merges do not carry."""
    from sp_planner.cli import run_modes

    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a sink plan"))
    model = ModelSpec(name="tiny-oss", num_heads=4, num_kv_heads=4, head_dim=8, **TINY, softmax_type="learnable")
    path = _plan(tmp_path, model, ParallelPlan(ulysses=2), seq_len=32)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--iters", "0"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "error: tiny-oss's attention softmax is learnable (attention sinks), which sp-run's attention does not apply "
        "(its softmax is vanilla); for plain attention at the plan's shapes, give them as flags instead of --plan\n")


@pytest.mark.timeout(200)
def test_an_mla_plan_runs_its_own_head_dims_and_softmax_scale_round_the_ring(tmp_path):
    # head_dim 10 = (8 + 4 + 8) / 2 is the planner's mean; the run moves q/k of 12 and v of 8, at
    # the model's softmax scale 0.6 (1/sqrt(12) = 0.289 without it) through the padded CPU flash kernel.
    model = ModelSpec(name="tiny-mla", num_heads=4, num_kv_heads=4, head_dim=10, **TINY, softmax_scale=0.6,
                      mla=MLASpec(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8))
    path = _plan(tmp_path, model, ParallelPlan(ring=2, ring_layout="zigzag"), seq_len=32)
    out = tmp_path / "result.json"
    done = _sp_run(["--plan", str(path), "--iters", "0", "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["passed"] and "zero-padded to 12" in result["kernel"]
    config = result["config"]
    assert (config["head_dim"], config["v_head_dim"], config["softmax_scale"]) == (12, 8, 0.6)
    # bf16 K block 16 tokens x 4 heads x 12 = 768 elements, V 16 x 4 x 8 = 512: (768 + 512) x 2 bytes each
    # way in the forward and the backward, and x 4 (fp32 dK/dV) on each of 2 hops.
    assert result["comm_bytes_measured"]["p2p"] == 1280 * 2 * 2 + 1280 * 4 * 2
    assert result["comm_bytes_measured"] == result["comm_bytes_predicted"]
    assert "head_dim 12 (q/k) / 8 (v), softmax scale 0.6 (1/sqrt(12) = 0.2887)" in done.stdout


def _older_plan(tmp_path: Path, model: ModelSpec, seq_len: int = 64, drop: tuple[str, ...] = (),
                **model_edits) -> Path:
    """A plan written now, its model's softmax_scale (and `drop`) deleted as files written before
    them lack them."""
    path = _plan(tmp_path, model, ParallelPlan(ulysses=2), seq_len=seq_len)
    doc = json.loads(path.read_text())
    for key in ("softmax_scale", *drop):
        del doc["model"][key]
    doc["model"].update(model_edits)
    path.write_text(json.dumps(doc))
    return path


def _launch_line(args: list[str], capsys) -> tuple[str, str]:
    with pytest.raises(SystemExit) as done:
        main([*args, "--print-launch", "--rdzv-endpoint", "node0:29500"])
    assert done.value.code == 0
    captured = capsys.readouterr()
    return " ".join(captured.out.replace("\\\n", " ").split()), captured.err


def test_an_older_gemma_plan_runs_its_scale_with_one_note(tmp_path, capsys):
    path = _older_plan(tmp_path, load_model("gemma-2-27b"))
    launch, err = _launch_line(["--plan", str(path)], capsys)
    assert err == (f"note: plan file {path} was written before plan files recorded the softmax scale; its model is "
                   "the built-in Gemma-2-27B, whose scale 0.0833333 (not 1/sqrt(128) = 0.0883883) is applied\n")
    assert "--softmax-scale" not in launch  # every node settles it the same way
    plan_file, note = settled_plan(path, None)
    cfg, _ = config_from_plan(plan_file, {}, None, dtype="bfloat16")
    assert cfg.softmax_scale == 144**-0.5 and cfg.scale == 144**-0.5


def test_an_older_plan_whose_scale_cannot_be_told_takes_softmax_scale(tmp_path, capsys):
    path = _older_plan(tmp_path, load_model("gemma-2-27b"), num_layers=40)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--print-launch"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: plan file {path} was written before plan files recorded "
                                                   "the softmax scale, and its model bears the name of the built-in")
    assert "pass --softmax-scale with the model's scale" in err
    launch, err = _launch_line(["--plan", str(path), "--softmax-scale", "0.0833"], capsys)
    assert err == "" and f"--plan {path} --softmax-scale 0.0833 --device cuda" in launch
    plan_file, note = settled_plan(path, 0.0833)
    assert note is None and config_from_plan(plan_file, {}, None)[0].softmax_scale == 0.0833


def test_softmax_scale_with_a_plan_that_records_one_is_refused(tmp_path, capsys):
    path = _plan(tmp_path, load_model("gemma-2-27b"), ParallelPlan(ulysses=2), seq_len=64)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--softmax-scale", "0.1"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (f"error: --softmax-scale: plan file {path} records its model's softmax scale "
                                       "(0.0833333); drop --softmax-scale or drop --plan\n")


BEFORE_MLA = ("mla", "window", "qk_norm")  # a plan of 2026-11-22 to 12-01 (planfile_unrecorded)


def test_an_older_gemma_plan_without_a_window_runs_its_capped_local_layer(tmp_path, capsys):
    # Read as written, it ran full attention at 1/sqrt(128) without the softcap, and said nothing.
    path = _older_plan(tmp_path, load_model("gemma-2-27b"), seq_len=8192, drop=BEFORE_MLA)
    launch, err = _launch_line(["--plan", str(path)], capsys)
    assert err == (f"note: plan file {path} was written before plan files recorded the attention window and logit "
                   "softcap (window) and the softmax scale; its model is the built-in Gemma-2-27B, whose window "
                   "(sliding, 4K tokens, 1 local : 1 global layers, logit softcap 50) and scale 0.0833333 (not "
                   "1/sqrt(128) = 0.0883883) are applied\n")
    assert f"--plan {path} --device cuda" in launch  # every node settles it the same way
    plan_file, _ = settled_plan(path, None)
    cfg, note = config_from_plan(plan_file, {}, None, dtype="bfloat16")
    assert (cfg.softcap, cfg.window, cfg.window_kind, cfg.softmax_scale) == (50.0, 4096, "sliding", 144**-0.5)
    assert "Gemma-2-27B has 23 sliding-window (4K-token) layers of 46" in note
    cfg, _ = config_from_plan(plan_file, {}, "global", dtype="bfloat16")
    assert (cfg.softcap, cfg.window) == (50.0, None)


def test_an_older_plan_whose_window_cannot_be_told_is_refused_in_one_line(tmp_path, capsys):
    path = _older_plan(tmp_path, load_model("gemma-2-27b"), drop=BEFORE_MLA, num_layers=40)
    for scale in ([], ["--softmax-scale", "0.0833"]):  # the scale given, the window still unknown
        with pytest.raises(SystemExit) as done:
            main(["--plan", str(path), *scale, "--print-launch"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"error: plan file {path} was written before plan files recorded the attention window and logit softcap "
            "(window)" + ("" if scale else " and the softmax scale") + ", and its model bears the name of the built-in")
        assert err.endswith("(sp-run gives the window by --window, --window-kind and --softcap only without --plan)\n")


def test_a_sparse_attention_plan_is_refused_in_one_line_before_any_launch(tmp_path, capsys, monkeypatch):
    """DeepSeek-V3.2's queries attend to their top-k keys only; sp-run's attention is dense."""
    from sp_planner.cli import run_modes
    from sp_planner.specs.attention import DSASpec

    monkeypatch.setattr(run_modes, "run_local", lambda *a, **k: pytest.fail("launched a DSA plan"))
    # MLA of 2 heads: qk 8 + 4, v 8, head_dim (8 + 4 + 8) / 2 = 10.
    model = ModelSpec(name="tiny-dsa", num_heads=2, num_kv_heads=2, head_dim=10, **TINY,
                      mla=MLASpec(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8),
                      dsa=DSASpec(index_n_heads=4, index_head_dim=8, index_topk=4))
    # All-gather CP, the only CP a DSA plan runs (plan rule dsa_cp).
    path = _plan(tmp_path, model, ParallelPlan(ring=2, cp_comm="allgather"), seq_len=32)
    with pytest.raises(SystemExit) as done:
        main(["--plan", str(path), "--iters", "0"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "error: tiny-dsa attends to the top 4 keys its DeepSeek Sparse Attention indexer picks, which sp-run's "
        "attention does not apply (it is dense); for plain attention at the plan's shapes, give them as flags instead "
        "of --plan\n")
