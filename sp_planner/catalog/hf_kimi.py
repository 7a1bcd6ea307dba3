"""Kimi K2 config.json (moonshotai/Kimi-K2-Instruct, -Base, -Thinking): model_type "kimi_k2" names
DeepSeek-V3's architecture with other sizes, read by the deepseek_v3 reader.

Moonshot's deploy guidance (docs/deploy_guidance.md of the K2 checkpoints, "Others") says K2
reuses the DeepSeek-V3 architecture and sets model_type kimi_k2 only so inference engines can tell
it apart (a framework without it may run the model as deepseek_v3); the published config.json declares
architectures ["DeepseekV3ForCausalLM"] with DeepseekV3Config's fields (auto_map
configuration_deepseek.DeepseekV3Config). Megatron-Bridge reads the same fields with DeepSeek-V3's
weight mapping (src/megatron/bridge/models/kimi/kimi_bridge.py KimiK2Bridge, registered as
KimiK2ForCausalLM / kimi_k2, get_common_mapping_list from models/deepseek). Another architecture
under this model_type is refused rather than read as DeepSeek-V3's.
"""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog.hf_fields import error

MODEL_TYPE = "kimi_k2"
ARCHITECTURES = ("DeepseekV3ForCausalLM", "KimiK2ForCausalLM")


def as_deepseek_v3(cfg: dict, path: Path) -> dict:
    """The config as the deepseek_v3 reader takes it, after checking it declares that architecture."""
    declared = cfg.get("architectures")
    if not isinstance(declared, list) or len(declared) != 1 or declared[0] not in ARCHITECTURES:
        raise error(path, f"model_type 'kimi_k2' with architectures {declared!r} is not supported; Kimi K2 is "
                    f"{ARCHITECTURES[0]} (or {ARCHITECTURES[1]}), whose DeepseekV3Config fields are read")
    return {**cfg, "model_type": "deepseek_v3"}
