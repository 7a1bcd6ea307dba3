"""The ops of one pipeline stage's forward or backward for one micro-batch, on two streams.

Forward of a layer, Megatron-LM with sequence parallel and hierarchical context parallel:
  TP all-gather -> QKV GEMM -> Ulysses all-to-all (Q, K, V) -> ring attention -> all-to-all (O)
  -> output GEMM -> TP reduce-scatter -> TP all-gather -> MLP GEMMs -> TP reduce-scatter.
The all-to-alls block attention (DeepSpeed-Ulysses, Jacobs et al. 2023, section 3). Ring step k
computes on the K/V block it holds while sending that block on (double buffering, as
ring-flash-attention's `RingComm` does), so a step lasts the slower of the two. Backward runs the
same chain reversed; its ring sends K/V and the dK/dV accumulated so far, and returns the final
dK/dV to their owner after the last step (ring-flash-attention `ring_flash_attn_backward`).
On the last micro-batch (every one under ZeRO-2/3) the gradient buckets (ZeRO-3: units) are
reduced as the layers holding them finish their backward (Megatron's overlapped gradient reduce;
which calls, and where, is cost.buckets' layout, shared with the analytic model), on a third
stream: the data-parallel group has its own NCCL communicator and stream. Links shared by that traffic and the
context-parallel traffic running at the same moment are not slowed down for it (a known
simplification: each phase's contention is among the groups of one collective).
"""

from __future__ import annotations

from sp_planner.recompute import MLA_UP_PROJ_RECOMPUTES
from sp_planner.pipeline import stage_chunk
from sp_planner.pipeline_chunks import chunk_layer_counts
from sp_planner.sim.streams import Program
from sp_planner.sim.work import DPCalls, LayerWork, StepWork


def attention_ops(p: Program, w: LayerWork, layer: int, ready: int, kind: str, comm_tag: str = "") -> int:
    """Ulysses all-to-all in, ring steps, all-to-all out; returns the op after which O is ready."""
    a2a = p.add("comm", "ulysses_comm", f"L{layer} a2a qkv{comm_tag}", w.ulysses_qkv_s, (ready,))
    if w.cp_all_gather_s > 0:  # all-gather CP: the whole sequence's K/V before attention
        a2a = p.add("comm", "ring_comm", f"L{layer} cp kv all-gather{comm_tag}", w.cp_all_gather_s, (a2a,))
    recv = compute = a2a  # recv: the op after which the block of the current step is present
    for step, duration in enumerate(w.attn_fwd_steps_s):
        if step < w.ring - 1:
            # Two buffers: the next block may land only once the previous step's compute freed one.
            send = p.add("comm", "ring_comm", f"L{layer} ring kv {step}{comm_tag}", w.ring_kv_step_s, (recv, compute))
        compute = p.add("compute", kind, f"L{layer} attn fwd {step}{comm_tag}", duration, (recv,))
        if step < w.ring - 1:
            recv = send
    return p.add("comm", "ulysses_comm", f"L{layer} a2a out{comm_tag}", w.ulysses_out_s, (compute,))


def _forward_layer(p: Program, w: LayerWork, layer: int, ready: int, kind_prefix: str = "",
                   gather: int = -1) -> int:
    """Append one layer's forward; `ready` is the op producing its input. Returns its last op."""
    k = kind_prefix
    tag = " (recompute)" if k else ""
    ag = p.add("comm", "tp_comm", f"L{layer} tp all-gather{tag}", w.tp_all_gather_s, (ready,))
    qkv = p.add("compute", k + "gemm", f"L{layer} qkv+out gemm{tag}", w.gemm_attn_fwd_s, (ag, gather))
    out = attention_ops(p, w, layer, qkv, k + "attention", tag)
    # The output projection is inside gemm_attn_fwd_s: the chain is serial, so where it sits
    # between the two all-to-alls does not change any time.
    rs = p.add("comm", "tp_comm", f"L{layer} tp reduce-scatter{tag}", w.tp_reduce_scatter_s, (out,))
    ag2 = p.add("comm", "tp_comm", f"L{layer} tp all-gather{tag}", w.tp_all_gather_s, (rs,))
    ready = _moe_ops(p, w, layer, ag2, ("dispatch", "etp all-gather"), tag)
    mlp = p.add("compute", k + "gemm", f"L{layer} mlp gemm{tag}", w.gemm_mlp_fwd_s, (ready,))
    done = _moe_ops(p, w, layer, mlp, ("etp reduce-scatter", "combine"), tag)
    return p.add("comm", "tp_comm", f"L{layer} tp reduce-scatter{tag}", w.tp_reduce_scatter_s, (done,))


