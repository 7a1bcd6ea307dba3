"""The corpus schema: frozen, strict, every published figure tied to a source and a plan."""

from __future__ import annotations

import textwrap

import pydantic
import pytest

from sp_planner.catalog import load_hardware
from sp_planner.errors import UserInputError
from sp_planner.pipeline_chunks import virtual_stage_layers
from sp_planner.validation.corpus import load_corpus
from sp_planner.validation.corpus_row import CorpusRow, Source
from sp_planner.validation.row_run import row_model

ROW = dict(id="r1", source="src", table="Table 1 row 1", model="Llama-2-7B", hardware="A800", num_nodes=1,
           gpus_per_node=8, tp=4, pp=1, dp=1, ulysses=2, ring=1, zero=1, recompute="none", micro_batch=1,
           global_batch=1, seq_len=65536, precision="bf16", framework="Megatron-LM",
           figure="model_tflops_per_gpu", convention="megatron_full_square", measured=260.2)


def test_shipped_corpus_meets_the_issue_size(corpus):
    assert len(corpus.rows) >= 40
    assert len(corpus.sources) >= 5
    assert len({r.source for r in corpus.rows}) == len(corpus.sources)
    multi_node_cp = [r for r in corpus.rows if r.num_nodes > 1 and r.ulysses * r.ring > 1]
    assert len(multi_node_cp) >= 10


def test_every_scored_row_resolves_its_model_and_hardware(corpus):
    for row in corpus.rows:
        if row.expressible:
            even = row_model(row, corpus).num_layers % row.pp == 0
            assert even or row.first_stage_layers is not None, row.id  # an uneven split is stated
            assert load_hardware(row.hardware).gpus_per_node >= 1


def test_the_gpt_style_corpus_models_state_learned_positions(corpus):
    # Megatron-LM's GPT runs of 2021-2024 (Narayanan, Korthikanti, the README tables) and
    # llm-foundry's MPT benchmarks ran learned absolute positions (each model's sources say where).
    gpt_style = {name: spec for name, spec in corpus.models.items()
                 if name.startswith(("Megatron-", "Turing-", "MLM-GPT-", "MPT-"))}
    assert len(gpt_style) == 8 + 4 + 9 + 6
    for name, spec in gpt_style.items():
        assert spec.position_embedding == "learned_absolute", name
        assert any(s.startswith("position_embedding learned_absolute: ") for s in spec.sources), name


def test_megatron_gpt_corpus_models_state_megatrons_default_dropout(corpus):
    # Megatron-LM's GPT runs (Narayanan 2021, Korthikanti 2022, the README tables) kept the
    # defaults --hidden-dropout 0.1 --attention-dropout 0.1 (each model's sources say where); every
    # other corpus model trains without dropout (Llama-style recipes; llm-foundry's MPT defaults).
    for name, spec in corpus.models.items():
        megatron_gpt = name.startswith(("Megatron-", "Turing-", "MLM-GPT-"))
        expected = 0.1 if megatron_gpt else 0.0
        assert (spec.hidden_dropout, spec.attention_dropout) == (expected, expected), name
        assert not megatron_gpt or any(s.startswith("dropout 0.1: ") for s in spec.sources), name
        assert not name.startswith("MPT-") or any(s.startswith("dropout 0: ") for s in spec.sources), name
    korth = [row for row in corpus.rows if row.source in ("korth-t5", "mlm-readme") and "175b" in row.id]
    assert len(korth) == 3 and all(row.model == "Megatron-175B" for row in korth)


def test_every_row_says_where_its_figure_comes_from(corpus):
    for row in corpus.rows:
        source = corpus.source(row.source)
        assert source.url.startswith("https://") and source.read_from and source.where
        assert row.table
        assert row.expressible or row.reason


