"""sp_planner.pipeline_split: the split the search prices for each pp and vpp. Megatron-Bridge's
DeepSeek-V3 layouts (recipes/deepseek/h100/deepseek_v3.py _get_deepseek_v3_pipeline_layout at
067f987d lines 50-61; scripts/performance/configs/deepseek/deepseek_llm_pretrain.py line 164 at
v0.2.0) by hand."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.distinct import DISTINCT_MIN_ROWS
from sp_planner.pipeline import SPLIT_COUNTED, SPLIT_LAYOUT, split_breaks, split_kind
from sp_planner.pipeline_chunks import stage_chunk_sizes
from sp_planner.pipeline_split import default_split, generic_layout, recipe_split, search_split
from sp_planner.search import search
from sp_planner.space import Pins
from sp_planner.specs import Workload


def test_llama3_405b_split_is_the_papers():
    # 126 layers over 16 stages: 7 on the first and last, 8 elsewhere (arXiv 2407.21783 s3.3.2),
    # the same in a chunk big enough to be split per distinct row.
    pp = np.full(2 * DISTINCT_MIN_ROWS, 16)
    first, last = default_split(126, pp, 1)
    assert set(first.tolist()) == {7} and set(last.tolist()) == {7}
    assert not split_breaks(126, pp, 1, first, last).any()


@pytest.mark.parametrize(("pp", "vpp", "first", "last", "first_chunks", "last_chunks"), [
    (4, 1, 16, 13, (16,), (13,)),  # [E + 16, 16, 16, 13 + mtp + L]
    (8, 1, 8, 5, (8,), (5,)),
    (4, 2, 16, 13, (8, 8), (8, 5)),  # E + 8, 8 x 6, 5 + mtp + L over 8 virtual stages
    (16, 1, 4, 1, (4,), (1,)),
    (8, 2, 8, 5, (4, 4), (4, 1)),
    (4, 4, 16, 13, (4, 4, 4, 4), (4, 4, 4, 1)),  # "Et*4|(t*4|)*14tmL"
    (8, 4, 7, 6, (1, 2, 2, 2), (2, 2, 2, 0)),  # "Et|(tt|)*30mL": chunk 0 one short, the last empty
])
def test_recipe_split_is_megatron_bridges_deepseek_v3_layout(pp, vpp, first, last, first_chunks, last_chunks):
    assert tuple(int(v) for v in recipe_split(61, pp, vpp)) == (first, last)
    assert not split_breaks(61, np.array([pp]), np.array([vpp]), np.array([first]), np.array([last]))[0]
    sizes = stage_chunk_sizes(61, pp, vpp, first, last)
    assert (sizes[0], sizes[-1]) == (first_chunks, last_chunks)


def test_recipe_split_is_none_where_no_virtual_stage_holds_the_rest():
    # 61 layers over pp 8 x vpp 8: c = 1 leaves 61 - 63 = -2, more than chunk 0 can give; pp 1.
    assert [int(v) for v in recipe_split(61, np.array([8, 1]), np.array([8, 1]))[0]] == [0, 0]


def test_search_split_tries_the_recipe_only_where_vpp_is_pinned_and_the_default_is_a_generic_layout():
    pp, vpp = np.array([4, 8, 16, 4]), np.array([4, 2, 2, 1])
    default = default_split(61, pp, vpp, 1)
    assert [int(v) for v in default[0]] == [21, 9, 3, 16] and [int(v) for v in default[1]] == [8, 4, 2, 13]
    assert all(np.array_equal(a, b) for a, b in zip(search_split(61, pp, vpp, 1), default))
    first, last = search_split(61, pp, vpp, 1, recipes=True)
    # pp 4 x vpp 4 and pp 8 x vpp 2: default_split's ends run only as a layout, the recipe's instead;
    # over pp 16 x vpp 2 default_split's 3 / 2 is the recipe's ("Et|(tt|)*30mL"'s form); vpp 1 keeps it.
    assert first.tolist() == [16, 8, 3, 16] and last.tolist() == [13, 5, 2, 13]
    assert generic_layout(61, pp, vpp, *default).tolist() == [True, True, True, False]
    assert generic_layout(61, pp, vpp, first, last, recipes=True).tolist() == [False, False, False, False]
    # A valid flag-form split stays: Llama 3 405B's counted 7 / 7 over pp 16 x vpp 2.
    assert int(split_kind(126, 16, 2, *search_split(126, 16, 2, recipes=True))) == SPLIT_COUNTED
    assert int(split_kind(61, 4, 4, 16, 13)) == SPLIT_LAYOUT


def test_a_pinned_vpp_searches_the_recipe_layout():
    # DeepSeek-V3 with one MTP depth pinned to pp 4 x vpp 4 (Megatron-Bridge's layout_map[(4, 4)]):
    # default_split's 21 / 8 is a generic layout the search does not try, the recipe's 16 / 13 is.
    model = load_model("DeepSeek-V3").model_copy(update={"mtp_layers": 1})
    result = search(model, load_hardware("H100-SXM"), Workload(seq_len=4096, global_batch=1024), num_nodes=64,
                    gpus_per_node=8, pins=Pins(pp=4, vpp=4, tp=2, ep=64, zero=1, recompute="mla_up_proj"), top_k=1)
    frame = result.frame
    assert len(frame) and set(zip(frame["first_stage_layers"], frame["last_stage_layers"])) == {(16, 13)}


def test_mtp_moves_whole_chunks_from_the_last_stage_to_the_first():
    # Megatron-Bridge's DeepSeek-V3 layouts (deepseek_v3.py at v0.4.0 lines 36-45): 61 layers with
    # one MTP depth run 16 / 16 / 16 / 13 over pp 4, 8 / 8 x 6 / 5 over pp 8, 4 / 4 x 14 / 1 over pp
    # 16; without MTP the generic split gives the last stage a chunk less than the first at most.
    for pp, without, with_mtp in ((4, (15, 14), (16, 13)), (8, (7, 6), (8, 5)), (16, (3, 2), (4, 1))):
        assert tuple(int(v[0]) for v in default_split(61, np.array([pp]), np.array([1]))) == without
        assert tuple(int(v[0]) for v in default_split(61, np.array([pp]), np.array([1]), 1)) == with_mtp
    # An even split moves whole chunks: 32 layers over pp 4 x vpp 2 run 10 / 8 / 8 / 6.
    assert tuple(int(v[0]) for v in default_split(32, np.array([4]), np.array([2]), 1)) == (10, 6)
    # The counted split (Megatron's accounting of the embedding and the loss) stays; a single stage
    # has no split; a last stage of one chunk keeps it.
    assert tuple(int(v[0]) for v in default_split(94, np.array([8]), np.array([3]), 1)) == (11, 11)
    assert tuple(int(v[0]) for v in default_split(61, np.array([1]), np.array([1]), 1)) == (0, 0)
    assert tuple(int(v[0]) for v in default_split(16, np.array([16]), np.array([1]), 1)) == (0, 0)
