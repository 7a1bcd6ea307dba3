"""cost.pipeline_path: the pipelined step's critical path over its stages' blocks, by hand."""

import numpy as np
import pytest

from sp_planner.cost.pipeline_groups import Ridden, last_middle
from sp_planner.cost.pipeline_path import (
    StageBlocks,
    compute_blocks,
    compute_path_s,
    critical_path_s,
    middle_chunk_forwards_s,
    pipeline_bubble_s,
)
from sp_planner.cost.chunk_path import walk_path_s
from sp_planner.pipeline import StageLayers


def _stage(num, forward_s, first_bwd_s, last_bwd_s, vpp, *, gather_s=0.0, last_fwd_s=None):
    """A stage whose middle chunks' backwards are the last's, its chunks' forwards equal unless
    the last chunk's is given."""
    last_fwd_s = forward_s / vpp if last_fwd_s is None else last_fwd_s
    cycle = forward_s + first_bwd_s + (vpp - 1) * last_bwd_s
    chunk0 = (forward_s - last_fwd_s) / max(vpp - 1, 1) + first_bwd_s
    return StageBlocks(np.array([float(num)]), np.array([cycle]), np.array([chunk0]), np.array([forward_s]),
                       np.array([first_bwd_s]), np.array([last_bwd_s]), np.array([gather_s]),
                       np.array([last_fwd_s]))


def test_equal_stages_give_the_1f1b_and_interleaved_bubbles():
    # pp 4, 8 micro-batches of 1 s forward, 2 s backward: (m + pp - 1) cycles at vpp 1
    # (Narayanan 2021 s2.2.1); at vpp 2 the bubble is (pp - 1) chunk blocks, (pp - 1)/vpp cycles.
    plain = tuple(_stage(n, 1.0, 2.0, 2.0, 1) for n in (1, 2, 1))
    assert critical_path_s(plain, 8, 4, 1).tolist() == pytest.approx([(8 + 3) * 3.0])
    chunks = tuple(_stage(n, 1.0, 1.0, 1.0, 2) for n in (1, 2, 1))
    assert critical_path_s(chunks, 8, 4, 2).tolist() == pytest.approx([(8 + 3 / 2) * 3.0])


def test_a_first_stage_that_paces_waits_for_the_round_trips():
    # 1F1B, pp 4, 8 micro-batches. First stage: 0.35 s forward, 1.1 s backward (a 1.45 s cycle, the
    # slowest); two middle ones 0.2 + 0.9, the last 0.4 + 0.9. The first stage runs its 4 forwards
    # (W + 1, W = pp - 1) by 1.4 s while micro-batch 0 goes up and back, 0.35 + 0.2 + 0.2 + 0.4 +
    # 0.9 + 0.9 + 0.9 = 3.85 s: its first backward starts 2.45 s late. Micro-batch 7 turns the same
    # way, 0.2 + 0.2 + 0.4 + 3 x 0.9 = 3.5 s, while it runs 3 backwards, 3.3 s: 0.2 s more. Riding
    # it: 8 x 1.45 + 2.45 + 0.2 = 14.25 s, over the last stage's 8 x 1.3 + 1.45 + 2 x 1.1 = 14.05
    # and over its own 8 cycles with no wait (which the 1F1B bubble of the others' blocks, 15.1 s,
    # overstated).
    stages = (_stage(1, 0.35, 1.1, 1.1, 1), _stage(2, 0.2, 0.9, 0.9, 1), _stage(1, 0.4, 0.9, 0.9, 1))
    assert critical_path_s(stages, 8, 4, 1).tolist() == pytest.approx([14.25])


def _ends(first_extra_s=0.0):
    # pp 4, vpp 2, 4 micro-batches (one group): 0.1 s chunk forwards; the first stage's chunk-0
    # backward 1.0 s (its embedding's gradients), the last stage's last-chunk one 1.0 s (its output
    # layer's), every other chunk backward 0.5 s; the ends' cycles are equal, 1.7 s.
    return (_stage(1, 0.2, 1.0 + first_extra_s, 0.5, 2), _stage(2, 0.2, 0.5, 0.5, 2), _stage(1, 0.2, 0.5, 1.0, 2))


