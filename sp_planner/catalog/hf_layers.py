"""What a decoder layer holds, read from a Hugging Face config.json: the MLP's activation, q/k/v
biases, the experts (Mixtral, Qwen3-MoE, DeepSeek-V3, Llama 4), the local-attention pattern
(Mistral, Mixtral, Qwen, Llama 4) and DeepSeek-V3's latent attention. Field meanings follow the
transformers configuration classes named at each reader."""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog.hf_fields import count, error, flag, int_list, positive_int, positive_number
from sp_planner.specs.attention import MLASpec, WindowSpec
from sp_planner.specs.moe import GROUP_RANK_SCORES, MoESpec

# Gated activations: the MLP has gate, up and down projections.
_ACTIVATION_TO_MLP = {
    "silu": "swiglu",
    "swish": "swiglu",
    "gelu": "geglu",
    "gelu_new": "geglu",
    "gelu_pytorch_tanh": "geglu",
}


def mlp(cfg: dict, path: Path, key: str = "hidden_act", default: str = "silu") -> str:
    activation = cfg.get(key, default)
    if not isinstance(activation, str) or activation not in _ACTIVATION_TO_MLP:
        raise error(
            path,
            f"field {key!r} {activation!r} is not supported; expected one of "
            f"{', '.join(sorted(_ACTIVATION_TO_MLP))}",
        )
    return _ACTIVATION_TO_MLP[activation]


def qkv_bias(cfg: dict, model_type: str, path: Path) -> bool:
    # Qwen2Attention always has q/k/v biases; Mistral and Mixtral never do; Llama, Qwen3 and Gemma
    # follow attention_bias (which also adds an o_proj bias of hidden_size per layer, left uncounted).
    if model_type == "qwen2":
        return True
    if model_type in ("llama", "qwen3", "qwen3_moe", "deepseek_v3", "llama4_text", "gemma2", "gemma3_text"):
        return flag(cfg, "attention_bias", path)
    if model_type == "gpt_oss":  # GptOssConfig's attention_bias defaults to true
        return flag(cfg, "attention_bias", path, default=True)
    if model_type == "glm4_moe":  # Glm4MoeAttention: q/k/v biases by attention_bias, o_proj none
        return flag(cfg, "attention_bias", path)
    return False


