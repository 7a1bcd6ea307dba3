"""The choices the search space multiplies each degree tuple by: ZeRO stage, recompute, micro-batch,
the variants of space_variants, vpp and precision (which values are tried for given pins and Axes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sp_planner.pipeline import VPP_CHOICES, interleave_breaks, split_breaks
from sp_planner.pipeline_split import generic_layout, search_split
from sp_planner.plan import PRECISIONS, RECOMPUTE, RECOMPUTE_MLA_UP_PROJ, Precision
from sp_planner.recompute import MLP_RECOMPUTES, MOE_MODULE_RECOMPUTES, Recompute
from sp_planner.space_variants import variant_mask
from sp_planner.specs.workload import Workload

if TYPE_CHECKING:
    from sp_planner.space import Pins

ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)
MICRO_BATCH_CHOICES: tuple[int, ...] = (1, 2, 4, 8)
# The MoE module recompute the unpinned search tries (_zeros_and_recomputes).
SEARCHED_MOE_MODULE_RECOMPUTE: Recompute = "moe_act+layernorm"


class Axes(NamedTuple):
    """What the pipeline, precision and expert axes read beside the pins: the model's layers (the
    split and the vpp values that fit it), the precisions the hardware runs (tried when unpinned)
    and the model's routed experts (0: dense; ep runs over their divisors). None where a caller
    passes no Axes: vpp 1, the even split, the pinned (else bf16) precision, dense."""

    num_layers: int
    precisions: tuple[Precision, ...] = ("bf16",)
    num_experts: int = 0
    mla: bool = False  # multi-latent attention: recompute mla_up_proj is tried too
    mtp_layers: int = 0  # multi-token prediction depths on the last stage (pipeline_split.search_split)


def _num_experts(axes: Axes | None) -> int:
    return axes.num_experts if axes is not None else 0


def _zeros_and_recomputes(pins: Pins, axes: Axes | None = None) -> tuple[list[int], list[int]]:
    """Unpinned recompute: every code, mla_up_proj only for MLA models (it needs MLA, plan_rules), and
    for MoE models (rule moe_act) moe_act+layernorm, where a plan may fit with it and not without at
    memory-bound passes' cost (cost.module_recompute). moe_act alone only where pinned: it frees less
    and saves only the norms' pass (a few percent of the re-run), and trying it too would add a
    quarter again to MoE models' candidates. mlp and mla_up_proj+mlp only where pinned
    (cost.mlp_recompute), so candidate counts stay as they were."""
    zeros = [pins.zero] if pins.zero is not None else list(ZERO_STAGES)
    mla = axes is not None and axes.mla
    moe_choices = (SEARCHED_MOE_MODULE_RECOMPUTE,) if _num_experts(axes) > 0 else ()
    recomputes = [RECOMPUTE.index(pins.recompute)] if pins.recompute is not None else [
        code for code, name in enumerate(RECOMPUTE)
        if (mla or code != RECOMPUTE_MLA_UP_PROJ) and (name not in MOE_MODULE_RECOMPUTES or name in moe_choices)
        and name not in MLP_RECOMPUTES]
    return zeros, recomputes


def _micro_batches(workload: Workload, dp: int, pins: Pins) -> list[int]:
    if pins.micro_batch is not None:
        return [pins.micro_batch]
    if workload.global_batch % dp == 0:
        per_replica = workload.global_batch // dp
        return [x for x in MICRO_BATCH_CHOICES if per_replica % x == 0]
    return [1]  # broken batch rule: evaluated once, reported with its reason


def _variants(named, zero, pins: Pins, gpus_per_node: int | None):
    return variant_mask(named["dp"], named["tp"], named["ulysses"], named["ring"], zero, cp_comm=pins.cp_comm,
                        dp_replicate=pins.dp_replicate, reshard_after_forward=pins.reshard_after_forward,
                        gpus_per_node=gpus_per_node)


def _precision_codes(pins: Pins, axes: Axes | None) -> list[int]:
    if pins.precision is not None:
        return [PRECISIONS.index(pins.precision)]
    return [PRECISIONS.index(p) for p in (axes.precisions if axes is not None else ("bf16",))]


def _vpp_choices(pins: Pins, axes: Axes | None) -> list[int]:
    if pins.vpp is not None:
        return [pins.vpp]
    return list(VPP_CHOICES) if axes is not None else [1]


def pinned_split(pins: Pins) -> tuple[int, int] | None:
    """(first, last) stage layers the pins fix, or None (the search's pipeline_split.search_split)."""
    if pins.first_stage_layers is None or pins.last_stage_layers is None:
        return None
    return pins.first_stage_layers, pins.last_stage_layers


def _vpp_keep(workload: Workload, dp, pp, mb, vpp, num_layers: int, pinned: bool, mtp_layers: int = 0,
              split: tuple[int, int] | None = None):
    """False for unpinned vpp > 1 that Megatron would reject (no split, or no interleaved schedule
    for the micro-batch count), so that the search does not list them as rule breakers, and for
    any vpp where the search's split (pipeline_split.search_split, with recipe layouts where vpp is
    `pinned`) is a --pipeline-model-parallel-layout of generic ends: those are priced where a plan
    names them (a pinned `split`), and for the best plans' degrees only (_vpp_refine, search_refine):
    scanning them all doubled DeepSeek-V3's candidates."""
    if split is not None:
        first, last = (np.broadcast_to(np.int64(v), np.broadcast(pp, vpp).shape) for v in split)
        layout = np.zeros(np.broadcast(pp, vpp).shape, dtype=bool)
    else:
        first, last = search_split(num_layers, pp, vpp, mtp_layers, recipes=pinned)
        layout = (vpp > 1) & generic_layout(num_layers, pp, vpp, first, last, recipes=pinned)
    if pinned:
        return ~layout
    m = workload.global_batch // (dp * mb)
    return ~(layout | ((vpp > 1) & (split_breaks(num_layers, pp, vpp, first, last) | interleave_breaks(pp, vpp, m))))


def _vpp_refine(workload: Workload, dp, pp, mb, vpp, num_layers: int, mtp_layers: int = 0):
    """True for the vpp > 1 rows that _vpp_keep drops from an unpinned search for their layout but
    a pinned vpp searches (search_split with recipes: Megatron-Bridge's layout, else one whose ends
    need no layout) and whose split and interleaved schedule Megatron runs: what search_refine prices
    for the best plans' degrees, each with the split a pinned vpp gives it."""
    first, last = search_split(num_layers, pp, vpp, mtp_layers, recipes=True)
    m = workload.global_batch // (dp * mb)
    runs = (vpp > 1) & ~(generic_layout(num_layers, pp, vpp, first, last, recipes=True)
                         | split_breaks(num_layers, pp, vpp, first, last) | interleave_breaks(pp, vpp, m))
    return runs & ~_vpp_keep(workload, dp, pp, mb, vpp, num_layers, False, mtp_layers)


def _vpps_kept(workload: Workload, pairs: np.ndarray, pins: Pins, axes: Axes | None) -> np.ndarray:
    """Per (dp, pp) row of `pairs`, the (micro-batch, vpp) choices `_vpp_keep` keeps, summed over
    the micro-batches: one vectorized call over every (dp, pp, micro-batch) triple."""
    triples = [(dp, pp, mb, row) for row, (dp, pp) in enumerate(pairs.tolist())
               for mb in _micro_batches(workload, dp, pins)]
    if not triples:
        return np.zeros(len(pairs), dtype=np.int64)
    dp, pp, mb, owner = (np.array(col, dtype=np.int64)[:, None] for col in zip(*triples))
    vpps = np.array(_vpp_choices(pins, axes), dtype=np.int64)[None, :]
    num_layers = axes.num_layers if axes is not None else 1
    mtp = axes.mtp_layers if axes is not None else 0
    keep = np.broadcast_to(_vpp_keep(workload, dp, pp, mb, vpps, num_layers, pins.vpp is not None or axes is None,
                                     mtp, pinned_split(pins)),
                           (len(triples), vpps.shape[1]))  # (triples, vpp choices)
    return np.bincount(owner[:, 0], weights=keep.sum(axis=1), minlength=len(pairs)).astype(np.int64)