def test_interleaved_groups_pile_up_at_either_end():
    # Riding the last stage: the chunk-0 blocks below it (1.1 + 2 x 0.6), 4 cycles, and the drain's
    # 4 chunk-0 jobs piling up behind the first stage's 1.0 s block, 3 x 0.5 more: 10.6 s. Riding
    # the first (its 8 forwards all in its warm-up): micro-batch 0 turns through the last stage,
    # 2 x 0.6 + 1.1 s less the 3 forwards it runs meanwhile (8 - 5), 2.0 s, and the first group's
    # last-chunk jobs pile up behind the last stage's 1.1 s lap (forward and backward), against
    # the first stage's 0.5 s backwards, 3 x 0.6 more: 6.8 + 3.8 = 10.6 s, the same.
    assert critical_path_s(_ends(), 4, 4, 2).tolist() == pytest.approx([10.6])


def test_the_path_moves_continuously_where_the_pacing_stage_changes():
    # 10 ms more on the first stage's chunk-0 backward makes it pace (1.71 s against 1.7): each
    # path grows by 40 ms (the last stage's 10 ms on the way in and 3 x 10 ms in the pile-up, the
    # first's 4 cycles); the last stage's path had been dropped the moment the first stage paced,
    # and the pile-up behind the first stage's block (1.5 s) with it.
    paced = critical_path_s(_ends(0.01), 4, 4, 2)
    assert paced.tolist() == pytest.approx([10.6 + 4 * 0.01])


def test_zero2_gathers_ride_the_first_forwards_the_path_runs():
    # ZeRO-2's gathers, 0.4 s a stage (0.2 a chunk) on each chunk's first forward. Equal stages
    # (1 s forwards, 2 x 1 s backwards, vpp 2, pp 4, 8 micro-batches): micro-batch 0's forward runs
    # every virtual stage's chunk, each 0.5 + 0.2 s (5.6 s); the last stage's 8 cycles less the 5
    # forwards it ran by then (24 - 2.5 s); the chunk-0 backwards down the 3 stages below (3 s):
    # 30.1 s, every stage's gathers on the path (without them, 28.5 s: the bubble's). Riding the
    # last stage from its first block holds only its own and one chunk's below it: 29.5 s.
    stages = tuple(_stage(n, 1.0, 1.0, 1.0, 2, gather_s=0.4) for n in (1, 2, 1))
    assert critical_path_s(stages, 8, 4, 2).tolist() == pytest.approx([28.5 + 4 * 0.4])


def test_the_bubble_is_the_compute_path_beyond_the_pacing_stage():
    # 8 layers a stage of 1 s (2/3 s of it backward), no extras: pp 4, vpp 2, 8 micro-batches, the
    # bubble is (pp - 1)/vpp micro-batches of 8 s; 1F1B (pp - 1); no pipeline, none.
    layers = StageLayers(np.array([8.0, 8.0, 32.0]), np.array([8.0, 8.0, 32.0]), np.array([8.0, 8.0, 32.0]))
    stage_s = layers.first * 1.0
    pp = np.array([4, 4, 1])
    path = compute_path_s(layers, pp, np.array([2, 1, 1]), 8.0, compute_s=(stage_s,) * 3,
                          bwd_extra_s=(0.0, 0.0, 0.0), fwd_layer_s=1 / 3, bwd_layer_s=2 / 3)
    assert path[:2].tolist() == pytest.approx([(8 + 3 / 2) * 8.0, (8 + 3) * 8.0]) and np.isnan(path[2])
    bubble = pipeline_bubble_s(path, pp, 8.0, pace_s=stage_s)
    assert bubble.tolist() == pytest.approx([3 / 2 * 8.0, 3 * 8.0, 0.0])


