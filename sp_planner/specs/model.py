"""Transformer architecture spec and its parameter counts."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from sp_planner.specs.attention import VANILLA, DSASpec, MLASpec, SoftmaxType, WindowSpec
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model_limits import MAX_HEAD_DIM, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH
from sp_planner.specs.moe import MoESpec

# How a model encodes token positions (ModelSpec.position_embedding), in the names of Megatron's
# --position-embedding-type (megatron/training/arguments.py at d98e8a64dd, lines 2397-2398: choices
# learned_absolute, rope, yarn, mrope, relative, none; default learned_absolute) where it has one:
#   rope: rotary embeddings applied to q and k in every layer (Su et al. 2021, arXiv 2104.09864;
#     Megatron's yarn and mrope are rope with other frequencies, applied the same way); cost.rope.
#   learned_absolute: a learned table of positions added to the word embedding once, before the
#     first layer (GPT-2/GPT-3; Megatron LanguageModelEmbedding; llm-foundry MPTConfig
#     learned_pos_emb, its default).
#   alibi: a per-head linear bias on the attention scores, inside the attention kernel (Press et al.
#     2022, arXiv 2108.12409; HF MPT attn_config.alibi, BLOOM); not a Megatron choice.
#   none: no position signal (NoPE).
PositionEmbedding = Literal["rope", "learned_absolute", "alibi", "none"]
ROPE: PositionEmbedding = "rope"
LEARNED_ABSOLUTE: PositionEmbedding = "learned_absolute"
ALIBI: PositionEmbedding = "alibi"


def softmax_scale_or_default(softmax_scale: float | None, qk_head_dim: int) -> float:
    """The factor on q.k before the softmax: the one given, else 1/sqrt(q/k head dim) (the model
    spec's, sp-run's RunConfig and the report's view of a run all read it here)."""
    return softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(qk_head_dim)


class ModelSpec(FrozenModel):
    """Decoder-only transformer. Field names follow Hugging Face config.json where they exist."""

    name: str = Field(min_length=1)
    hidden_size: int = Field(gt=0, le=MAX_WIDTH)
    intermediate_size: int = Field(gt=0, le=MAX_WIDTH)
    num_layers: int = Field(gt=0, le=MAX_LAYERS)
    num_heads: int = Field(gt=0, le=MAX_HEADS)
    num_kv_heads: int = Field(gt=0, le=MAX_HEADS)
    head_dim: int = Field(gt=0, le=MAX_HEAD_DIM)
    vocab_size: int = Field(gt=0, le=MAX_VOCAB)
    tie_word_embeddings: bool = False
    # swiglu/geglu have three projections (gate, up, down); gelu has two (up, down).
    mlp: Literal["swiglu", "geglu", "gelu"] = "swiglu"
    qkv_bias: bool = False
    # GPT-3 style: LayerNorm with bias and biases on every linear layer.
    linear_bias: bool = False
    # A weighted RMSNorm over head_dim of every query and key head, before RoPE (HF Qwen3Attention and
    # Gemma3Attention q_norm/k_norm; Megatron --qk-layernorm, TENorm per head): cost.qk_norm. Not
    # Llama 4's weightless L2 norm (Megatron --qk-l2-norm), nor MLA's latent norms.
    qk_norm: bool = False
    moe: MoESpec | None = None
    # With MLA, num_kv_heads = num_heads and head_dim = (qk_nope + qk_rope + v_head_dim) / 2, the
    # width whose Q+K+V+O, attention FLOPs (QK^T over qk dims, PV over v) and CP traffic equal
    # MLA's as training runs it; the projection weights come from `mla` (checked below).
    mla: MLASpec | None = None
    # DeepSeek Sparse Attention on the MLA layers (DSASpec; DeepSeek-V3.2): timed by cost.dsa_times.
    dsa: DSASpec | None = None
    window: WindowSpec | None = None
    # PositionEmbedding above; rope where unstated, as every file written before the field meant.
    position_embedding: PositionEmbedding = ROPE
    # Layers of a rope model that rotate nothing (NoPE layers; the count is what cost.rope's layer
    # mean needs): Llama 4's every 4th (HF Llama4TextConfig no_rope_layers, 0 = NoPE; Megatron
    # --no-rope-freq, attention.py at d98e8a64dd line 1321 drops rotary_pos_emb on those layers).
    num_nope_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    # Dropout probabilities in training, in Megatron's names (--hidden-dropout, --attention-dropout,
    # both 0.1 by default: megatron/training/arguments.py at f2e5db402c lines 947-950): the hidden
    # dropout on each layer's two bias-dropout-add outputs and on the embedding's output, the
    # attention dropout on the softmax probabilities (cost.dropout). 0 where unstated: Llama-style
    # recipes train without (Megatron-Bridge llama_bridge.py hidden_dropout=0.0; llm-foundry
    # MPTConfig resid_pdrop, emb_pdrop and attn_pdrop 0.0); the GPT models Megatron-LM trained with
    # its defaults state 0.1.
    hidden_dropout: float = Field(default=0.0, ge=0, lt=1)
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    # The factor on q.k before the softmax where the model's is not 1/sqrt(q/k head dim) (None: it
    # is): Gemma 2/3 query_pre_attn_scalar**-0.5 (HF Gemma2Attention/Gemma3Attention `scaling`);
    # DeepSeek-V3's YaRN mscale(40, mscale_all_dim)^2 / sqrt(192) (HF DeepseekV3Attention, Megatron
    # MLASelfAttention softmax_scale); an imported llama-style config's YaRN attention_factor^2 /
    # sqrt(head_dim) (catalog.hf_rope). The executor runs it (sp-run); time and FLOPs do not depend on it.
    softmax_scale: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    # The attention softmax (SoftmaxType, specs.attention): learnable for gpt-oss's sinks; it decides
    # which attention kernels and context-parallel paths can run the model (flags), not its time.
    softmax_type: SoftmaxType = VANILLA
    # Multi-token prediction depths trained with the model (DeepSeek-V3, arXiv 2412.19437 section
    # 2.2; Megatron --mtp-num-layers, sp-plan --mtp-layers; 0, Megatron's default: none). Each depth
    # norms the embedding of the tokens shifted once more and the previous hidden state, projects
    # their concatenation 2h -> h (eh_proj), runs one transformer layer of the last decoder layer's
    # spec and a final norm, then the shared output layer and its loss again, all on the last
    # pipeline stage's last chunk (Megatron-LM d98e8a6 multi_token_prediction.py lines 825-831,
    # 1157-1186, 1247, 1274-1312; gpt_layer_specs.py lines 765-772): cost.mtp.
    mtp_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    hf_repo: str | None = None
    sources: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelSpec":
        if self.mla is not None:
            a = self.mla
            width = a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim
            if self.num_kv_heads != self.num_heads or 2 * self.head_dim != width:
                raise ValueError(
                    f"with mla, num_kv_heads must equal num_heads ({self.num_heads}) and head_dim must be "
                    f"(qk_nope_head_dim + qk_rope_head_dim + v_head_dim) / 2 = {width / 2:g}")
        if self.dsa is not None and self.mla is None:
            raise ValueError("dsa (DeepSeek Sparse Attention) selects keys for MLA layers: it needs mla")
        if self.num_nope_layers and (self.position_embedding != ROPE or self.num_nope_layers >= self.num_layers):
            raise ValueError(f"num_nope_layers ({self.num_nope_layers}) must be below num_layers ({self.num_layers}) "
                             f"and needs position_embedding rope (got {self.position_embedding!r}); a model with "
                             "no RoPE on any layer is position_embedding none")
        if self.moe is not None and self.moe.first_dense_layers >= self.num_layers:
            raise ValueError(f"moe.first_dense_layers ({self.moe.first_dense_layers}) must be below "
                             f"num_layers ({self.num_layers})")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        return self

    # Parameter counts follow the layer shapes of Megatron-LM's GPTModel
    # (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training", eq. 2 generalised
    # to GQA and gated MLPs).
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def num_mlp_matrices(self) -> int:
        return 2 if self.mlp == "gelu" else 3

    @property
    def mla_params_per_layer(self) -> int:
        """MLA projections (DeepSeek-V3 modeling: q_a/q_b with q_a_layernorm, kv_a_proj_with_mqa,
        kv_a_layernorm, kv_b_proj, o_proj)."""
        assert self.mla is not None
        a, h, heads = self.mla, self.hidden_size, self.num_heads
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = (h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * heads * qk) if a.q_lora_rank else h * heads * qk
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
        kv += a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv + heads * a.v_head_dim * h

    @property
    def indexer_params_per_layer(self) -> int:
        """DeepSeek Sparse Attention's lightning indexer in one layer (DSASpec), 0 without DSA."""
        if self.dsa is None or self.mla is None:
            return 0
        return self.dsa.indexer_params_per_layer(self.hidden_size, self.mla.q_lora_rank or self.hidden_size)

    @property
    def attention_params_per_layer(self) -> int:
        if self.mla is not None:
            return self.mla_params_per_layer + self.indexer_params_per_layer
        h = self.hidden_size
        weights = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        bias = (self.q_size + 2 * self.kv_size) if (self.qkv_bias or self.linear_bias) else 0
        bias += h if self.linear_bias else 0
        return weights + bias

    def _dense_mlp_params(self, ffn: int) -> int:
        h = self.hidden_size
        bias = (ffn + h) if self.linear_bias else 0
        return self.num_mlp_matrices * h * ffn + bias

    @property
    def qk_head_dim(self) -> int:
        """Head dim of queries and keys: MLA's qk_nope + qk_rope (192 for DeepSeek-V3), else head_dim."""
        return self.head_dim if self.mla is None else self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim

    @property
    def attention_scale(self) -> float:
        """The softmax scale the model's attention applies: softmax_scale, else 1/sqrt(qk_head_dim)."""
        return softmax_scale_or_default(self.softmax_scale, self.qk_head_dim)

    @property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts (0 for dense models)."""
        return 0 if self.moe is None else (self.num_layers - self.moe.first_dense_layers) // self.moe.layer_step

    @property
    def num_local_layers(self) -> int:
        """Layers with local (sliding or chunked) attention: the pattern from the first layer on,
        cut at num_layers (Gemma 3 27B: 62 layers of 5 local + 1 global -> 52 local)."""
        if self.window is None:
            return 0
        w = self.window
        period = w.local_layers + w.global_layers
        whole, rest = divmod(self.num_layers, period)
        return whole * w.local_layers + min(rest, w.local_layers)

    @property
    def routed_expert_params_per_layer(self) -> int:
        """The routed experts' weights of one MoE layer (what expert parallelism splits)."""
        if self.moe is None:
            return 0
        return self.moe.num_experts * self._dense_mlp_params(self.moe.moe_intermediate_size)

    @property
    def mean_mlp_params_per_layer(self) -> float:
        """MLP parameters averaged over the layers (dense first layers and MoE layers)."""
        return self._mean_over_layers(self.mlp_params_per_layer if self.moe is not None else 0)

    @property
    def mean_active_mlp_params_per_layer(self) -> float:
        """MLP parameters one token passes through, averaged over the layers."""
        return self._mean_over_layers(self.active_mlp_params_per_layer if self.moe is not None else 0)

    def _mean_over_layers(self, moe_layer_mlp_params: float) -> float:
        """Dense layers' MLP parameters and `moe_layer_mlp_params` on each MoE layer, averaged."""
        dense = self.num_layers - self.num_moe_layers
        total = dense * self._dense_mlp_params(self.intermediate_size) + self.num_moe_layers * moe_layer_mlp_params
        return total / self.num_layers

    @property
    def mlp_params_per_layer(self) -> int:
        """All MLP parameters of one layer (every expert for MoE)."""
        if self.moe is None:
            return self._dense_mlp_params(self.intermediate_size)
        experts = self.moe.num_experts + self.moe.num_shared_experts
        router = self.hidden_size * self.moe.num_experts
        return experts * self._dense_mlp_params(self.moe.moe_intermediate_size) + router

    @property
    def active_mlp_params_per_layer(self) -> int:
        """MLP parameters one token passes through (top_k routed plus shared experts for MoE)."""
        if self.moe is None:
            return self.mlp_params_per_layer
        experts = self.moe.top_k + self.moe.num_shared_experts
        router = self.hidden_size * self.moe.num_experts
        return experts * self._dense_mlp_params(self.moe.moe_intermediate_size) + router

    @property
    def norm_params_per_layer(self) -> int:
        per_norm = 2 * self.hidden_size if self.linear_bias else self.hidden_size
        return 2 * per_norm

    @property
    def params_per_layer(self) -> int:
        return self.attention_params_per_layer + self.mlp_params_per_layer + self.norm_params_per_layer

    @property
    def mtp_eh_proj_params(self) -> int:
        """One MTP depth's eh_proj: 2h x h, no bias (multi_token_prediction.py lines 1174-1186)."""
        return 2 * self.hidden_size * self.hidden_size

    @property
    def mtp_norm_params(self) -> int:
        """One MTP depth's three norms: enorm, hnorm, final_layernorm (lines 1157-1167, 1247), each
        a layer norm's (norm_params_per_layer / 2)."""
        return 3 * (self.norm_params_per_layer // 2)

    @property
    def mtp_extra_params(self) -> int:
        """One MTP depth's parameters beyond its transformer layer: eh_proj and its three norms."""
        return self.mtp_eh_proj_params + self.mtp_norm_params

    @property
    def embedding_params(self) -> int:
        """Input embedding plus the output projection unless tied, plus the final norm."""
        table = self.vocab_size * self.hidden_size
        final_norm = 2 * self.hidden_size if self.linear_bias else self.hidden_size
        return table * (1 if self.tie_word_embeddings else 2) + final_norm

    @property
    def num_params(self) -> int:
        per_layer = self.attention_params_per_layer + self.norm_params_per_layer
        return round(self.num_layers * (per_layer + self.mean_mlp_params_per_layer)) + self.embedding_params

    @property
    def num_active_params(self) -> int:
        per_layer = self.attention_params_per_layer + self.norm_params_per_layer
        return round(self.num_layers * (per_layer + self.mean_active_mlp_params_per_layer)) + self.embedding_params
