"""DeepSeek-V3.2 config.json (model_type deepseek_v32) read as DeepSeek-V3's architecture plus the
sparse attention's indexer (catalog.hf_dsa)."""

import pytest

from sp_planner.catalog import load_hf_config, load_model
from sp_planner.specs.attention import DSASpec
from tests.catalog.hf_configs import ARCH_FIELDS, DEEPSEEK_V3, import_error, write_config

# deepseek-ai/DeepSeek-V3.2-Exp config.json: DeepSeek-V3's fields (the report: DSA is "the only
# architectural modification") plus the indexer's three, values as DeepSeek's inference config
# (tile-ai/tilelang 3ce8ac9b0 examples/deepseek_v32/inference/config_671B_v3.2.json) states them.
DEEPSEEK_V32_EXP = {**DEEPSEEK_V3, "_name_or_path": "deepseek-ai/DeepSeek-V3.2-Exp", "model_type": "deepseek_v32",
                    "architectures": ["DeepseekV32ForCausalLM"], "index_n_heads": 64, "index_head_dim": 128,
                    "index_topk": 2048}


def test_deepseek_v32_is_deepseek_v3_with_the_indexer(tmp_path):
    path = write_config(tmp_path, DEEPSEEK_V32_EXP)
    spec = load_hf_config(path)
    assert spec.name == "DeepSeek-V3.2-Exp" and spec.hf_repo == "deepseek-ai/DeepSeek-V3.2-Exp"
    assert spec.dsa == DSASpec(index_n_heads=64, index_head_dim=128, index_topk=2048)
    v3 = load_hf_config(write_config(tmp_path, DEEPSEEK_V3, folder="v3"))
    assert spec.model_dump(exclude=ARCH_FIELDS | {"dsa"}) == v3.model_dump(exclude=ARCH_FIELDS | {"dsa"})
    assert v3.dsa is None
    assert spec.sources[0] == f"{path} (Hugging Face config.json, model_type deepseek_v32)"


@pytest.mark.parametrize("field", ["index_n_heads", "index_head_dim", "index_topk"])
def test_a_missing_indexer_field_is_refused_in_one_line(tmp_path, field):
    cfg = {key: value for key, value in DEEPSEEK_V32_EXP.items() if key != field}
    assert f"required field {field!r} is missing" in import_error(tmp_path, cfg)
    assert f"field {field!r} must be a positive integer, got 0" in import_error(tmp_path, {**cfg, field: 0})


@pytest.mark.parametrize("architectures", [None, ["DeepseekV3ForCausalLM"], "DeepseekV32ForCausalLM"])
def test_deepseek_v32_of_another_architecture_is_refused_in_one_line(tmp_path, architectures):
    cfg = {key: value for key, value in DEEPSEEK_V32_EXP.items() if key != "architectures"}
    if architectures is not None:
        cfg["architectures"] = architectures
    message = import_error(tmp_path, cfg)
    assert f"model_type 'deepseek_v32' with architectures {architectures!r} is not supported" in message
    assert "DeepseekV32ForCausalLM" in message


def test_the_builtin_is_the_imported_config_and_deepseek_v3_plus_the_indexer(tmp_path):
    builtin = load_model("deepseek-v3.2-exp")
    assert builtin.name == "DeepSeek-V3.2-Exp" and builtin.hf_repo == "deepseek-ai/DeepSeek-V3.2-Exp"
    imported = load_hf_config(write_config(tmp_path, DEEPSEEK_V32_EXP))
    assert builtin.model_dump(exclude=ARCH_FIELDS) == imported.model_dump(exclude=ARCH_FIELDS)
    v3 = load_model("DeepSeek-V3")
    assert builtin.model_dump(exclude=ARCH_FIELDS | {"dsa"}) == v3.model_dump(exclude=ARCH_FIELDS | {"dsa"})
    # The indexer's weights: wq_b 1536 x 8192, wk 7168 x 128, weights_proj 7168 x 64, k_norm 2 x 128 a layer.
    assert builtin.num_params - v3.num_params == 61 * (1536 * 8192 + 7168 * 128 + 7168 * 64 + 256) == 851_524_864