def test_the_last_groups_last_chunk_laps_hold_a_pacing_first_stage():
    # pp 4, vpp 2, 8 micro-batches (two groups). The first stage paces: 0.1 s chunk forwards, 1.0 s
    # chunk backwards (a 2.2 s cycle); the middle ones 0.1 + 0.3 s a chunk; the last stage's chunk
    # 0 0.1 + 0.3 s, its last chunk 0.5 + 1.2 s (its output layer's). The first stage's chunk-1
    # backward of micro-batch 3 (its backward number (G - 1) vpp pp - pp - 1 = 3) ends at 9.8 s;
    # the last stage's chunk-0 backward of it (0.3 s), its 4 laps of the last group's last chunk
    # (6.8 s) and micro-batch 7's backward down the 2 middle stages (0.6 s) hold the first stage's
    # own backward of micro-batch 7 to 17.5 s, while its blocks meanwhile (2 forwards, 4 chunk-0
    # and 3 chunk-1 backwards, 7.2 s) end at 17.0; then that backward and the last group's 4
    # chunk-0 ones: 22.5 s, as every block timed in Megatron's order gives (22.0 without the laps).
    stages = (_stage(1, 0.2, 1.0, 1.0, 2), _stage(2, 0.2, 0.3, 0.3, 2),
              _stage(1, 0.6, 0.3, 1.2, 2, last_fwd_s=0.5))
    assert critical_path_s(stages, 8, 4, 2).tolist() == pytest.approx([22.5])


def test_every_middle_groups_laps_hold_a_pacing_first_stage():
    # The stages above with three and four groups (12 and 16 micro-batches). Group h's first
    # chunk-1 forward on the first stage (its forward number h pp vpp + pp) waits for the last
    # stage's chunk-0 backward of group h - 2's last micro-batch (0.3 s, after the first stage's
    # chunk-1 backward of it), its 4 laps of group h - 1's last chunk (6.8 s) and its chunk-0
    # forward of group h's first micro-batch (0.1 s): 7.2 s, while the first stage runs pp + 2 = 6
    # forwards (0.6 s) and 6 backwards, group h - 2's 4 chunk-0 ones and group h - 1's first 2
    # chunk-1 ones (6.0 s). Each group but the first and the last adds its 4 cycles (8.8 s) and
    # that 0.6 s wait.
    stages = (_stage(1, 0.2, 1.0, 1.0, 2), _stage(2, 0.2, 0.3, 0.3, 2),
              _stage(1, 0.6, 0.3, 1.2, 2, last_fwd_s=0.5))
    paths = [critical_path_s(stages, m, 4, 2)[0] for m in (8, 12, 16)]
    assert paths == pytest.approx([22.5, 22.5 + 9.4, 22.5 + 2 * 9.4])


def test_the_second_groups_wait_passes_the_first_groups_last_chunk_backwards():
    # pp 8, vpp 2, 16 micro-batches (two groups). The first stage paces: 0.1 s chunk forwards, a
    # 2.0 s chunk-0 backward (its embedding's) and a 0.3 s chunk-1 one (a 2.5 s cycle); 6 middle
    # stages 0.1 + 0.3 s a chunk; the last stage's chunk 0 0.1 + 0.3 s, its last chunk 0.5 + 1.0 s.
    # The first stage's forward 24 (the second group's first through chunk 1) waits for micro-batch
    # 0's last-chunk forward up the middle stages (0.6 s), the last stage's 8 laps (12.0 s) and its
    # chunk-0 forward of micro-batch 8 (0.1 s), 12.7 s, while the first stage runs its forwards 9-23
    # (1.5 s) and its backwards 0 and 1, the first group's chunk-1 ones (0.6 s): a 10.6 s wait, then
    # its 16 cycles, 50.6 s. Those two backwards priced at the chunks' mean (1.15 s each) left an
    # 8.9 s wait, under the first group's pile-up path (50.2 s).
    stages = (_stage(1, 0.2, 2.0, 0.3, 2), _stage(6, 0.2, 0.3, 0.3, 2),
              _stage(1, 0.6, 0.3, 1.0, 2, last_fwd_s=0.5))
    assert critical_path_s(stages, 16, 8, 2).tolist() == pytest.approx([50.6])


