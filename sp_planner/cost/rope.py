"""Rotary position embedding (ModelSpec.position_embedding "rope") on each layer's queries and keys,
as Megatron-Core with Transformer Engine runs it, and what models without it run instead.

What runs, per layer and micro-batch (Megatron-LM d98e8a64dd megatron/core/transformer/attention.py
lines 1508 and 1527: apply_rotary_pos_emb on the query, then on the key; with --apply-rope-fusion,
Transformer Engine's fused RoPE, one kernel each way; GPTModel builds rotary_pos_emb only for the
rope-family position types, megatron/core/models/gpt/gpt_model.py line 381):
  HBM traffic, forward:  read and write every query and key element (2 + 2 bytes): 4 (q + kv) bytes
                         a token, all TP ranks together; the backward is timed as twice the forward,
                         as every memory-bound op of the layer (cost.gemm_work).
  host ops (cost.host):  2 forward (q, k), 2 backward, in the attention part a CUDA graph of "attn"
                         captures (cost.cuda_graphs).
  saved activations:     none (TE's fused RoPE saves none of its input, cost.qk_norm); the rotated q
                         and k flash attention saves are cost.activations' Q and K.

Models without rotary embeddings (specs.model PositionEmbedding) run none of this:
  learned_absolute: the position table's lookup and its add to the word embedding, once per
    micro-batch on the first stage (Megatron LanguageModelEmbedding.forward: word_embeddings +
    position_embeddings), and their backward: the add and the table's gradient passes are
    cost.embedding_work's (the lookup is not counted, as the word embedding's own is not). Not
    modelled: with sequence parallelism Megatron then all-reduces the embedding's output where a
    rope model reduce-scatters it (language_model_embedding.py reduce_scatter_embeddings, cost.comm
    counts the reduce-scatter), one all-gather's bytes more on the first stage per micro-batch;
    and the table's s x h parameters (25M of GPT-3's 175B, Brown et al. 2020 Table 2.1, s = 2048).
  alibi: the per-head bias is applied inside the attention kernel (flash-attn's alibi_slopes;
    llm-foundry's Triton kernel adds a bias tensor). No kernel benchmark of its cost against the
    same kernel without it was found, so it is not modelled: the attention is timed as without it.
  none: nothing.
"""

from __future__ import annotations

from sp_planner.specs.model import ROPE, ModelSpec

# Forward passes over each query and key element: one read, one write (bf16, 2 bytes each).
ROPE_PASSES = 2
# Host launches per layer (module docstring): the query's and the key's, each way.
ROPE_FORWARD_OPS, ROPE_BACKWARD_OPS = 2, 2


def has_rope(model: ModelSpec) -> bool:
    """Whether the model applies rotary embeddings to q and k in every layer."""
    return model.position_embedding == ROPE


def rope_elements_per_token(model: ModelSpec) -> int:
    """Query and key elements RoPE reads and writes per token of one layer forward, all TP ranks
    together (0 without it); cost.gemm_work prices them at 2 bytes each."""
    return ROPE_PASSES * (model.q_size + model.kv_size) if has_rope(model) else 0


def rope_host_ops(model: ModelSpec) -> tuple[int, int]:
    """(forward, backward) host launches RoPE adds to a layer (0, 0 without it)."""
    return (ROPE_FORWARD_OPS, ROPE_BACKWARD_OPS) if has_rope(model) else (0, 0)
