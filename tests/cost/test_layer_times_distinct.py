"""cost.layer_times' GEMM side and core attention priced once per distinct row of what each reads
(GEMM_COLUMNS and cp over distinct.per_key, ATTENTION_COLUMNS over distinct.per_distinct_rows)
give every row of a search what pricing every row gives it, bit for bit, under every framework's
runtime: a MoE model, an MLA one with dense and MoE layers, and one with sliding-window layers."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost import layer_times as layer_times_module
from sp_planner.cost.layer_times import ATTENTION_COLUMNS, GEMM_COLUMNS, layer_times
from sp_planner.cost.runtime import FRAMEWORK_RUNTIME, TORCHTITAN_V02_RUNTIME, Runtime
from sp_planner.distinct import distinct_key
from sp_planner.layout import CP_AXES, group_size
from sp_planner.search_columns import search_axes
from sp_planner.space import Pins, degree_tuples, expand_candidates, search_order, with_expert_degrees
from sp_planner.specs import Workload
from tests.cost.candidate_variants import with_fixed_choices_flipped

WORKLOAD = Workload(seq_len=32768, global_batch=64, causal=True)
RUNTIMES = {**FRAMEWORK_RUNTIME, "torchtitan-0.2": TORCHTITAN_V02_RUNTIME}


@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "deepseek-v3", "gemma-3-27b"])
def question(request):
    """A model, H100s and the first degree tuples of its 64-GPU search with every choice the
    search varies (every precision), and the choices one search holds fixed flipped."""
    model, hardware = load_model(request.param), load_hardware("h100-sxm")
    axes = search_axes(model, hardware)
    pins = Pins(precision=None)
    degrees = search_order(with_expert_degrees(degree_tuples(64, pins), axes.num_experts, pins))
    c = expand_candidates(WORKLOAD, degrees[:60], pins, 8, axes=axes)
    return model, hardware, with_fixed_choices_flipped(c)


def _times(model, hardware, c, runtime: Runtime):
    return layer_times(model, hardware, WORKLOAD, c, gpus_per_node=8, overlap=runtime.overlap, ring_impl=runtime.ring,
                       loss_bytes_per_logit=runtime.loss_bytes_per_logit, sequence_parallel=runtime.sequence_parallel,
                       tp_gathers=runtime.tp_gathers, unpads_attention=runtime.unpads_attention,
                       moe_router_dtype=runtime.moe_router_dtype, expert_row_padding=runtime.expert_row_padding)


def _columns(times, prefix=""):
    """Each array of a LayerTimes by name, the attention's inside it too."""
    for name, value in zip(times._fields, times):
        if isinstance(value, tuple):
            yield from _columns(value, f"{name}.")
        else:
            yield prefix + name, value


def _every_row(monkeypatch) -> None:
    monkeypatch.setattr(layer_times_module, "per_distinct_rows", lambda fn, rows, names: fn(rows))
    monkeypatch.setattr(layer_times_module, "distinct_key", lambda rows, names, *columns: None)  # per_key: every row


@pytest.mark.parametrize("framework", sorted(RUNTIMES))
def test_distinct_rows_price_as_every_row(question, framework, monkeypatch):
    model, hardware, c = question
    cp = group_size(c, CP_AXES)
    # Both keys take a few rows of many (GEMM_COLUMNS with cp: ~1 in 10 here, ATTENTION_COLUMNS ~1 in 40).
    for key in (distinct_key(c, GEMM_COLUMNS, cp), distinct_key(c, ATTENTION_COLUMNS)):
        assert len(key[0]) < len(c) / 5
    once = _times(model, hardware, c, RUNTIMES[framework])
    _every_row(monkeypatch)
    every = _times(model, hardware, c, RUNTIMES[framework])
    for (name, a), (_, b) in zip(_columns(once), _columns(every)):
        np.testing.assert_array_equal(a, b, err_msg=name)


def _left_out(name: str, read: str):
    def patch(monkeypatch):
        monkeypatch.setattr(layer_times_module, name, tuple(n for n in getattr(layer_times_module, name) if n != read))
    return patch


def _cp_left_out(monkeypatch):
    monkeypatch.setattr(layer_times_module, "distinct_key", lambda rows, names, *columns: distinct_key(rows, names))


@pytest.mark.parametrize("leave_out", [_left_out("GEMM_COLUMNS", "precision"), _left_out("GEMM_COLUMNS", "micro_batch"),
                                       _cp_left_out, _left_out("ATTENTION_COLUMNS", "zigzag")],
                         ids=["gemm-precision", "gemm-micro_batch", "gemm-cp", "attention-zigzag"])
def test_a_column_left_out_of_a_key_is_caught(question, leave_out, monkeypatch):
    """The comparison above sees a column a part reads left out of its key."""
    model, hardware, c = question
    every = _times(model, hardware, c, FRAMEWORK_RUNTIME["megatron"])
    leave_out(monkeypatch)
    once = _times(model, hardware, c, FRAMEWORK_RUNTIME["megatron"])
    assert not np.array_equal(once.per_layer_s, every.per_layer_s)