def test_rows_are_frozen_and_reject_unknown_fields():
    row = CorpusRow(**ROW)
    with pytest.raises(pydantic.ValidationError):
        row.measured = 1.0
    with pytest.raises(pydantic.ValidationError, match="extra"):
        CorpusRow(**ROW, virtual_stages=2)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Source(id="x", title="t", where="w", url="https://x", read_from="r", setup="s", year=2024)


@pytest.mark.parametrize("change, message", [
    ({"dp": 2}, "tp\\*pp\\*dp\\*ulysses\\*ring = 16 but num_nodes\\*gpus_per_node = 8"),
    ({"convention": "none"}, "FLOP-based figures name their FLOP convention"),
    ({"figure": "mfu_percent"}, "peak_tflops is required"),
    ({"expressible": False}, "needs a reason"),
    ({"expressible": False, "reason": "FP8", "regression": "issue 1"}, "regression is for expressible rows"),
    ({"regression": ""}, "regression\n  String should have at least 1 character"),
    ({"recompute": None}, "recompute not stated"),
    ({"convention": "not_stated"}, "convention is not stated"),
    ({"attention_kernel": "fa4"},
     "attention_kernel 'fa4' is not one of fa2, fa3, cudnn, sdpa, npu, unfused, flash-attn-triton"),
    ({"cuda_graph_scope": ["layer"]}, "cuda_graph_scope layer is not one of attn, mlp, moe"),
    ({"cuda_graph_scope": ["attn"], "recompute": "full"}, "per-layer CUDA graphs do not run with full recompute"),
    ({"fp8_param_gather": True}, "fp8_param_gather needs precision fp8 or mxfp8 with zero 1"),
    ({"fp8_param_gather": True, "precision": "mxfp8", "zero": 3},
     "fp8_param_gather needs precision fp8 or mxfp8 with zero 1 \\(the distributed optimizer\\) or fp8 with zero 3 "
     "\\(Megatron-FSDP\\), not mxfp8 with zero 3"),
    ({"fp8_recipe": "tensorwise", "precision": "mxfp8"}, "fp8_recipe tensorwise is for precision fp8 rows, not mxfp8"),
    ({"fp8_attention": True}, "fp8_attention needs precision fp8 or mxfp8, not bf16"),
])
def test_row_rules(change, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        CorpusRow(**{**ROW, **change})


def test_unscored_rows_may_leave_unstated_values_out():
    row = CorpusRow(**{**ROW, "precision": "fp8", "micro_batch": None, "expressible": False, "reason": "FP8"})
    assert row.micro_batch is None and not row.expressible


def _write(tmp_path, rows: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent("""\
        source: {id: src, title: t, where: w, url: "https://x", read_from: r, setup: s}
        defaults: {model: Llama-2-7B, hardware: A800, num_nodes: 1, gpus_per_node: 8, pp: 1, zero: 1,
                   recompute: none, micro_batch: 1, precision: bf16, framework: Megatron-LM,
                   figure: model_tflops_per_gpu, convention: megatron_full_square, seq_len: 65536,
                   global_batch: 1, ulysses: 1, ring: 1, dp: 1}
        rows:
        """) + textwrap.indent(textwrap.dedent(rows), "  "))
    return path


def test_a_file_loads_with_defaults_merged(tmp_path):
    corpus = load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 238.9}\n"))
    (row,) = corpus.rows
    assert (row.source, row.tp, row.dp, row.seq_len, row.measured) == ("src", 8, 1, 65536, 238.9)


@pytest.mark.parametrize("rows, message", [
    ("- {id: a, table: T5, tp: 4, measured: 1}\n", r"c.yaml row 1 \(a\) is invalid: .*tp\*pp\*dp"),
    ("- {id: a, table: T5, tp: 8, measured: -1}\n", r"row 1 \(a\) is invalid: measured: Input should be greater"),
    ("- {id: a, table: T5, tp: 8, measured: 1}\n- {id: a, table: T5, tp: 8, measured: 2}\n", "row id a is used twice"),
    ("- just text\n", "row 1 must be a mapping"),
    ("- {id: a, table: T5, tp: 8, measured: 1\n", "is malformed"),
])
def test_malformed_files_name_the_file_and_row(tmp_path, rows, message):
    with pytest.raises(UserInputError, match=message):
        load_corpus(_write(tmp_path, rows))