def moe(cfg: dict, model_type: str, path: Path, intermediate_size: int) -> MoESpec | None:
    if model_type == "qwen3_moe":
        # Qwen3MoeConfig: every decoder_sparse_step-th layer is MoE unless listed in mlp_only_layers.
        if cfg.get("mlp_only_layers") or positive_int(cfg, "decoder_sparse_step", path, default=1) != 1:
            raise error(path, "qwen3_moe with mlp_only_layers or decoder_sparse_step != 1 is not supported "
                        "(only the first layers may be dense)")
        experts, top_k = expert_counts(cfg, path, "num_experts")
        # Qwen3MoeSparseMoeBlock: softmax over every expert, top k, renormalised only by
        # norm_topk_prob (Qwen3MoeConfig default false; Qwen3-30B-A3B and -235B-A22B set it true).
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=positive_int(cfg, "moe_intermediate_size", path),
                       router_pre_softmax=not flag(cfg, "norm_topk_prob", path))
    if model_type == "deepseek_v3":
        # DeepseekV3Config: layers from first_k_dense_replace on are MoE (moe_layer_freq 1).
        if positive_int(cfg, "moe_layer_freq", path, default=1) != 1:
            raise error(path, "deepseek_v3 with moe_layer_freq != 1 is not supported")
        shared = count(cfg, "n_shared_experts", path)
        experts, top_k = expert_counts(cfg, path, "n_routed_experts")
        _check_score_function(cfg, path)
        groups, open_groups = router_groups(cfg, path, default_groups=8, default_open=4)  # DeepseekV3Config's
        # DeepseekV3TopkRouter adds e_score_correction_bias to the sigmoid scores for the choice and
        # scales the chosen weights by routed_scaling_factor (DeepseekV3Config default 2.5).
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=positive_int(cfg, "moe_intermediate_size", path),
                       num_shared_experts=shared, first_dense_layers=count(cfg, "first_k_dense_replace", path),
                       router_score_function="sigmoid", score_correction_bias=True,
                       routed_scaling_factor=positive_number(cfg, "routed_scaling_factor", path, 2.5),
                       router_groups=groups, router_group_topk=open_groups,
                       router_topk_norm=sigmoid_topk_norm(cfg, path, top_k))
    if model_type == "llama4_text":
        # Llama4TextConfig: moe_layers = range(step - 1, num_layers, step) unless listed otherwise;
        # Llama4TextMoe has one shared expert of the expert width and a sigmoid router.
        step = positive_int(cfg, "interleave_moe_layer_step", path, default=1)
        layers = positive_int(cfg, "num_hidden_layers", path)
        listed = int_list(cfg, "moe_layers", path)
        if listed is not None and listed != list(range(step - 1, layers, step)):
            raise error(path, f"moe_layers other than every interleave_moe_layer_step ({step})-th layer are not "
                        "supported")
        experts, top_k = expert_counts(cfg, path, "num_local_experts", top_k_default=1)
        if top_k != 1:
            # Llama4TextMoe scales each expert's input by its weight, which Megatron runs with
            # top-1 routing only (--moe-apply-probs-on-input; MoESpec.probs_on_input).
            raise error(path, f"llama4_text with num_experts_per_tok {top_k} is not supported (Llama 4 routes "
                        "each token to 1 expert, whose weight scales the expert's input)")
        return MoESpec(num_experts=experts, top_k=top_k,
                       moe_intermediate_size=positive_int(cfg, "intermediate_size", path),
                       num_shared_experts=1, layer_step=step, router_score_function="sigmoid",
                       probs_on_input=True)
    if model_type != "mixtral":
        return None
    # Mixtral's experts are full-width SwiGLU MLPs of intermediate_size (MixtralSparseMoeBlock).
    experts, top_k = expert_counts(cfg, path, "num_local_experts")
    return MoESpec(num_experts=experts, top_k=top_k, moe_intermediate_size=intermediate_size)


def _check_score_function(cfg: dict, path: Path) -> None:
    """DeepseekV3Config scoring_func must be sigmoid (its default). No implementation trains another:
    transformers' DeepseekV3TopkRouter.forward scores with router_logits.sigmoid() whatever the field
    says (models/deepseek_v3/modeling_deepseek_v3.py), and the trust_remote_code modeling_deepseek.py
    of DeepSeek-V3 and of Kimi K2 (MoEGate.forward) raises NotImplementedError for anything else."""
    value = cfg.get("scoring_func", "sigmoid")
    if value == "softmax":
        raise error(path, "field 'scoring_func' \"softmax\" is not supported: no implementation of DeepSeek-V3's "
                    "architecture (deepseek_v3, kimi_k2) trains it (transformers' DeepseekV3TopkRouter scores with "
                    "a sigmoid whatever the field says, modeling_deepseek.py raises NotImplementedError); set "
                    "\"sigmoid\"")
    if value != "sigmoid":
        raise error(path, f"field 'scoring_func' must be \"sigmoid\", got {value!r}")


def expert_counts(cfg: dict, path: Path, experts_key: str, top_k_default: int | None = None) -> tuple[int, int]:
    """(routed experts, experts per token), refusing more experts per token than there are: a token
    goes to num_experts_per_tok distinct experts (the routers' torch.topk over the experts)."""
    experts = positive_int(cfg, experts_key, path)
    top_k = positive_int(cfg, "num_experts_per_tok", path, default=top_k_default)
    if top_k > experts:
        raise error(path, f"num_experts_per_tok {top_k} exceeds {experts_key} {experts}: each token is routed "
                    "to that many distinct experts")
    return experts, top_k


