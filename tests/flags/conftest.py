"""Shared cases for the flag renderers: models built directly from their published configs
(shared reference models.json: Llama-2-7B, Llama-3-8B, Llama-3-70B), plans and golden-file checks."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from sp_planner.flags import FlagRequest, FrameworkFlags
from sp_planner.plan import ParallelPlan
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload

GOLDEN_DIR = Path(__file__).parent / "golden"

LLAMA2_7B = ModelSpec(
    name="Llama-2-7B", hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
    num_kv_heads=32, head_dim=128, vocab_size=32000,
)
LLAMA3_8B = ModelSpec(
    name="Llama-3-8B", hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
    num_kv_heads=8, head_dim=128, vocab_size=128256,
)
LLAMA3_70B = ModelSpec(
    name="Llama-3-70B", hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64,
    num_kv_heads=8, head_dim=128, vocab_size=128256,
)


def request(model: ModelSpec, seq_len: int, global_batch: int, gpus_per_node: int = 8, *,
            causal: bool = True, **plan: object) -> FlagRequest:
    """A FlagRequest whose node count follows from the plan's world size."""
    parallel = ParallelPlan(**plan)
    num_nodes, rest = divmod(parallel.world_size, gpus_per_node)
    assert rest == 0, "test plans fill whole nodes"
    return FlagRequest(
        model=model, workload=Workload(seq_len=seq_len, global_batch=global_batch, causal=causal),
        plan=parallel, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
    )


# The golden cases. The first three are the issue's; the last two are plans DeepSpeed and yunchang
# can express (neither supports tp > 1).
CASES: dict[str, FlagRequest] = {
    "llama3_8b_128k_usp_tp2": request(
        LLAMA3_8B, 131072, 8, tp=2, ulysses=4, ring=2, dp=1, zero=1, recompute="selective"),
    "llama2_7b_64k_ulysses_tp4": request(LLAMA2_7B, 65536, 1, tp=4, ulysses=2, ring=1),
    "llama3_70b_256k_ring_tp8_pp2": request(
        LLAMA3_70B, 262144, 16, tp=8, pp=2, ulysses=1, ring=4, recompute="full"),
    "llama3_8b_128k_usp_dp2": request(LLAMA3_8B, 131072, 8, ulysses=4, ring=2, dp=2, recompute="full"),
    "llama2_7b_32k_ulysses8_zero3": request(LLAMA2_7B, 32768, 4, ulysses=8, zero=3, recompute="full"),
}


class Builders:
    """What tests build their own requests from (conftest helpers are reached through fixtures)."""

    llama2_7b = LLAMA2_7B
    llama3_8b = LLAMA3_8B
    llama3_70b = LLAMA3_70B
    request = staticmethod(request)
    cases = CASES


@pytest.fixture
def build() -> type[Builders]:
    return Builders


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_name" in metafunc.fixturenames:
        metafunc.parametrize("case_name", list(CASES))


def format_flags(flags: FrameworkFlags) -> str:
    """A golden file: header lines, then the text to paste."""
    lines = [f"framework: {flags.framework}", f"supported: {str(flags.supported).lower()}"]
    if flags.reason is not None:
        lines.append(f"reason: {flags.reason}")
    lines += [f"note: {note}" for note in flags.notes]
    if flags.text:
        lines += ["", flags.text]
    return "\n".join(lines) + "\n"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/flags/golden/<name>; SP_UPDATE_GOLDEN=1 rewrites it (review the diff by hand)."""
    path = GOLDEN_DIR / name
    if os.environ.get("SP_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with SP_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.fixture
def golden():
    return check_golden


@pytest.fixture
def flags_text():
    return format_flags


def parse_bash_array(text: str, var: str = "MEGATRON_ARGS") -> dict[str, list[str]]:
    """Flags of the bash array `var` -> their values ([] for store_true flags); no flag twice."""
    body = text.split(f"{var}=(", 1)[1].split("\n)", 1)[0]
    tokens = [tok for line in body.splitlines() if not line.strip().startswith("#") for tok in shlex.split(line)]
    args: dict[str, list[str]] = {}
    current = ""
    for tok in tokens:
        if tok.startswith("--"):
            assert tok not in args, f"{tok} given twice"
            args[tok] = []
            current = tok
        else:
            args[current].append(tok)
    return args


@pytest.fixture
def bash_args():
    return parse_bash_array
