"""The cost model's prediction for the shapes and degrees of a run (torch-free)."""

from __future__ import annotations

from sp_planner.cost.attention_comm import (
    RING_GRAD_ELEM_BYTES,
    allgather_bytes_per_layer,
    allgather_reduce_scatter_bytes_per_layer,
    ring_bytes_per_layer,
    ulysses_bytes_per_layer,
)
from sp_planner.executor.config import RunConfig
from sp_planner.executor.kernel_rules import FLASH, cuda_kernel_for
from sp_planner.executor.result import AttentionCommBytes, Prediction
from sp_planner.specs.hardware import HardwareProfile


def predicted_comm_bytes(cfg: RunConfig) -> AttentionCommBytes:
    """Bytes one rank sends per forward+backward step (sp_planner.cost.attention_comm): Q, K at
    head_dim, V, O at v_dim (MLA)."""
    a2a = ulysses_bytes_per_layer(
        batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, tp=cfg.tp, ulysses=cfg.ulysses, ring=cfg.ring, elem_bytes=cfg.elem_bytes,
        v_head_dim=cfg.v_dim,
    )
    kv = dict(batch=cfg.batch, seq_len=cfg.seq_len, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
              tp=cfg.tp, ulysses=cfg.ulysses, ring=cfg.ring, v_head_dim=cfg.v_dim)
    if cfg.cp_comm == "allgather":
        return AttentionCommBytes(all_to_all=int(a2a), p2p=0,
                                  all_gather=int(allgather_bytes_per_layer(elem_bytes=cfg.elem_bytes, **kv)),
                                  reduce_scatter=int(allgather_reduce_scatter_bytes_per_layer(**kv)))
    p2p = ring_bytes_per_layer(elem_bytes=cfg.elem_bytes, grad_elem_bytes=RING_GRAD_ELEM_BYTES, **kv)
    return AttentionCommBytes(all_to_all=int(a2a), p2p=int(p2p))


def framework_ring_note(cfg: RunConfig, framework: str) -> str | None:
    """Where the plan's framework sends other ring bytes than the executor (whose ring is
    yunchang's: dK/dV in fp32 for R hops, the contract it is checked against): its own per layer,
    so that the plan's comm_bytes and this run's can be told apart. None where they agree."""
    from sp_planner.cost.runtime import framework_runtime

    ring = framework_runtime(framework).ring
    if cfg.ring == 1 or cfg.cp_comm != "p2p" or (ring.grad_elem_bytes, ring.grad_home_hop) == (
            RING_GRAD_ELEM_BYTES, True):
        return None
    theirs = int(ring_bytes_per_layer(
        batch=cfg.batch, seq_len=cfg.seq_len, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, tp=cfg.tp,
        ulysses=cfg.ulysses, ring=cfg.ring, elem_bytes=cfg.elem_bytes, grad_elem_bytes=ring.grad_elem_bytes,
        grad_home_hop=ring.grad_home_hop, v_head_dim=cfg.v_dim))
    return (f"ring bytes are the executor's (dK/dV in fp32 round the whole ring, as yunchang's); the plan's "
            f"{framework} ring ({ring.name}: dK/dV in {ring.grad_elem_bytes}-byte elements, one hop fewer) "
            f"sends {theirs:,} per layer, the figure in the plan's comm_bytes")


def predicted_memory(cfg: RunConfig) -> tuple[int | None, str]:
    """The step's peak bytes above its inputs, replayed through sp-run's own code
    (executor.step_memory: what case.py measures), and a note naming it beside the plan's figure.

    Not cost.attention.attention_layer_memory_bytes: that is a framework's layer (flash-attention
    taking GQA natively, no layout copies, inputs counted), which sp-run's step differs from by
    its (b, h, s, d) kernel copies with KV heads repeated, the ring's buffers at R = 1 and the
    kernel's full-head dK/dV; set against what sp-run measures it read about 0.5x on CPU."""
    from sp_planner.cost.attention import attention_layer_memory_bytes
    from sp_planner.executor.step_memory import collective_held_bytes, step_memory_covered, step_peak_bytes

    layer = attention_layer_memory_bytes(
        batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.heads_per_tp_rank,
        num_kv_heads=cfg.kv_heads_per_tp_rank, head_dim=cfg.mean_head_dim, ulysses=cfg.ulysses,
        ring=cfg.ring, elem_bytes=cfg.elem_bytes, cp_comm=cfg.cp_comm)
    plan = f"the planner's cost model counts {layer:,} bytes for a framework's attention layer"
    peak = step_peak_bytes(cfg)
    if peak is None:
        return None, f"no memory prediction: {step_memory_covered(cfg)} ({plan})"
    held = collective_held_bytes(cfg)
    extra = (f"; a rank can read up to {held:,} bytes more while the collectives' worker threads still hold "
             "finished buffers" if held else "")
    on_gpu = "; its CUDA terms are checked on one H200 (docs/gpu-check)" if cfg.device == "cuda" else ""
    return peak, (f"memory: sp-run's own step replayed (executor.step_memory), above its inputs{extra}{on_gpu}; "
                  f"{plan}")


