"""Candidate plans as columns: one numpy array per degree and choice, one entry per candidate
(the cost model's input), and their conversions to and from ParallelPlan. sp_planner.space
enumerates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from sp_planner.plan import PRECISIONS, RECOMPUTE, ParallelPlan, fp8_recipe_names, master_as_remainder
from sp_planner.space_degrees import DEGREES, EXPERT_DEGREES


@dataclass(frozen=True)
class Candidates:
    """Candidate plans as parallel numpy arrays, one entry per candidate (the cost model's input).

    Degrees, ZeRO stage and micro-batch are int64; `recompute` holds plan.RECOMPUTE codes
    (RECOMPUTE_NONE ... RECOMPUTE_MOE_ACT_LAYERNORM, sp_planner.recompute); `zigzag` is the ring layout as bool,
    `allgather` the ring's cp_comm as bool (False: p2p), `dp_replicate` int64 and `reshard` the
    plan's reshard_after_forward (bool); space_variants says which are searched. `vpp` virtual
    stages per rank; `first/last_stage_layers` the pipeline split (0 = even, sp_planner.pipeline);
    `precision` holds plan.PRECISIONS codes; `fp8_current` is True where the FP8 recipe is
    tensorwise current scaling and `fp8_blockwise` where it is block scaling (plan.fp8_recipe, one
    recipe per search, as the ring layout), and
    `fp8_attention` FP8 core attention (one choice per search; its curves are the profile's);
    `cpu_offload_layers` the layers whose activations go to host memory (cost.offload; one choice
    per search); `vpp_group` the plan's own micro-batch group N of the interleaved schedule
    (ParallelPlan.vpp_group, sp-plan --vpp-group; one choice per search), 0 where it is the one
    sp-plan prices (pipeline_order.micro_batch_group).
    """

    dp: np.ndarray
    pp: np.ndarray
    tp: np.ndarray
    ulysses: np.ndarray
    ring: np.ndarray
    zero: np.ndarray
    recompute: np.ndarray
    micro_batch: np.ndarray
    zigzag: np.ndarray
    allgather: np.ndarray
    dp_replicate: np.ndarray
    reshard: np.ndarray
    vpp: np.ndarray
    first_stage_layers: np.ndarray
    last_stage_layers: np.ndarray
    precision: np.ndarray
    ep: np.ndarray
    etp: np.ndarray
    fp8_current: np.ndarray
    fp8_attention: np.ndarray
    cpu_offload_layers: np.ndarray
    fp8_blockwise: np.ndarray
    adam_moments_bf16: np.ndarray
    vpp_group: np.ndarray

    @property
    def master_as_remainder(self) -> np.ndarray:
        """plan.master_as_remainder, per candidate."""
        return master_as_remainder(self.precision, self.fp8_current, self.fp8_blockwise)

    def __len__(self) -> int:
        return len(self.tp)

    @cached_property
    def edp(self) -> np.ndarray:
        """Expert data-parallel degree, world / (pp*ep*etp) (ParallelPlan.edp); at least 1 on the
        candidates whose expert grid does not fit their ranks (the expert_grid rule's breakers,
        costed only to show the closest plans), so that no term divides by zero. Computed once per
        container (its columns are not changed in place): a search chunk's cost model reads it
        about eight times."""
        return np.maximum(self.dp * self.ring * self.ulysses * self.tp // (self.ep * self.etp), 1)

    def take(self, index: np.ndarray) -> "Candidates":
        """The candidates at `index` (every column, whatever columns the container has). Integer
        positions by ndarray.take (the same rows as indexing, ~1.5x faster: the search's scan
        takes its rows this way a few hundred times), masks and slices by indexing."""
        if isinstance(index, np.ndarray) and index.dtype.kind in "iu":
            return type(self)(**{f.name: getattr(self, f.name).take(index, axis=0) for f in fields(self)})
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence["Candidates"]) -> "Candidates":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def of_plan(cls, plan: ParallelPlan) -> "Candidates":
        """One plan as one-entry arrays."""
        ints = {name: np.array([getattr(plan, name) or 0], dtype=np.int64) for name in _INT_FIELDS}
        return cls(**ints, recompute=np.array([RECOMPUTE.index(plan.recompute)], dtype=np.int64),
                   zigzag=np.array([plan.zigzag]), allgather=np.array([plan.allgather]),
                   dp_replicate=np.array([plan.dp_replicate], dtype=np.int64),
                   reshard=np.array([plan.reshard_after_forward]),
                   precision=np.array([PRECISIONS.index(plan.precision)], dtype=np.int64),
                   fp8_current=np.array([plan.fp8_recipe == "tensorwise"]),
                   fp8_attention=np.array([plan.fp8_attention]),
                   cpu_offload_layers=np.array([plan.cpu_offload_layers], dtype=np.int64),
                   fp8_blockwise=np.array([plan.fp8_recipe == "blockwise"]),
                   adam_moments_bf16=np.array([plan.adam_moments_bf16]))

    def plan(self, i: int) -> ParallelPlan:
        """Candidate `i` as a ParallelPlan."""
        ints: dict[str, int | None] = {name: int(getattr(self, name)[i]) for name in _INT_FIELDS}
        for name in ("first_stage_layers", "last_stage_layers", "vpp_group"):
            ints[name] = ints[name] or None  # 0 = the even split, the micro-batch group priced
        return ParallelPlan(**ints, recompute=RECOMPUTE[int(self.recompute[i])],
                            ring_layout="zigzag" if self.zigzag[i] else "contiguous",
                            cp_comm="allgather" if self.allgather[i] else "p2p",
                            dp_replicate=int(self.dp_replicate[i]), reshard_after_forward=bool(self.reshard[i]),
                            precision=PRECISIONS[int(self.precision[i])],
                            fp8_recipe=fp8_recipe_names(self.fp8_current[i], self.fp8_blockwise[i]).item(),
                            fp8_attention=bool(self.fp8_attention[i]),
                            cpu_offload_layers=int(self.cpu_offload_layers[i]),
                            adam_moments_bf16=bool(self.adam_moments_bf16[i]))


_INT_FIELDS: tuple[str, ...] = (*DEGREES, "zero", "micro_batch", "vpp", "first_stage_layers", "last_stage_layers",
                                *EXPERT_DEGREES, "vpp_group")
