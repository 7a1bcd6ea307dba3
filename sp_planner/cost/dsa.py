"""DeepSeek Sparse Attention (DSA, DeepSeek-V3.2): the FLOPs of its parts, the published kernel
rates sp-planner times it with (cost.dsa_times), and where it refuses to.

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
term: it counts a DSA layer as dense causal MLA and leaves the indexer out; so do sp-planner's model
FLOPs (cost.flops), and dsa_hardware_flops_per_token gives what runs.

The backend timed: Megatron's tilelang (--dsa-kernel-backend tilelang; its default "none" runs the
PyTorch reference, which forms the dense [sq, skv] fp32 scores of every head) without the indexer
loss by default (--dsa-indexer-loss-coeff unset, Megatron's default: dsa.py runs the indexer under
no_grad on detached inputs, so it has no backward; ops/tilelang_dsa.py fused_qk_topk_lighting), or
with its sparse KL loss (DSASpec.indexer_loss "sparse": ops/tilelang_dsa.py
fused_qk_topk_lighting_with_streaming_sparse_kl, priced in cost.dsa_loss). The dense loss has no
tilelang kernel (dsa.py falls back to the PyTorch reference) and is not priced.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.families import profile_key
from sp_planner.specs.attention import DSASpec
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# Sparse MLA's bf16 rates in FLOP/s, (forward, backward), by built-in profile: tilelang's kernels,
# whose backward Megatron's ops/tilelang_sparse_mla_bwd.py adapts (tile-ai/tilelang
# examples/deepseek_v32 README: forward about 600 TFLOPS on H800, backward about 100 on H800 and 115
# on H200, "a relatively naive implementation"). H100 SXM and H800 are one die (h800.yaml cites
# it), and H200 that die with more HBM: the H800 forward stands for all three and the H800 backward
# for H100. None: no published backward (FlashMLA's B200 figure, 1450, is forward only), so the
# plan is refused rather than timed with an invented one.
SPARSE_MLA_FLOPS_PER_S: dict[str, tuple[float, float | None]] = {
    "h800": (600e12, 100e12), "h100-sxm": (600e12, 100e12), "h200": (600e12, 115e12),
    "b200": (1450e12, None), "gb200-nvl72": (1450e12, None),
}
# The tilelang indexer scores block_size queries at a time into a [block, skv] fp32 logits buffer
# (dsa.py fused_indexer_block_size, default 8192; tilelang_dsa.py fused_qk_topk_lighting).
INDEXER_BLOCK_QUERIES = 8192
FP32_LOGIT_BYTES = 4
# Passes over that buffer a query row costs, in logits: the indexer kernel writes its causal part
# and clean_logits the rest (-inf; ops/tilelang_indexer_fwd.py), one full row; torch.topk
# (sorted=False) then reads it in PyTorch's multi-block radix select, one pass per 8-bit digit of
# fp32 (aten/src/ATen/native/cuda/TensorTopK.cu mbtopk RADIX_BITS 8: 4 radixFindKthValues
# passes) and one gatherTopK pass; should_use_multiblock picks that path for more than 4,000 rows of
# at least 400 keys, or 800 to 4,000 of at least 800 (a block or a CP rank's queries here).
# 1 write + 5 reads.
TOPK_LOGIT_PASSES = 6
# The trained indexer (DSASpec.indexer_loss "sparse"; cost.dsa_loss). Megatron-LM d98e8a6
# ops/tilelang_indexer_loss.py sparse_indexer_target: a max/denominator pass, then a probability
# pass, each a QK^T over the selected keys.
TARGET_QK_PASSES = 2
# ops/tilelang_indexer_bwd.py tl_indexer_bwd_kernel, per selected key block: the logits again
# (K Q^T), dQ (dS^T K) and dK (dS Q), each 2 x heads x dim FLOPs a query and key.
INDEXER_BWD_GEMMS = 3
# The top-k indices are int32 (ops/indexer.py _select_topk_from_logits: .to(torch.int32)), kept
# for sparse MLA's backward.
TOPK_INDEX_BYTES = 4


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


def sparse_mla_bwd_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Backward FLOPs of absorbed sparse MLA for one query, averaged over the sequence: per kept key
    2 x heads x (2 x kv_lora_rank + 3 x (kv_lora_rank + qk_rope)) (QK^T again, dP, dQ, dK over the
    576-wide latent and dV, P^T dO over the 512 values: tilelang examples/deepseek_v32
    sparse_mla_bwd.py's count)."""
    assert model.mla is not None and model.dsa is not None
    latent = model.mla.kv_lora_rank
    per_key = 2.0 * model.num_heads * (2 * latent + 3 * (latent + model.mla.qk_rope_head_dim))
    return per_key * mean_selected_keys(model.dsa.index_topk, seq_len)


