"""The pipeline split the search tries for each pp and vpp (pipeline.py holds the rules that split
must obey and how its stages' layers fall into model chunks)."""

from __future__ import annotations

from functools import partial

import numpy as np

from sp_planner.distinct import per_distinct
from sp_planner.pipeline import SPLIT_LAYOUT, counted_split, split_breaks, split_kind


def default_split(num_layers: int, pp, vpp, mtp_layers: int = 0):
    """The split the search uses: even where it is valid, else the counted one (the Llama 3
    paper's: 126 layers over 16 stages run 7 on the first and last, 8 elsewhere, arXiv 2407.21783
    section 3.3.2), else first and last share what ceil-sized middle stages leave. (0, 0) = even.
    With `mtp_layers` multi-token prediction depths, which run on the last stage (cost.mtp), an
    even or generic split moves that many layers (rounded up to whole chunks) from the last stage
    to the first where the last keeps one chunk at least: Megatron-Bridge's DeepSeek-V3 layouts do
    so (src/megatron/bridge/recipes/deepseek/deepseek_v3.py at v0.4.0 lines 36-45: pp 4 16 / 13,
    pp 8 8 / 5, pp 16 4 / 1, each last stage with its MTP depth and the loss); the counted split,
    Megatron's own accounting of the embedding and the loss, stays as it is."""
    first, last = per_distinct(partial(_default_split, num_layers), pp, vpp)
    if not mtp_layers:
        return first, last
    return _mtp_shifted(num_layers, np.asarray(pp), np.asarray(vpp), first, last, mtp_layers)


def _mtp_shifted(num_layers: int, pp, vpp, first, last, mtp_layers: int):
    """default_split's MTP shift of the even (0, 0) or generic split (not the counted one)."""
    counted_first, _ = counted_split(num_layers, pp, vpp)
    even = (first == 0) & (last == 0)
    per = num_layers // np.maximum(pp, 1)
    base_first, base_last = np.where(even, per, first), np.where(even, per, last)
    shift = -(-mtp_layers // vpp) * vpp  # whole chunks: each stage's layers stay divisible by vpp
    shifts = (pp > 1) & ~((first > 0) & (first == counted_first) & (counted_first > 0)) & (base_last - shift >= vpp)
    shifts &= ~even | ((num_layers % pp == 0) & (per % vpp == 0))
    return (np.where(shifts, base_first + shift, first).astype(np.int64),
            np.where(shifts, base_last - shift, last).astype(np.int64))


def _default_split(num_layers: int, pp, vpp):
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    even = (num_layers % pp == 0) & ((num_layers // pp) % vpp == 0)
    counted_first, counted_last = counted_split(num_layers, pp, vpp)
    # Middle stages take ceil(L/pp) rounded up to a multiple of vpp; first and last split the rest.
    middle = -(-num_layers // (pp * vpp)) * vpp
    rest = num_layers - middle * np.maximum(pp - 2, 0)
    last = (rest // 2) // vpp * vpp  # the last stage also runs the logits and the loss: it gets less
    first = rest - last
    # No generic split (a single stage, or too few layers): the even one, which the rule reports.
    none = (pp == 1) | (first < 1) | (last < 1)
    first = np.where(none, 0, first)
    last = np.where(none, 0, last)
    use_counted = ~even & (counted_first > 0)
    first = np.where(even, 0, np.where(use_counted, counted_first, first))
    last = np.where(even, 0, np.where(use_counted, counted_last, last))
    return first.astype(np.int64), last.astype(np.int64)


def recipe_split(num_layers: int, pp, vpp):
    """(first, last) of Megatron-Bridge's DeepSeek-V3 layouts (recipes/deepseek/h100/deepseek_v3.py
    _get_deepseek_v3_pipeline_layout, at 067f987d lines 50-61: "Et*4|(t*4|)*14tmL" over pp 4 x vpp
    4, 8 / 5 over pp 8 x vpp 2, 4 / 1 over pp 16): every virtual stage c = ceil(num_layers / (pp vpp))
    decoder layers and the last the rest beside the MTP depths and the loss; where that rest would
    be negative, the last virtual stage holds none and the first stage's chunk 0, the embedding's,
    c less the shortfall ("Et|(tt|)*30mL" over pp 8 x vpp 4, scripts/performance/configs/deepseek/
    deepseek_llm_pretrain.py line 164 at v0.2.0). 0 where even that chunk would be negative, or
    there is no pipeline."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    chunk = -(-num_layers // (pp * vpp))
    rest = num_layers - (pp * vpp - 1) * chunk
    short = np.minimum(rest, 0)
    first = chunk * vpp + short
    last = num_layers - first - (pp - 2) * chunk * vpp
    ok = (pp > 1) & (chunk + short >= 0) & (last >= 1) & (first >= 1)
    return np.where(ok, first, 0).astype(np.int64), np.where(ok, last, 0).astype(np.int64)


def search_split(num_layers: int, pp, vpp, mtp_layers: int = 0, *, recipes: bool = False):
    """The split the search prices for each pp and vpp: default_split, or with `recipes` (a pinned
    vpp: sp-plan --vpp) where that runs only as a --pipeline-model-parallel-layout of generic ends
    (pipeline.SPLIT_LAYOUT) or not at all, recipe_split where Megatron places it: DeepSeek-V3 + MTP
    over pp 4 x vpp 4 at 16 / 13, where default_split's 21 / 8 is no recipe's. Unpinned vpp leaves
    the recipes out: on 1024 H100s DeepSeek-V3's search would price 2.55M candidates, not 1.41M,
    2.6x as long with one MTP depth (cost.chunk_path walks each interleaved row), and Qwen3-235B's
    39% more (94 layers, 47 a stage: pp 2 with vpp 2 to 8 all layouts); search_refine prices them,
    with `recipes`, for the best plans' degrees."""
    first, last = default_split(num_layers, pp, vpp, mtp_layers)
    if not recipes:
        return first, last
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    recipe_first, recipe_last = recipe_split(num_layers, pp, vpp)
    generic = (split_kind(num_layers, pp, vpp, first, last) == SPLIT_LAYOUT) | split_breaks(num_layers, pp, vpp,
                                                                                              first, last)
    use = generic & (recipe_first > 0) & ~split_breaks(num_layers, pp, vpp, recipe_first, recipe_last)
    return np.where(use, recipe_first, first), np.where(use, recipe_last, last)


def generic_layout(num_layers: int, pp, vpp, first, last, *, recipes: bool = False):
    """True where (first, last) over pp x vpp runs as a layout that the search does not try (with
    `recipes`, one that is not recipe_split's; search_split): those are priced where a plan pins
    its split (space_choices._vpp_keep), and without `recipes` for the best plans' degrees with a
    pinned vpp's split (space_choices._vpp_refine)."""
    layout = split_kind(num_layers, pp, vpp, first, last) == SPLIT_LAYOUT
    if not recipes:
        return layout
    recipe_first, recipe_last = recipe_split(num_layers, pp, vpp)
    return layout & ~((np.asarray(first) == recipe_first) & (np.asarray(last) == recipe_last) & (recipe_first > 0))
