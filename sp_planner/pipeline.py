"""Pipeline stages as Megatron-LM runs them: the layer split (even, or uneven first and last
stages), virtual stages per rank (interleaved 1F1B), the pacing stage, the warm-up, the
micro-batches in flight and the interleaved groups' pile-up (cost.pipeline_path builds the
bubble from them, as the step's critical path).

Vectorized over candidates like the rest of the cost model. A split is stored as the decoder layers
of the first and last stage, 0 meaning the even split num_layers / pp. Megatron's rules
(megatron/core/transformer/transformer_config.py, megatron-core 0.16 __post_init__, "Uneven PP"
and "account_for_*" branches; shared reference moe_fp8_pipeline_frameworks.md section 1.5):
  even:     num_layers % pp == 0 and (num_layers / pp) % vpp == 0
  counted:  --account-for-embedding/loss-in-pipeline-split: (num_layers + 2) % pp == 0 and
            ((num_layers + 2) / pp) % vpp == 0; the first and last stage run one decoder layer
            fewer, the embedding and the loss standing in for it
  explicit: --decoder-first/last-pipeline-num-layers f, l > 0, each % vpp == 0; the middle
            num_layers - f - l layers split evenly over pp - 2 stages, each a multiple of vpp;
            middle layers and middle stages both zero or both non-zero; with vpp > 1, pp > 2
            (get_transformer_layer_offset divides by the middle stages)
  layout:   any other explicit split with vpp > 1 runs as --pipeline-model-parallel-layout
            (pipeline_parallel_layer_layout.py, any decoder count per virtual stage, the offsets
            from the string; Megatron-Bridge's DeepSeek-V3 recipes' layout_map, e.g.
            "Et*4|(t*4|)*14tmL"): f, l > 0 and the middle stages alike, each a layer at least, as
            the explicit form, but no stage need divide by vpp and pp 2 runs. A stage not divisible
            by vpp holds vpp - 1 full chunks and its end chunk (the first stage's chunk 0, another's
            last) the rest (pipeline_chunks.chunk_shape): full chunks of c, a middle stage's layers
            / vpp (at pp 2 an end stage's that divides by vpp; stage_chunk), where the rest is not
            negative, else of its own ceil(layers / vpp), else of its floor. The counted split's
            one-fewer end chunks are this rule's (rest = c - 1). The even form stays Megatron's
            --num-virtual-stages-per-pipeline-rank (num_layers / pp divisible by vpp): the same
            layers pinned as first = last = num_layers / pp run as the layout.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np

from sp_planner.distinct import per_distinct
from sp_planner.pipeline_order import micro_batch_group

# Virtual stages per rank the search tries when --vpp is not pinned: the powers of two that
# interleaved recipes use (Megatron CI, NeMo Llama 3 70B/405B recipes use 2..8 layers per
# virtual stage); each is kept only where the layer split allows it.
VPP_CHOICES: tuple[int, ...] = (1, 2, 4, 8)


class StageLayers(NamedTuple):
    """Decoder layers on the first, a middle and the last pipeline stage (arrays)."""

    first: np.ndarray
    middle: np.ndarray
    last: np.ndarray


def stage_layers(num_layers: int, pp, first_stage_layers, last_stage_layers) -> StageLayers:
    """Layers per stage; 0 in first/last_stage_layers means the even split."""
    return per_distinct(partial(_stage_layers, num_layers), pp, first_stage_layers, last_stage_layers)


def _stage_layers(num_layers: int, pp, first_stage_layers, last_stage_layers) -> StageLayers:
    pp = np.asarray(pp)
    even = np.asarray(first_stage_layers) == 0
    per = num_layers / pp
    first = np.where(even, per, first_stage_layers).astype(np.float64)
    last = np.where(even, per, last_stage_layers).astype(np.float64)
    middle_stages = np.maximum(pp - 2, 1)
    middle = np.where(pp > 2, (num_layers - first - last) / middle_stages, np.maximum(first, last))
    single = pp == 1
    return StageLayers(np.where(single, num_layers, first), np.where(single, num_layers, middle),
                       np.where(single, num_layers, last))


def counted_split(num_layers: int, pp, vpp):
    """(first, last) decoder layers with the embedding and the loss counted as one layer each
    (Megatron --account-for-embedding/loss-in-pipeline-split), or 0 where that split is invalid."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    per = (num_layers + 2) // pp
    ok = (pp > 2) & ((num_layers + 2) % pp == 0) & (per % vpp == 0) & (per > 1)
    return np.where(ok, per - 1, 0), np.where(ok, per - 1, 0)