def _moe_ops(p: Program, w: LayerWork, layer: int, ready: int, names: tuple[str, str], tag: str = "") -> int:
    """The MoE collectives on one side of the expert GEMMs (none for a dense model): the all-to-all
    and the etp collective, in `names` order ("dispatch"/"combine" are the all-to-alls)."""
    for name in names:
        seconds = w.moe_all_to_all_s if name in ("dispatch", "combine") else w.etp_collective_s
        if seconds > 0:
            ready = p.add("comm", "moe_comm", f"L{layer} moe {name}{tag}", seconds, (ready,))
    return ready


def _backward_layer(p: Program, w: LayerWork, layer: int, ready: int, recompute: str,
                    gather: int = -1) -> tuple[int, int]:
    """Append one layer's backward; returns (its last op, the op after which its gradients are ready)."""
    if w.recompute_mlp:
        # CheckpointFunction.backward re-runs the MLP's forward before its backward
        # (transformer_layer.py at d98e8a64 lines 992-1010; cost.mlp_recompute).
        ready = p.add("comm", "tp_comm", f"L{layer} tp all-gather (mlp recompute)", w.tp_all_gather_s, (ready,))
        ready = p.add("compute", "recompute_gemm", f"L{layer} mlp gemm (recompute)", w.gemm_mlp_fwd_s,
                      (ready, gather))
        ready = p.add("comm", "tp_comm", f"L{layer} tp reduce-scatter (mlp recompute)", w.tp_reduce_scatter_s,
                      (ready,))
    if recompute == "full":
        ready = _forward_layer(p, w, layer, ready, kind_prefix="recompute_", gather=gather)
    elif recompute == "selective":
        # Megatron's core-attention recompute re-runs attention with its CP communication.
        ready = attention_ops(p, w, layer, ready, "recompute_attention", " (recompute)")
    # Conjugates of the forward's reduce-scatter (an all-gather of the gradient) and the
    # all-gather of the saved sharded input again for the weight gradient (Megatron's
    # LinearWithGradAccumulationAndAsyncCommunication): 4 all-gathers, 2 reduce-scatters a layer;
    # without sequence parallelism the inputs are whole and only the all-reduces' halves remain, and
    # a framework that kept the gathered inputs (torchtitan, cost.tp_gathers) gathers none again.
    grad_ag = w.tp_all_gather_s if w.tp_grad_all_gather_s is None else w.tp_grad_all_gather_s
    ag = p.add("comm", "tp_comm", f"L{layer} tp all-gather (grad)", grad_ag, (ready,))
    ag_in = ag if w.tp_input_all_gather_s == 0 else p.add(
        "comm", "tp_comm", f"L{layer} tp all-gather (input)", w.tp_input_all_gather_s, (ag,))
    # The combine's gradient is an all-to-all back to the experts, the dispatch's one back again.
    ready_mlp = _moe_ops(p, w, layer, ag_in, ("combine", "etp all-gather"))
    if w.recompute_modules_s > 0:
        # CheckpointWithoutOutput's hooks re-run the activation (and norms) before the experts'
        # backward (moe/experts.py at d98e8a64 lines 1019-1030; cost.module_recompute).
        ready_mlp = p.add("compute", "recompute_elementwise", f"L{layer} moe act/norm (recompute)",
                          w.recompute_modules_s, (ready_mlp,))
    mlp = p.add("compute", "gemm", f"L{layer} mlp bwd", w.gemm_mlp_bwd_s, (ready_mlp, gather))
    mlp = _moe_ops(p, w, layer, mlp, ("etp reduce-scatter", "dispatch"))
    rs = p.add("comm", "tp_comm", f"L{layer} tp reduce-scatter", w.tp_reduce_scatter_s, (mlp,))
    ag2 = p.add("comm", "tp_comm", f"L{layer} tp all-gather (grad)", grad_ag, (rs,))
    if recompute in MLA_UP_PROJ_RECOMPUTES:
        # The hook on core_attn_out's gradient re-runs MLA's up-projections before core attention's
        # backward (multi_latent_attention.py at d98e8a64 lines 455-458; cost.mla_recompute).
        ag2 = p.add("compute", "recompute_gemm", f"L{layer} mla up-proj (recompute)", w.recompute_up_proj_s, (ag2,))
    a2a = p.add("comm", "ulysses_comm", f"L{layer} a2a dout", w.ulysses_out_s, (ag2,))
    if w.cp_all_gather_s > 0 and w.cp_regathers:  # all-gather CP gathers K/V again from the saved local blocks
        a2a = p.add("comm", "ring_comm", f"L{layer} cp kv all-gather (bwd)", w.cp_all_gather_s, (a2a,))
    recv, compute, send = a2a, a2a, a2a
    for step, duration in enumerate(w.attn_bwd_steps_s):
        kv = w.ring_kv_step_s if step < w.ring - 1 else 0.0
        dkv = w.ring_dkv_step_s if step > 0 else 0.0
        if kv + dkv > 0:
            # Sends the next K/V block and the dK/dV accumulated by the previous step.
            send = p.add("comm", "ring_comm", f"L{layer} ring kv+dkv {step}", kv + dkv, (recv, compute))
        compute = p.add("compute", "attention", f"L{layer} attn bwd {step}", duration, (recv,))
        recv = send
    if w.ring > 1 and w.ring_dkv_home:
        compute = p.add("comm", "ring_comm", f"L{layer} ring dkv home", w.ring_dkv_step_s, (compute,))
    if w.cp_reduce_scatter_s > 0:
        compute = p.add("comm", "ring_comm", f"L{layer} cp dkv reduce-scatter", w.cp_reduce_scatter_s, (compute,))
    a2a2 = p.add("comm", "ulysses_comm", f"L{layer} a2a dqkv", w.ulysses_qkv_s, (compute,))
    ag_in2 = a2a2 if w.tp_input_all_gather_s == 0 else p.add(
        "comm", "tp_comm", f"L{layer} tp all-gather (input)", w.tp_input_all_gather_s, (a2a2,))
    gemm = p.add("compute", "gemm", f"L{layer} qkv+out bwd", w.gemm_attn_bwd_s, (ag_in2,))
    last = p.add("comm", "tp_comm", f"L{layer} tp reduce-scatter", w.tp_reduce_scatter_s, (gemm,))
    return last, gemm