def _window(cfg: dict, model_type: str, path: Path) -> WindowSpec | None:
    """Mistral/Mixtral: `sliding_window` (null = full attention) on every layer. Qwen2/Qwen3 turn
    windows on with `use_sliding_window` for layers from max_window_layers on: refused, not
    silently planned as full attention."""
    if model_type in ("mistral", "mixtral"):
        if cfg.get("sliding_window") is None:
            return None
        return WindowSpec(window_tokens=positive_int(cfg, "sliding_window", path))
    if model_type in ("qwen2", "qwen3", "qwen3_moe") and flag(cfg, "use_sliding_window", path):
        raise error(path, "use_sliding_window true is not supported (Qwen's per-layer windows are not modelled)")
    return None


def _llama4_nope_interval(cfg: dict, path: Path) -> int:
    """Llama4TextConfig: no_rope_layers defaults to 1 (RoPE, chunked attention) except every
    no_rope_layer_interval-th (4) layer, 0 (NoPE, attention to the whole sequence); other lists are
    refused. The interval."""
    layers = positive_int(cfg, "num_hidden_layers", path)
    interval = positive_int(cfg, "no_rope_layer_interval", path, default=4)
    rope = int_list(cfg, "no_rope_layers", path) or [int((i + 1) % interval != 0) for i in range(layers)]
    if rope != [int((i + 1) % interval != 0) for i in range(layers)]:
        raise error(path, "no_rope_layers other than a full-attention layer every no_rope_layer_interval "
                    f"({interval}) layers are not supported (the chunked:global pattern is not modelled)")
    return interval


def attention_layers(cfg: dict, model_type: str, path: Path) -> tuple[WindowSpec | None, int]:
    """(the window, the layers without RoPE). Llama 4 reads both from its NoPE interval, once: its
    RoPE layers attend within attention_chunk_size chunks, every interval-th layer has no RoPE
    (no_rope_layers 0: Llama4TextAttention use_rope = config.no_rope_layers[layer_idx]) and
    attends to the whole sequence. The other families: `window`, and every layer rotates."""
    if model_type != "llama4_text":
        return _window(cfg, model_type, path), 0
    interval = _llama4_nope_interval(cfg, path)
    chunk = positive_int(cfg, "attention_chunk_size", path, default=8192)
    chunked = WindowSpec(window_tokens=chunk, kind="chunked", local_layers=interval - 1, global_layers=1)
    return chunked, positive_int(cfg, "num_hidden_layers", path) // interval


def mla(cfg: dict, model_type: str, path: Path) -> MLASpec | None:
    """DeepseekV3Config's latent attention (q_lora_rank may be null: no query compression)."""
    if model_type != "deepseek_v3":
        return None
    q_lora = cfg.get("q_lora_rank")
    return MLASpec(q_lora_rank=None if q_lora is None else positive_int(cfg, "q_lora_rank", path),
                   kv_lora_rank=positive_int(cfg, "kv_lora_rank", path),
                   qk_nope_head_dim=positive_int(cfg, "qk_nope_head_dim", path),
                   qk_rope_head_dim=positive_int(cfg, "qk_rope_head_dim", path),
                   v_head_dim=positive_int(cfg, "v_head_dim", path))


def mla_head_dim(spec: MLASpec, path: Path) -> int:
    width = spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim
    if width % 2:
        raise error(path, f"qk_nope_head_dim + qk_rope_head_dim + v_head_dim = {width} is odd; the planner's "
                    "MLA head width (their half) must be whole")
    return width // 2


def mtp_note(cfg: dict, path: Path, *, trained_by: str, how: str, hf_model: str) -> str | None:
    """import_notes' line on a checkpoint's multi-token-prediction layers (num_nextn_predict_layers:
    DeepseekV3Config, Glm4MoeConfig), None where it has none: ModelSpec.mtp_layers stays 0 unless
    sp-plan --mtp-layers asks, as transformers' `hf_model` does not build them; `trained_by` does
    (`how`: what it reads)."""
    layers = count(cfg, "num_nextn_predict_layers", path)
    if not layers:
        return None
    it = "them" if layers > 1 else "it"
    return (f"num_nextn_predict_layers {layers}: the checkpoint's multi-token-prediction layer"
            f"{'s are' if layers > 1 else ' is'} planned only with sp-plan --mtp-layers {layers} ({trained_by} "
            f"trains {it}: {how}; transformers' {hf_model} does not build {it})")


