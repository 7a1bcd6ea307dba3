"""cost.chunk_path: the pipelined step walked block by block over each chunk's own layers, by hand,
against cost.pipeline_path's closed forms where the chunks are alike, and its extrapolation past
PLAIN_GROUPS groups against the whole walk."""

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.chunk_path import PLAIN_GROUPS, chunk_path_s, chunk_paths_s, walk_order, walk_path_s
from sp_planner.cost.layer_kinds import chunk_kind_counts
from sp_planner.cost.pipeline_path import compute_path_s
from sp_planner.pipeline import stage_layers


def test_two_stages_two_micro_batches_by_hand():
    # Stage 0 (forward 1, backward 2) runs F0 [0, 1], F1 [1, 2], then B0 once stage 1's B0 ends;
    # stage 1 (3, 4): F0 [1, 4], B0 [4, 8], F1 [8, 11], B1 [11, 15]; stage 0 B0 [8, 10], B1 [15, 17].
    fwd, bwd = np.array([[[1.0]], [[3.0]]]), np.array([[[2.0]], [[4.0]]])  # (pp, vpp, rows)
    assert walk_path_s(2, 1, 2, fwd, bwd).tolist() == [17.0]


@pytest.mark.parametrize(("pp", "vpp", "first", "last", "micro_batches"),
                         [(4, 1, 0, 0, 16), (3, 1, 11, 10, 12), (8, 1, 0, 0, 8), (4, 2, 0, 0, 16), (8, 4, 0, 0, 64),
                          (2, 2, 0, 0, 8)])
def test_alike_chunks_walk_the_closed_forms_path(pp, vpp, first, last, micro_batches):
    # Llama-3-8B (32 layers of one kind), the embedding's work in the first stage's chunk 0, the
    # output layer's and the loss's in the last stage's last chunk: cost.pipeline_path's closed
    # forms give the same path, exactly for 1F1B, within 0.1% interleaved (its known approximations).
    model = load_model("Llama-3-8B")
    layer_f, layer_b, emb_f, emb_b, head_f, head_b = 0.01, 0.025, 0.004, 0.006, 0.02, 0.03
    counts = chunk_kind_counts(model, 8192, pp, vpp, first, last)
    fwd, bwd = counts @ np.array([[layer_f]]), counts @ np.array([[layer_b]])
    fwd[0, 0] += emb_f
    bwd[0, 0] += emb_b
    fwd[-1, -1] += head_f
    bwd[-1, -1] += head_b
    walked = chunk_path_s(pp, vpp, micro_batches, fwd, bwd)[0]
    stages = stage_layers(model.num_layers, np.array([pp]), np.array([first]), np.array([last]))
    layer = layer_f + layer_b
    compute = (stages.first * layer + emb_f + emb_b, stages.middle * layer, stages.last * layer + head_f + head_b)
    closed = compute_path_s(stages, np.array([pp]), np.array([vpp]), micro_batches, compute_s=compute,
                            bwd_extra_s=(np.array([emb_b]), 0.0, np.array([head_b])),
                            fwd_layer_s=np.array([layer_f]), bwd_layer_s=np.array([layer_b]))[0]
    assert walked == pytest.approx(closed, rel=1e-12 if vpp == 1 else 2e-3)


@pytest.mark.parametrize(("name", "seq_len", "pp", "vpp", "first", "last"),
                         [("Gemma-3-27B", 131072, 8, 4, 7, 7), ("Gemma-3-27B", 131072, 8, 8, 7, 7),
                          ("Llama-4-Maverick-17B-128E", 8192, 8, 6, 0, 0), ("DeepSeek-V3", 4096, 16, 1, 3, 2)])
def test_past_the_walked_groups_the_path_grows_by_the_last_two_groups(name, seq_len, pp, vpp, first, last):
    # Gemma 3 over pp 8, vpp 4: its groups alternate between two times (7.89 and 8.27 s with a
    # global layer's blocks 0.05/0.15 s and a local one's 0.02/0.06 s), which a one-group step missed by 1.7%.
    counts = chunk_kind_counts(load_model(name), seq_len, pp, vpp, first, last)
    rng = np.random.default_rng(7)
    per_kind_f = rng.uniform(0.01, 0.1, (counts.shape[2], 4))
    fwd, bwd = counts @ per_kind_f, counts @ (per_kind_f * rng.uniform(2.0, 3.5, per_kind_f.shape))
    for groups in (PLAIN_GROUPS + 1, PLAIN_GROUPS + 2, 13, 20):
        whole = walk_path_s(pp, vpp, groups * pp, fwd, bwd)
        assert chunk_path_s(pp, vpp, groups * pp, fwd, bwd) == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize(("pp", "vpp"), [(2, 1), (2, 2), (4, 2), (8, 1), (16, 2)])
