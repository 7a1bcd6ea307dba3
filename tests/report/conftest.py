"""A real search for a small question (2 nodes x 8 A800, Llama-3-8B at 128K), shared by the report tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.estimate import SearchResult
from sp_planner.present.summary import build_summary
from sp_planner.search import search
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


@dataclass(frozen=True)
class Question:
    model: ModelSpec
    hardware: HardwareProfile
    workload: Workload
    num_nodes: int
    gpus_per_node: int
    result: SearchResult
    summary: dict[str, Any]

    def report_args(self) -> dict[str, Any]:
        return dict(model=self.model, hardware=self.hardware, workload=self.workload, num_nodes=self.num_nodes,
                    gpus_per_node=self.gpus_per_node, result=self.result, summary=self.summary)


def ask(model: ModelSpec, hardware_name: str = "a800", *, num_nodes: int = 2,
        seq_len: int = 128 * 1024) -> Question:
    hardware = load_hardware(hardware_name)
    workload = Workload(seq_len=seq_len, global_batch=num_nodes * hardware.gpus_per_node)
    args = dict(num_nodes=num_nodes, gpus_per_node=hardware.gpus_per_node)
    result = search(model, hardware, workload, **args)
    summary = build_summary(model=model, hardware=hardware, workload=workload, result=result, **args)
    return Question(model, hardware, workload, result=result, summary=summary, **args)


@pytest.fixture(scope="session")
def asker():
    """`ask(model, hardware_name, num_nodes=, seq_len=)` -> Question, for tests with their own question."""
    return ask


@pytest.fixture(scope="session")
def question() -> Question:
    return ask(load_model("llama3-8b"))


@pytest.fixture(scope="session")
def report_dir(question: Question, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report written from the shared question (read-only for the tests that use it)."""
    from sp_planner.report import write_report

    out = tmp_path_factory.mktemp("report") / "r"
    write_report(out, **question.report_args())
    return out


ERRORS = {"out": 1e-6, "dq": 2e-6, "dk": 3e-6, "dv": 4e-6}


def _result_json(**changes):
    """A result.json as sp-run writes it (sp_planner.executor.result.RunResult), fields the report
    does not read included."""
    data = {
        "passed": True,
        "failures": [],
        "config": {"ulysses": 2, "ring": 2, "batch": 1, "seq_len": 4096, "num_heads": 8, "num_kv_heads": 8,
                   "head_dim": 64, "tp": 1, "causal": True, "ring_layout": "zigzag", "dtype": "float32",
                   "device": "cpu", "kernel": "auto", "iters": 3, "seed": 0},
        "kernel": "math",
        "kernel_note": None,
        "max_abs_err": ERRORS,
        "tolerance": {k: 10 * v for k, v in ERRORS.items()},
        "comm_bytes_measured": {"all_to_all": 1000, "p2p": 0},
        "comm_bytes_predicted": {"all_to_all": 1000, "p2p": 0},
        "time_s": {"fwd": 0.2, "bwd": 0.4},
        "peak_memory_bytes": 1000,
        "memory_method": "tracemalloc",
        "predicted_time_s": 0.5,
        "predicted_memory_bytes": 800,
        "prediction_note": "CPU run: time predicted from the measured kernel rate",
        "ranks": [{"rank": 0}],
    }
    data.update(changes)
    return data


@pytest.fixture(scope="session")
def result_json():
    """`result_json(**changes)` -> dict: an sp-run result.json, 20% slower and 25% bigger than predicted."""
    return _result_json