def _calls(p: Program, seconds: tuple[float, ...], name: str, after: int, previous: int = -1) -> int:
    """Queue data-parallel calls on their stream (their own NCCL communicator, hence their own
    stream: compute does not wait for them unless it depends on one); returns the last one
    (`previous` when there is none)."""
    for i, duration in enumerate(seconds):
        previous = p.add("dp_comm", "dp_comm", f"{name} {i}" if len(seconds) > 1 else name, duration, (after,))
    return previous


def chunk_layers(work: StepWork, stage: int, chunk: int) -> range:
    """The stage's layers (stage-local indices) in one of its vpp model chunks
    (pipeline_chunks.chunk_layer_counts: one fewer in the chunks holding the embedding or the loss under
    Megatron's counted split, the rest there under the layout)."""
    full = stage_chunk(work.layers_of(0), work.layers_per_stage, work.layers_of(work.pp - 1), work.pp, work.vpp)
    sizes = chunk_layer_counts(work.layers_of(stage), work.vpp, first_stage=stage == 0, chunk=int(full))
    start = sum(sizes[:chunk])
    return range(start, start + sizes[chunk])


def root_chunk(work: StepWork, stage: int) -> int:
    """The model chunk that issues the stage's `tail` calls: chunk 0 (the first stage's embedding),
    but on the last stage of a pipeline its last chunk, where ZeRO-3's root unit (cost.buckets.
    fsdp_layout: the output layer and final norm there) lives: Megatron's get_model builds
    post_process into the last virtual stage only (megatron/training/training.py lines 2390-2399
    at d98e8a6), each chunk its own Megatron-FSDP module (cost.zero3_forwards.chunk_zero3_forwards_s)."""
    return work.vpp - 1 if stage == work.pp - 1 and work.pp > 1 else 0


def stage_forward(work: StepWork, stage: int, *, first_micro_batch: bool = False, chunk: int = 0) -> Program:
    """Forward of one micro-batch through one model chunk of the stage (the whole stage when vpp
    is 1). ZeRO-3 gathers its units' parameters ahead of use, queued in forward order on the
    data-parallel stream; so does the first micro-batch of a ZeRO-1/2 step whose parameter gather
    is overlapped (the previous step's gather landing, bucket by bucket). Each layer waits for the
    calls that hold its parameters (sim.work.DPCalls); the embedding's go with the first chunk,
    the output layer's with the last (with StepWork.dp_root_gather_once, in the first micro-batch
    only)."""
    p = Program()
    first, last = chunk == 0, chunk == work.vpp - 1
    # Under Megatron's aligned gather a chunk's calls are dispatched ahead, as blocks of their own
    # (sim.pipeline), but the first stage's chunk 0, gathered bucket by bucket from the step's start.
    ahead = work.dp_gather_by_chunk and (stage, chunk) != (0, 0)
    gathering = work.dp_gather_every_forward or (first_micro_batch and not ahead)
    calls = work.gather_calls(stage) if gathering else DPCalls()
    if work.dp_root_gather_once and not first_micro_batch:  # the root unit kept since the first forward
        calls = calls.model_copy(update={"head": (), "tail": ()})
    landed = _calls(p, calls.tail if chunk == root_chunk(work, stage) else (), "embedding param all-gather", -1)
    embedding = work.first_stage_fwd_s if stage == 0 and first else 0.0
    ready = p.add("compute", "gemm", "embedding", embedding, (landed,))
    for layer in chunk_layers(work, stage, chunk):
        landed = _calls(p, calls.at_layer(layer), f"L{layer} param all-gather", -1, landed)
        ready = _forward_layer(p, work.layer_at(stage, layer), layer, ready, gather=landed)
    if stage == work.pp - 1 and last:
        landed = _calls(p, calls.head, "output layer param all-gather", -1, landed)
        # Multi-token prediction's depths, each a layer of its kind, before the heads (cost.mtp).
        for depth, kind in enumerate(work.mtp_kinds):
            ready = _forward_layer(p, work.kind_layers[kind], work.layers_of(stage) + depth, ready, gather=landed)
        p.add("compute", "gemm", "output head + loss", work.last_stage_fwd_s, (ready, landed))
    return p


