"""benchmarks/attention_sweep.py, the GPU check's step 5, on CPU: its rows, its FLOP count, and
the fallback for a backend that refuses grouped-query attention."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from .conftest import run_cpu_step

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sweep():
    spec = importlib.util.spec_from_file_location("attention_sweep", REPO / "benchmarks" / "attention_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_are_flash_attentions_count(sweep):
    # 4 b h s^2 d: b 2, h 16, s 8192, d 128; causal half.
    assert sweep.forward_flops(2, 16, 8192, causal=False) == 4 * 2 * 16 * 8192**2 * 128
    assert sweep.forward_flops(2, 16, 8192, causal=True) == 2 * 2 * 16 * 8192**2 * 128


def test_a_backend_refusing_gqa_gets_expanded_heads(sweep, monkeypatch):
    real = sweep.F.scaled_dot_product_attention
    calls = []

    def no_gqa(q, k, v, *, is_causal, enable_gqa):
        calls.append((enable_gqa, k.shape[1]))
        if enable_gqa:
            raise RuntimeError("No available kernel. Aborting execution.")
        return real(q, k, v, is_causal=is_causal)

    monkeypatch.setattr(sweep.F, "scaled_dot_product_attention", no_gqa)
    shape = dict(set="cudnn-fe", batch=1, heads=4, kv_heads=2, tokens=64, causal=True)
    row = sweep.measure("flash", shape, device=torch.device("cpu"), dtype=torch.float32, repeats=1)
    assert row["gqa_expanded"] and "error" not in row and row["fwd_s"] > 0 and row["bwd_s"] > 0
    assert calls[0] == (True, 2) and calls[-1] == (False, 4)  # native first, then K/V at 4 heads
    assert row["fwd_tflops"] == pytest.approx(sweep.forward_flops(1, 4, 64, True) / row["fwd_s"] / 1e12)


def test_a_backend_refusing_the_shape_is_a_row_with_its_error(sweep, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("cuDNN SDPA is not supported on this device\nmore")

    monkeypatch.setattr(sweep.F, "scaled_dot_product_attention", refuse)
    shape = dict(set="lengths", batch=1, heads=2, kv_heads=2, tokens=64, causal=False)
    row = sweep.measure("flash", shape, device=torch.device("cpu"), dtype=torch.float32, repeats=1)
    assert row["error"] == "cuDNN SDPA is not supported on this device" and "fwd_s" not in row


def test_the_gpu_check_step_keeps_its_rows_beside_its_result(tmp_path):
    result, rows = run_cpu_step("attention_sweep", tmp_path)
    assert result["status"] == "passed" and result["lines"][0].startswith(f"{len(rows)} of {len(rows)} ")
    assert {r["set"] for r in rows} == {"lengths", "cudnn-fe"} and all(r["fwd_s"] > 0 for r in rows)


@pytest.fixture
def sweep_model():
    path = REPO / "benchmarks" / "attention_sweep_model.py"
    spec = importlib.util.spec_from_file_location("attention_sweep_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_model_script_gives_back_the_measurement_its_curves_came_from(sweep, sweep_model):
    # SDPA's flash backend on the H200 at 8K tokens, batch 2 x 16 heads (the calibration's shape,
    # cost.kernel_benchmarks.SDPA_H200_*): 355.3 / 301.9 TFLOPS full, 318.7 / 281.1 causal.
    from sp_planner.catalog import load_hardware
    from sp_planner.cost.attention_kernels import with_attention_kernel

    hardware = with_attention_kernel(load_hardware("h200"), "sdpa")
    for causal, fwd_tflops, bwd_tflops in ((False, 355.3, 301.9), (True, 318.7, 281.1)):
        flops = sweep.forward_flops(2, 16, 8192, causal)
        row = dict(backend="flash", set="lengths", batch=2, heads=16, kv_heads=16, tokens=8192, causal=causal,
                   head_dim=128, fwd_s=flops / fwd_tflops / 1e12, bwd_s=2.5 * flops / bwd_tflops / 1e12)
        fwd_s, bwd_s = sweep_model.predicted_s(hardware, row)
        assert sweep_model.tflops(row, fwd_s, backward=False) == pytest.approx(fwd_tflops, rel=2e-3)
        assert sweep_model.tflops(row, bwd_s, backward=True) == pytest.approx(bwd_tflops, rel=2e-3)
