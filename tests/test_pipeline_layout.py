"""Explicit splits with virtual stages whose end stage does not divide by vpp run as Megatron's
--pipeline-model-parallel-layout (sp_planner.pipeline, SPLIT_LAYOUT): every chunk a middle stage's
layers / vpp, the rest in the end chunk. Hand-derived from Megatron-Bridge's DeepSeek-V3 layouts
(src/megatron/bridge/recipes/deepseek/deepseek_v3.py layout_map at v0.4.0; 61 decoder layers)."""

import itertools

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.cost.dp_exposure import root_chunk_layers
from sp_planner.pipeline import (
    SPLIT_COUNTED,
    SPLIT_EXPLICIT,
    SPLIT_LAYOUT,
    split_breaks,
    split_kind,
    stage_chunk,
    stage_layers,
)
from sp_planner.pipeline_chunks import (
    chunk_layer_counts,
    empty_chunks,
    end_chunk_layers,
    later_chunk_layers,
    stage_chunk_sizes,
    virtual_stage_layers,
)
from sp_planner.plan import ParallelPlan, violations
from sp_planner.specs import Workload


def _breaks(num_layers, pp, vpp, first, last) -> bool:
    return bool(split_breaks(num_layers, np.array([pp]), np.array([vpp]), np.array([first]), np.array([last]))[0])


@pytest.mark.parametrize(("pp", "vpp", "first", "last", "first_chunks", "last_chunks"), [
    # "Et*4|(t*4|)*14tmL" over pp 4 x vpp 4: stage 0 holds 16, stage 3 holds 13.
    (4, 4, 16, 13, (4, 4, 4, 4), (4, 4, 4, 1)),
    # The same string over pp 8 x vpp 2: stage 0 8, stage 7 5.
    (8, 2, 8, 5, (4, 4), (4, 1)),
    # Over pp 2 x vpp 8 (no middle stage: the first stage's 32 / 8 sets the chunk).
    (2, 8, 32, 29, (4,) * 8, (4,) * 7 + (1,)),
    # "Et|(tt|)*30mL" over pp 8 x vpp 4: the last virtual stage holds no decoder layer.
    (8, 4, 7, 6, (1, 2, 2, 2), (2, 2, 2, 0)),
    # "Et*3|(t*4|)*14ttL" (Megatron-Bridge branch gaod/r0.2.0_test, GB200 pp 4 x vpp 4).
    (4, 4, 15, 14, (3, 4, 4, 4), (4, 4, 4, 2)),
])
def test_recipe_layouts_place_their_chunks(pp, vpp, first, last, first_chunks, last_chunks):
    assert not _breaks(61, pp, vpp, first, last)
    assert int(split_kind(61, pp, vpp, first, last)) == SPLIT_LAYOUT
    sizes = stage_chunk_sizes(61, pp, vpp, first, last)
    assert sizes[0] == first_chunks and sizes[-1] == last_chunks
    assert all(s == (sizes[1][0],) * vpp for s in sizes[1:-1])  # middle stages: c in each chunk
    virtual = virtual_stage_layers(61, pp, vpp, first, last)
    assert len(virtual) == pp * vpp and sum(virtual) == 61
    assert virtual[0] == first_chunks[0] and virtual[-1] == last_chunks[-1]
    # The vectorized ends and full chunk agree with the scalar placement.
    split = stage_layers(61, np.array([pp]), np.array([first]), np.array([last]))
    chunk = stage_chunk(*split, pp, vpp)
    for layers, chunks, is_first in ((first, first_chunks, True), (last, last_chunks, False)):
        ends = end_chunk_layers(np.array([float(layers)]), vpp, first_stage=is_first, chunk=chunk)
        assert (float(ends[0][0]), float(ends[1][0])) == (chunks[0], chunks[-1])
        assert float(later_chunk_layers(np.array([float(layers)]), vpp, chunk)[0]) == chunks[1 if is_first else 0]
    root, other = root_chunk_layers(np.array([float(first)]), vpp, chunk)
    assert (float(root[0]), float(other[0])) == (first_chunks[0], first_chunks[1])


def test_the_counted_splits_end_chunks_are_the_layouts():
    # Megatron's account_for_embedding/loss split (126 layers over pp 16 x vpp 2 and 4, 7 on each
    # end): one fewer in the end chunks is the layout rule's rest with c = (126 + 2) / 16 / vpp.
    for vpp in (2, 4, 8):
        first = last = 128 // 16 - 1
        assert int(split_kind(126, 16, vpp, first, last)) == SPLIT_COUNTED
        sizes = stage_chunk_sizes(126, 16, vpp, first, last)
        c = 8 // vpp
        assert sizes[0] == (c - 1,) + (c,) * (vpp - 1) and sizes[-1] == (c,) * (vpp - 1) + (c - 1,)
        # The same as the stage's own placement (no middle chunk given).
        assert sizes[0] == chunk_layer_counts(first, vpp, first_stage=True)
        assert sizes[-1] == chunk_layer_counts(last, vpp, first_stage=False)