def stage_backward(work: StepWork, stage: int, *, last_micro_batch: bool, chunk: int = 0) -> Program:
    """Backward of one micro-batch through one model chunk; gradient buckets go out as layers
    finish (on the last micro-batch, or on every one with ZeRO-2/3). ZeRO-3 gathers each layer
    again one layer ahead on the data-parallel stream, between the reduce-scatters (FSDP2's
    backward prefetch), unless the parameters were kept after forward; the root unit stays
    gathered (cost.buckets)."""
    p = Program()
    first, last = chunk == 0, chunk == work.vpp - 1
    reduce = work.reduce_calls(stage) if last_micro_batch or work.dp_every_micro_batch else DPCalls()
    # Megatron's aligned grad reduce and a stage synced once a step: the schedule launches the
    # chunk's calls together (sim.pipeline, chunk_sync_calls), none from the layers' hooks.
    hooked = DPCalls() if work.dp_reduce_whole_chunk or work.dp_stage_sync else reduce
    regather = (work.dp_gather_every_forward or work.dp_stage_sync) and work.dp_backward_gather
    gathers = work.gather_calls(stage) if regather else DPCalls()
    loss_stage = stage == work.pp - 1 and last
    ready = p.add("compute", "gemm", "output head bwd", work.last_stage_bwd_s if loss_stage else 0.0)
    # Multi-token prediction's depths, last first, before the decoder layers (cost.mtp): their
    # parameters' calls ride with the output layer's (cost.rank_tensors.mtp_tensors).
    mtp = tuple(enumerate(work.mtp_kinds)) if loss_stage else ()
    for depth, kind in reversed(mtp):
        ready, _ = _backward_layer(p, work.kind_layers[kind], work.layers_of(stage) + depth, ready, work.recompute, -1)
    _calls(p, hooked.head if last else (), "output layer grad reduce", ready)
    order = list(reversed(chunk_layers(work, stage, chunk)))
    landed = {order[0]: _calls(p, gathers.at_layer(order[0]), f"L{order[0]} param all-gather", -1)} if order else {}
    for i, layer in enumerate(order):
        if i + 1 < len(order):
            landed[order[i + 1]] = _calls(p, gathers.at_layer(order[i + 1]), f"L{order[i + 1]} param all-gather", -1)
        ready, grads = _backward_layer(p, work.layer_at(stage, layer), layer, ready, work.recompute, landed[layer])
        _calls(p, hooked.at_layer(layer), f"L{layer} dp grad bucket", grads)
    tail = p.add("compute", "gemm", "embedding bwd", work.first_stage_bwd_s if stage == 0 and first else 0.0,
                 (ready,))
    root = chunk == root_chunk(work, stage)
    _calls(p, hooked.tail if root else (), "embedding dp grad bucket", tail)
    return p


def chunk_sync_calls(work: StepWork, stage: int, chunk: int) -> tuple[float, ...]:
    """Seconds of each gradient call of one model chunk of the stage, launched together under
    Megatron's aligned grad reduce (StepWork.dp_reduce_whole_chunk) or by a stage synced once a
    step (StepWork.dp_stage_sync): the output layer's with the last chunk, its layers' in backward
    order, the root's with root_chunk."""
    calls = work.reduce_calls(stage)
    order = reversed(chunk_layers(work, stage, chunk))
    return ((calls.head if chunk == work.vpp - 1 else ()) + tuple(t for layer in order for t in calls.at_layer(layer))
            + (calls.tail if chunk == root_chunk(work, stage) else ()))


def chunk_gather_s(work: StepWork, stage: int, chunk: int) -> float:
    """Seconds of one model chunk's parameter all-gather calls on a stage (its layers' buckets, the
    embedding's with chunk 0, the output layer's with the last chunk)."""
    calls = work.gather_calls(stage)
    own = sum(sum(calls.at_layer(layer)) for layer in chunk_layers(work, stage, chunk))
    return own + (sum(calls.tail) if chunk == 0 else 0.0) + (sum(calls.head) if chunk == work.vpp - 1 else 0.0)
