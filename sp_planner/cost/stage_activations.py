"""A pipeline stage's own layers by kind, where the model's layers differ (cost.layer_kinds), and
what memory counts from them: the activations the stage saves for backward per micro-batch and
its MoE layers (vectorized over candidates).

cost.activations prices the model's average layer, a blend of its kinds by their shares. A stage
holds its own layers: DeepSeek-V3's first stage over 16 stages [3, 4 x 14, 2] holds its 3 dense
layers, which at 4K, tp 2, save 0.63 GiB a micro-batch each against a MoE layer's 0.96 (the routed
token copies), so the average (0.94) put 0.9 GiB too much on it per micro-batch in flight (16 at
its peak) and 0.06 GiB too little on a middle stage of 4 MoE layers. With virtual stages a
stage's layers are not one run: Maverick over pp 8, vpp 2 puts layers 3-5 and 27-29 on stage 1,
4 MoE layers of 6, where a contiguous count (cost.moe_params.stage_moe_layers) gives 3. Each kind is
priced as a model of that kind alone (kind_model), its layers counted by Megatron's placement
(cost.layer_kinds.stage_rows_kind_counts). A single stage, and a split Megatron does not place,
keep the average (NaN rows here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sp_planner.cost.layer_kinds import distinct_kinds, kind_model, stage_rows_kind_counts
from sp_planner.specs.model import ModelSpec


def stage_kind_layers(model: ModelSpec, seq_len: int, c) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(first, second, last) stage's layers of each kind, of candidates `c` (or anything with their
    pp, vpp, first_stage_layers and last_stage_layers) (cost.layer_kinds.stage_rows_kind_counts;
    NaN rows where not placed), or None where the model's layers are all alike."""
    if len(distinct_kinds(model, seq_len)) == 1:
        return None
    return stage_rows_kind_counts(model, seq_len, c.pp, c.vpp, c.first_stage_layers, c.last_stage_layers)


def stage_saved_bytes(model: ModelSpec, seq_len: int, held: tuple[np.ndarray, ...], *,
                      stored: Callable[[ModelSpec], np.ndarray]) -> tuple[np.ndarray, ...]:
    """Each of `held`'s stages' (stage_kind_layers) saved bytes per micro-batch over its own layers,
    per candidate (NaN rows stay NaN). `stored(model)`: cost.activations' bytes a layer saves, for
    a one-kind model."""
    n = len(held[0])
    per_kind = np.stack([np.broadcast_to(np.asarray(stored(kind_model(model, kind)), dtype=np.float64), (n,))
                         for kind in distinct_kinds(model, seq_len)], axis=1)  # (rows, K)
    return tuple((layers * per_kind).sum(axis=1) for layers in held)


def stage_moe_layers_held(model: ModelSpec, seq_len: int, held: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Each of `held`'s stages' (stage_kind_layers) MoE layers, per candidate (NaN rows stay NaN)."""
    moe = np.array([kind.moe for kind in distinct_kinds(model, seq_len)])
    return tuple(layers[:, moe].sum(axis=1) for layers in held)
