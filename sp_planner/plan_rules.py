"""The hard rules a parallel plan must obey, as vectorized predicates (no plan class needed).

plan.py builds its messages and `violations` on these; space.py masks candidate columns with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from sp_planner.cost.deepep import deepep_group_breaks
from sp_planner.pipeline import interleave_breaks, split_breaks
from sp_planner.recompute import recompute_code, recomputes_mla_up_proj, recomputes_mlp, recomputes_moe_act
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def seq_len_divisor(*, tp, ulysses, ring, zigzag):
    """What the sequence length must divide by to shard evenly (vectorized over numpy arrays).

    Ring zigzag splits into 2*ring*ulysses chunks (yunchang extract_local, Megatron p2p with
    load balancing: S % (2*CP) == 0); Megatron sequence parallel then splits each CP shard
    over tp (torchtitan states the combined rule S % (2*CP*TP) == 0).
    """
    chunks = np.where((np.asarray(ring) > 1) & zigzag, 2 * ring, ring)
    return chunks * ulysses * tp


# The hard rules, in the order they are checked (the first broken one is a candidate's reason).
# Each is vectorized: `d` is a ParallelPlan or columns of candidates (a mapping with the degrees,
# micro_batch and zigzag), and the same function serves plan.violations, space.rule_masks and the
# executor's config check (which runs one attention layer: ATTENTION_RULES only).
def _get(d, name: str):
    value = d[name] if isinstance(d, Mapping) else getattr(d, name)
    return 0 if value is None else value  # None stage layers = the even split (0 in columns)


def _heads_split(d):
    return _get(d, "tp") * _get(d, "ulysses")


def _breaks_heads(num_heads, d, **_):
    return num_heads % _heads_split(d) != 0


def _breaks_kv_heads(num_kv_heads, d, **_):
    split = _heads_split(d)
    return np.logical_not((num_kv_heads % split == 0) | (split % num_kv_heads == 0))


def _divisor(d):
    return seq_len_divisor(tp=_get(d, "tp"), ulysses=_get(d, "ulysses"), ring=_get(d, "ring"),
                           zigzag=_get(d, "zigzag"))


def _breaks_seq_len(seq_len, d, **_):
    return seq_len % _divisor(d) != 0


def _breaks_layers(num_layers, d, **_):
    return split_breaks(num_layers, _get(d, "pp"), _get(d, "vpp"), _get(d, "first_stage_layers"),
                        _get(d, "last_stage_layers"))


def _breaks_batch(global_batch, d, **_):
    return global_batch % (_get(d, "dp") * _get(d, "micro_batch")) != 0


def _breaks_experts(num_experts, d, **_):
    # Megatron: num_experts % EP == 0 (arguments.py); EP > 1 needs experts (TransformerConfig);
    # dense models have neither ep nor etp.
    ep, etp = _get(d, "ep"), _get(d, "etp")
    if num_experts == 0:
        return (ep > 1) | (etp > 1)
    return num_experts % ep != 0


def _breaks_expert_grid(d, **_):
    # The expert grid fills the same ranks: world % (ETP*EP*PP) == 0 (megatron/core/parallel_state.py).
    ranks_per_stage = _get(d, "dp") * _get(d, "ring") * _get(d, "ulysses") * _get(d, "tp")
    return ranks_per_stage % (_get(d, "ep") * _get(d, "etp")) != 0


def _breaks_ffn(ffn_size, expert_ffn_size, d, **_):
    # The MLP's hidden width splits over tp (ColumnParallelLinear's output, RowParallelLinear's
    # input: megatron/core/tensor_parallel/layers.py divide(), which asserts divisibility), a routed
    # expert's over etp (the expert layers' own tensor parallelism). 0: not known (attention runs).
    dense = (ffn_size > 0) & (ffn_size % _get(d, "tp") != 0)
    return dense | ((expert_ffn_size > 0) & (expert_ffn_size % _get(d, "etp") != 0))


def _breaks_window_ring(window_tokens, seq_len, d, **_):
    # Local-attention layers (sliding or chunked) under a ring: not modelled (which ring steps a
    # window skips depends on the layout), and Transformer Engine allows sliding windows with
    # context parallelism only for a2a or all_gather, not p2p (context_parallel.py, reference
    # moe_fp8_pipeline_frameworks.md 1.8).
    return (window_tokens > 0) & (window_tokens < seq_len) & (_get(d, "ring") > 1)


def _breaks_dsa_cp(dsa, d, **_):
    # DeepSeek Sparse Attention: Megatron-LM's DSAttention runs context parallelism as all-gather only
    # (transformer_config.py at d98e8a6 lines 3162-3176 assert cp_comm_type allgather), and its
    # indexer scores every earlier key of the whole sequence on one rank's heads: no ring p2p, no
    # Ulysses (cost.dsa_times).
    ring, ulysses = _get(d, "ring"), _get(d, "ulysses")
    return dsa & ((ulysses > 1) | ((ring > 1) & np.logical_not(_get(d, "allgather"))))


def _breaks_interleave(global_batch, d, **_):
    m = global_batch // (_get(d, "dp") * _get(d, "micro_batch"))
    pp, vpp = _get(d, "pp"), _get(d, "vpp")
    breaks = interleave_breaks(pp, vpp, m)
    # A plan's own micro-batch group N (sp-plan --vpp-group; 0 or None: the one priced), which
    # needs vpp > 1 and must be one Megatron accepts: pp <= N <= m, and m % N zero or at least pp
    # (schedules.py forward_backward_pipelining_with_interleaving lines 1160-1180 at d98e8a6;
    # pipeline_order.megatron_group_sizes).
    own = d.get("vpp_group") if isinstance(d, Mapping) else getattr(d, "vpp_group", None)
    group = np.asarray(0 if own is None else own)
    pinned = group > 0
    if not np.any(pinned):
        return breaks
    n = np.maximum(group, 1)
    rest = m % n
    refused = (n < pp) | (n > m) | ((rest != 0) & (rest < pp))
    return breaks | (pinned & ((vpp == 1) | refused))


def _breaks_offload(num_layers, d, **_):
    # Megatron-Core: cpu_offloading_num_layers below num_layers (transformer_config.py: "CPU
    # offloading can be done only for layers less than num_layers"); pp 1 and no recompute are
    # ParallelPlan's own checks.
    return _get(d, "cpu_offload_layers") >= num_layers


def _breaks_mla_up_proj(mla, d, **_):
    # Megatron recomputes mla_up_proj only in multi-latent attention (transformer_config.py at
    # d98e8a64 lines 1969-1973: "mla_up_proj in recompute_modules is only supported with
    # multi_latent_attention").
    # mla_up_proj+mlp likewise.
    return recomputes_mla_up_proj(recompute_code(_get(d, "recompute"))) & (not mla)


def _breaks_moe_act(num_experts, d, **_):
    # moe_act re-runs the routed experts' activation (moe/experts.py at d98e8a64 lines 269-271), and
    # Megatron allows it only with moe_grouped_gemm (transformer_config.py lines 1964-1967): MoE
    # models only. moe_act+layernorm likewise (its layernorm part alone is not a modelled choice).
    return recomputes_moe_act(recompute_code(_get(d, "recompute"))) & (num_experts == 0)


def _breaks_mlp(dense_layers, d, **_):
    # Megatron sets recompute_mlp on layers that are not MoE layers only (transformer_layer.py at
    # d98e8a64 lines 537-539): on a model whose every layer is MoE, mlp recomputes nothing.
    return recomputes_mlp(recompute_code(_get(d, "recompute"))) & (not dense_layers)


def _breaks_deepep_group(deepep, d, **_):
    # DeepEP's Buffer has configs for a few group sizes only (deep_ep/buffer.py get_dispatch_config
    # asserts the size is one) and Megatron runs it over the expert tp x ep group, asserting it holds
    # more than one rank (token_dispatcher.py MoEFlexTokenDispatcher; cost.deepep).
    return deepep & deepep_group_breaks(_get(d, "etp"), _get(d, "ep"))


def _breaks_expert_replicas(num_experts, d, **_):
    # HSDP over routed experts: Megatron-Core shards their states over the intra-partial expert
    # data-parallel group, edp / dp_replicate ranks, and all-reduces the shards over the replicas
    # (parallel_state.py initialize_model_parallel, d98e8a6 lines 1447-1451, which asserts
    # edp % num_distributed_optimizer_instances == 0; cost.fsdp.expert_shard_size). torchtitan's
    # efsdp = dp_shard*cp*tp // (ep*etp) needs the same (flags.experts).
    ranks_per_stage = _get(d, "dp") * _get(d, "ring") * _get(d, "ulysses") * _get(d, "tp")
    edp = ranks_per_stage // (_get(d, "ep") * _get(d, "etp"))
    return (num_experts > 0) & (edp % _get(d, "dp_replicate") != 0)


RULE_CHECKS: dict[str, Callable[..., Any]] = {
    "heads": _breaks_heads,
    "kv_heads": _breaks_kv_heads,
    "seq_len": _breaks_seq_len,
    "layers": _breaks_layers,
    "batch": _breaks_batch,
    "experts": _breaks_experts,
    "expert_grid": _breaks_expert_grid,
    "ffn": _breaks_ffn,
    "window_ring": _breaks_window_ring,
    "dsa_cp": _breaks_dsa_cp,
    "vpp": _breaks_interleave,
    "offload": _breaks_offload,
    "mla_up_proj": _breaks_mla_up_proj,
    "moe_act": _breaks_moe_act,
    "mlp": _breaks_mlp,
    "deepep_group": _breaks_deepep_group,
    "expert_replicas": _breaks_expert_replicas,
}
RULES: tuple[str, ...] = tuple(RULE_CHECKS)
ATTENTION_RULES: tuple[str, ...] = ("heads", "kv_heads", "seq_len")


class RuleFacts(NamedTuple):
    """The model and workload numbers the rules read (attention runs know only the first three)."""

    num_heads: int
    num_kv_heads: int
    seq_len: int
    num_layers: int = 1
    global_batch: int = 1
    num_experts: int = 0  # 0 for dense models
    window_tokens: int = 0  # span of the local layers (sliding window or chunk), 0 without
    window_chunked: bool = False  # local layers attend within fixed chunks (Llama 4), not a sliding window
    ffn_size: int = 0  # the dense MLP's hidden width (0: not known)
    expert_ffn_size: int = 0  # a routed expert's hidden width (0: dense model)
    mla: bool = False  # multi-latent attention (ModelSpec.mla)
    deepep: bool = False  # the MoE tokens move by DeepEP (MoESpec.dispatcher "deepep")
    dense_layers: bool = True  # some layer's MLP is dense (not MoE)
    dsa: bool = False  # DeepSeek Sparse Attention (ModelSpec.dsa)

    @classmethod
    def of(cls, model: ModelSpec, workload: Workload) -> "RuleFacts":
        return cls(model.num_heads, model.num_kv_heads, workload.seq_len, model.num_layers,
                   workload.global_batch, model.moe.num_experts if model.moe else 0,
                   model.window.window_tokens if model.window else 0,
                   model.window is not None and model.window.kind == "chunked",
                   model.intermediate_size, model.moe.moe_intermediate_size if model.moe else 0,
                   model.mla is not None, model.moe is not None and model.moe.dispatcher == "deepep",
                   model.num_moe_layers < model.num_layers, model.dsa is not None)


def rule_breaks(facts: RuleFacts, d, rules: tuple[str, ...] = RULES) -> dict[str, Any]:
    """Rule key -> broken (bool, or bool array over candidates)."""
    return {rule: RULE_CHECKS[rule](d=d, **facts._asdict()) for rule in rules}
