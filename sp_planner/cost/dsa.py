"""DeepSeek Sparse Attention (DSA, DeepSeek-V3.2): the forward FLOPs of its two parts, and why
sp-planner refuses to time it.

What one DSA layer runs in training (Megatron-LM d98e8a64dd
megatron/core/transformer/experimental_attention_variant/dsa.py):
- The lightning indexer: per token a query of index_n_heads x index_head_dim (from the MLA query
  latent), one key of index_head_dim and index_n_heads weights (from the hidden state); the score of
  query t and key s is sum_j w_tj * ReLU(q_tj . k_s) (_compute_index_scores, einsum 'sbhd,tbd->sbht':
  2 * index_n_heads * index_head_dim FLOPs a pair), dense over every earlier key, then a top-k. Its
  projections are duplicated on every tensor-parallel rank (DSAIndexer linear_wq_b, linear_wk,
  linear_weights_proj parallel_mode "duplicated"), so tensor parallelism does not split its work.
- Sparse MLA in its absorbed (MQA) form: each query's heads attend to its index_topk selected
  latents (min(t + 1, index_topk) keys for the causal query t), QK^T over kv_lora_rank +
  qk_rope_head_dim and PV over the kv_lora_rank latent channels (DSAttention.forward: absorbed
  layout when query and key dims equal kv_lora_rank + qk_pos_emb_head_dim and the key has one head).
- The indexer's KL loss against the main attention's head-summed distribution (compute_dsa_indexer_loss;
  DeepSeek-V3.2 report section 2.1), whose reference path forms the dense [sq, skv] scores of every
  head and all-reduces them over tensor parallelism; the fused tilelang/cudnn kernels replace it.
- Context parallelism: all-gather only (TransformerConfig: "DSAttention context parallelism currently
  supports cp_comm_type=allgather only"); the latent key and the indexer key are gathered.
Megatron's model-FLOPs count (megatron/training/training.py num_floating_point_operations) has no DSA
term: it counts a DSA layer as dense causal MLA and leaves the indexer out.
"""

from __future__ import annotations

from sp_planner.specs.attention import DSASpec
from sp_planner.specs.model import ModelSpec


def indexer_score_flops_per_token(dsa: DSASpec, seq_len: int) -> float:
    """Forward FLOPs of the indexer's scores for one query over its earlier keys, the causal half of
    seq_len on average as cost.flops halves causal attention (the ReLU, weights and head sum, a few
    FLOPs a pair beside 2 * heads * dim, are left out)."""
    return 2.0 * dsa.index_n_heads * dsa.index_head_dim * seq_len / 2


def mean_selected_keys(topk: int, seq_len: int) -> float:
    """Keys a causal query attends to, averaged over the sequence: min(t + 1, topk) for query t."""
    kept = min(topk, seq_len)
    return (kept * (kept + 1) / 2 + (seq_len - kept) * kept) / seq_len


def sparse_mla_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Forward QK^T and PV FLOPs of absorbed sparse MLA for one query, averaged over the sequence."""
    assert model.mla is not None and model.dsa is not None
    latent = model.mla.kv_lora_rank
    per_key = 2.0 * model.num_heads * ((latent + model.mla.qk_rope_head_dim) + latent)
    return per_key * mean_selected_keys(model.dsa.index_topk, seq_len)


def dsa_untimed(model: ModelSpec, seq_len: int) -> str | None:
    """Why a DSA model's plan cannot be timed, in one line with its figures; None without DSA."""
    dsa = model.dsa
    if dsa is None:
        return None
    indexer_flops = indexer_score_flops_per_token(dsa, seq_len) * seq_len
    sparse_flops = sparse_mla_flops_per_token(model, seq_len) * seq_len
    return (f"{model.name} uses DeepSeek Sparse Attention (indexer {dsa.index_n_heads} heads x "
            f"{dsa.index_head_dim}, top {dsa.index_topk} keys), which sp-planner reads but does not time yet: at "
            f"{seq_len} tokens one layer's forward is {indexer_flops:.3g} FLOPs of indexer scoring (every "
            f"tensor-parallel rank runs all of it) beside {sparse_flops:.3g} of sparse MLA, and neither, nor the "
            "indexer's loss, memory and all-gather CP, is in the step model yet (docs/cost-model.md, DSA); "
            "Megatron-LM trains it with --experimental-attention-variant dsa and all-gather CP only. Plan its "
            "dense-attention counterpart with --model DeepSeek-V3 meanwhile (its attention work differs)")
