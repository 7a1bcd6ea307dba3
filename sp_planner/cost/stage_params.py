"""Each pipeline stage's own parameters per rank, from its own layers (vectorized over candidates).

cost.params prices a stage's layers as the model's average layer (moe_layer_fraction of a MoE
one); where the model's MLP kinds differ a stage holds its own: DeepSeek-V3 over pp 16 with a
first stage of 4 layers holds its 3 dense layers and 1 MoE layer (1 layer of routed experts, not
4 x 58/61 = 3.8), and Maverick over pp 8, vpp 2 puts 4 MoE layers of 6 on stage 1 (not 3). The
MoE layers of a stage are those Megatron places on it (cost.stage_activations.stage_kind_layers,
cost.layer_kinds.chunk_global_layers), the contiguous count (cost.moe_params.stage_moe_layers) on rows it
does not place. Memory, the data-parallel calls (cost.dp_times, cost.comm, sim.dp_work) and the
optimizer's update (cost.grad_buffer) all take a stage's parameters from here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from sp_planner.cost.fp8_params import dense_gemm_params
from sp_planner.cost.layer_kinds import chunk_global_layers
from sp_planner.cost.moe import mlp_layer_is_moe, moe_layer_fraction
from sp_planner.cost.moe_params import expert_params_per_rank, layer_mlp_params_per_rank, stage_moe_layers
from sp_planner.cost.mtp import mtp_params_model
from sp_planner.cost.params import layer_params_per_rank, stage_params_per_rank
from sp_planner.cost.stage_activations import stage_kind_layers, stage_moe_layers_held
from sp_planner.distinct import distinct_groups
from sp_planner.pipeline import StageLayers, split_breaks, stage_layers
from sp_planner.specs.model import ModelSpec


class _Placement(NamedTuple):
    """The candidate columns stage_kind_layers reads."""

    pp: np.ndarray
    vpp: np.ndarray
    first_stage_layers: np.ndarray
    last_stage_layers: np.ndarray


def _placement(c) -> tuple[np.ndarray, ...]:
    """(pp, vpp, first_stage_layers, last_stage_layers) of candidates or a ParallelPlan (None: 0,
    the counted split)."""
    return tuple(np.asarray(0 if getattr(c, name) is None else getattr(c, name))
                 for name in ("pp", "vpp", "first_stage_layers", "last_stage_layers"))


def placed_moe_layers(model: ModelSpec, seq_len: int, stages: StageLayers, held
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's MoE layers: those of `held` (stage_kind_layers' rows, None
    where the layers are alike), the contiguous count (cost.moe_params.stage_moe_layers) on its NaN rows."""
    contiguous = stage_moe_layers(model, stages)
    if held is None:
        return contiguous
    return tuple(np.where(np.isnan(mine), run, mine)  # type: ignore[return-value]
                 for mine, run in zip(stage_moe_layers_held(model, seq_len, held), contiguous))


def stage_moe_counts(model: ModelSpec, seq_len: int, c, stages: StageLayers
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, last) stage's MoE layers of candidates (or a plan) `c` (placed_moe_layers)."""
    return placed_moe_layers(model, seq_len, stages, stage_kind_layers(model, seq_len, _Placement(*_placement(c))))


class StageParams(NamedTuple):
    """Per rank, each of the (first, middle = second, last) stage's parameters, its routed experts
    among them (reduced over edp, cost.moe), its root (non-layer) parameters (the embedding on the
    first stage, the output layer and final norm on the last, cost.params.stage_params_per_rank)
    and the GEMM weights among its non-expert ones (cost.fp8_params.dense_gemm_params), of which
    `root_gemm` among its root ones (the MTP depths' on the stage that holds them, cost.mtp; 0
    elsewhere: the embedding, output layer and norms are no TE GEMM weights)."""

    params: tuple[np.ndarray, np.ndarray, np.ndarray]
    experts: tuple[np.ndarray, np.ndarray, np.ndarray]
    root: tuple[np.ndarray, np.ndarray, np.ndarray]
    dense_gemm: tuple[np.ndarray, np.ndarray, np.ndarray]
    root_gemm: tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float] = (0.0, 0.0, 0.0)