def test_splits_that_divide_by_vpp_keep_megatrons_even_chunks():
    assert int(split_kind(61, 4, 4, 16, 12 + 1)) == SPLIT_LAYOUT
    assert int(split_kind(64, 4, 2, 12, 20)) == SPLIT_EXPLICIT
    assert stage_chunk_sizes(64, 4, 2, 12, 20) == ((6, 6), (8, 8), (8, 8), (10, 10))


@pytest.mark.parametrize(("num_layers", "pp", "vpp", "first", "last", "chunks", "why"), [
    # 10 < 3 chunks of 4: its own ceil, 3, leaves 1 for chunk 0.
    (61, 4, 4, 10, 19, ((1, 3, 3, 3), (4,) * 4, (4, 4, 4, 7)), "end stage short of the middle chunks"),
    # 3 < one chunk of 4 and own ceil 2 leaves 1: (1, 2).
    (61, 8, 2, 3, 10, ((1, 2), (4, 4), (5, 5)), "end stage short of a middle chunk"),
    # 5 over 4 chunks: ceil 2 would leave -1, the floor 1 leaves 2 for the end chunk.
    (32, 8, 4, 5, 3, ((2, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 0)), "end stage short of its own ceil"),
    (61, 2, 4, 31, 30, ((7, 8, 8, 8), (8, 8, 8, 6)), "pp 2 with neither end divisible by vpp: own ceil 8"),
    (64, 2, 4, 32, 32, ((8,) * 4, (8,) * 4), "pp 2 with both ends divisible: no --decoder-first/last"),
    (62, 4, 4, 15, 13, ((3, 4, 4, 4), (5, 5, 5, 2), (4, 4, 4, 1)), "middle stages of 17, not a multiple of vpp"),
])
def test_splits_the_flags_refuse_run_as_the_layout(num_layers, pp, vpp, first, last, chunks, why):
    # Megatron-Core's PipelineParallelLayerLayout takes any decoder count per virtual stage: these run
    # as --pipeline-model-parallel-layout (tests/flags/test_pipeline_layout_flags.py parses them).
    assert not _breaks(num_layers, pp, vpp, first, last), why
    assert int(split_kind(num_layers, pp, vpp, first, last)) == SPLIT_LAYOUT
    sizes = stage_chunk_sizes(num_layers, pp, vpp, first, last)
    assert (sizes[0], *sizes[1:-1][:1], sizes[-1]) == chunks
    assert sum(map(sum, sizes)) == num_layers


@pytest.mark.parametrize(("num_layers", "pp", "vpp", "first", "last", "why"), [
    (61, 4, 4, 0, 13, "a last stage without a first"),
    (61, 4, 4, 16, 16, "29 middle layers over 2 stages: not alike"),
    (61, 4, 2, 31, 30, "no layer left for the middle stages"),
    (61, 2, 2, 30, 30, "a layer on no stage"),
    (64, 4, 3, 0, 0, "the even form: 16 layers a stage over vpp 3 (pin 16 / 16 for the layout)"),
])
def test_splits_no_layout_places_still_break(num_layers, pp, vpp, first, last, why):
    assert _breaks(num_layers, pp, vpp, first, last), why


def test_the_rest_may_exceed_a_chunk():
    # 17 over vpp 4 beside middle chunks of 4: (4, 4, 4, 5), a layout Megatron parses like any other.
    assert not _breaks(61, 4, 4, 17, 12)
    assert stage_chunk_sizes(61, 4, 4, 17, 12)[0] == (5, 4, 4, 4)


def test_the_layers_rule_accepts_layouts_and_says_why_it_breaks():
    model, workload = load_model("DeepSeek-V3"), Workload(seq_len=4096, global_batch=4096)
    for first, last in ((16, 13), (10, 19)):
        good = ParallelPlan(pp=4, vpp=4, dp=64, ep=64, first_stage_layers=first, last_stage_layers=last)
        assert "layers" not in [v.rule for v in violations(good, model, workload)]
    two = ParallelPlan(pp=2, vpp=4, dp=128, ep=64, first_stage_layers=31, last_stage_layers=30)
    assert "layers" not in [v.rule for v in violations(two, model, workload)]
    bad = ParallelPlan(pp=4, vpp=4, dp=64, ep=64, first_stage_layers=16, last_stage_layers=16)
    (message,) = [v.message for v in violations(bad, model, workload) if v.rule == "layers"]
    assert "middle layers even over pp - 2" in message and "--pipeline-model-parallel-layout" in message
    even = ParallelPlan(pp=4, vpp=3, dp=64, ep=64)
    (message,) = [v.message for v in violations(even, load_model("Llama-3-8B"), workload) if v.rule == "layers"]
    assert "pin first = last = 8" in message


