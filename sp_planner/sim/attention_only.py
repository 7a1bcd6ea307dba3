"""Attention alone, forward only, on one node: the setting of the USP paper's Tables 3 and 4.

Fang & Zhao 2024 (arXiv 2405.07719) time one attention layer's forward on 8 GPUs for each
Ulysses degree with ring = 8 / ulysses. We schedule the same: Ulysses all-to-all of Q, K, V,
ring steps overlapping their K/V transfers, all-to-all of O, with the transfers as flows on the
node's graph.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.layout import rank_groups
from sp_planner.plan import ParallelPlan
from sp_planner.sim.attention_steps import attention_steps, ulysses_work_s
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.flows import run_phase
from sp_planner.sim.layer_program import attention_ops
from sp_planner.sim.streams import Program
from sp_planner.sim.work import LayerWork
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def attention_forward_time_s(hardware: HardwareProfile, model: ModelSpec, *, seq_len: int, ulysses: int,
                             ring: int, causal: bool = True, zigzag: bool = True, batch: int = 1) -> float:
    """Simulated seconds of one attention forward over ulysses x ring GPUs of one node."""
    world = ulysses * ring
    if world > hardware.gpus_per_node:
        raise ValueError(f"ulysses x ring = {world} exceeds one node of {hardware.gpus_per_node} GPUs")
    hw = hardware.model_copy(update={"gpus_per_node": world})
    cluster = build_cluster(hw, 1)
    groups = {k: np.asarray(v) for k, v in rank_groups(ParallelPlan(ulysses=ulysses, ring=ring)).items()}
    att = attention_steps(hw, model, batch=batch, seq_len=seq_len, tp=1, ulysses=ulysses, ring=ring,
                          causal=causal, zigzag=zigzag, elem_bytes=BF16_BYTES)

    def t(name, key, nbytes, algorithm, eff):
        return run_phase(cluster, name, groups[key], nbytes, algorithm, eff).duration_s

    uly_q = t("q", "ulysses", att.ulysses_q_bytes, "all_to_all", "all_to_all")
    uly_kv = t("kv", "ulysses", att.ulysses_kv_bytes, "all_to_all", "all_to_all")
    uly_qkv, uly_out = ulysses_work_s(att, uly_q, uly_kv)
    layer = LayerWork(
        attn_fwd_steps_s=att.fwd_steps_s, attn_bwd_steps_s=att.bwd_steps_s,
        ulysses_qkv_s=uly_qkv, ulysses_out_s=uly_out,
        ring_kv_step_s=t("kv step", "ring", att.ring_kv_bytes, "p2p", "p2p"),
    )
    program = Program()
    attention_ops(program, layer, 0, -1, "attention")
    return program.end_s