def group_routing_note(moe: MoESpec) -> str | None:
    """import_notes' line on group-limited routing (MoESpec.router_groups, router_group_topk, read
    from DeepseekV3Config and Glm4MoeConfig n_group and topk_group by router_groups: each token's
    experts lie in its top topk_group of n_group expert groups; DeepSeek-V3 makes the groups nodes,
    "each token will be sent to at most 4 nodes", arXiv 2412.19437 s2.1.2; Megatron
    --moe-router-num-groups / --moe-router-group-topk), None where every group is open. The spec keeps
    it and the costs price it where a token's copies go once a rank or node (HybridEP's and DeepEP's
    dispatch: only the ranks and nodes of its chosen groups, cost.hybridep.ranks_reached_per_token);
    NCCL's all-to-all sends the same top_k copies either way."""
    if moe.router_groups == 1:
        return None
    groups, open_groups, top_k = moe.router_groups, moe.router_group_topk, moe.top_k
    flags = "which sp-plan's Megatron flags carry" if top_k // open_groups == GROUP_RANK_SCORES else (
        f"which sp-plan's Megatron and MindSpeed flags refuse: Megatron-Core ranks a group by its top {top_k} // "
        f"{open_groups} scores, the model by its top {GROUP_RANK_SCORES}")
    return (f"group-limited routing (each token's experts within {open_groups} of {groups} expert groups, "
            f"Megatron --moe-router-num-groups {groups} --moe-router-group-topk {open_groups}, {flags}) is priced "
            "where a token goes once a rank or node: the HybridEP and DeepEP dispatchers send it to the ranks and "
            "nodes of its chosen groups only (as Megatron's router chooses them from random logits); NCCL's "
            "all-to-all sends the same top-k copies a token either way")


def sigmoid_topk_norm(cfg: dict, path: Path, top_k: int) -> bool:
    """MoESpec.router_topk_norm of a sigmoid router: norm_topk_prob (DeepseekV3Config and
    Glm4MoeConfig default true; DeepseekV3TopkRouter and Glm4MoeMoE divide the chosen scores by
    their sum only then). A top-1 router keeps True, which the spec requires, where its weight is its
    score (norm_topk_prob false); with norm_topk_prob true transformers divides the one score by
    itself (`topk_weights /= topk_weights.sum(...) + 1e-20`, no top_k test), a weight of 1, where
    Megatron-Core keeps the score (`... if topk > 1 else scores`, megatron-core 0.16.1
    moe_utils.topk_routing_with_score_function): refused, as MoESpec cannot state it."""
    norm = flag(cfg, "norm_topk_prob", path, default=True)
    if top_k == 1 and norm:
        raise error(path, "num_experts_per_tok 1 with norm_topk_prob true is not supported: the sigmoid router "
                    "divides its one chosen score by itself (a weight of 1, times routed_scaling_factor), where "
                    "Megatron-Core weighs a top-1 sigmoid expert by its score; set norm_topk_prob false to plan "
                    "the score-weighted router")
    return top_k == 1 or norm  # here top_k 1 means norm_topk_prob false: its weight is its score


def router_groups(cfg: dict, path: Path, *, default_groups: int, default_open: int) -> tuple[int, int]:
    """(n_group, topk_group), the configuration class's defaults where absent; (1, 1) where every
    group is open (no restriction: MoESpec.router_groups)."""
    groups = positive_int(cfg, "n_group", path, default=default_groups)
    open_groups = positive_int(cfg, "topk_group", path, default=default_open)
    if open_groups > groups:
        raise error(path, f"topk_group {open_groups} exceeds n_group {groups}")
    return (1, 1) if open_groups == groups else (groups, open_groups)