def test_a_row_naming_a_config_or_profile_by_a_relative_path_reads_it_beside_the_corpus_file(tmp_path, monkeypatch):
    # It was read in the folder sp-validate ran in: `sp-validate --corpus runs/mine.yaml` from the
    # parent folder said "model config file llama.json does not exist" for runs/llama.json.
    import json
    import shutil
    from pathlib import Path

    from sp_planner.validation.row_run import row_hardware

    from tests.catalog.hf_configs import LLAMA2_7B

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "llama.json").write_text(json.dumps(LLAMA2_7B), encoding="utf-8")
    shutil.copy(Path(__file__).resolve().parents[2] / "hardware_profiles" / "a800.yaml", runs / "mine.yaml")
    path = _write(runs, "- {id: a, table: T5, tp: 8, measured: 1, model: ./llama.json, hardware: mine.yaml}\n"
                        "- {id: b, table: T5, tp: 8, measured: 1}\n")
    monkeypatch.chdir(tmp_path)
    a, b = load_corpus(path.relative_to(tmp_path)).rows
    assert (a.model, a.hardware) == ("runs/llama.json", "runs/mine.yaml")
    assert (b.model, b.hardware) == ("Llama-2-7B", "A800")  # built-in names stay names
    model = row_model(a, load_corpus(path))
    assert (model.intermediate_size, model.vocab_size) == (11008, 32000)  # Llama-2-7B's config, read
    assert row_hardware(a).hbm_bytes == load_hardware("A800").hbm_bytes


def test_missing_corpus_and_empty_folder(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_corpus(tmp_path / "nope.yaml")
    with pytest.raises(UserInputError, match="holds no .yaml files"):
        load_corpus(tmp_path)


def test_assumed_settings_name_their_file_and_revision(corpus):
    import re

    from sp_planner.cost.attention_kernels import ATTENTION_KERNELS, CORPUS_ONLY_KERNELS

    assumed = [r for r in corpus.rows if r.assumed]
    assert len([r for r in assumed if r.expressible]) >= 17  # the NeMo CP rows
    for row in assumed:
        # a file path and a commit or release tag, so a reader can check the default
        assert re.search(r"\.(py|yaml|sh)\b", row.assumed), row.id
        assert re.search(r"\b([0-9a-f]{7,40}|v\d+\.\d+\.\d+)\b", row.assumed), row.id
    for row in corpus.rows:
        assert row.attention_kernel in (None, *CORPUS_ONLY_KERNELS, *ATTENTION_KERNELS), row.id


def test_moe_routing_on_a_dense_model_is_rejected_at_load(tmp_path):
    # Llama-2-7B (catalog) has no experts: caught when the file loads, not first when scored.
    with pytest.raises(UserInputError, match=r"c.yaml row a: routing balanced needs an MoE model.*Llama-2-7B"):
        load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, routing: balanced}\n"))
    # expressible: false rows too: the routing is wrong whatever is scored.
    with pytest.raises(UserInputError, match="routing balanced needs an MoE model"):
        load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, routing: balanced, "
                                     "expressible: false, reason: r}\n"))
    corpus = load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, model: Mixtral-8x7B, "
                                          "routing: balanced}\n"))
    assert corpus.rows[0].routing == "balanced"


def test_cuda_graph_scopes_are_checked_against_the_model_at_load(tmp_path):
    # moe_router on a dense model: Megatron refuses it; caught when the file loads.
    with pytest.raises(UserInputError, match=r"c.yaml row a: moe and moe_router CUDA graphs need MoE layers"):
        load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, cuda_graph_scope: [moe_router]}\n"))
    corpus = load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, model: Mixtral-8x7B, "
                                          "cuda_graph_scope: [attn, moe_router, moe_preprocess]}\n"))
    assert corpus.rows[0].cuda_graph_scope == ("attn", "moe_router", "moe_preprocess")


