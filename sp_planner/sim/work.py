"""What one training step asks of a representative rank: op durations, before scheduling.

Compute durations come from the analytic cost model; communication durations come from the
flows on the cluster graph (sp_planner.sim.flows), so contention is already in them. Every
duration is for one layer and one micro-batch unless its name says otherwise.
"""

from __future__ import annotations


from pydantic import Field, model_validator

from sp_planner.cost.overlap import OVERLAP_COMPUTE_SLOWDOWN
from sp_planner.recompute import Recompute
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
    tp_input_all_gather_s: float = NonNeg  # the saved inputs again for the weight gradients (SP only; 0: none)
    # The output gradients' backward gathers where they differ (MXFP8, both usages); None: tp_all_gather_s.
    tp_grad_all_gather_s: float | None = Field(default=None, ge=0.0)
    ulysses_qkv_s: float = NonNeg  # Q, K, V forward (dQ, dK, dV backward)
    ulysses_out_s: float = NonNeg  # O forward (dO backward)
    ring_kv_step_s: float = NonNeg  # one K + V block to the ring successor
    ring_dkv_step_s: float = NonNeg  # one dK + dV accumulator to the ring successor
    ring_dkv_home: bool = True  # a last dK/dV hop home after the last step's kernels (cost.ring_impl)
    # All-gather CP (no ring steps then): one K + V all-gather (forward, and again in backward)
    # and one dK + dV reduce-scatter (backward), both blocking attention.
    cp_all_gather_s: float = NonNeg
    cp_reduce_scatter_s: float = NonNeg
    # Whether backward gathers again (Transformer Engine's K/V); DeepSeek Sparse Attention's gathers
    # (its latent and indexer keys, and the indexer's inputs over TP: cp_all_gather_s) run forward only
    # (cost.dsa_times).
    cp_regathers: bool = True
    # Mixture of experts (sim.moe_work): dispatch and combine around the expert GEMMs (their
    # gradients in backward) over the ep group, and with etp > 1 a token all-gather before and a
    # reduce-scatter after, over the etp group.
    moe_all_to_all_s: float = NonNeg
    etp_collective_s: float = NonNeg
    # MLA's up-projections and RoPE again before core attention's backward (recompute mla_up_proj,
    # cost.mla_recompute); 0 otherwise.
    recompute_up_proj_s: float = NonNeg
    # The MoE activation and standalone norms again as the MLP's gradient arrives, before its GEMMs
    # (recompute moe_act, moe_act+layernorm; cost.module_recompute); 0 otherwise.
    recompute_modules_s: float = NonNeg
    # The dense MLP's forward again (TP all-gather, its GEMMs, TP reduce-scatter) as its output's
    # gradient arrives, before its backward (recompute mlp on a dense layer; cost.mlp_recompute).
    recompute_mlp: bool = False

    @model_validator(mode="after")
    def _steps(self) -> "LayerWork":
        if len(self.attn_fwd_steps_s) != len(self.attn_bwd_steps_s) or not self.attn_fwd_steps_s:
            raise ValueError("attn_fwd_steps_s and attn_bwd_steps_s need one entry per ring step")
        return self

    @property
    def ring(self) -> int:
        return len(self.attn_fwd_steps_s)


class DPCalls(FrozenModel):
    """Seconds of each data-parallel collective call of a stage (cost.buckets), by where it is
    issued in backward: after the output layer's backward (`head`), after layer l's (`layers[l]`,
    l in forward order), after the embedding's (`tail`). In forward the same calls must have
    landed before layer l (or, for `tail`, the embedding) starts."""

    head: tuple[float, ...] = ()
    layers: tuple[tuple[float, ...], ...] = ()
    tail: tuple[float, ...] = ()

    def at_layer(self, layer: int) -> tuple[float, ...]:
        return self.layers[layer] if layer < len(self.layers) else ()

    @property
    def total_s(self) -> float:
        return sum(self.head) + sum(sum(calls) for calls in self.layers) + sum(self.tail)


