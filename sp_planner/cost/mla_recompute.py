"""Megatron's mla_up_proj recompute (plan recompute "mla_up_proj"): what it frees, keeps and re-runs.

Megatron-LM at d98e8a64, megatron/core/transformer/multi_latent_attention.py (MLA.py): with
--recompute-granularity selective --recompute-modules mla_up_proj (MLA.py:171-174),
CheckpointWithoutOutput runs qkv_up_proj_and_rope_apply under no_grad (MLA.py:983-988):
linear_q_up_proj [q_lora_rank -> heads*(qk_nope + qk_rope)] (linear_q_proj [h -> ...] without
q_lora_rank), linear_kv_up_proj [kv_lora_rank -> heads*(qk_nope + v_head)], RoPE on the rope
slices and the concat/expand into query, key, value (MLA.py:855-981); with the TE spec the latent
RMSNorms are fused into those two linears (gpt_layer_specs.py:106-115) and re-run with them. After
core attention it frees the outputs' storage (MLA.py:455-458) and a hook on core_attn_out's
gradient rebuilds them before core attention's backward. Saved instead: the checkpoint's inputs
q_compressed, kv_compressed and k_pos_emb.

Memory, per layer and micro-batch on a rank with n = b*s/cp tokens:
  freed: the query, key and value core attention saved, where they are the checkpoint's own
         tensors: TE saves them as given without context parallelism and under all-gather CP
         (context_parallel.py AttnFuncWithCPAndKVAllGather: f16_tensors = (q, k, v, out)); the
         ring (AttnFuncWithCPAndKVP2P) saves q but its own K/V ring buffer (kv = p2p_comm_buffers[-1]);
         Ulysses (AttnFuncWithCPAndQKVOA2A) the all-to-all's outputs (q_part, k_part, v_part), so
         nothing of them. At the width cost.activations counts them (ModelSpec.head_dim).
  kept:  k_pos_emb, [s/cp, b, qk_rope] bf16 on every TP rank (gathered out of the sequence-parallel
         region, MLA.py:758-763). q_compressed and kv_compressed are saved either way (the
         up-projections' inputs, or the checkpoint's); cost.activations counts neither, nor the
         fused norms' outputs LayerNormLinear keeps with nothing recomputed, so they cancel here.
Compute: the up-projections' forward GEMMs again (hardware FLOPs, not Megatron's model FLOPs) and
the MLA RoPE kernels' traffic (cost.rope; under DSA its unfused RoPE and cats); the latent norms
are not priced (cost.gemm_work prices no latent norm either).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.kernels import memory_pass_time_s
from sp_planner.cost.precision import gemm_peak_flops
from sp_planner.cost.rope import rope_forward_bytes_per_token
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec


def mla_up_proj_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of one layer's query and key/value up-projections for one token, all TP ranks
    together: 2 per weight of linear_q_up_proj (or linear_q_proj) and linear_kv_up_proj (MLA.py:861-875;
    the weight counts of ModelSpec.mla_params_per_layer)."""
    assert model.mla is not None
    a, heads = model.mla, model.num_heads
    q_in = a.q_lora_rank if a.q_lora_rank else model.hidden_size
    q = q_in * heads * (a.qk_nope_head_dim + a.qk_rope_head_dim)
    kv = a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)
    return 2.0 * (q + kv)


def mla_up_proj_saved_delta_bytes(model: ModelSpec, *, tokens, q_bytes, kv_bytes, ulysses, ring, allgather=False):
    """Bytes mla_up_proj saves beyond nothing recomputed (negative: it frees; module docstring):
    k_pos_emb kept, minus the checkpoint's query (`q_bytes`) and key + value (`kv_bytes`, as
    cost.activations counts them) where core attention saved those tensors themselves. `tokens`: n."""
    assert model.mla is not None
    solo = np.asarray(ulysses) == 1  # Ulysses saves the all-to-all's copies
    own_kv = solo & ((np.asarray(ring) == 1) | np.asarray(allgather, dtype=bool))  # ring p2p: its own buffer
    freed = np.where(solo, q_bytes, 0.0) + np.where(own_kv, kv_bytes, 0.0)
    return BF16_BYTES * tokens * model.mla.qk_rope_head_dim - freed


def mla_up_proj_recompute_s(model: ModelSpec, hardware: HardwareProfile, *, tokens, tp, precision,
                            fp8_blockwise=False):
    """Seconds per layer and micro-batch backward spends re-running the up-projections (at the
    plan's GEMM rate: the checkpoint runs them in FP8 under FP8, MLA.py:984-985) and the MLA RoPE
    kernels (cost.rope, 2 bytes an element) on the rank's heads; `tokens`: n."""
    gemm = mla_up_proj_flops_per_token(model) * tokens / np.asarray(tp) / gemm_peak_flops(hardware, precision,
                                                                                          fp8_blockwise)
    assert model.mla is not None
    rope = rope_forward_bytes_per_token(model)  # the fused kernels, or DSA's unfused RoPE
    return gemm + memory_pass_time_s(hardware, rope * tokens / np.asarray(tp))