SPLIT_EVEN, SPLIT_COUNTED, SPLIT_EXPLICIT, SPLIT_LAYOUT = 0, 1, 2, 3


def split_kind(num_layers: int, pp, vpp, first_stage_layers, last_stage_layers):
    """SPLIT_EVEN, SPLIT_COUNTED (embedding and loss as layers), SPLIT_EXPLICIT (first/last
    counts) or SPLIT_LAYOUT (explicit counts with virtual stages that Megatron's
    --decoder-first/last-pipeline-num-layers refuse: an end or middle stage not divisible by vpp,
    or pp 2; Megatron's --pipeline-model-parallel-layout; module docstring)."""
    counted_first, counted_last = counted_split(num_layers, pp, vpp)
    f, last, vpp = np.asarray(first_stage_layers), np.asarray(last_stage_layers), np.asarray(vpp)
    even = f == 0
    counted = (f == counted_first) & (last == counted_last)
    middle_chunk = (num_layers - f - last) / np.maximum(np.asarray(pp) - 2, 1) / vpp
    flags_place = (f % vpp == 0) & (last % vpp == 0) & (np.asarray(pp) > 2) & (middle_chunk == np.floor(middle_chunk))
    layout = (vpp > 1) & ~flags_place
    return np.where(even, SPLIT_EVEN, np.where(counted, SPLIT_COUNTED, np.where(layout, SPLIT_LAYOUT, SPLIT_EXPLICIT)))


def stage_chunk(first, middle, last, pp, vpp):
    """c, the decoder layers of a full model chunk that an end stage not divisible by vpp fills
    before its end chunk (module docstring, layout): a middle stage's layers / vpp, at pp 2 (no
    middle stage) the first stage's or else the last's; 0 where that is not whole (each stage
    then its own: pipeline_chunks.chunk_shape)."""
    if not np.any(np.asarray(vpp) > 1):  # one chunk a stage: nothing to fill (the search's common case)
        return np.zeros(np.broadcast(first, middle, last, pp, vpp).shape)
    first, middle, last, vpp = (np.asarray(v, dtype=np.float64) for v in (first, middle, last, vpp))
    first_share = first / vpp  # whole-number tests by floor, not np.mod's slower float remainder
    chunk = np.where(np.asarray(pp) > 2, middle / vpp,
                     np.where(first_share == np.floor(first_share), first_share, last / vpp))
    return np.where((chunk == np.floor(chunk)) & (chunk > 0), chunk, 0.0)


def split_breaks(num_layers: int, pp, vpp, first_stage_layers, last_stage_layers):
    """True where Megatron rejects the split (see the module docstring for the three forms)."""
    return per_distinct(partial(_split_breaks, num_layers), pp, vpp, first_stage_layers, last_stage_layers)


