"""The data-parallel collectives of one pipeline stage: Megatron's gradient buckets, FSDP's units.

Every collective call pays NCCL's ring latency (cost.links.ring_latency_s), so how a framework
splits the stage's gradients and parameters into calls matters as much as the bytes: at 4,096
ranks on 512 H100 nodes one ring call costs about 19 ms before it moves a byte in the Simple
protocol, 8.9 ms in LL128, which NCCL's tuner then picks for calls up to gigabytes
(cost.nccl_protocols).

ZeRO-0/1/2 (Megatron DDP and distributed optimizer; Megatron-LM commit d98e8a6):
- bucket_size = max(40M, 1M x dp) parameters, dp without context parallelism
  (distributed_data_parallel.py, DistributedDataParallel.__init__: dp_group.size(), the
  data-parallel group built with_context_parallel=False in process_groups_config.py), although
  the collective runs over the dp x cp group;
- the stage's parameters are walked in reverse (backprop) order and a bucket closes as soon as it
  holds bucket_size elements (param_and_grad_buffer.py, _compute_default_per_buffer_param_layout),
  so a tensor larger than the bucket closes one by itself;
- each bucket is one collective (a bucket group holds one bucket unless parameters are FP8,
  partition_buckets; start_grad_sync issues one reduce-scatter or all-reduce per bucket), issued
  when its gradients are ready; --overlap-param-gather gathers the updated parameters bucket by
  bucket in forward order (start_param_sync / finish_param_sync);
- routed experts live in a buffer of their own, reduced over the expert-data-parallel group.
The tensors walked, a stage's on one rank in backprop order: cost.rank_tensors.

Granularity, shared by the analytic model and the simulator: a bucket is issued when the
backward of the layer holding its last tensor (in backprop order) ends, and in forward it must
have landed before that layer starts. So the buckets issued at the stage's first layer and
after its embedding are the ones that cannot hide: they leave after the last backward compute,
and they are the first a forward needs.

ZeRO-3 (FSDP2 / Megatron-FSDP): one all-gather and one reduce-scatter per transformer block
(torchtitan applies fully_shard per block), and one unit for the root's parameters (embedding,
final norm, output layer), gathered before the first block and, being the root, not resharded
after forward (torch.distributed.fsdp.fully_shard: the root's reshard_after_forward is set to
False "since its parameters would typically be immediately all-gathered for backward").
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from sp_planner.cost.rank_tensors import Layers, mtp_tensors, stage_extras, stage_tensors
from sp_planner.pipeline_chunks import chunk_layer_counts
from sp_planner.specs.model import ModelSpec

# Megatron DDP bucket default (module docstring): larger dp, larger buckets, so the ring chunks
# stay bandwidth-bound.
DDP_BUCKET_MIN_PARAMS = 40_000_000
DDP_BUCKET_PARAMS_PER_DP_RANK = 1_000_000


def ddp_bucket_params(dp):
    """Parameters per gradient bucket of Megatron's DDP for data-parallel degree `dp` (an int, or
    an array of them)."""
    if isinstance(dp, int):  # one stage's layout (stage_layouts): numpy's per-call cost dominated there
        return max(DDP_BUCKET_MIN_PARAMS, DDP_BUCKET_PARAMS_PER_DP_RANK * dp)
    return np.maximum(DDP_BUCKET_MIN_PARAMS, DDP_BUCKET_PARAMS_PER_DP_RANK * np.asarray(dp))


class BucketLayout(NamedTuple):
    """Parameters of each bucket by where it is issued in backward: after the output layer's
    backward (`head`), after layer l's (`layers[l]`, l in forward order), after the embedding's
    (`tail`)."""

    head: tuple[float, ...]
    layers: tuple[tuple[float, ...], ...]
    tail: tuple[float, ...]

    @property
    def num_calls(self) -> int:
        return len(self.head) + sum(map(len, self.layers)) + len(self.tail)

    @property
    def unhideable(self) -> tuple[float, ...]:
        """The buckets issued at the first layer and after the embedding (module docstring)."""
        return (self.layers[0] if self.layers else ()) + self.tail


@lru_cache(maxsize=4096)
def megatron_layout(stage: Layers, head: tuple[float, ...], tail: tuple[float, ...],
                    bucket_params: float) -> BucketLayout:
    """Megatron's greedy bucketing (module docstring) of a stage's layers (`stage`: each one's
    tensors, stage_tensors): the tensors walked place by place (the head, the layers last to first,
    the tail), no object built per tensor (half the time of a walk of (tensor, place) pairs; the
    search's first call builds a few hundred layouts)."""
    out_head: list[float] = []
    out_layers: list[list[float]] = [[] for _ in stage]
    out_tail: list[float] = []
    fill = 0.0
    closed_at = out_tail  # where the last tensor walked is issued: the last bucket closes there
    for where, tensors in ((out_head, head), *((out_layers[i], stage[i]) for i in reversed(range(len(stage)))),
                           (out_tail, tail)):
        for numel in tensors:
            fill += numel
            if fill >= bucket_params:
                where.append(fill)
                fill = 0.0
        if tensors:
            closed_at = where
    if fill > 0:
        closed_at.append(fill)
    return BucketLayout(tuple(out_head), tuple(map(tuple, out_layers)), tuple(out_tail))


def fsdp_layout(stage: Layers, head: tuple[float, ...], tail: tuple[float, ...]) -> BucketLayout:
    """ZeRO-3's units: one per layer and the root's (all non-layer parameters) after the embedding;
    a pipeline's last stage issues its root (output layer, final norm) with its last model chunk
    (sim.layer_program.root_chunk)."""
    root = sum(head) + sum(tail)
    return BucketLayout((), tuple((sum(layer),) if layer else () for layer in stage),
                        (root,) if root > 0 else ())


def _chunked(stage: Layers, head: tuple[float, ...], tail: tuple[float, ...], bucket_params: float, vpp: int,
             first_stage: bool, chunk: int = 0) -> BucketLayout:
    """Megatron's layout of a stage of vpp model chunks, each its own DDP instance: chunk 0 of the
    first stage bucketed (with the embedding), every other chunk one bucket issued after its
    backward, at its first layer (training.py get_model: disable bucketing for chunk_idx > 0;
    DistributedDataParallel: bucket_size None when pp_rank > 0); each chunk holds its own layers
    (pipeline_chunks.chunk_layer_counts, `chunk` its full chunk: under the counted split one fewer in the
    chunk with the embedding or the loss, under the layout the rest there), the last one the
    output layer (issued after the output layer's backward, the layout's head, where that chunk
    holds no decoder layer)."""
    sizes = chunk_layer_counts(len(stage), vpp, first_stage=first_stage, chunk=chunk)
    starts = (0, *accumulate(sizes))
    first = megatron_layout(stage[:sizes[0]], head if vpp == 1 else (), tail,
                            bucket_params if first_stage else float("inf"))
    if vpp == 1:
        return first
    # A chunk's one bucket: its layers' parameters (fsum: n alike layers give n x one, to the bit),
    # none where it holds no tensor of this buffer (a chunk of dense layers' experts).
    totals = [math.fsum(sum(layer) for layer in stage[starts[c]:starts[c + 1]]) + (sum(head) if c == vpp - 1 else 0.0)
              for c in range(vpp)]
    rest = [(totals[c],) if i == 0 and totals[c] > 0 else ()
            for c, n in enumerate(sizes) if c > 0 for i in range(n)]
    alone = (sum(head),) if sizes[-1] == 0 and sum(head) > 0 else ()
    return BucketLayout(alone, first.layers + tuple(rest), first.tail)


def _bucketed_chunks(stage: Layers, head: tuple[float, ...], tail: tuple[float, ...], bucket_params: float,
                     vpp: int, first_stage: bool, chunk: int = 0) -> BucketLayout:
    """ZeRO-2's buckets of a stage of vpp model chunks, each its own module (Megatron's get_model
    wraps every chunk in its own DDP / Megatron-FSDP instance: training.py lines 2390-2399 and the
    DP wrapping after them, d98e8a6), so no bucket spans two chunks: each chunk bucketed on its own
    (megatron_layout), the output layer with the last, the embedding with chunk 0; at vpp 1 the
    stage's. `chunk`: the stage's full model chunk (pipeline_chunks.chunk_layer_counts)."""
    if vpp == 1 or not stage:
        return megatron_layout(stage, head, tail, bucket_params)
    sizes = chunk_layer_counts(len(stage), vpp, first_stage=first_stage, chunk=chunk)
    starts = (0, *accumulate(sizes))
    parts = [megatron_layout(stage[starts[c]:starts[c + 1]], head if c == vpp - 1 else (), tail if c == 0 else (),
                             bucket_params) for c in range(vpp)]
    return BucketLayout(parts[-1].head, tuple(layer for part in parts for layer in part.layers), parts[0].tail)


def stage_layouts(model: ModelSpec, *, tp: int, ep: int, etp: int, layers: int, single_stage: bool, dp: int,
                  zero: int, first_stage: bool = True, vpp: int = 1, last_stage: bool = False,
                  moe: tuple[bool, ...] | None = None, chunk: int = 0) -> tuple[BucketLayout, BucketLayout]:
    """(dense, expert) collectives of a stage's rank with that stage's non-layer parameters
    (stage_extras; the analytic model times every stage's in a pipeline): Megatron buckets (per model
    chunk, `_chunked`), or FSDP units for ZeRO-3. Megatron's DDP keeps the stages after the
    first in one bucket a chunk (DistributedDataParallel.__init__:
    bucket_size None when pp_rank > 0, "since data-parallel communication on these stages is not
    on the critical path"). `moe`: each layer's MLP kind where the model's differ (stage_tensors);
    `chunk`: a full model chunk's layers (pipeline.stage_chunk; 0: the stage's own ceiling)."""
    dense, expert = stage_tensors(model, tp, ep, etp, layers, moe)
    head, tail = stage_extras(model, tp, single_stage, first_stage=first_stage, last_stage=last_stage)
    # The MTP depths' tensors on the last stage, issued with its head; their routed experts in the
    # expert buffer (mtp_tensors).
    mtp_dense, expert_head = mtp_tensors(model, tp, ep, etp, single_stage) if single_stage or last_stage else ((), ())
    head = head + mtp_dense
    if zero == 3:
        return fsdp_layout(dense, head, tail), fsdp_layout(expert, expert_head, ())
    bucket = float(ddp_bucket_params(dp))
    if zero == 2:  # Megatron-FSDP / FSDP2 without resharding: the first stage's buckets everywhere
        return (_bucketed_chunks(dense, head, tail, bucket, vpp, first_stage, chunk),
                _bucketed_chunks(expert, expert_head, (), bucket, vpp, first_stage, chunk))
    return (_chunked(dense, head, tail, bucket, vpp, first_stage, chunk),
            _chunked(expert, expert_head, (), bucket, vpp, first_stage, chunk) if expert or expert_head
            else BucketLayout((), (), ()))
