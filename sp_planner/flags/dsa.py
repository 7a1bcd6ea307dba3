"""DeepSeek Sparse Attention's flags for Megatron-LM, and the other frameworks' refusal of it.

Megatron-LM d98e8a6 builds these flags from TransformerConfig's fields (megatron/training/arguments.py
ArgumentGroupFactory(TransformerConfig), line 2373: "--" + the field with "_" as "-"):
experimental_attention_variant, dsa_indexer_n_heads, dsa_indexer_head_dim, dsa_indexer_topk and
dsa_kernel_backend (transformer_config.py lines 301-357). The plan is timed with the tilelang backend
and, by default, no indexer loss (cost.dsa), so these flags name tilelang and leave
--dsa-indexer-loss-coeff out; with DSASpec.indexer_loss "sparse" they add it and
--dsa-indexer-use-sparse-loss (transformer_config.py lines 333-338; cost.dsa_loss);
DSAttention asserts no RoPE fusion (transformer_config.py line 3163), which Megatron's arguments turn
on by default (--no-rope-fusion, arguments.py line 2902).
"""

from __future__ import annotations

from sp_planner.cost.dsa import DSA_FRAMEWORK_FAILURE
from sp_planner.specs.model import ModelSpec

FlagGroup = tuple[str, list[str]]
# The loss's weight (it only scales the indexer's gradient: dsa.py detaches the indexer's inputs).
# Megatron-LM d98e8a6's DSA functional test (tests/functional_tests/test_cases/gpt/
# gpt3_mcore_te_tp2_pp2_dsa/model_config.yaml) and Megatron-Bridge 067f987d's DeepSeek-V4 GB200
# pre-training recipe (recipes/deepseek/gb200/deepseek_v4.py line 78) set 0.01.
INDEXER_LOSS_COEFF = 0.01


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
    flags = ["--experimental-attention-variant dsa", f"--dsa-indexer-n-heads {dsa.index_n_heads}",
             f"--dsa-indexer-head-dim {dsa.index_head_dim}", f"--dsa-indexer-topk {dsa.index_topk}",
             "--dsa-kernel-backend tilelang", "--no-rope-fusion"]
    if dsa.indexer_loss == "sparse":
        return [("DeepSeek Sparse Attention as the plan is timed: tilelang kernels, the indexer trained "
                 "with its sparse KL loss", [*flags, f"--dsa-indexer-loss-coeff {INDEXER_LOSS_COEFF}",
                                             "--dsa-indexer-use-sparse-loss"])]
    return [("DeepSeek Sparse Attention as the plan is timed: tilelang kernels, no indexer loss", flags)]


def dsa_notes(model: ModelSpec) -> list[str]:
    """What the DSA flags leave out, none without DSA or where the indexer trains."""
    if model.dsa is None or model.dsa.indexer_loss != "none":
        return []
    return ["Without --dsa-indexer-loss-coeff Megatron runs the indexer under no_grad, so it is not "
            "trained; sp-plan --dsa-indexer-loss sparse times its sparse KL loss."]