def _split_breaks(num_layers: int, pp, vpp, first_stage_layers, last_stage_layers):
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    f, last = np.asarray(first_stage_layers), np.asarray(last_stage_layers)
    even = (f == 0) & (last == 0)
    even_ok = (num_layers % pp == 0) & ((num_layers // pp) % vpp == 0)
    middle_layers = num_layers - f - last
    middle_stages = pp - 2
    # Every stage a decoder layer at least (the simulator's, sim.work.StepWork, and Megatron's
    # --decoder-first/last-pipeline-num-layers: both zero or both non-zero) and the middle stages
    # alike (one middle count, StageLayers). The explicit form's divisibility by vpp, and pp > 2
    # with vpp > 1 (get_transformer_layer_offset divides by pp - 2), are split_kind's: a split that
    # breaks them runs as the layout, whose offsets come from the string
    # (pipeline_parallel_layer_layout.py get_layer_offset) and which validate_layer_layout checks
    # only for the embedding first, the loss last, every decoder layer once and the MTP depths
    # together in the last virtual stage.
    placed = (pp > 1) & (f > 0) & (last > 0) & (middle_layers >= 0) & ((middle_layers > 0) == (middle_stages > 0))
    whole = (middle_stages <= 0) | (middle_layers % np.maximum(middle_stages, 1) == 0)
    counted = split_kind(num_layers, pp, vpp, f, last) == SPLIT_COUNTED
    return ~np.select([even, counted], [even_ok, True], placed & whole)


def interleave_breaks(pp, vpp, num_micro_batches):
    """True where interleaved 1F1B cannot run: vpp > 1 needs pp > 1 (parallel_state.py) and a
    micro-batch group N that Megatron accepts, pp <= N <= m (pipeline_order.megatron_group_sizes:
    any m >= pp runs, with N = m at worst; pipeline_order.micro_batch_group is the one sp-plan
    takes)."""
    pp, vpp, m = np.asarray(pp), np.asarray(vpp), np.asarray(num_micro_batches)
    return (vpp > 1) & ((pp == 1) | (m < pp))


def stage_in_flight(pp, vpp, num_micro_batches, rank, pinned=None):
    """Micro-batches' worth of pipeline rank `rank`'s activations stored at its peak: the chunk
    forwards it runs before its first backward (forwards_before_backward), each holding 1/vpp of
    the stage's layers. 1F1B: min(pp - rank, m) (Narayanan 2021 section 2.2.1); the last rank of
    an interleaved pipeline holds ((vpp - 1) * N + 1) / vpp micro-batches when the loss runs, not
    one (N: pipeline_order.micro_batch_group, the plans' own where `pinned` names them)."""
    group = None if pinned is None else micro_batch_group(pp, np.maximum(np.asarray(num_micro_batches), 1), pinned)
    return forwards_before_backward(pp, vpp, num_micro_batches, rank, group) / np.asarray(vpp)


def forwards_before_backward(pp, vpp, num_micro_batches, rank, group=None):
    """Chunk forwards rank `rank` runs before its first backward: Megatron's warm-up, pp - rank - 1
    (1F1B) or 2(pp - rank - 1) + (vpp - 1) N (interleaved, N the micro-batch group,
    pipeline_order.micro_batch_group; pipeline_parallel/schedules.py get_pp_rank_microbatches lines 955-965 at
    d98e8a6), and the one it pairs with that backward, capped at all m vpp of them. `group`: N
    where the caller has it."""
    pp, vpp, m = np.asarray(pp), np.asarray(vpp), np.maximum(np.asarray(num_micro_batches), 1)
    rest = pp - np.asarray(rank) - 1
    if group is None:
        group = micro_batch_group(pp, m) if np.any(vpp > 1) else pp
    return np.minimum(np.where(vpp > 1, 2 * rest + (vpp - 1) * group, rest) + 1, m * vpp)


def chunk_counts(n, pp, vpp, groups=None):
    """(chunk 0's, the last chunk's) forwards among a rank's forwards number 0 to n - 1 in
    Megatron's interleaved order (chunk_forwards_s): whole laps of N x vpp, N of each chunk, then
    the remainder's, the last group's laps of its own size r; `groups`: (m, N, r)
    (pipeline_order's micro_batch_group, last_group), None: groups of pp. floor(n / lap) rather than
    np.floor_divide/np.mod, the same counts 20x faster on the search's hot path."""
    group = pp if groups is None else groups[1]
    lap = group * vpp
    whole = np.floor(n / lap)
    rest = n - whole * lap
    counts = whole * group + np.minimum(rest, group), whole * group + np.maximum(0, rest - (vpp - 1) * group)
    if group is pp:  # every m a multiple of pp: groups of pp throughout
        return counts
    # The last group, of r micro-batches from virtual micro-batch base = (G - 1) N vpp on.
    m, _, size = groups
    before = (m - size) / np.maximum(group, 1)  # the groups before the last
    base = before * lap
    into = np.asarray(n) - base
    in_last = into > 0
    return (np.where(in_last, before * group + np.minimum(into, size), counts[0]),
            np.where(in_last, before * group + np.maximum(0, into - (vpp - 1) * size), counts[1]))


def remembered_chunk_counts(groups=None):
    """chunk_counts (in `groups`, chunk_counts') that computes each forward-count array's once
    (by identity, the array kept alive so that its id stays its own): one longest-path evaluation
    asks for a few arrays often."""
    counted: dict[int, tuple] = {}

    def counts(n, pp, vpp):
        if id(n) not in counted:
            counted[id(n)] = (n, chunk_counts(n, pp, vpp, groups))
        return counted[id(n)][1]
    return counts


def chunk_forwards_s(by_chunk, mean_s, pp, vpp, first, stop, counts=chunk_counts):
    """Seconds of a rank's chunk forwards number first to stop - 1 (0-based, in its order), each
    its chunk's (`by_chunk`: chunk 0's, a middle chunk's, the last chunk's seconds; at vpp 1 the
    stage's `mean_s`): Megatron's interleaved schedule runs group after group of N micro-batches,
    each chunk by chunk (schedules.py get_schedule_table, lines 989-1016 at d98e8a6;
    pipeline_order.stage_order), so forward k is of chunk (k mod N vpp) // N (N = pp unless
    `counts` says otherwise). `counts`: chunk_counts, or a caller's cache of it."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    if not np.any(vpp > 1):  # every row's np.where below takes n x mean_s: no chunk to count
        return np.where(vpp > 1, 0.0, (np.asarray(stop) - np.asarray(first)) * mean_s)
    (a0, a_last), (b0, b_last) = counts(np.asarray(first), pp, vpp), counts(np.asarray(stop), pp, vpp)
    n0, n_last, n = b0 - a0, b_last - a_last, np.asarray(stop) - np.asarray(first)
    chunk0_s, mid_s, last_s = by_chunk
    return np.where(vpp > 1, n0 * chunk0_s + n_last * last_s + (n - n0 - n_last) * mid_s, n * mean_s)


def rank_running(pp, vpp, num_forwards, group=None):
    """The rank (a real number) that runs `num_forwards` chunk forwards before its first backward,
    uncapped: W + 1 = num_forwards solved for the rank (stage_in_flight's warm-up; `group`: the
    micro-batch group N, pipeline_order.micro_batch_group; None: pp)."""
    pp, vpp = np.asarray(pp), np.asarray(vpp)
    group = pp if group is None else group
    return np.where(vpp > 1, pp - 1 - (num_forwards - 1 - (vpp - 1) * group) / 2, pp - num_forwards)


def first_stage_in_flight(pp, vpp, num_micro_batches, pinned=None):
    """stage_in_flight of the first rank, which holds the most."""
    return stage_in_flight(pp, vpp, num_micro_batches, 0, pinned)


class StagePace(NamedTuple):
    """Which pipeline stage sets a micro-batch's pace (arrays over candidates)."""

    last_paces: np.ndarray  # the last stage (its layers plus the loss stage's extra work)
    first_paces: np.ndarray  # else the first (its layers plus the embedding's), over a middle one
    layers: np.ndarray  # decoder layers on the pacing stage
    micro_s: np.ndarray  # the pacing stage's micro-batch


def per_stage(values) -> tuple:
    """A (first, middle, last) stage triple: `values` itself, or one value for every stage."""
    return values if isinstance(values, tuple) else (values, values, values)


def stage_pace(stages: StageLayers, *, per_layer_s, last_extra_s, first_extra_s) -> StagePace:
    """The slowest stage sets the pace (Narayanan et al. 2021, section 2.2.1): the last with its
    layers and `last_extra_s` (the logits, loss and output layer; at pp 1 the embedding too), the
    first with its layers and `first_extra_s` (its embedding), or a middle one. `per_layer_s`: a
    layer's micro-batch, one for every stage or each stage's (per_stage)."""
    first_layer, middle_layer, last_layer = per_stage(per_layer_s)
    last_s = stages.last * last_layer + last_extra_s
    first_s = stages.first * first_layer + first_extra_s
    middle_s = stages.middle * middle_layer
    last_paces, first_paces = pacing_stage(first_s, middle_s, last_s)
    layers = np.where(last_paces, stages.last, np.where(first_paces, stages.first, stages.middle))
    micro_s = np.where(last_paces, last_s, np.maximum(first_s, middle_s))
    return StagePace(last_paces, first_paces, layers, micro_s)


def pacing_stage(first_s, middle_s, last_s):
    """(last_paces, first_paces): the slowest of a micro-batch's first, middle and last stage
    times, ties going to the last, then the first."""
    last_paces = last_s >= np.maximum(first_s, middle_s)
    return last_paces, ~last_paces & (first_s >= middle_s)


def pile_up_s(slowest_s, jobs, *, charged_s):
    """Seconds an interleaved micro-batch group's chunk blocks pile up: the group's J = min(pp, m)
    micro-batches (`jobs`) pass the stages through one chunk back to back (Megatron's
    get_schedule_table runs groups of pp micro-batches chunk by chunk, get_model_chunk_id the
    chunks' backward in reverse: megatron/core/pipeline_parallel/schedules.py d98e8a6, lines
    989-1016 and 1244-1249; pipeline_order.stage_order), a flow shop of J equal jobs whose
    makespan is sum_k b_k + (J - 1) max_k b_k: a path that charged each job `charged_s` runs the
    slowest stage's block (`slowest_s`) J - 1 times more, its excess."""
    return (np.asarray(jobs) - 1) * np.maximum(0.0, slowest_s - charged_s)