def predict(cfg: RunConfig, hardware: HardwareProfile | None = None, gpus_per_node: int | None = None,
            framework: str | None = None) -> Prediction:
    """Comm bytes and memory always; time when a hardware profile is known (from a plan);
    `framework`: the plan's, whose ring bytes the note names where they differ."""
    comm = predicted_comm_bytes(cfg)
    ring_note = framework_ring_note(cfg, framework) if framework is not None else None
    memory, memory_note = predicted_memory(cfg)
    if hardware is None:
        return Prediction(comm_bytes=comm, memory_bytes=memory, note="; ".join(filter(None, (
            "no hardware profile (pass --plan) for time", memory_note, ring_note))))
    try:
        from sp_planner.cost.attention import attention_layer_time_s
    except ImportError as err:
        return Prediction(comm_bytes=comm, memory_bytes=memory, note=f"time model unavailable: {err}")
    hardware, curves = executor_kernel_hardware(cfg, hardware)
    time_s = attention_layer_time_s(
        hardware=hardware, batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.mean_head_dim, tp=cfg.tp, ulysses=cfg.ulysses,
        ring=cfg.ring, causal=cfg.causal, ring_layout=cfg.ring_layout,
        gpus_per_node=gpus_per_node or cfg.world_size, elem_bytes=cfg.elem_bytes, backward=True,
        cp_comm=cfg.cp_comm,
    )
    note = f"time predicted for {hardware.name} ({curves}), measured on {cfg.device}"
    if cfg.window is not None:  # cost.window blends local layers into a step's time, not one layer's
        note += f"; the time is a full-attention layer's, without the {cfg.window_kind} window this run applies"
    # A block longer than the curves reach takes their last point's efficiency (cost.attention):
    # say so where the curves were measured (sp-calibrate --quick times short blocks only).
    block = cfg.seq_len // cfg.ring if cfg.cp_comm == "p2p" else cfg.seq_len
    reach = min(hardware.efficiency.attention_fwd[-1].tokens, hardware.efficiency.attention_bwd[-1].tokens)
    if hardware.measured_on is not None and block > reach:
        note += (f"; its attention blocks ({block:,} tokens) are longer than its measured curves reach "
                 f"({reach:,}), whose last efficiency is carried on: run sp-calibrate without --quick, or "
                 "with longer sequences, for a closer time")
    return Prediction(comm_bytes=comm, time_s=float(time_s), memory_bytes=memory,
                      note="; ".join(filter(None, (note, memory_note, ring_note))))


def executor_kernel_hardware(cfg: RunConfig, hardware: HardwareProfile) -> tuple[HardwareProfile, str]:
    """The profile with the attention curves of the kernel sp-run itself runs, and which they are.

    A plan's profile carries its framework's kernel (Megatron's cuDNN, an FA3 profile's own), but
    sp-run calls aten's flash op for bf16/fp16 on CUDA (executor.kernels.CudaFlashKernel): PyTorch
    SDPA's flash backend, whose curves cost.attention_kernels has ("sdpa"; on Hopper measured by
    make gpu-check). A profile sp-calibrate wrote timed that same op, so its own curves stand.
    Elsewhere (CPU, fp32's memory-efficient kernel, --kernel math) no curve of the kernel exists
    and the profile's own are used, as the note says."""
    from sp_planner.cost.attention_kernels import kernel_curves, measured_attention, with_attention_kernel

    flash = cfg.kernel == "auto" and not cfg.score_mods  # a softcap or window runs the math kernel
    if cfg.device == "cuda" and flash and cuda_kernel_for(cfg.elem_bytes) == FLASH:
        if measured_attention(hardware):
            return hardware, "its sp-calibrate curves: the flash kernel sp-run runs"
        if kernel_curves(hardware, "sdpa") is not None:
            return with_attention_kernel(hardware, "sdpa"), "SDPA flash curves: the kernel sp-run runs"
        return hardware, "the profile's own attention curves: none published for sp-run's SDPA flash kernel"
    return hardware, "the profile's own attention curves: none published for the kernel sp-run runs here"