def indexer_projection_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs of the indexer's projections for one token: wq_b (q_lora_rank -> heads x dim),
    wk (hidden -> dim) and weights_proj (hidden -> heads), 2 FLOPs a weight (dsa.py DSAIndexer)."""
    assert model.dsa is not None
    return 2.0 * model.dsa.indexer_params_per_layer(model.hidden_size, _query_latent_width(model), norm=False)


def _query_latent_width(model: ModelSpec) -> int:
    """qr's width, the indexer's query input: MLA's q_lora_rank, the hidden size without one."""
    assert model.mla is not None
    return model.mla.q_lora_rank or model.hidden_size


def indexer_input_elems_per_token(model: ModelSpec) -> int:
    """Elements of the indexer's inputs a token, x (hidden) and qr (_query_latent_width): what
    sequence parallelism gathers over TP for it and, trained, what it saves (dsa.py lines 1273-1275)."""
    return model.hidden_size + _query_latent_width(model)


def dsa_forward_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Forward FLOPs a DSA layer's attention runs for one token: the indexer's projections and
    scores, sparse MLA and, with the indexer's loss, its target (what recompute runs again)."""
    assert model.dsa is not None
    indexer = indexer_projection_flops_per_token(model) + indexer_score_flops_per_token(model.dsa, seq_len)
    target = indexer_target_flops_per_token(model, seq_len, model.num_heads)  # with the indexer's loss
    return indexer + sparse_mla_flops_per_token(model, seq_len) + target


def dsa_hardware_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """FLOPs a DSA layer's attention runs for one token, forward and backward (hardware FLOPs): the
    forward, and in backward sparse MLA's forward again (Megatron's SparseMLA saves no output,
    ops/sparse_mla.py) and its backward; the indexer's backward only with its loss (else no_grad)."""
    return (dsa_forward_flops_per_token(model, seq_len) + sparse_mla_flops_per_token(model, seq_len)
            + sparse_mla_bwd_flops_per_token(model, seq_len) + indexer_bwd_flops_per_token(model, seq_len))


def copies_up_v_weight(model: ModelSpec, tp) -> np.ndarray:
    """Whether DSAttention.forward's up_v_weight.contiguous() (Megatron-LM d98e8a6 dsa.py line 1665)
    copies the V up-projection weight: with more than one head on the rank its slice of
    linear_kv_up_proj.weight is strided (absorbed_mla.py lines 694-705); at one head it is a view.
    Its host op is cost.dsa_host's, its HBM pass cost.dsa_times'."""
    return model.num_heads / np.asarray(tp, dtype=np.float64) > 1


def trains_indexer(model: ModelSpec) -> bool:
    """Whether the model's DSA indexer trains with its sparse KL loss (DSASpec.indexer_loss)."""
    return model.dsa is not None and model.dsa.indexer_loss == "sparse"


def indexer_target_flops_per_token(model: ModelSpec, seq_len: int, heads: float) -> float:
    """Forward FLOPs of the sparse KL loss's target for one query over `heads` of the main
    attention's heads (a TP rank's): Megatron-LM d98e8a6 ops/tilelang_indexer_loss.py
    sparse_indexer_target runs QK^T over the 576-wide absorbed query and latent key of every
    selected key twice (TARGET_QK_PASSES), then sums the heads' probabilities; 0 without the loss."""
    if not trains_indexer(model):
        return 0.0
    assert model.mla is not None and model.dsa is not None
    per_key = TARGET_QK_PASSES * 2.0 * heads * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim)
    return per_key * mean_selected_keys(model.dsa.index_topk, seq_len)