def test_a_heavier_first_chunk_0_forward_piles_up_the_last_stages_fill():
    # ZeRO-3, pp 4, vpp 2, 8 micro-batches: the first stage gathers its root unit (the embedding) in
    # its chunk-0 forward (0.19 s, its chunk 1's 0.12) and reduces it after its chunk-0 backward
    # (0.5 s, 0.35); the last stage in its last chunk (0.19 s, 0.5 s); the others 0.12 s and 0.35 s
    # a chunk. Riding the last stage: its last-chunk forward of micro-batch 0 follows its own chunk-0
    # forward of micro-batch 3, which the first stage sends after its 4 chunk-0 forwards (0.76 s),
    # up through the middle ones (0.24) and its own (0.12): the first group's chunk-0 forwards pile
    # up on the first stage, 3 x (0.19 - 0.12) = 0.21 s beyond the held path's micro-batch 0 chunk-0
    # round trip below (0.69 + 2 x 0.47 = 1.63 s). Then its 8 cycles (1.16 s each) and the drain's
    # pile-up behind the first stage's chunk-0 backwards, 3 x (0.5 - 0.35): 1.63 + 0.21 + 8 x 1.16
    # + 0.45 = 11.57 s, as the simulator's path: 0.76 + 0.24 + 0.12, the last stage's 8 cycles but
    # its first group's chunk-0 forwards and last group's chunk-0 backwards (9.28 - 4 x 0.47),
    # micro-batch 7's chunk-1 backward down (0.7 + 0.35) and the first stage's last 4 chunk-0
    # backwards (2.0).
    stages = (_stage(1, 0.31, 0.5, 0.35, 2, last_fwd_s=0.12), _stage(2, 0.24, 0.35, 0.35, 2),
              _stage(1, 0.31, 0.35, 0.5, 2, last_fwd_s=0.19))
    expected = 0.76 + 0.24 + 0.12 + (8 * 1.16 - 4 * 0.47) + 0.7 + 0.35 + 4 * 0.5
    assert expected == pytest.approx(1.63 + 0.21 + 8 * 1.16 + 0.45)
    assert critical_path_s(stages, 8, 4, 2).tolist() == pytest.approx([expected])


def test_the_forwards_a_waiting_stage_runs_are_their_chunks():
    # ZeRO-3, pp 4, vpp 2, 4 micro-batches (one group): the first stage paces, its chunk 0 0.25 s
    # forward and 0.67 s backward (its root unit), chunk 1 0.18 s and 0.53 s; the middle ones 0.12 s
    # and 0.35 s a chunk; the last stage's chunk 0 0.06 s and 0.18 s, its last chunk 0.13 s and 0.32
    # s. The first stage's first backward (micro-batch 0's last chunk) waits for micro-batch 0's
    # last-chunk forward up through the last stage and its backward down (2 x 0.47 + 0.45 s) while
    # it runs its forwards number 5 to 7 (0-based): chunk 1's of micro-batches 1-3 (3 x 0.18 s, not
    # 3 x the stage's mean 0.215 s). Then its 4 cycles: 1.39 - 0.54 + 4 x 1.63 = 7.37 s, as the
    # simulator's path: 4 chunk-0 forwards and one of chunk 1 (1.18 s), up (0.24 + 0.13) and down
    # (0.32 + 0.7), the first stage's 8 backwards (4.8 s).
    stages = (_stage(1, 0.43, 0.67, 0.53, 2, last_fwd_s=0.18), _stage(2, 0.24, 0.35, 0.35, 2),
              _stage(1, 0.19, 0.18, 0.32, 2, last_fwd_s=0.13))
    expected = 1.18 + 0.24 + 0.13 + 0.32 + 0.7 + 4 * 0.53 + 4 * 0.67
    assert expected == pytest.approx(1.39 - 0.54 + 4 * 1.63)
    assert critical_path_s(stages, 4, 4, 2).tolist() == pytest.approx([expected])


def test_a_counted_split_holds_a_layer_fewer_in_the_end_chunks():
    # 7, 8 and 7 layers at vpp 2 (Megatron's counted split: the embedding and the loss each in a
    # layer's place), a layer 1 s forward and 2 s backward, nothing beyond the layers: the first
    # stage's chunk 0 holds 3 layers and its last chunk 4, the last stage's chunk 0 4 and its last
    # chunk 3, as sim.layer_program.chunk_layers places them; a middle stage 4 and 4.
    first, middle, last = compute_blocks((7.0, 8.0, 7.0), (21.0, 24.0, 21.0), (1.0, 2.0, 1.0), (0.0, 0.0, 0.0),
                                         fwd_layer_s=1.0, bwd_layer_s=2.0, vpp=2)
    assert [float(first.first_bwd_s), float(first.last_bwd_s), float(first.last_fwd_s), float(first.chunk0_s)] == \
        pytest.approx([6.0, 8.0, 4.0, 9.0])
    assert [float(middle.first_bwd_s), float(middle.last_bwd_s), float(middle.chunk0_s)] == \
        pytest.approx([8.0, 8.0, 12.0])
    assert [float(last.first_bwd_s), float(last.last_bwd_s), float(last.last_fwd_s)] == pytest.approx([8.0, 6.0, 3.0])


