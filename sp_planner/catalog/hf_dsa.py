"""DeepSeek-V3.2 config.json (deepseek-ai/DeepSeek-V3.2-Exp, DeepSeek-V3.2): model_type "deepseek_v32"
is DeepSeek-V3's architecture (MLA, MoE, the same fields) plus DeepSeek Sparse Attention's lightning
indexer, read by the deepseek_v3 reader and then here (specs.attention.DSASpec).

The checkpoint's config declares architectures ["DeepseekV32ForCausalLM"] (the name vLLM and
TensorRT-LLM register it under, the latter on its DeepseekV3ForCausalLM) and adds index_n_heads 64,
index_head_dim 128 and index_topk 2048 to DeepSeek-V3's fields (DeepSeek's inference config
config_671B_v3.2.json and model.py ModelArgs, copied at tile-ai/tilelang 3ce8ac9b0
examples/deepseek_v32/inference; the report: "the only architectural modification of
DeepSeek-V3.2-Exp is the introduction of DeepSeek Sparse Attention").
The three fields are required: they set the indexer's work, and no config class default is sourced
here. Another architecture under this model_type (or none) is refused rather than read as DeepSeek-V3.2's.
"""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog.hf_fields import error, positive_int
from sp_planner.specs.attention import DSASpec

MODEL_TYPE = "deepseek_v32"
ARCHITECTURE = "DeepseekV32ForCausalLM"


def as_deepseek_v3(cfg: dict, path: Path) -> dict:
    """The config as the deepseek_v3 reader takes it, after checking it declares DeepSeek-V3.2."""
    declared = cfg.get("architectures")
    if declared != [ARCHITECTURE]:
        raise error(path, f"model_type {MODEL_TYPE!r} with architectures {declared!r} is not supported; "
                    f"DeepSeek-V3.2 is {ARCHITECTURE}")
    return {**cfg, "model_type": "deepseek_v3"}


def dsa(cfg: dict, path: Path) -> DSASpec:
    """The lightning indexer's heads, head dim and the keys each query keeps."""
    return DSASpec(index_n_heads=positive_int(cfg, "index_n_heads", path),
                   index_head_dim=positive_int(cfg, "index_head_dim", path),
                   index_topk=positive_int(cfg, "index_topk", path))
