"""Transformer architecture spec and its parameter counts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sp_planner.specs.base import FrozenModel


# Upper bounds far above any published model (Llama-3.1-405B: hidden 16,384, 126 layers, 128 heads,
# vocab 128,256; DeepSeek-V3: 256 experts), low enough that every count stays exact in int64 and
# float64 arithmetic: a typo such as hidden_size 1e15 is refused with the range instead of planned.
MAX_WIDTH = 2**20  # hidden, intermediate and expert sizes
MAX_LAYERS = 2**14
MAX_HEADS = 2**14
MAX_HEAD_DIM = 2**12
MAX_VOCAB = 2**24
MAX_EXPERTS = 2**14


class MoESpec(FrozenModel):
    num_experts: int = Field(gt=0, le=MAX_EXPERTS)
    top_k: int = Field(gt=0, le=MAX_EXPERTS)
    moe_intermediate_size: int = Field(gt=0, le=MAX_WIDTH)
    num_shared_experts: int = Field(default=0, ge=0, le=MAX_EXPERTS)


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
    moe: MoESpec | None = None
    hf_repo: str | None = None
    sources: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelSpec":
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
    def attention_params_per_layer(self) -> int:
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
    def embedding_params(self) -> int:
        """Input embedding plus the output projection unless tied, plus the final norm."""
        table = self.vocab_size * self.hidden_size
        final_norm = 2 * self.hidden_size if self.linear_bias else self.hidden_size
        return table * (1 if self.tie_word_embeddings else 2) + final_norm

    @property
    def num_params(self) -> int:
        return self.num_layers * self.params_per_layer + self.embedding_params

    @property
    def num_active_params(self) -> int:
        per_layer = (
            self.attention_params_per_layer + self.active_mlp_params_per_layer + self.norm_params_per_layer
        )
        return self.num_layers * per_layer + self.embedding_params
