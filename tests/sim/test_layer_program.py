"""sim.layer_program: which model chunk's programs carry a stage's root unit, by hand."""

import pytest

from sp_planner.sim.layer_program import root_chunk, stage_backward, stage_forward
from sp_planner.sim.work import DPCalls, LayerWork, StepWork

# A layer: forward 3 s of compute, backward 6 s, no communication.
PLAIN = LayerWork(gemm_attn_fwd_s=1.0, gemm_mlp_fwd_s=2.0, gemm_attn_bwd_s=2.0, gemm_mlp_bwd_s=4.0)


def _zero3_work() -> StepWork:
    # pp 2, vpp 2, one layer a chunk. ZeRO-3 (reshard kept: no gather in backward): a layer
    # gathers in 1 s and reduce-scatters in 1 s; the root unit (cost.buckets.fsdp_layout's tail)
    # of the first stage (its embedding) gathers in 4 s and reduces in 2 s, the last stage's
    # (output layer and final norm) in 5 s and 3 s.
    layer = ((1.0,), (1.0,))
    return StepWork(pp=2, vpp=2, num_micro_batches=2, layers_per_stage=2, kind_layers=(PLAIN,),
                    dp_every_micro_batch=True,
                    dp_gather_every_forward=True, dp_backward_gather=False,
                    dp_gather=(DPCalls(layers=layer, tail=(4.0,)), DPCalls(layers=layer, tail=(5.0,))),
                    dp_reduce=(DPCalls(layers=layer, tail=(2.0,)), DPCalls(layers=layer, tail=(3.0,))))


def test_the_last_stages_root_unit_goes_with_its_last_chunk():
    # Megatron builds the output layer into the last stage's last chunk only (post_process), the
    # embedding into the first stage's chunk 0 (pre_process), each chunk its own FSDP module.
    work = _zero3_work()
    assert [root_chunk(work, stage) for stage in (0, 1)] == [0, 1]
    # Forward: the root's gather, then the layer's queued behind it, then the layer's 3 s.
    fwd = {(s, c): stage_forward(work, s, chunk=c) for s in (0, 1) for c in (0, 1)}
    assert {k: p.busy_s("dp_comm") for k, p in fwd.items()} == {(0, 0): 5.0, (0, 1): 1.0, (1, 0): 1.0, (1, 1): 6.0}
    assert {k: p.end_s for k, p in fwd.items()} == pytest.approx({(0, 0): 8.0, (0, 1): 4.0, (1, 0): 4.0, (1, 1): 9.0})
    # Backward: the layer's 6 s, its reduce-scatter (1 s), then the root's behind it.
    bwd = {(s, c): stage_backward(work, s, last_micro_batch=False, chunk=c) for s in (0, 1) for c in (0, 1)}
    assert {k: p.busy_s("dp_comm") for k, p in bwd.items()} == {(0, 0): 3.0, (0, 1): 1.0, (1, 0): 1.0, (1, 1): 4.0}
    assert {k: p.end_s for k, p in bwd.items()} == pytest.approx({(0, 0): 9.0, (0, 1): 7.0, (1, 0): 7.0, (1, 1): 10.0})


def test_a_single_chunk_holds_both_roots():
    work = _zero3_work().model_copy(update={"vpp": 1})
    assert [root_chunk(work, stage) for stage in (0, 1)] == [0, 0]
    assert stage_forward(work, 1).busy_s("dp_comm") == 5.0 + 2 * 1.0


def test_a_root_gathered_once_a_step_goes_with_the_first_micro_batch_only():
    # Megatron-FSDP keeps the root unit gathered from the step's first forward on
    # (StepWork.dp_root_gather_once): micro-batch 0's root chunk gathers it (4 s, then the layer's
    # 1 s and 3 s of compute: 8 s), the later ones only the layer (1 s + 3 s); backward unchanged.
    work = _zero3_work().model_copy(update={"dp_root_gather_once": True})
    first = stage_forward(work, 0, first_micro_batch=True, chunk=0)
    later = stage_forward(work, 0, chunk=0)
    assert (first.busy_s("dp_comm"), first.end_s) == (5.0, pytest.approx(8.0))
    assert (later.busy_s("dp_comm"), later.end_s) == (1.0, pytest.approx(4.0))
    assert stage_backward(work, 0, last_micro_batch=False, chunk=0).busy_s("dp_comm") == 3.0


def test_each_layer_runs_at_its_kinds_durations():
    # Two kinds: PLAIN (3 s forward, 6 s backward) and one twice as long with a 1 s all-to-all each
    # side of its MLP. Stage 0 holds (plain, moe), stage 1 (moe, plain).
    moe = LayerWork(gemm_attn_fwd_s=2.0, gemm_mlp_fwd_s=4.0, gemm_attn_bwd_s=4.0, gemm_mlp_bwd_s=8.0,
                    moe_all_to_all_s=1.0)
    work = StepWork(pp=2, num_micro_batches=1, layers_per_stage=2, kind_layers=(PLAIN, moe),
                    stage_kinds=((0, 1), (1, 0)))
    assert [work.layer_at(s, layer) for s in (0, 1) for layer in (0, 1)] == [PLAIN, moe, moe, PLAIN]
    fwd = stage_forward(work, 1)
    gemms = {op.name: op.duration_s for op in fwd.ops if op.kind == "gemm" and op.name.startswith("L")}
    assert gemms == {"L0 qkv+out gemm": 2.0, "L0 mlp gemm": 4.0, "L1 qkv+out gemm": 1.0, "L1 mlp gemm": 2.0}
    assert [op.name for op in fwd.ops if op.kind == "moe_comm"] == ["L0 moe dispatch", "L0 moe combine"]
    assert fwd.end_s == pytest.approx(3.0 + 6.0 + 2.0)
    bwd = stage_backward(work, 0, last_micro_batch=False)
    assert bwd.end_s == pytest.approx(6.0 + 12.0 + 2.0)
    assert [op.name for op in bwd.ops if op.kind == "moe_comm"] == ["L1 moe combine", "L1 moe dispatch"]


def test_stage_kinds_name_a_kind_for_every_layer_of_every_stage():
    with pytest.raises(ValueError, match="one kind per layer"):
        StepWork(pp=2, num_micro_batches=1, layers_per_stage=2, kind_layers=(PLAIN,), stage_kinds=((0, 0), (0,)))
    with pytest.raises(ValueError, match="indexes kind_layers"):
        StepWork(pp=1, num_micro_batches=1, layers_per_stage=2, kind_layers=(PLAIN,), stage_kinds=((0, 1),))