def test_stages_of_close_paces_past_the_walked_groups_are_walked_whole(pp, vpp):
    # Every stage's chunks within 10% of each other: the steady state is not reached within
    # PLAIN_GROUPS groups, and the last two groups' time extrapolated ran up to 2.6% short of the
    # whole walk at 32 groups (pp 4, vpp 2).
    rng = np.random.default_rng(1)
    fwd = rng.uniform(0.9, 1.1, (pp, vpp, 64))
    bwd = 2 * fwd * rng.uniform(0.95, 1.05, (pp, vpp, 64))
    for groups in (PLAIN_GROUPS + 3, 32):
        whole = walk_path_s(pp, vpp, groups * pp, fwd, bwd)
        assert chunk_path_s(pp, vpp, groups * pp, fwd, bwd) == pytest.approx(whole, rel=1e-9)


def _walk_every_block(pp, vpp, micro_batches, fwd, bwd):
    # The walk as written before the steps were cached: every block's end kept.
    free, ended = [np.zeros(fwd.shape[2])] * pp, []
    for stage, forward, chunk, waits in walk_order(pp, vpp, micro_batches):
        start = free[stage] if waits < 0 else np.maximum(free[stage], ended[waits])
        free[stage] = start + (fwd if forward else bwd)[stage, chunk]
        ended.append(free[stage])
    return np.maximum.reduce(free)


@pytest.mark.parametrize(("pp", "vpp", "micro_batches"), [(2, 1, 2), (4, 2, 12), (3, 3, 9), (8, 4, 40), (16, 1, 48)])
def test_walk_holds_only_the_ends_waited_for_and_gives_every_blocks_bits(pp, vpp, micro_batches):
    rng = np.random.default_rng(3)
    fwd, bwd = rng.uniform(0.01, 0.1, (pp, vpp, 5)), rng.uniform(0.02, 0.3, (pp, vpp, 5))
    assert walk_path_s(pp, vpp, micro_batches, fwd, bwd).tobytes() == \
        _walk_every_block(pp, vpp, micro_batches, fwd, bwd).tobytes()


def test_equal_rows_are_walked_once_with_each_rows_bits():
    # 12 rows, 3 distinct, within PLAIN_GROUPS groups: the whole walk of every row, bit for bit.
    rng = np.random.default_rng(5)
    pp, vpp, micro_batches = 4, 2, 4 * PLAIN_GROUPS
    fwd, bwd = rng.uniform(0.01, 0.1, (pp, vpp, 3)), rng.uniform(0.02, 0.3, (pp, vpp, 3))
    rows = np.array([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    once = chunk_path_s(pp, vpp, micro_batches, fwd[:, :, rows], bwd[:, :, rows])
    assert once.tobytes() == _walk_every_block(pp, vpp, micro_batches, fwd[:, :, rows], bwd[:, :, rows]).tobytes()


def test_steps_walked_together_get_the_bits_each_gets_alone():
    # pp 4, vpp 2: 8 and 16 groups walk the same 6, 4 and 2 groups; 9 groups 5, 3 and 1; 7
    # groups at stages of close paces do not settle and are walked whole; 3 groups within
    # PLAIN_GROUPS. Each step's rows decide their own branch, as chunk_path_s alone.
    rng = np.random.default_rng(9)
    pp, vpp = 4, 2

    def blocks(rows, spread):
        fwd = rng.uniform(1.0 - spread, 1.0 + spread, (pp, vpp, rows))
        return fwd, 2 * fwd * rng.uniform(1.0 - spread / 2, 1.0 + spread / 2, (pp, vpp, rows))

    steps = [(8 * pp, *blocks(5, 0.5)), (16 * pp, *blocks(3, 0.5)), (9 * pp + 1, *blocks(4, 0.5)),
             (7 * pp, *blocks(6, 0.1)), (3 * pp, *blocks(2, 0.5)), (16 * pp, *blocks(3, 0.1))]
    together = chunk_paths_s(pp, vpp, steps)
    assert [path.tobytes() for path in together] == [chunk_path_s(pp, vpp, *step).tobytes() for step in steps]
    whole = [_walk_every_block(pp, vpp, *step) for step in steps]
    assert together[3].tobytes() == whole[3].tobytes()  # not settled: walked whole
    assert together[0] == pytest.approx(whole[0], rel=1e-9)