def stage_params(model: ModelSpec, tp, pp, ep, etp, stages: StageLayers, moe_layers) -> StageParams:
    """Each stage's parameters with `moe_layers` (stage_moe_counts) of its layers MoE: the average
    layers' (cost.params) plus, per MoE layer beyond the average share, a MoE layer's MLP less a
    dense one's (cost.moe_params.layer_mlp_params_per_rank), so a model of one kind gets the average's
    numbers to the bit (the difference is multiplied by 0)."""
    first_p, last_p = stage_params_per_rank(model, tp, pp, stages, ep, etp)
    per_layer = layer_params_per_rank(model, tp, ep, etp)
    expert_layer = expert_params_per_rank(model, 1, ep, etp, layers=1)
    dense_mlp, moe_mlp = layer_mlp_params_per_rank(model, tp, ep, etp)
    f = moe_layer_fraction(model) if model.moe is not None else 0.0
    average = (first_p, stages.middle * per_layer, last_p)
    # Multi-token prediction's depths on the last stage (the one at pp 1; cost.mtp): their routed
    # experts reduce over edp with the layers', the rest rides with the root (its FSDP unit and
    # buckets, cost.rank_tensors.mtp_tensors), its GEMM weights (the layer's less its norms and experts,
    # and eh_proj) among the stage's.
    mtp_experts, mtp_gemm = mtp_expert_and_gemm_params(model, tp, ep, etp)
    holds_mtp = (np.asarray(pp) == 1, np.zeros(np.shape(pp), dtype=bool), np.asarray(pp) > 1)
    params, experts, root, gemm = [], [], [], []
    for at, (avg, layers, moe) in enumerate(zip(average, stages, moe_layers)):
        extra = moe - layers * f  # MoE layers beyond the average share (0 where the layers are alike)
        avg_experts = expert_params_per_rank(model, pp, ep, etp, layers=layers)
        mtp = np.where(holds_mtp[at], 1.0, 0.0)
        params.append(avg + extra * (moe_mlp - dense_mlp))
        experts.append(expert_params_per_rank(model, pp, ep, etp, moe_layers=moe) + mtp * mtp_experts)
        # A middle stage holds no root parameters.
        root.append(np.zeros(np.shape(avg)) if at == 1 else (avg - avg_experts) - layers * (per_layer - expert_layer)
                    - mtp * mtp_experts)
        gemm.append(dense_gemm_params(model, tp, ep, etp, layers) + extra * (moe_mlp - expert_layer - dense_mlp)
                    + mtp * mtp_gemm)
    root_gemm = tuple(np.where(holds, 1.0, 0.0) * mtp_gemm if model.mtp_layers else 0.0 for holds in holds_mtp)
    return StageParams(tuple(params), tuple(experts), tuple(root), tuple(gemm), root_gemm)  # type: ignore[arg-type]


def mtp_expert_and_gemm_params(model: ModelSpec, tp, ep, etp) -> tuple[np.ndarray | float, np.ndarray | float]:
    """(routed-expert, non-expert GEMM) parameters of the model's MTP depths on one rank (cost.mtp;
    cost.params.mtp_params_per_rank holds them all); 0 without MTP."""
    if not model.mtp_layers:
        return 0.0, 0.0
    kind = mtp_params_model(model)
    experts = model.mtp_layers * expert_params_per_rank(kind, 1, ep, etp, layers=1)
    eh_proj = model.mtp_eh_proj_params / np.asarray(tp, dtype=np.float64)
    return experts, model.mtp_layers * (dense_gemm_params(kind, tp, ep, etp, 1) + eh_proj)


@lru_cache(maxsize=4096)
def stage_moe_flags(model: ModelSpec, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int,
                    stage: int) -> tuple[bool, ...]:
    """Whether each layer of pipeline stage `stage` is MoE, in the stage's own order (chunk 0's
    first, cost.layer_kinds.chunk_global_layers); a split Megatron does not place: the contiguous
    layers cost.pipeline.stage_layers counts (cost.moe_params.stage_moe_layers)."""
    moe, n = mlp_layer_is_moe(model), model.num_layers
    if pp > 1 and not split_breaks(n, np.array([pp]), np.array([vpp]), np.array([first_stage_layers]),
                                   np.array([last_stage_layers]))[0]:
        chunks = chunk_global_layers(n, pp, vpp, first_stage_layers, last_stage_layers)[stage]
        return tuple(moe[layer] for chunk in chunks for layer in chunk)
    split = stage_layers(n, np.array([pp]), np.array([first_stage_layers]), np.array([last_stage_layers]))
    first, middle, last = (int(v[0]) for v in split)
    if pp == 1:
        return moe
    start = 0 if stage == 0 else n - last if stage == pp - 1 else first + (stage - 1) * middle
    size = first if stage == 0 else last if stage == pp - 1 else middle
    return moe[start:start + size]


@lru_cache(maxsize=4096)
def _middle_moe_counts(model: ModelSpec, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int
                       ) -> tuple[int, ...]:
    """MoE layers on each middle stage (ranks 1 to pp - 2) as Megatron places them; () where the
    model's layers are alike or pp < 4 (stage 1 stands for the middle ones by rule)."""
    if pp < 4 or len(set(mlp_layer_is_moe(model))) == 1:
        return ()
    return tuple(sum(stage_moe_flags(model, pp, vpp, first_stage_layers, last_stage_layers, s))
                 for s in range(1, pp - 1))


