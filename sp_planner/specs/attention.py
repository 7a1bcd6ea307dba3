"""The attention a model's layers run beside plain causal softmax attention: local windows, latent
(MLA) projections, DeepSeek's sparse attention (DSA) and the softmax's own kind."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model_limits import MAX_HEAD_DIM, MAX_HEADS, MAX_LAYERS, MAX_WIDTH

# The attention softmax, in Megatron-Core's names (TransformerConfig.softmax_type, --softmax-type;
# Megatron-LM dbc4129d18 "Sink Attention [gpt-oss 3/5]") and Transformer Engine's
# (DotProductAttention softmax_type): vanilla; off-by-one, a fixed 1 added to each row's
# denominator (Miller 2023, "Attention is off by one"); learnable, one learned logit per head in
# every row's denominator and no value (gpt-oss's attention sinks: HF GptOssAttention `sinks`,
# eager_attention_forward concatenates them to the logits and drops their column after the softmax).
SoftmaxType = Literal["vanilla", "off-by-one", "learnable"]
# How a DSA model's lightning indexer trains (DSASpec.indexer_loss): "none", Megatron-LM's default
# (no --dsa-indexer-loss-coeff: the indexer runs under no_grad), or "sparse", DeepSeek-V3.2's sparse
# training stage (its KL loss on the selected keys, --dsa-indexer-use-sparse-loss).
IndexerLoss = Literal["none", "sparse"]
# What sp-plan --dsa-indexer-loss accepts: also "dense" (the warm-up stage's loss over every earlier
# key), which it refuses: no tilelang kernel computes it (cost.dsa).
IndexerLossChoice = Literal["none", "sparse", "dense"]
VANILLA: SoftmaxType = "vanilla"
LEARNABLE: SoftmaxType = "learnable"


class WindowSpec(FrozenModel):
    """Local attention layers, repeating `local_layers` local then `global_layers` full-attention
    layers from the first layer on (Mistral 7B v0.1: every layer local; Gemma 2: 1:1; Gemma 3:
    5:1; Llama 4: 3:1). A sliding local layer's query attends to the `window_tokens` keys before
    it; a chunked one (Llama 4's attention_chunk_size) to the keys of its own `window_tokens`-long
    chunk, causally (HF Llama4 chunked mask: block-diagonal causal)."""

    window_tokens: int = Field(gt=0, le=2**40)
    kind: Literal["sliding", "chunked"] = "sliding"
    local_layers: int = Field(default=1, gt=0, le=MAX_LAYERS)
    global_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    # Gemma 2 caps attention logits with tanh (50.0); run inside the flash kernel (FlashAttention
    # >= 2.6 softcap) at the same efficiency (assumption, no measurement found).
    logit_softcapping: float | None = Field(default=None, gt=0)


class MLASpec(FrozenModel):
    """Multi-head latent attention (DeepSeek-V2/V3; HF config names). Training runs it as ordinary
    attention over num_heads decompressed heads: queries and keys of qk_nope_head_dim +
    qk_rope_head_dim (the decoupled RoPE part; the key's RoPE part is one per token, shared by the
    heads), values of v_head_dim. The latent (kv_lora_rank) is what inference caches, not what
    context parallelism moves: Ulysses' all-to-all and the ring pass the per-head Q/K/V."""

    q_lora_rank: int | None = Field(default=None, gt=0, le=MAX_WIDTH)  # None: no query compression
    kv_lora_rank: int = Field(gt=0, le=MAX_WIDTH)
    qk_nope_head_dim: int = Field(gt=0, le=MAX_HEAD_DIM)
    qk_rope_head_dim: int = Field(gt=0, le=MAX_HEAD_DIM)
    v_head_dim: int = Field(gt=0, le=MAX_HEAD_DIM)


class DSASpec(FrozenModel):
    """DeepSeek Sparse Attention on MLA layers (DeepSeek-V3.2; HF config names of model_type
    deepseek_v32). A lightning indexer scores each query against every earlier token, the sum over
    index_n_heads heads of w * ReLU(q.k) on index_head_dim-wide queries and one shared key (DeepSeek
    V3.2 report eq. 1), and the query attends only to its index_topk best, MLA in its MQA form over
    the latent (Megatron-LM d98e8a64dd experimental_attention_variant/dsa.py: DSAIndexer,
    DSAttention; TransformerConfig dsa_indexer_n_heads, _head_dim, _topk). sp-planner times it under
    Megatron-LM where sparse MLA's kernel rates are published (cost.dsa, cost.dsa_times)."""

    index_n_heads: int = Field(gt=0, le=MAX_HEADS)
    index_head_dim: int = Field(gt=0, le=MAX_HEAD_DIM)
    index_topk: int = Field(gt=0, le=2**40)
    # Whether the indexer trains with its sparse KL loss (IndexerLoss; cost.dsa_loss prices it).
    indexer_loss: IndexerLoss = "none"

    def indexer_params_per_layer(self, hidden_size: int, q_lora_rank: int, *, norm: bool = True) -> int:
        """The lightning indexer's weights in one layer, none with a bias (Megatron-LM d98e8a6 dsa.py
        DSAIndexer lines 1159-1206): linear_wq_b q_lora_rank x heads x dim, linear_wk hidden x dim,
        linear_weights_proj hidden x heads and, with `norm`, k_norm's LayerNorm (weight and bias of
        dim). DeepSeek-V3.2: 12,582,912 + 917,504 + 458,752 + 256 = 13,959,424."""
        heads, dim = self.index_n_heads, self.index_head_dim
        weights = q_lora_rank * heads * dim + hidden_size * dim + hidden_size * heads
        return weights + (2 * dim if norm else 0)