def test_megatron_bridge_rows_state_their_recipes_graphs(corpus):
    # Megatron-Bridge v0.2.0 workload_base_configs.py (25.11) and v0.6.0 perf_recipes (26.08).
    scopes = {r.id: r.cuda_graph_scope for r in corpus.rows if r.source in ("mbridge", "mbridge26")}
    assert scopes["mb-q235-gb200-bf16"] == ("attn", "moe_router", "moe_preprocess")
    assert scopes["mb-q30-gb200-mx"] == scopes["mb-q30-b200-mx"] == ("moe_router", "moe_preprocess")
    assert scopes["mb-q235-b200-mx"] == scopes["mb-q30-h100-cs"] == ()
    assert scopes["mb26-q30-gb200-mx"] == scopes["mb26-q235-gb200-mx"] == ("full_iteration",)


def test_fp8_recipes_state_fp8_weights(corpus):
    # Megatron-Bridge's FP8 presets (v0.2.0 / v0.6.0 training/mixed_precision.py) and NeMo 2.3's
    # bf16_with_fp8_mixed (fp8_params) set --fp8-param-gather; rows state it where they run the
    # distributed optimizer (file headers).
    stated = {r.id for r in corpus.rows if r.fp8_param_gather}
    assert {"mbd-405b-gb300-cs", "mbd-405b-h100-cs", "mb-q30-h100-cs", "mb-q30-gb200-mx",
            "mb26-q235-gb300-mx", "nemo-b200-1m"} <= stated
    # The Megatron-FSDP 70B rows (zero 3) run them as Megatron-FSDP's FP8 shards (cost.fp8_params);
    # the NeMo 24.03 H100 rows (zero 2) keep bf16 weights.
    assert {"mbd-70b-gb200-cs", "mbd-70b-gb300-cs"} <= stated and "nemo-h100-4k" not in stated
    assert all((r.precision in ("fp8", "mxfp8") and r.zero == 1) or (r.precision == "fp8" and r.zero == 3)
               for r in corpus.rows if r.fp8_param_gather)


def test_fp8_cs_rows_state_current_scaling(corpus):
    # Megatron-Bridge's FP8-CS = bf16_with_fp8_current_scaling_mixed, fp8_recipe "tensorwise"
    # (v0.2.0 training/mixed_precision.py line 285, returned by scripts/performance/utils/helpers.py
    # get_precision_config for fp8_cs); NeMo 2's FP8 rows ran delayed scaling (its default).
    current = {r.id for r in corpus.rows if r.fp8_recipe == "tensorwise"}
    cs = {r.id for r in corpus.rows if r.source in ("mbridge", "mbdense") and "FP8-CS" in r.table}
    assert len(cs) >= 8 and cs <= current
    assert all(r.fp8_recipe == "delayed" for r in corpus.rows if r.source == "nemo-cp")


def test_fp8_attention_rows_are_the_26_08_mxfp8_recipes(corpus):
    # Megatron-Bridge v0.6.0 perf_recipes/qwen/common.py line 55 (_enable_hybridep_full_iteration_mxfp8):
    # fp8_dot_product_attention True, on the four 26.08 GB200/GB300 Qwen3 rows.
    stated = {r.id for r in corpus.rows if r.fp8_attention}
    assert {"mb26-q30-gb200-mx", "mb26-q235-gb200-mx", "mb26-q30-gb300-mx", "mb26-q235-gb300-mx"} <= stated
    assert not stated & {"mb-q30-gb200-mx", "mbd-405b-gb200-cs", "nemo-b200-8k"}