def test_the_middle_stages_a_path_passes_take_the_relay_blocks():
    # pp 4, vpp 1, 4 micro-batches; end stages' 1 s cycles, the two middle stages' 2 s (0.4 of a
    # cycle its forward). The longest path rides the last middle stage (4 x 2 s) after the first
    # stage's block and the other middle stage's (1 + 2 s): 11.2 s with the pile-up's 0.2 s. With
    # the middle stages' mean blocks at 1.5 s (`relay`) the one it passes is 1.5 s, its own cycles
    # still 2 s: 0.5 s shorter. The middle stage's own blocks as `relay`: as without one.
    def blocks(n, cycle_s):
        f = np.array([0.4 * cycle_s])
        c = np.array([cycle_s])
        return StageBlocks(n, c, c, f, c - f, c - f, 0.0, f)

    stages = (blocks(1.0, 1.0), blocks(np.array([2.0]), 2.0), blocks(1.0, 1.0))
    m, pp, vpp = np.array([4.0]), np.array([4]), np.array([1])
    alike = critical_path_s(stages, m, pp, vpp)
    assert alike == pytest.approx([11.2])
    assert critical_path_s(stages, m, pp, vpp, stages[1]) == pytest.approx(alike)
    assert critical_path_s(stages, m, pp, vpp, blocks(np.array([2.0]), 1.5)) == pytest.approx([10.7])


def test_a_middle_stages_end_chunk_is_its_last():
    # A middle stage of 13 layers over vpp 4 runs 4 / 4 / 4 / 1 (pipeline_chunks.chunk_shape), 1 s
    # a layer forward: chunk 0 and the chunks between 4 s each, not 13 - 3 x 1 and 1 (its end
    # chunk's). An even stage (16 layers, 4 s chunks) keeps chunk 0 the rest of its last chunks'.
    a = np.array
    short = compute_blocks((a([3.0]), a([13.0]), a([3.0])), (a([6.0]), a([39.0]), a([6.0])), (1.0, 2.0, 1.0),
                           (0.0, 0.0, 0.0), fwd_layer_s=1.0, bwd_layer_s=2.0, vpp=a([4]))[1]
    assert float(short.last_fwd_s[0]) == 1.0
    assert [float(x[0]) for x in middle_chunk_forwards_s(short, a([4]))] == [4.0, 4.0]
    even = _stage(1, 16.0, 8.0, 8.0, 4)
    assert [float(x[0]) for x in middle_chunk_forwards_s(even, a([4]))] == [4.0, 4.0]


def test_the_heaviest_middle_stage_is_ridden_at_its_own_rank():
    # pp 4 x vpp 4, 4 micro-batches (one group: every stage runs its forwards before its
    # backwards), stages of two kinds in turn as Llama-4-Maverick's: stages 0 and 2 light (0.1 s a
    # chunk forward, 0.2 s backward), 1 and 3 heavy (0.15 s, 0.45 s). Stage 1 runs 16 forwards from
    # 0.1 s, its 13th (chunk 3, micro-batch 0) ending at 2.05 s; that one goes through stage 2
    # (0.1 s), the last stage's 4 laps of its last chunk (2.4 s), stage 2's backward of the last
    # (0.2 s); stage 1's backwards of the other three wait each for a lap and end before it, so
    # its 13 backwards left (5.85 s) and stage 0's last one (0.2 s) follow: 10.8 s. Riding the last
    # middle stage (rank 2) with the heavy blocks, the middle stages below at the mean, gave 10.95 s.
    first, light = _stage(1, 0.4, 0.2, 0.2, 4), _stage(2, 0.4, 0.2, 0.2, 4)
    middle, last = _stage(2, 0.6, 0.45, 0.45, 4), _stage(1, 0.6, 0.45, 0.45, 4)
    relay = middle._replace(**{name: (getattr(middle, name) + getattr(light, name)) / 2
                               for name in StageBlocks._fields if name != "num_stages"})
    stages = (first, middle, last)
    ridden = Ridden(np.array([1.0]), np.array([0.0]), np.array([1.0]), light)
    assert critical_path_s(stages, 4, 4, 4, relay, ridden).tolist() == pytest.approx([10.8])
    assert critical_path_s(stages, 4, 4, 4, relay).tolist() == pytest.approx([10.95])
    # The last middle stage named as the ridden one: the same path, to the bit.
    for m in (4, 8, 12):
        same = last_middle(np.asarray(middle.num_stages, dtype=np.float64), relay)
        assert (critical_path_s(stages, m, 4, 4, relay, same).tolist()
                == critical_path_s(stages, m, 4, 4, relay).tolist())


