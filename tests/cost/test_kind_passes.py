"""cost.kind_passes: the layer sequences a pipeline's stages walk, each chunk its own at vpp > 1
(Megatron's placement, cost.layer_kinds.chunk_global_layers), hand-listed."""

import numpy as np

from sp_planner.catalog import load_model
from sp_planner.cost.kind_passes import stage_sequences
from sp_planner.cost.layer_kinds import kind_indices
from sp_planner.plan import ParallelPlan
from sp_planner.candidates import Candidates

MAVERICK, DEEPSEEK = load_model("Llama-4-Maverick-17B-128E"), load_model("DeepSeek-V3")


def _chunks(model, plan):
    sequences = [kind_indices(model, 8192)]
    orders, chunks = stage_sequences(model, 8192, Candidates.of_plan(plan), np.array([True]), sequences)
    return orders[:3], tuple(tuple(sequences[k] for k in stage[0] if k >= 0) for stage in chunks[:3])


def test_an_interleaved_stage_walks_each_chunk_of_its_own_layers():
    # Maverick (MoE on odd layers) over pp 2 x vpp 2: stage 0 holds layers 0-11 and 24-35, stage 1
    # 12-23 and 36-47, each chunk dense and MoE in turn from a dense layer; no middle stage.
    orders, (first, middle, last) = _chunks(MAVERICK, ParallelPlan(pp=2, vpp=2, dp=64, ep=16, zero=3))
    assert all(order[0] == -1 for order in orders)  # no stage walks its layers as one chunk
    assert first == last == ((0, 1) * 6, (0, 1) * 6) and middle == ()
    # pp 4 x vpp 4: 3 layers a chunk; stage 0 holds layers 0-2, 12-14, ...; the middle stages walk
    # the second's, 3-5, 15-17, ... (MoE first); the last stage 9-11, ...
    _, (first, middle, last) = _chunks(MAVERICK, ParallelPlan(pp=4, vpp=4, dp=32, ep=16, zero=3))
    assert first == ((0, 1, 0),) * 4 and middle == ((1, 0, 1),) * 4 and last == ((1, 0, 1),) * 4


def test_deepseek_v3s_layout_chunks():
    # pp 8 x vpp 2 over 8 / 5 end stages: the first stage's chunk 0 holds the 3 dense layers and
    # layer 3, its chunk 1 layers 32-35; the last stage's chunk 1 is layer 60 alone.
    plan = ParallelPlan(tp=2, pp=8, vpp=2, dp=16, ep=16, zero=3, first_stage_layers=8, last_stage_layers=5)
    _, (first, middle, last) = _chunks(DEEPSEEK, plan)
    assert first == ((0, 0, 0, 1), (1, 1, 1, 1)) and middle == ((1,) * 4,) * 2 and last == ((1,) * 4, (1,))


def test_a_vpp_1_stage_walks_its_layers_as_one_sequence():
    orders, (first, _, _) = _chunks(MAVERICK, ParallelPlan(pp=4, dp=32, ep=16, zero=3))
    assert first == () and all(order[0] >= 0 for order in orders)


def test_the_middle_stages_walk_the_stage_whose_calls_stand_for_them():
    # DeepSeek-V3 over pp 16 x vpp 2 at 3 / 2: interleaving deals dense layers 1-2 to stage 1's
    # chunk 0; stages 2-14 hold 2 MoE layers a chunk. The middle stages' calls are stage 2's (the
    # most MoE layers, cost.stage_params.dp_middle_stage), so they walk stage 2's layers; the
    # lightest (the relay's, the fourth) is stage 1's.
    plan = ParallelPlan(tp=2, pp=16, vpp=2, dp=16, ring=2, ep=8, zero=3, first_stage_layers=3, last_stage_layers=2)
    sequences = [kind_indices(DEEPSEEK, 4096)]
    _, chunks = stage_sequences(DEEPSEEK, 4096, Candidates.of_plan(plan), np.array([True]), sequences)
    first, middle, last, lightest = (tuple(sequences[k] for k in stage[0] if k >= 0) for stage in chunks)
    assert first == ((0,), (1, 1)) and middle == ((1, 1), (1, 1)) and last == ((1,), (1,))
    assert lightest == ((0, 0), (1, 1))
