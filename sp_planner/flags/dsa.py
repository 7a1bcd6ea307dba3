"""DeepSeek Sparse Attention's flags for Megatron-LM, and the other frameworks' refusal of it.

Megatron-LM d98e8a6 builds these flags from TransformerConfig's fields (megatron/training/arguments.py
ArgumentGroupFactory(TransformerConfig), line 2373: "--" + the field with "_" as "-"):
experimental_attention_variant, dsa_indexer_n_heads, dsa_indexer_head_dim, dsa_indexer_topk and
dsa_kernel_backend (transformer_config.py lines 301-357). The plan is timed with the tilelang backend
and no indexer loss (cost.dsa), so these flags name tilelang and leave --dsa-indexer-loss-coeff out;
DSAttention asserts no RoPE fusion (transformer_config.py line 3163), which Megatron's arguments turn
on by default (--no-rope-fusion, arguments.py line 2902).
"""

from __future__ import annotations

from sp_planner.cost.dsa import DSA_FRAMEWORK_FAILURE
from sp_planner.specs.model import ModelSpec

FlagGroup = tuple[str, list[str]]


def dsa_failures(framework: str, model: ModelSpec) -> list[str]:
    """A DSA model on a framework other than Megatron-LM (flags.base.refusal)."""
    if model.dsa is None or framework == "megatron":
        return []
    return [f"{model.name}'s DeepSeek Sparse Attention cannot be expressed: {DSA_FRAMEWORK_FAILURE[framework]}; "
            "use megatron"]


def dsa_groups(model: ModelSpec) -> list[FlagGroup]:
    """Megatron-LM's DSA flags, none without DSA."""
    dsa = model.dsa
    if dsa is None:
        return []
    return [("DeepSeek Sparse Attention as the plan is timed: tilelang kernels, no indexer loss", [
        "--experimental-attention-variant dsa", f"--dsa-indexer-n-heads {dsa.index_n_heads}",
        f"--dsa-indexer-head-dim {dsa.index_head_dim}", f"--dsa-indexer-topk {dsa.index_topk}",
        "--dsa-kernel-backend tilelang", "--no-rope-fusion"])]


def dsa_notes(model: ModelSpec) -> list[str]:
    """What the DSA flags leave out, none without DSA."""
    if model.dsa is None:
        return []
    return ["Without --dsa-indexer-loss-coeff Megatron runs the indexer under no_grad, so it is not "
            "trained; its KL loss (with --dsa-indexer-use-sparse-loss) is not in this plan's time."]
