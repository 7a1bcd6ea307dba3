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

Multi-latent attention (ModelSpec.mla; DeepSeek-V3) rotates only the decoupled part: the last
qk_rope_head_dim (r) of each query head and one r-wide key part per token, shared by the heads
(arXiv 2412.19437 section 2.1.1). Megatron-Core's MLA (multi_latent_attention.py at d98e8a64dd
lines 888-911) runs it, with apply_rope_fusion (Megatron's default: arguments.py line 2902,
--no-rope-fusion store_false; Megatron-Bridge's performance recipes set it, scripts/performance/
utils/overrides.py at 067f987df0 lines 81-82) and MLA's default YaRN rope_type
(transformer_config.py line 3306; the fusion needs it, line 3345), as two Triton kernels of
megatron/core/fusions/fused_mla_yarn_rope_apply.py, n heads of qk_nope (d) and v (dv) dims:
  query, in place (_mla_rope_fwd_inplace_kernel): reads and writes its rope slice, 2 n r elements.
  key and value (_mla_rope_fwd_kv_split_kernel): reads the up-projected n (d + dv) and the shared
    r, writes new key n (d + r) (the rotated r broadcast to every head) and value n dv tensors:
    n (2d + 2dv + r) + r elements. This copy is the split of kv and the concat of the key's two
    parts: no other kernel runs them.
  Backward: the same kernels' backward (the query's in place, the key/value's gathering d_kv and
  d_emb), timed as twice the forward like the rest; 2 + 2 launches as above. The shared r is
  read by every TP rank (the k_pos_emb each rank gathers): counted once, (tp - 1) r elements a
  token short (DeepSeek-V3 at tp 8: 448 of 90,176). Without the fusion (--no-rope-fusion, or a
  non-YaRN rope_type) Megatron splits, rotates and torch.cat's in more kernels: not modelled.

Layers without RoPE in a rope model (ModelSpec.num_nope_layers: Llama 4's every 4th layer, HF
Llama4TextAttention use_rope = config.no_rope_layers[layer_idx]; Megatron --no-rope-freq) run
none of it; the traffic and launches above are the mean over layers, as cost.window blends local
and global layers.

Models without rotary embeddings (specs.model PositionEmbedding) run none of this:
  learned_absolute: the position table's lookup and its add to the word embedding, once per
    micro-batch on the first stage (Megatron LanguageModelEmbedding.forward: word_embeddings +
    position_embeddings), and their backward: the add and the table's gradient passes are
    cost.embedding_work's (the lookup is not counted, as the word embedding's own is not). With
    sequence parallelism Megatron then all-reduces the embedding's output where a rope model
    reduce-scatters it (language_model_embedding.py reduce_scatter_embeddings): one TP all-gather
    more forward on the first stage per micro-batch, cost.tp_calls embedding_tp_forward_all_gathers.
    Not modelled: the table's s x h parameters (25M of GPT-3's 175B, Brown et al. 2020 Table 2.1,
    s = 2048).
  alibi: the per-head bias is applied inside the attention kernel (flash-attn's alibi_slopes;
    llm-foundry's Triton kernel adds a bias tensor). No kernel benchmark of its cost against the
    same kernel without it was found, so it is not modelled: the attention is timed as without it.
  none: nothing.
"""

from __future__ import annotations

from sp_planner.specs.attention import MLASpec
from sp_planner.specs.model import ROPE, ModelSpec

# Forward passes over each query and key element: one read, one write (bf16, 2 bytes each).
ROPE_PASSES = 2
# Host launches per layer (module docstring): the query's and the key's, each way.
ROPE_FORWARD_OPS, ROPE_BACKWARD_OPS = 2, 2


def has_rope(model: ModelSpec) -> bool:
    """Whether the model applies rotary embeddings to q and k (on all but its NoPE layers)."""
    return model.position_embedding == ROPE


def rope_layer_share(model: ModelSpec) -> float:
    """The share of layers that apply RoPE (module docstring): 0 without it, 1 without NoPE layers."""
    return (model.num_layers - model.num_nope_layers) / model.num_layers if has_rope(model) else 0.0


def mla_rope_elements_per_token(mla: MLASpec, num_heads: int) -> int:
    """Elements the fused MLA RoPE kernels read and write per token of one layer forward, all TP
    ranks together (module docstring): the query's rope slices in place, the key/value split."""
    n, r = num_heads, mla.qk_rope_head_dim
    query = ROPE_PASSES * n * r
    key_value = n * (2 * mla.qk_nope_head_dim + 2 * mla.v_head_dim + r) + r
    return query + key_value


def rope_elements_per_token(model: ModelSpec) -> float:
    """Query and key elements RoPE reads and writes per token of one layer forward, all TP ranks
    together, averaged over the layers (0 without it); cost.gemm_work prices them at 2 bytes each."""
    if model.mla is not None:
        per_layer = mla_rope_elements_per_token(model.mla, model.num_heads)
    else:
        per_layer = ROPE_PASSES * (model.q_size + model.kv_size)
    return per_layer * rope_layer_share(model)


def rope_host_ops(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) host launches RoPE adds to the mean layer (0, 0 without it)."""
    share = rope_layer_share(model)
    return ROPE_FORWARD_OPS * share, ROPE_BACKWARD_OPS * share