def test_26_08_deepseek_rows_place_their_recipes_layout(corpus):
    # Megatron-Bridge v0.6.0 perf_recipes/deepseek gb300/deepseek_v3.py line 154 and (through the (4, 4)
    # entry of the layout map) recipes/deepseek/h100/deepseek_v3.py line 76: Et*4|(t*4|)*14tmL, 16
    # virtual stages of 4 decoder layers but the last, 1 with the MTP layer and the loss.
    rows = {r.id: r for r in corpus.rows if r.id in ("mb26-dsv3-gb300-mx", "mb26-dsv3-gb200-mx")}
    for row in rows.values():
        assert row.pp * row.vpp == 16 and row.mtp_layers == 1
        stages = virtual_stage_layers(61, row.pp, row.vpp, row.first_stage_layers, row.last_stage_layers)
        assert stages == (4,) * 15 + (1,)
    # rank p holds virtual stages p, p + pp, ...: 4 x 8 / 4 x 7 + 1 at pp 2, 4 x 4 / 4 x 3 + 1 at pp 4
    assert (rows["mb26-dsv3-gb300-mx"].first_stage_layers, rows["mb26-dsv3-gb300-mx"].last_stage_layers) == (32, 29)
    assert (rows["mb26-dsv3-gb200-mx"].first_stage_layers, rows["mb26-dsv3-gb200-mx"].last_stage_layers) == (16, 13)
    # recompute_modules [] (gb300 line 148) against [mla_up_proj] (gb200 line 149); FP8 attention only on
    # GB300 (fp8_dot_product_attention=True, gb300 line 157); both the full-iteration graph.
    assert rows["mb26-dsv3-gb300-mx"].recompute == "none" and rows["mb26-dsv3-gb200-mx"].recompute == "mla_up_proj"
    assert rows["mb26-dsv3-gb300-mx"].fp8_attention and not rows["mb26-dsv3-gb200-mx"].fp8_attention
    assert all(r.cuda_graph_scope == ("full_iteration",) and r.moe_router_dtype == "fp32" and r.adam_moments_bf16
               for r in rows.values())


def test_moe_dispatcher_on_a_dense_model_is_rejected_at_load(tmp_path):
    with pytest.raises(UserInputError, match=r"c.yaml row a: moe_dispatcher hybridep needs an MoE model.*Llama-2-7B"):
        load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, moe_dispatcher: hybridep}\n"))
    corpus = load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, model: Mixtral-8x7B, "
                                          "moe_dispatcher: hybridep}\n"))
    assert corpus.rows[0].moe_dispatcher == "hybridep"


def test_hybridep_sms_need_the_hybridep_dispatcher(tmp_path):
    with pytest.raises(UserInputError, match=r"c.yaml row a: hybridep_sms is the HybridEP dispatcher's SM count"):
        load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, model: Mixtral-8x7B, "
                                     "hybridep_sms: 32}\n"))
    corpus = load_corpus(_write(tmp_path, "- {id: a, table: T5, tp: 8, measured: 1, model: Mixtral-8x7B, "
                                          "moe_dispatcher: hybridep, hybridep_sms: 32}\n"))
    assert corpus.rows[0].hybridep_sms == 32


def test_a_row_of_a_sparse_attention_model_is_refused_at_load_where_sparse_mla_is_not_timed(tmp_path):
    # DeepSeek-V3.2 (cost.dsa): timed on GPUs with published sparse MLA rates; A800 has none.
    from tests.catalog.hf_configs import write_config
    from tests.catalog.test_hf_dsa import DEEPSEEK_V32_EXP

    config = write_config(tmp_path, DEEPSEEK_V32_EXP)
    with pytest.raises(UserInputError, match=r"c.yaml row a: DeepSeek-V3.2-Exp uses DeepSeek Sparse .* on A800"):
        load_corpus(_write(tmp_path, f"- {{id: a, table: T5, tp: 8, measured: 1, model: {config}}}\n"))
    row = f"- {{id: a, table: T5, tp: 8, measured: 1, model: {config}, hardware: H800}}\n"
    assert load_corpus(_write(tmp_path, row)).rows[0].hardware == "H800"
