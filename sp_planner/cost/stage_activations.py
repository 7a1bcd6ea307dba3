"""The activations a pipeline stage saves for backward per micro-batch from its own layers, where
the model's layers differ (cost.layer_kinds; vectorized over candidates).

cost.activations prices the model's average layer, a blend of its kinds by their shares. A stage
holds its own layers: DeepSeek-V3's first stage over 16 stages [3, 4 x 14, 2] holds its 3 dense
layers, which at 4K, tp 2, save 0.63 GiB a micro-batch each against a MoE layer's 0.96 (the routed
token copies), so the average (0.94) put 0.9 GiB too much on it per micro-batch in flight (16 at
its peak) and 0.06 GiB too little on a middle stage of 4 MoE layers. Each kind is priced as a
model of that kind alone (kind_model), its layers counted by Megatron's placement (cost.layer_kinds.
stage_rows_kind_counts). A single stage, and a split Megatron does not place, keep the average.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sp_planner.cost.layer_kinds import distinct_kinds, kind_model, stage_rows_kind_counts
from sp_planner.space import Candidates
from sp_planner.specs.model import ModelSpec


def stage_saved_bytes(model: ModelSpec, seq_len: int, c: Candidates, *,
                      stored: Callable[[ModelSpec], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's saved bytes per micro-batch over its own layers, per candidate;
    NaN where the model's layers are all alike, without a pipeline and where Megatron does not
    place the split (the caller's layers x the average layer there). `stored(model)`:
    cost.activations' bytes a layer saves, for a one-kind model."""
    n = np.shape(c.pp)[0]
    kinds = distinct_kinds(model, seq_len)
    if len(kinds) == 1:
        return (np.full(n, np.nan),) * 3
    per_kind = np.stack([np.broadcast_to(np.asarray(stored(kind_model(model, kind)), dtype=np.float64), (n,))
                         for kind in kinds], axis=1)  # (rows, K)
    counts = stage_rows_kind_counts(model, seq_len, c.pp, c.vpp, c.first_stage_layers, c.last_stage_layers)
    return tuple((held * per_kind).sum(axis=1) for held in counts)  # NaN rows stay NaN