def _profile_blocks(pp, vpp, kinds):
    """critical_path_s's stages and walk_path_s's (pp, vpp, 1) blocks from each stage kind's
    (chunk-0, middle-chunk, last-chunk forward; the same three backward) seconds."""
    stages = tuple(_stage(n, f0 + (vpp - 2) * f + fl, b0, bl, vpp, last_fwd_s=fl)._replace(
        cycle_s=np.array([f0 + (vpp - 2) * f + fl + b0 + (vpp - 2) * b + bl]), chunk0_s=np.array([f0 + b0]))
        for n, (f0, f, fl, b0, b, bl) in zip((1, pp - 2, 1), kinds))
    by_rank = [kinds[0]] + [kinds[1]] * (pp - 2) + [kinds[2]]
    fwd = np.array([[[k[0]]] + [[k[1]]] * (vpp - 2) + [[k[2]]] for k in by_rank])
    bwd = np.array([[[k[3]]] + [[k[4]]] * (vpp - 2) + [[k[5]]] for k in by_rank])
    return stages, fwd, bwd


@pytest.mark.parametrize("pp", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("vpp", [2, 3, 4])
def test_groups_of_n_agree_with_the_walk_of_megatrons_order(pp, vpp):
    # m not a multiple of pp runs groups of N, the smallest Megatron accepts (pipeline.
    # micro_batch_group: 5 + 5 at pp 4, m 10; 6 + 5 at m 11; one group of m where m < 2 pp), the
    # last one of r (pipeline_order.last_group). Equal blocks: the interleaved bubble is (pp - 1) chunk
    # blocks whatever N (every walk below gives it to the last bit).
    equal = [(1.0, 1.0, 1.0, 2.0, 2.0, 2.0)] * 3
    for m in range(pp + 1, 3 * pp + 2):
        if m % pp == 0:
            continue
        stages, fwd, bwd = _profile_blocks(pp, vpp, equal)
        walked = walk_path_s(pp, vpp, m, fwd, bwd)[0]
        assert walked == (m * vpp + pp - 1) * 3.0
        assert critical_path_s(stages, np.array([m]), np.array([pp]), np.array([vpp]))[0] == pytest.approx(walked)
    # Uneven blocks (a heavy first chunk 0, the embedding's; a heavy last chunk, the loss's;
    # middle stages lighter or heavier): the closed forms within 4.8% of the walk (free sends, as
    # the simulator's compute stream), 0.47% on average over the grid, near what they are for m a
    # multiple of pp (3.3%, 0.35% on the same draws). Read with groups of pp, the same rows were up
    # to 12.1% short, 2.4% on average.
    rng = np.random.default_rng(pp * 10 + vpp)
    errors = []
    for _ in range(3):
        kinds = []
        for i in range(3):
            f = rng.uniform(0.5, 1.5)
            b = f * rng.uniform(1.5, 2.5)
            head, tail = (rng.uniform(1, 2) if i == 0 else 1.0), (rng.uniform(1, 2) if i == 2 else 1.0)
            kinds.append((f * head, f, f * tail, b * head, b, b * tail))
        for m in range(pp + 1, 3 * pp + 2):
            if m % pp == 0:
                continue
            stages, fwd, bwd = _profile_blocks(pp, vpp, kinds)
            walked = walk_path_s(pp, vpp, m, fwd, bwd)[0]
            path = critical_path_s(stages, np.array([m]), np.array([pp]), np.array([vpp]))[0]
            errors.append(path / walked - 1)
    assert np.max(np.abs(errors)) < 0.05
    assert np.mean(np.abs(errors)) < 0.015