class StepWork(FrozenModel):
    pp: int = Field(ge=1)
    vpp: int = Field(default=1, ge=1)  # model chunks per stage (interleaved 1F1B), layers split evenly
    num_micro_batches: int = Field(ge=1)
    # The interleaved schedule's micro-batch group N (ParallelPlan.vpp_group; None: the one sp-plan
    # prices, pipeline_order.micro_batch_group).
    vpp_group: int | None = Field(default=None, ge=1)
    layers_per_stage: int = Field(ge=1)  # a middle stage's (every stage's when the split is even)
    # One layer's work for each of the model's distinct layer kinds (cost.layer_kinds.distinct_kinds:
    # dense or MoE MLP, global or local attention), and per stage, per stage-local layer (chunk 0's
    # first, as layer_program.chunk_layers numbers them), its kind's index; empty: every layer kind 0.
    kind_layers: tuple[LayerWork, ...] = Field(min_length=1)
    stage_kinds: tuple[tuple[int, ...], ...] = ()
    # Multi-token prediction's depths on the last stage's last chunk, after its decoder layers
    # (cost.mtp): each depth's layer kind (an index into kind_layers); their work beyond the layer
    # rides in last_stage_fwd_s and last_stage_bwd_s. Empty: none.
    mtp_kinds: tuple[int, ...] = ()
    recompute: Recompute = "none"
    # Embedding lookup on the first stage, output projection + loss on the last stage.
    first_stage_fwd_s: float = NonNeg
    first_stage_bwd_s: float = NonNeg
    last_stage_fwd_s: float = NonNeg
    last_stage_bwd_s: float = NonNeg
    # One activation (forward) or its gradient (backward) between adjacent stages.
    pp_transfer_s: float = NonNeg
    # Interleaved schedule with overlap_p2p_comm (cost.overlap.Overlap.pp_p2p): a transfer runs
    # beside the sender's next blocks and only its receiver waits for it (sim.pipeline).
    pp_overlap: bool = False
    # Gradient reduce calls per stage (one DPCalls each), issued in the last micro-batch's
    # backward, or in every micro-batch's (ZeRO-2/3).
    dp_reduce: tuple[DPCalls, ...] = ()
    dp_every_micro_batch: bool = False
    # Megatron's interleaved schedule with --align-grad-reduce (ZeRO-0/1): a chunk's calls all
    # issued together, stage r's r backwards after the chunk's last micro-batch's, none from the
    # layers' hooks (cost.overlap.Overlap.aligned_grad_reduce; pipeline_order.grad_sync_launches).
    dp_reduce_whole_chunk: bool = False
    # Parameter all-gather calls per stage, queued on the data-parallel stream ahead of use: in
    # every forward (ZeRO-3; the layers' again in backward when reshard_after_forward:
    # dp_backward_gather), or in the step's first forward only (ZeRO-1/2 whose gather after the
    # previous step is overlapped, cost.overlap).
    dp_gather: tuple[DPCalls, ...] = ()
    dp_gather_every_forward: bool = False
    # ZeRO-3: the root unit's calls (`head`, `tail`: the embedding, output layer and final norm)
    # gathered in each chunk's first forward of the step only, then kept (Megatron-FSDP,
    # cost.fsdp.root_gathers_per_micro_batch).
    dp_root_gather_once: bool = False
    # ZeRO-3 stages synced once a step (torch.distributed.pipelining, cost.fsdp.stage_synced): a
    # chunk's reduce calls all go after its last micro-batch's backward, with no rank offset, the
    # stage waiting for them, and its units gather in its first forward (with dp_backward_gather,
    # in every backward too). Not with dp_reduce_whole_chunk, Megatron's schedule.
    dp_stage_sync: bool = False
    # Per stage: a parameter gather issued at the step's start that the stage's first forward
    # waits for whole (stages after the first under Megatron's DDP, which keeps them in one
    # bucket: cost.buckets).
    dp_early_gather_s: tuple[float, ...] = ()
    # Megatron's interleaved schedule with --overlap-param-gather (ZeRO-1): each model chunk's
    # gather dispatched ahead of the chunk's first forward (cost.overlap.chunk_gathers_ahead;
    # sim.pipeline), not from the forward that needs it.
    dp_gather_by_chunk: bool = False
    dp_backward_gather: bool = True
    # The gradients of the parameters whole on every TP rank (sequence-parallel norms, DSA's
    # indexer) all-reduced over each stage's TP group once its gradients are synced, both calls
    # (cost.replicated_grads; 0: none), before the tied table's.
    replicated_all_reduce_s: float = NonNeg
    # A tied table's gradient all-reduce between the first and the last stage once both have
    # their gradients synced, before either's optimizer (cost.tied_embedding; 0: none).
    tied_all_reduce_s: float = NonNeg
    # Per stage: its own optimizer update (cost.grad_buffer.stage_step_bytes; empty: none), run
    # once every stage has its gradients synced and followed by the parameter all-gather when not
    # overlapped; no stage goes on before every stage has (sim.pipeline._step_tail).
    optimizer_s: tuple[float, ...] = ()
    # Per stage: a step's FP8 GEMM weight casts, once a step or every micro-batch by framework
    # (cost.fp8_params.weight_cast_s; none for bf16).
    weight_cast_s: tuple[float, ...] = ()
    # Compute lost per second of hidden data-parallel traffic (cost.overlap.overlap_compute_slowdown of
    # the GPU; H100's for hand-built work).
    dp_overlap_slowdown: float = Field(default=OVERLAP_COMPUTE_SLOWDOWN, ge=0.0, lt=1.0)
    dp_param_gather_s: float = NonNeg
    # Uneven pipeline split (sp_planner.pipeline): the first and last stage's layers; None = layers_per_stage.
    first_stage_layers: int | None = Field(default=None, ge=1)
    last_stage_layers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_sync_schedule(self) -> "StepWork":
        if self.dp_stage_sync and self.dp_reduce_whole_chunk:
            raise ValueError("dp_stage_sync (torch.distributed.pipelining) and dp_reduce_whole_chunk (Megatron's "
                             "aligned grad reduce) are two frameworks' schedules: set one")
        return self

    @model_validator(mode="after")
    def _kinds_cover_stages(self) -> "StepWork":
        if not self.stage_kinds:
            return self
        if [len(kinds) for kinds in self.stage_kinds] != [self.layers_of(s) for s in range(self.pp)]:
            raise ValueError("stage_kinds needs one entry per stage with one kind per layer of the stage")
        if any(not 0 <= k < len(self.kind_layers) for kinds in self.stage_kinds for k in kinds):
            raise ValueError("stage_kinds indexes kind_layers")
        return self

    @model_validator(mode="after")
    def _mtp_kinds_exist(self) -> "StepWork":
        if any(not 0 <= k < len(self.kind_layers) for k in self.mtp_kinds):
            raise ValueError("mtp_kinds indexes kind_layers")
        return self

    def layer_at(self, stage: int, layer: int) -> LayerWork:
        """The work of stage `stage`'s layer `layer` (stage-local index): its kind's."""
        return self.kind_layers[self.stage_kinds[stage][layer] if self.stage_kinds else 0]

    def layers_of(self, stage: int) -> int:
        """Decoder layers on pipeline stage `stage`."""
        if stage == 0 and self.first_stage_layers is not None:
            return self.first_stage_layers
        if stage == self.pp - 1 and self.last_stage_layers is not None:
            return self.last_stage_layers
        return self.layers_per_stage

    def optimizer_of(self, stage: int) -> float:
        """Seconds of stage `stage`'s own optimizer update."""
        return self.optimizer_s[stage] if self.optimizer_s else 0.0

    def reduce_calls(self, stage: int) -> DPCalls:
        return self.dp_reduce[stage] if self.dp_reduce else DPCalls()

    def gather_calls(self, stage: int) -> DPCalls:
        return self.dp_gather[stage] if self.dp_gather else DPCalls()


def without_dp(work: StepWork) -> StepWork:
    """The same step with no data-parallel traffic (to tell exposed DP time from hidden)."""
    return work.model_copy(update={
        "dp_reduce": (), "dp_gather": (), "dp_early_gather_s": (), "dp_param_gather_s": 0.0,
    })
