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
from sp_planner.executor.result import AttentionCommBytes, Prediction
from sp_planner.specs.hardware import HardwareProfile


def predicted_comm_bytes(cfg: RunConfig) -> AttentionCommBytes:
    """Bytes one rank sends per forward+backward step (sp_planner.cost.attention_comm)."""
    a2a = ulysses_bytes_per_layer(
        batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, tp=cfg.tp, ulysses=cfg.ulysses, ring=cfg.ring, elem_bytes=cfg.elem_bytes,
    )
    kv = dict(batch=cfg.batch, seq_len=cfg.seq_len, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
              tp=cfg.tp, ulysses=cfg.ulysses, ring=cfg.ring)
    if cfg.cp_comm == "allgather":
        return AttentionCommBytes(all_to_all=int(a2a), p2p=0,
                                  all_gather=int(allgather_bytes_per_layer(elem_bytes=cfg.elem_bytes, **kv)),
                                  reduce_scatter=int(allgather_reduce_scatter_bytes_per_layer(**kv)))
    p2p = ring_bytes_per_layer(elem_bytes=cfg.elem_bytes, grad_elem_bytes=RING_GRAD_ELEM_BYTES, **kv)
    return AttentionCommBytes(all_to_all=int(a2a), p2p=int(p2p))


def predict(cfg: RunConfig, hardware: HardwareProfile | None = None, gpus_per_node: int | None = None
            ) -> Prediction:
    """Comm bytes always; time and memory when a hardware profile is known (from a plan)."""
    comm = predicted_comm_bytes(cfg)
    if hardware is None:
        return Prediction(comm_bytes=comm, note="no hardware profile (pass --plan) for time/memory")
    try:
        from sp_planner.cost.attention import attention_layer_memory_bytes, attention_layer_time_s
    except ImportError as err:
        return Prediction(comm_bytes=comm, note=f"time/memory model unavailable: {err}")
    time_s = attention_layer_time_s(
        hardware=hardware, batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, tp=cfg.tp, ulysses=cfg.ulysses,
        ring=cfg.ring, causal=cfg.causal, ring_layout=cfg.ring_layout,
        gpus_per_node=gpus_per_node or cfg.world_size, elem_bytes=cfg.elem_bytes, backward=True,
        cp_comm=cfg.cp_comm,
    )
    memory = attention_layer_memory_bytes(
        batch=cfg.batch, seq_len=cfg.seq_len, num_heads=cfg.heads_per_tp_rank,
        num_kv_heads=cfg.kv_heads_per_tp_rank, head_dim=cfg.head_dim, ulysses=cfg.ulysses,
        ring=cfg.ring, elem_bytes=cfg.elem_bytes, cp_comm=cfg.cp_comm,
    )
    return Prediction(comm_bytes=comm, time_s=float(time_s), memory_bytes=int(memory),
                      note=f"time and memory predicted for {hardware.name}, measured on {cfg.device}")