def indexer_bwd_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Backward FLOPs of the trained indexer for one query, 0 without its loss: the tilelang
    backward kernel's GEMMs over each selected key (INDEXER_BWD_GEMMS x 2 x heads x dim) and its
    projections' weight gradients, as many FLOPs as their forward (dsa.py detaches x and qr, so no
    input gradient; Megatron-Bridge 067f987d training/utils/flop_utils.py: "forward+wgrad")."""
    if not trains_indexer(model):
        return 0.0
    assert model.dsa is not None
    dsa = model.dsa
    scores = INDEXER_BWD_GEMMS * 2.0 * dsa.index_n_heads * dsa.index_head_dim
    return scores * mean_selected_keys(dsa.index_topk, seq_len) + indexer_projection_flops_per_token(model)


def dsa_untimed(model: ModelSpec, hardware: HardwareProfile) -> str | None:
    """Why a DSA model's plan cannot be timed on `hardware`, in one line; None without DSA or where
    sparse MLA's forward and backward rates are published (SPARSE_MLA_FLOPS_PER_S)."""
    dsa = model.dsa
    if dsa is None:
        return None
    key = profile_key(hardware)
    rates = SPARSE_MLA_FLOPS_PER_S.get(key)
    if rates is not None and rates[1] is not None:
        return None
    missing = ("sparse MLA's backward (FlashMLA publishes the B200 forward only, tilelang no backward "
               "beside H800 and H200)" if rates is not None else "sparse MLA's forward and backward")
    timed = ", ".join(name for name, (_, bwd) in SPARSE_MLA_FLOPS_PER_S.items() if bwd is not None)
    return (f"{model.name} uses DeepSeek Sparse Attention (indexer {dsa.index_n_heads} heads x "
            f"{dsa.index_head_dim}, top {dsa.index_topk} keys), which sp-planner times with published "
            f"kernel rates; on {hardware.name} none is published for {missing}, so its plans are not "
            f"timed; use --hardware {timed.split(', ')[0]} (timed: {timed}; docs/cost-model.md, DSA)")


def indexer_loss_problem(model: ModelSpec, choice: str) -> str | None:
    """Why sp-plan --dsa-indexer-loss `choice` cannot be timed for `model`, in one line; None where
    it can ("none" always; "sparse" on a DSA model)."""
    if choice == "none":
        return None
    if model.dsa is None:
        return f"{model.name} has no DeepSeek Sparse Attention indexer to train; drop the option"
    if choice == "dense":
        return ("the dense KL loss (DeepSeek-V3.2's warm-up, over every earlier key) has no tilelang "
                "kernel: Megatron-LM falls back to its PyTorch reference (dsa.py "
                "compute_indexer_loss_with_reference_path, every head's [s, s] scores), which "
                "sp-planner does not time; use sparse or none")
    return None


# What the frameworks other than Megatron-LM lack to run it (flags.base.refusal).
DSA_FRAMEWORK_FAILURE = {
    "deepspeed": "DeepSpeed has no DeepSeek Sparse Attention (lightning indexer, sparse MLA)",
    "yunchang": "yunchang's attention is dense: no lightning indexer nor sparse MLA",
    "torchtitan": "torchtitan has no DeepSeek Sparse Attention model",
    "mindspeed": ("MindSpeed-LLM runs DSA with Ascend NPU kernels (torch_npu "
                  "npu_sparse_lightning_indexer_grad_kl_loss, mindspeed_llm/fsdp2/models/common/indexer_loss.py), "
                  "not the tilelang ones this plan is timed with"),
}


def dsa_transient_bytes(model: ModelSpec, *, queries, keys) -> np.ndarray:
    """A DSA layer's largest transient on a rank (vectorized over `queries`, the local queries, and
    `keys`, the gathered ones, b x s): forward's fp32 logits of at most INDEXER_BLOCK_QUERIES
    queries over every key with torch.topk's values beside them (tilelang_dsa.py
    fused_qk_topk_lighting, scored block by block), or backward's full-sequence gradient of the
    gathered latent key before its reduce-scatter, whichever is larger."""
    assert model.dsa is not None and model.mla is not None
    block = np.minimum(queries, INDEXER_BLOCK_QUERIES)
    logits = FP32_LOGIT_BYTES * block * (keys + model.dsa.index_topk)
    latent_grad = 2 * keys * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim)  # bf16
    return np.maximum(logits, latent_grad)


def dsa_saved_attention_bytes(model: ModelSpec, *, queries, keys, heads) -> np.ndarray:
    """What a DSA layer's core attention saves for backward on a rank (vectorized): Megatron's
    SparseMLA saves q, kv and the indices, not its output nor lse, which backward recomputes
    (ops/sparse_mla.py line 69): the absorbed query (heads x 576, bf16), the gathered latent key
    (keys x 576, bf16: CP gathers it whole, dsa.py line 1835) and the int32 top-k indices
    (TOPK_INDEX_BYTES x topk a query); the up_v einsum (dsa.py line 173) saves the absorbed output
    (heads x 512, bf16). The indexer, run under no_grad, saves nothing."""
    assert model.dsa is not None and model.mla is not None
    latent, rope = model.mla.kv_lora_rank, model.mla.qk_rope_head_dim
    q = 2 * queries * heads * (latent + rope)
    o = 2 * queries * heads * latent
    indices = TOPK_INDEX_BYTES * queries * model.dsa.index_topk
    return np.asarray(q + 2 * keys * (latent + rope) + o + indices, dtype=np.float64)
