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
  non-YaRN rope_type) Megatron splits, rotates and torch.cat's in more kernels: not modelled,
  except under DeepSeek Sparse Attention, which never fuses it.

DeepSeek Sparse Attention (ModelSpec.dsa; DeepSeek-V3.2): TransformerConfig asserts RoPE fusion off
(transformer_config.py at d98e8a64dd line 3163) and the layer is AbsorbedMLASelfAttention
(experimental_attention_variant_module_specs.py line 130), whose qkv_up_proj_and_rope_apply
(experimental_attention_variant/absorbed_mla.py lines 538-683) runs, unfused: apply_rotary_pos_emb
on the query's n r-wide slices and on the shared r-wide key (lines 639-658, mla_rotary_interleaved),
each rope_utils.py _apply_rotary_pos_emb_bshd (lines 92-156): the even/odd torch.cat, then the six
PyTorch kernels and the bf16 cos and sin the indexer's RoPE runs (cost.dsa_elementwise,
MLA_ROPE_FWD_BYTES_PER_ELEM, COS_SIN_BYTES_PER_ELEM a call); then the torch.cat of the absorbed
query's n (kv_lora_rank + r) and of the latent key's kv_lora_rank + r (lines 662-664; no value: the
latent is the value). No kv up-projection output is split (k's up-projection is absorbed into the
query), so none of the fused kernels' key/value copy runs. Backward, timed on its own (not twice the
forward: the cats' backward are views, and cos and sin take no gradient): the same PyTorch ops'
backward (cost.dsa_elementwise MLA_ROPE_BWD_BYTES_PER_ELEM) and the query split's (line 626's
torch.split: a torch.cat of its nope and rope gradients, n (qk_nope + r)). As the fused kernels,
in the forward: full recompute and mla_up_proj re-run it. The kv_compressed and k_pos_emb each TP
rank holds whole are counted once, as above; the launches stay the fused count (cost.dsa_host
counts the indexer's, not these). Not counted: the einsum's permuted output that
q_absorbed.contiguous() copies (line 633; the GEMM's, not RoPE's).

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

from sp_planner.cost.dsa_elementwise import (
    COS_SIN_BYTES_PER_ELEM,
    MLA_ROPE_BWD_BYTES_PER_ELEM,
    MLA_ROPE_FWD_BYTES_PER_ELEM,
    PASS_BYTES_PER_ELEM,
)
from sp_planner.cost.dtypes import BF16_BYTES
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


# The absorbed MLA's unfused RoPE calls per layer forward: the query's and the key's (module docstring).
DSA_ROPE_CALLS = 2


def runs_unfused_rope(model: ModelSpec) -> bool:
    """Whether Megatron runs the model's RoPE as unfused PyTorch ops: under DSA (module docstring)."""
    return model.dsa is not None and model.mla is not None


def dsa_rope_bytes_per_token(mla: MLASpec, num_heads: int) -> tuple[int, int]:
    """(forward, backward) HBM bytes of a DSA layer's unfused RoPE and its torch.cat's per token, all
    TP ranks together (module docstring). DeepSeek-V3.2 (128 heads, nope 128, latent 512, r 64):
    forward the query's RoPE 229,376, the key's 1,792, cos and sin 5,632, the query's cat 294,912,
    the key's 2,304: 534,016; backward the query's 327,680, the key's 2,560 and the split's 98,304:
    428,544."""
    n, r, latent = num_heads, mla.qk_rope_head_dim, mla.kv_lora_rank + mla.qk_rope_head_dim
    fwd = (MLA_ROPE_FWD_BYTES_PER_ELEM * (n * r + r) + DSA_ROPE_CALLS * COS_SIN_BYTES_PER_ELEM * r
           + PASS_BYTES_PER_ELEM * (n * latent + latent))
    bwd = MLA_ROPE_BWD_BYTES_PER_ELEM * (n * r + r) + PASS_BYTES_PER_ELEM * n * (mla.qk_nope_head_dim + r)
    return fwd, bwd


def rope_elements_per_token(model: ModelSpec) -> float:
    """Query and key elements the fused RoPE kernels read and write per token of one layer forward,
    all TP ranks together, averaged over the layers (0 without it, or unfused); cost.gemm_work prices
    them at 2 bytes each, the backward twice the forward."""
    if runs_unfused_rope(model):
        return 0.0
    if model.mla is not None:
        per_layer = mla_rope_elements_per_token(model.mla, model.num_heads)
    else:
        per_layer = ROPE_PASSES * (model.q_size + model.kv_size)
    return per_layer * rope_layer_share(model)


def unfused_rope_bytes_per_token(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) HBM bytes of unfused RoPE per token of one layer, all TP ranks together,
    averaged over the layers, each way on its own (cost.gemm_work); (0, 0) where the kernels are fused."""
    if not runs_unfused_rope(model):
        return 0.0, 0.0
    assert model.mla is not None
    fwd, bwd = dsa_rope_bytes_per_token(model.mla, model.num_heads)
    share = rope_layer_share(model)
    return fwd * share, bwd * share


def rope_forward_bytes_per_token(model: ModelSpec) -> float:
    """RoPE's forward HBM bytes per token of one layer, fused or not (what a recompute re-runs)."""
    return BF16_BYTES * rope_elements_per_token(model) + unfused_rope_bytes_per_token(model)[0]


def rope_host_ops(model: ModelSpec) -> tuple[float, float]:
    """(forward, backward) host launches RoPE adds to the mean layer (0, 0 without it)."""
    share = rope_layer_share(model)
    return ROPE_FORWARD_OPS * share, ROPE_BACKWARD_OPS * share
