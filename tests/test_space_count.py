"""space_count.count_candidates: the number of rows space.enumerate_candidates gives, counted
without expanding them."""

import pytest

import sp_planner.space_count as space_count
from sp_planner.catalog import load_hardware, load_model
from sp_planner.space import Axes, Pins, enumerate_candidates
from sp_planner.space_count import count_candidates
from sp_planner.specs import Workload

MODEL = load_model("Llama-3-8B")
HW = load_hardware("A800")
AXES = Axes(num_layers=MODEL.num_layers, precisions=HW.precisions)


@pytest.mark.parametrize("world,pins", [(8, Pins()), (96, Pins()), (96, Pins(dp=4)), (96, Pins(tp=2)),
                                        (4096, Pins()), (96, Pins(micro_batch=2, zero=1)), (96, Pins(dp=5)),
                                        (96, Pins(cp_comm="allgather", dp_replicate=2)),
                                        (96, Pins(reshard_after_forward=False, ring=4)),
                                        (96, Pins(pp=4)), (96, Pins(vpp=2)), (96, Pins(precision=None))])
@pytest.mark.parametrize("batch", [6, 64, 7])
@pytest.mark.parametrize("gpus_per_node", [None, 8])
def test_count_candidates_without_enumerating(world, pins, batch, gpus_per_node):
    workload = Workload(seq_len=12288, global_batch=batch)
    assert count_candidates(workload, world, pins, gpus_per_node, axes=AXES) == len(
        enumerate_candidates(workload, world, pins, gpus_per_node, axes=AXES))


@pytest.mark.parametrize("pins", [Pins(), Pins(ep=4), Pins(etp=2, vpp=2), Pins(precision=None)])
def test_count_candidates_is_exact_for_moe(pins):
    # Qwen3-30B-A3B's 128 experts: ep over their divisors, etp over {1, tp}, next to vpp and precision.
    axes = Axes(num_layers=48, precisions=("bf16", "fp8"), num_experts=128)
    workload = Workload(seq_len=12288, global_batch=64)
    assert count_candidates(workload, 32, pins, 8, axes=axes) == len(
        enumerate_candidates(workload, 32, pins, 8, axes=axes)) > 0


@pytest.mark.parametrize("pins", [Pins(zero=1, cp_comm="p2p", vpp=1), Pins(tp=2, zero=0, cp_comm="p2p", vpp=1)])
def test_beyond_the_tuple_limit_the_count_is_by_formula(pins, monkeypatch):
    # With no variant, vpp or expert row to leave aside, the formula's count (tuples per dp x ZeRO
    # stages x recomputes x micro-batches x precisions) is the exact one.
    workload = Workload(seq_len=12288, global_batch=64)
    exact = len(enumerate_candidates(workload, 96, pins, axes=AXES))
    monkeypatch.setattr(space_count, "COUNT_TUPLES_LIMIT", 0)
    assert count_candidates(workload, 96, pins, axes=AXES) == exact > 0
