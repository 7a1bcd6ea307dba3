"""An explicit split whose end stage does not divide by vpp is emitted as Megatron's
--pipeline-model-parallel-layout (flags.stages.layout_string), checked by megatron-core's own
parser and TransformerConfig (PyPI megatron-core 0.16.1): the string parses to the plan's
per-virtual-stage decoder layers, and no flag Megatron refuses beside it is emitted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sp_planner.catalog import load_model
from sp_planner.flags import megatron, mindspeed
from sp_planner.flags.stages import layout_string
from sp_planner.pipeline import SPLIT_LAYOUT, split_breaks, split_kind
from sp_planner.pipeline_chunks import stage_chunk_sizes, virtual_stage_layers
from tests.flags.conftest import parse_bash_array, request

torch = pytest.importorskip("torch")
from megatron.core.transformer.pipeline_parallel_layer_layout import (  # noqa: E402
    LayerType,
    PipelineParallelLayerLayout,
)
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: E402

DSV3 = load_model("DeepSeek-V3")
CASES = [
    # Megatron-Bridge's layout_map[(4, 4)] (deepseek_v3.py at v0.4.0), MTP depth 1.
    (DSV3.model_copy(update={"mtp_layers": 1}), dict(pp=4, vpp=4, dp=64, ep=64, first_stage_layers=16,
                                                     last_stage_layers=13), "Et*4|(t*4|)*14tmL"),
    # Branch gaod/r0.2.0_test's GB200 layout, no MTP.
    (DSV3, dict(pp=4, vpp=4, dp=64, ep=64, first_stage_layers=15, last_stage_layers=14), "Et*3|(t*4|)*14ttL"),
    # "Et|(tt|)*30mL" (scripts/performance/configs/deepseek/deepseek_llm_pretrain.py line 164 at v0.2.0).
    (DSV3.model_copy(update={"mtp_layers": 1}), dict(pp=8, vpp=4, dp=32, ep=32, first_stage_layers=7,
                                                     last_stage_layers=6), "Et|(tt|)*30mL"),
    # sp-plan's refined DeepSeek-V3 plan (search_refine): 3 / 2 over pp 16 x vpp 2, no MTP.
    (DSV3, dict(pp=16, vpp=2, dp=2, ep=2, first_stage_layers=3, last_stage_layers=2), "Et|(tt|)*14t|(tt|)*15tL"),
    (load_model("Llama-3-8B"), dict(pp=4, vpp=2, dp=2, first_stage_layers=7, last_stage_layers=9),
     "Et*3|(t*4|)*6t*5L"),
]


@pytest.mark.parametrize(("model", "plan", "layout"), CASES)
def test_megatron_parses_the_layout_to_the_plans_virtual_stages(model, plan, layout):
    req = request(model, 4096, 4096 if model is not CASES[-1][0] else 256, 4, **plan)
    flags = parse_bash_array(megatron.render(req).text)
    assert flags["--pipeline-model-parallel-layout"] == [layout]
    # Megatron refuses the layout beside these (transformer_config.py "PP layout"; arguments.py
    # "Uneven virtual pipeline parallelism": one of the three vpp flags).
    for refused in ("--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers",
                    "--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split",
                    "--num-virtual-stages-per-pipeline-rank", "--num-layers-per-virtual-pipeline-stage"):
        assert refused not in flags
    parsed = PipelineParallelLayerLayout(layout, req.plan.pp)
    assert parsed.virtual_pipeline_model_parallel_size == req.plan.vpp
    parsed.validate_layer_layout(model.num_layers, model.mtp_layers or None)
    pp, vpp = req.plan.pp, req.plan.vpp
    counts = tuple(parsed.layout[p][c].count(LayerType.decoder) for c in range(vpp) for p in range(pp))
    assert counts == virtual_stage_layers(model.num_layers, pp, vpp, req.plan.first_stage_layers,
                                          req.plan.last_stage_layers)
    assert parsed.layout[req.plan.pp - 1][-1].count(LayerType.mtp) == model.mtp_layers
    # TransformerConfig's __post_init__ checks it against num_layers and mtp_num_layers.
    TransformerConfig(num_layers=model.num_layers, hidden_size=model.hidden_size, num_attention_heads=8,
                      pipeline_model_parallel_size=req.plan.pp, pipeline_model_parallel_layout=layout,
                      mtp_num_layers=model.mtp_layers or None, pipeline_dtype=torch.bfloat16)


def test_mindspeed_refuses_the_layout():
    model, plan, _ = CASES[0]
    out = mindspeed.render(request(model, 4096, 4096, 4, **plan))
    assert not out.supported and "--pipeline-model-parallel-layout" in out.reason


def _split_rows(num_layers: int, pp: int, vpp: int):
    """Every (first, last) over pp stages: first + last + the middle layers = num_layers."""
    for first in range(1, num_layers):
        lasts = [num_layers - first] if pp == 2 else range(1, num_layers - first)
        for last in lasts:
            yield first, last


@pytest.mark.parametrize("mtp", [0, 2])
@pytest.mark.parametrize(("num_layers", "pp", "vpp"), [(32, 2, 2), (32, 2, 4), (30, 3, 4), (32, 4, 2), (29, 4, 3),
                                                       (24, 5, 4), (40, 6, 8), (32, 8, 4)])
def test_every_split_the_rule_accepts_runs_in_megatron_and_no_other_could(num_layers, pp, vpp, mtp):
    # One rule (pipeline.split_breaks): a split with every stage a layer at least and alike middle
    # stages is accepted, and runs either as Megatron's --decoder-first/last flags (TransformerConfig's
    # "Uneven PP" checks pass) or as the layout string, which megatron-core parses to the plan's
    # stages; a split the rule refuses has no such placement (a stage without layers, unalike middles).
    model = load_model("Llama-3-8B").model_copy(update={"num_layers": num_layers, "mtp_layers": mtp})
    accepted = 0
    for first, last in _split_rows(num_layers, pp, vpp):
        middle, rest = divmod(num_layers - first - last, max(pp - 2, 1))
        placeable = rest == 0 and (middle > 0) == (pp > 2)
        breaks = bool(split_breaks(num_layers, np.array([pp]), np.array([vpp]), np.array([first]), np.array([last]))[0])
        assert breaks == (not placeable), (first, last)
        if breaks:
            continue
        accepted += 1
        req = SimpleNamespace(model=model, plan=SimpleNamespace(pp=pp, vpp=vpp, first_stage_layers=first,
                                                                 last_stage_layers=last))
        if int(split_kind(num_layers, pp, vpp, first, last)) != SPLIT_LAYOUT:
            TransformerConfig(num_layers=num_layers, hidden_size=64, num_attention_heads=8,
                              pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
                              num_layers_in_first_pipeline_stage=first, num_layers_in_last_pipeline_stage=last,
                              pipeline_dtype=torch.bfloat16)
            continue
        parsed = PipelineParallelLayerLayout(layout_string(req), pp)
        parsed.validate_layer_layout(num_layers, mtp or None)
        per_stage = [sum(chunk.count(LayerType.decoder) for chunk in parsed.layout[p]) for p in range(pp)]
        assert per_stage == [first, *[middle] * (pp - 2), last]
        assert tuple(tuple(chunk.count(LayerType.decoder) for chunk in parsed.layout[p]) for p in range(pp)) == \
            stage_chunk_sizes(num_layers, pp, vpp, first, last)
    assert accepted > 0
