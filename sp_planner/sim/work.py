"""What one training step asks of a representative rank: op durations, before scheduling.

Compute durations come from the analytic cost model; communication durations come from the
flows on the cluster graph (sp_planner.sim.flows), so contention is already in them. Every
duration is for one layer and one micro-batch unless its name says otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sp_planner.specs.base import FrozenModel

NonNeg = Field(default=0.0, ge=0.0)


class LayerWork(FrozenModel):
    # Compute stream. GEMMs are split at the TP collectives: QKV + output projection, then the MLP.
    gemm_attn_fwd_s: float = NonNeg
    gemm_mlp_fwd_s: float = NonNeg
    gemm_attn_bwd_s: float = NonNeg
    gemm_mlp_bwd_s: float = NonNeg
    # Core attention, one entry per ring step (a single entry without ring).
    attn_fwd_steps_s: tuple[float, ...] = (0.0,)
    attn_bwd_steps_s: tuple[float, ...] = (0.0,)
    # Communication stream, one occurrence each.
    tp_all_gather_s: float = NonNeg
    tp_reduce_scatter_s: float = NonNeg
    ulysses_qkv_s: float = NonNeg  # Q, K, V forward (dQ, dK, dV backward)
    ulysses_out_s: float = NonNeg  # O forward (dO backward)
    ring_kv_step_s: float = NonNeg  # one K + V block to the ring successor
    ring_dkv_step_s: float = NonNeg  # one dK + dV accumulator to the ring successor
    dp_bucket_s: float = NonNeg  # this layer's gradient reduce-scatter over the dp x cp group
    # All-gather CP (no ring steps then): one K + V all-gather (forward, and again in backward)
    # and one dK + dV reduce-scatter (backward), both blocking attention.
    cp_all_gather_s: float = NonNeg
    cp_reduce_scatter_s: float = NonNeg

    @model_validator(mode="after")
    def _steps(self) -> "LayerWork":
        if len(self.attn_fwd_steps_s) != len(self.attn_bwd_steps_s) or not self.attn_fwd_steps_s:
            raise ValueError("attn_fwd_steps_s and attn_bwd_steps_s need one entry per ring step")
        return self

    @property
    def ring(self) -> int:
        return len(self.attn_fwd_steps_s)


class StepWork(FrozenModel):
    pp: int = Field(ge=1)
    num_micro_batches: int = Field(ge=1)
    layers_per_stage: int = Field(ge=1)  # a middle stage's (every stage's when the split is even)
    layer: LayerWork
    recompute: Literal["none", "selective", "full"] = "none"
    # Embedding lookup on the first stage, output projection + loss on the last stage.
    first_stage_fwd_s: float = NonNeg
    first_stage_bwd_s: float = NonNeg
    last_stage_fwd_s: float = NonNeg
    last_stage_bwd_s: float = NonNeg
    # One activation (forward) or its gradient (backward) between adjacent stages.
    pp_transfer_s: float = NonNeg
    # Gradient buckets go out in every micro-batch's backward (ZeRO-2/3), not only the last one's.
    dp_every_micro_batch: bool = False
    # ZeRO-3: each layer's parameters are all-gathered before its forward and its backward
    # (before its forward only when reshard_after_forward is false: dp_backward_gather False).
    dp_layer_gather_s: float = NonNeg
    dp_backward_gather: bool = True
    # ZeRO-1/2 with the parameter gather overlapped (cost.overlap): the previous step's gather of
    # each layer's parameters lands during the step's first forward, one layer ahead of use.
    dp_first_forward_layer_gather_s: float = NonNeg
    # After the last backward: embedding/head gradient buckets, optimizer, parameter all-gather.
    dp_extra_bucket_s: float = NonNeg
    optimizer_s: float = NonNeg
    dp_param_gather_s: float = NonNeg
    # Uneven pipeline split (sp_planner.pipeline): the first and last stage's layers; None = layers_per_stage.
    first_stage_layers: int | None = Field(default=None, ge=1)
    last_stage_layers: int | None = Field(default=None, ge=1)

    def layers_of(self, stage: int) -> int:
        """Decoder layers on pipeline stage `stage`."""
        if stage == 0 and self.first_stage_layers is not None:
            return self.first_stage_layers
        if stage == self.pp - 1 and self.last_stage_layers is not None:
            return self.last_stage_layers
        return self.layers_per_stage