def test_the_layers_hint_never_proposes_a_layout_with_empty_virtual_stages():
    # Llama-3-8B's 32 layers on pp 2 x vpp 64: the hint proposed first = last = 16, a layout of 2 x 64
    # model chunks of which 126 hold no layer. It now names --vpp values that split the 16 layers per
    # stage evenly (the pinned 64's nearest), each of which the layers rule accepts.
    model, workload = load_model("Llama-3-8B"), Workload(seq_len=8192, global_batch=64)

    def layers_message(pp: int, vpp: int) -> str:
        (message,) = [v.message for v in violations(ParallelPlan(pp=pp, vpp=vpp), model, workload)
                      if v.rule == "layers"]
        return message

    assert stage_chunk_sizes(32, 2, 64, 16, 16)[0].count(0) == 63  # what the old hint led to
    message = layers_message(2, 64)
    assert "first = last" not in message
    assert message == ("num_layers 32 is not divisible by pp 2 x vpp 64, and with fewer layers than its 128 "
                       "virtual stages any split leaves some empty; pin --vpp 4, 8 or 16, which split the 16 "
                       "layers per stage evenly")
    for vpp in (4, 8, 16):
        assert not [v for v in violations(ParallelPlan(pp=2, vpp=vpp), model, workload) if v.rule == "layers"]
    # Enough layers for every virtual stage: the layout pin stays on offer, and leaves no chunk empty.
    message = layers_message(4, 3)
    assert message.startswith("num_layers 32 is not divisible by pp 4 x vpp 3; pin --vpp 2, 4 or 8, which split "
                              "the 8 layers per stage evenly, or pin first = last = 8")
    assert min(min(stage) for stage in stage_chunk_sizes(32, 4, 3, 8, 8)) >= 2
    # One layer per stage: no vpp above 1 interleaves it.
    assert layers_message(32, 2).endswith("1 layer per stage interleaves with no vpp above 1: pin --vpp 1")


def test_empty_chunks_are_the_virtual_stages_with_no_layer_at_all():
    # pp 2 x vpp 64, 16/16: each stage's 16 layers sit in one chunk (first stage's chunk 0 with the
    # embedding, last stage's last with the loss), 63 + 63 chunks hold nothing.
    assert empty_chunks(32, 2, 64, 16, 16) == 126
    # pp 4 x vpp 4, 1/1: the first stage (1, 0, 0, 0) and the last (0, 0, 0, 1) each 3 empty chunks;
    # the middle stages' 15 layers fill 4, 4, 4, 3.
    assert stage_chunk_sizes(32, 4, 4, 1, 1) == ((1, 0, 0, 0), (4, 4, 4, 3), (4, 4, 4, 3), (0, 0, 0, 1))
    assert empty_chunks(32, 4, 4, 1, 1) == 6
    # A chunk holding only the embedding (the first virtual stage) or only the loss (the last) is
    # not empty: pp 4 x vpp 2 with 1/1 places (0, 1) on the first stage and (1, 0) on the last,
    # as the counted split places Llama 3.1 405B's 7/7 over pp 16 x vpp 8.
    assert stage_chunk_sizes(32, 4, 2, 1, 1)[::3] == ((0, 1), (1, 0)) and empty_chunks(32, 4, 2, 1, 1) == 0
    assert stage_chunk_sizes(126, 16, 8, 7, 7)[0][0] == 0 and empty_chunks(126, 16, 8, 7, 7) == 0
    assert empty_chunks(32, 4, 4, 0, 0) == 0  # the even split: 2 layers a chunk


def test_vectorized_placement_is_the_scalar_one_over_candidates():
    rows = [(pp, vpp, f, last) for pp, vpp, f, last in itertools.product((2, 4, 8), (2, 4), range(1, 20), range(1, 20))
            if not _breaks(61, pp, vpp, f, last) and int(split_kind(61, pp, vpp, f, last)) == SPLIT_LAYOUT]
    assert len(rows) > 10
    pp, vpp, f, last = (np.array(c) for c in zip(*rows))
    split = stage_layers(61, pp, f, last)
    chunk = stage_chunk(*split, pp, vpp)
    firsts = end_chunk_layers(split.first, vpp, first_stage=True, chunk=chunk)
    lasts = end_chunk_layers(split.last, vpp, first_stage=False, chunk=chunk)
    for i, row in enumerate(rows):
        sizes = stage_chunk_sizes(61, *row)
        assert (firsts[0][i], firsts[1][i]) == (sizes[0][0], sizes[0][-1])
        assert (lasts[0][i], lasts[1][i]) == (sizes[-1][0], sizes[-1][-1])