def dp_middle_stage(model: ModelSpec, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int
                    ) -> tuple[int, int]:
    """(rank, MoE layers) of the middle stage whose data-parallel calls stand for the middle ones
    (cost.dp_times): the one holding the most MoE layers (the most gradients), the lowest rank of
    those (the last of them to finish its compute, cost.pipeline_tails.finish_lags_s); (1, -1) where
    the model's layers are alike or pp < 4 (stage 1 as cost.memory prices it). Interleaving deals
    a first-k-dense model's dense layers to the first middle ranks' chunk 0: DeepSeek-V3 over pp 16
    x vpp 2 at 3 / 2 puts layers 1-2 on stage 1's chunk 0 and 2 MoE layers on every later stage's,
    whose single bucket syncs after the stage's last backward (0.21 s on 128 H100s at ep 8, where
    stage 1's syncs in 12 ms; sim.dp_work lays each stage's own)."""
    counts = _middle_moe_counts(model, pp, vpp, first_stage_layers, last_stage_layers)
    if not counts:
        return 1, -1
    best = int(np.argmax(counts))
    return 1 + best, counts[best]


def dp_middle_stages(model: ModelSpec, c) -> tuple[np.ndarray, ...]:
    """dp_middle_stage of each candidate of `c` (or a plan): (rank, MoE layers), (1, -1) where it
    is stage 1 by rule (no pipeline, pp < 4, layers alike)."""
    return _per_candidate(model, c, dp_middle_stage, (1, -1.0))


def dp_lightest_middle_stage(model: ModelSpec, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int
                             ) -> tuple[int, int, float]:
    """(rank, MoE layers, share) of the middle stage holding the fewest MoE layers (the lowest rank
    of those), and how far the middle stages' mean MoE count lies from dp_middle_stage's towards
    it: (max - mean) / (max - min), 0 where every middle stage holds as many (then (1, -1, 0)).
    Maverick over pp 8 x vpp 2 (MoE on odd layers, 3 layers a chunk): stages 1, 3, 5 hold 4 MoE
    layers, 2, 4, 6 hold 2: (2, 2, 0.5). cost.pipeline_dp prices the middle stages a path passes
    at that share between the two's blocks."""
    counts = _middle_moe_counts(model, pp, vpp, first_stage_layers, last_stage_layers)
    most, least = (max(counts), min(counts)) if counts else (0, 0)
    if most == least:
        return 1, -1, 0.0
    return 1 + counts.index(least), least, (most - float(np.mean(counts))) / (most - least)


def dp_ridden_middle_stage(model: ModelSpec, pp: int, vpp: int, first_stage_layers: int, last_stage_layers: int
                           ) -> tuple[int]:
    """(rank,) of the middle stage a ZeRO-2/3 pipeline's middle path rides where the middle stages
    differ (cost.pipeline_path.critical_path_s `ridden`): the highest rank holding the most MoE
    layers, whose cycles are the longest and which waits for the fewest stages above; pp - 2 (the
    last middle one) where every middle stage holds as many. Maverick over pp 4 x vpp 4 (MoE on
    odd layers, 3 layers a chunk): stage 1 holds 8 MoE layers, stage 2 holds 4: (1,); over pp 8 x
    vpp 2 stages 1, 3, 5 hold 4: (5,)."""
    counts = _middle_moe_counts(model, pp, vpp, first_stage_layers, last_stage_layers)
    if not counts or min(counts) == max(counts):
        return (pp - 2,)
    return (len(counts) - counts[::-1].index(max(counts)),)


def dp_ridden_middle_stages(model: ModelSpec, c) -> np.ndarray:
    """dp_ridden_middle_stage of each candidate of `c` (or a plan); pp - 2 where pp < 4 or the
    model's layers are alike."""
    ranks = _per_candidate(model, c, dp_ridden_middle_stage, (-1,))[0]
    return np.where(ranks < 0, np.asarray(_placement(c)[0]) - 2, ranks)


def dp_lightest_middle_stages(model: ModelSpec, c) -> tuple[np.ndarray, ...]:
    """dp_lightest_middle_stage of each candidate of `c` (or a plan): (rank, MoE layers, share)."""
    return _per_candidate(model, c, dp_lightest_middle_stage, (1, -1.0, 0.0))


def _per_candidate(model: ModelSpec, c, pick, defaults: tuple) -> tuple[np.ndarray, ...]:
    """`pick`(model, pp, vpp, first, last) of each candidate of `c` (or a plan) with pp > 3, once per
    distinct placement; `defaults` elsewhere (their types the columns' dtypes)."""
    pp, vpp, first, last = (np.asarray(v, dtype=np.int64).ravel() for v in np.broadcast_arrays(*_placement(c)))
    out = tuple(np.full(len(pp), d) for d in defaults)
    if len(set(mlp_layer_is_moe(model))) == 1:
        return out
    rows = np.flatnonzero(pp > 3)
    columns = [v[rows] for v in (pp, vpp, first, last)]
    for row, at in distinct_groups(columns):
        for column, value in zip(out, pick(model, *(int(v[row]) for v in columns))):
            column[rows[at]] = value
    return out
