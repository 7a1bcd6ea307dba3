"""Megatron flags for MoE plans, accepted by megatron-core's own config validation.

Every emitted flag that is a TransformerConfig field (Megatron >= 0.16 generates those flags from
the dataclass, reference moe_fp8_pipeline_frameworks.md 1.0) goes into the real
megatron.core TransformerConfig, whose __post_init__ runs Megatron's MoE/EP/CP/recompute checks;
the few training-loop flags are named, so a misspelt flag cannot slip through unchecked.
"""

from __future__ import annotations

import ast
import dataclasses

import pytest
import torch

from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig
from sp_planner.catalog import load_model
from sp_planner.flags import FlagRequest, render_flags
from sp_planner.plan import ParallelPlan
from sp_planner.specs.moe import MoESpec
from sp_planner.specs.workload import Workload
from tests.flags.conftest import parse_bash_array

# Flags of megatron/training/arguments.py that are not TransformerConfig fields, and renamed ones.
TRAINING_ONLY = {"seq_length", "max_position_embeddings", "micro_batch_size", "global_batch_size",
                 "use_distributed_optimizer", "group_query_attention",
                 # GPTModel's share_embeddings_and_output_weights (gpt_builders.py at d98e8a64dd line 96)
                 "untie_embeddings_and_output_weights",
                 # GPTDatasetConfig's create_attention_mask (test_megatron_core.test_dataloader_mask_is_turned_off)
                 "no_create_attention_mask_in_dataloader"}
RENAMED = {"num_experts": "num_moe_experts",  # arguments.py: --num-experts -> num_moe_experts
           # As tests/flags/test_megatron_core.py reads them: --fp8-format sets fp8, and
           # argument_utils.py (d98e8a6) line 312 kw_args['fp8_param'] = args.fp8_param_gather.
           "fp8_format": "fp8", "fp8_param_gather": "fp8_param"}
LIST_FIELDS = {"hierarchical_context_parallel_sizes"}
STR_LIST_FIELDS = {"recompute_modules"}  # nargs="*" of strings
# TransformerConfig.__post_init__ imports Transformer Engine's fused permutation for
# moe_permute_fusion (core_v0.15.0 transformer_config.py: "Please install TE >= 2.1.0"), which this
# CPU environment lacks: the field's name is checked, its value not passed.
NEEDS_TE = {"moe_permute_fusion"}
# The overlap flags (flags.megatron.overlap_flags) and MXFP8's grad-buffer reuse configure the DDP
# wrapper, not the layers.
DDP_FIELDS = {f.name for f in dataclasses.fields(DistributedDataParallelConfig)}


def transformer_config(text: str, hidden_size: int, config_class: type = TransformerConfig) -> TransformerConfig:
    """`config_class` is MLATransformerConfig for MLA models (Megatron's gpt_builders pick it on
    --multi-latent-attention)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    kwargs: dict[str, object] = {"hidden_size": hidden_size}
    for flag, values in parse_bash_array(text).items():
        name = RENAMED.get(flag[2:].replace("-", "_"), flag[2:].replace("-", "_"))
        if name in TRAINING_ONLY:
            continue
        if name.startswith("overlap_") or name == "reuse_grad_buf_for_mxfp8_param_ag":
            assert name in DDP_FIELDS, f"{flag} is not a DistributedDataParallelConfig field"
            continue
        known = fields | {"disable_bias_linear"}
        assert name in known, f"{flag} is neither a TransformerConfig field nor a known training flag"
        if name in NEEDS_TE:
            continue
        if name == "disable_bias_linear":  # arguments.py: store_false into add_bias_linear
            kwargs["add_bias_linear"] = False
        elif not values:
            kwargs[name] = True
        elif name in STR_LIST_FIELDS:
            kwargs[name] = list(values)
        elif name in LIST_FIELDS:
            kwargs[name] = [int(v) for v in values]
        elif name == "moe_layer_freq":  # a Python list expression, as arguments.py evaluates it
            kwargs[name] = eval(values[0], {"__builtins__": {}})  # noqa: S307 (our own flag text)
        else:
            (value,) = values
            kwargs[name] = ast.literal_eval(value) if value[0].isdigit() else value
    if kwargs.get("bf16"):
        # megatron/training/arguments.py core_transformer_config_from_args: --bf16 sets params_dtype,
        # and pipeline_dtype = params_dtype.
        kwargs["params_dtype"] = kwargs["pipeline_dtype"] = torch.bfloat16
    return config_class(**kwargs)


QWEN3_235B = load_model("Qwen3-235B-A22B")
QWEN3_30B = load_model("Qwen3-30B-A3B")
MIXTRAL = load_model("Mixtral-8x7B")
DEEPSEEK_V3 = load_model("DeepSeek-V3")
MAVERICK = load_model("Llama-4-Maverick-17B-128E")
CASES = [
    (QWEN3_235B, ParallelPlan(tp=2, ulysses=2, dp=36, ep=16, etp=1, recompute="full"), 4),  # two NVL72 racks
    (QWEN3_235B, ParallelPlan(tp=2, ring=4, dp=9, pp=2, ep=8, etp=1, recompute="selective"), 4),
    (QWEN3_30B, ParallelPlan(tp=2, ring=4, dp=2, ep=4, etp=2), 8),
    (MIXTRAL, ParallelPlan(tp=4, ulysses=2, ring=2, dp=2, ep=8, etp=1), 8),
    (DEEPSEEK_V3, ParallelPlan(tp=8, ulysses=2, dp=18, ep=32, etp=1, recompute="full"), 4),  # 4 NVL72 racks
    (MAVERICK, ParallelPlan(tp=4, ulysses=2, dp=9, ep=8, etp=1, recompute="full"), 4),
    (load_model("Mixtral-8x22B"), ParallelPlan(tp=2, ulysses=4, dp=9, ep=8, etp=1, recompute="full"), 4),
]


@pytest.mark.parametrize(("model", "plan", "gpus_per_node"), CASES,
                         ids=lambda x: getattr(x, "name", None) if not isinstance(x, int) else None)
def test_moe_flags_pass_transformer_config(model, plan, gpus_per_node):
    request = FlagRequest(model=model, workload=Workload(seq_len=131072, global_batch=plan.dp * 2), plan=plan,
                          num_nodes=plan.world_size // gpus_per_node, gpus_per_node=gpus_per_node)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    mla = model.mla is not None
    config = transformer_config(flags.text, model.hidden_size, MLATransformerConfig if mla else TransformerConfig)
    assert config.num_moe_experts == model.moe.num_experts
    assert config.moe_router_topk == model.moe.top_k
    assert config.moe_ffn_hidden_size == model.moe.moe_intermediate_size
    assert (config.expert_model_parallel_size, config.expert_tensor_parallel_size) == (plan.ep, plan.etp)
    assert config.moe_token_dispatcher_type == "alltoall" and config.moe_grouped_gemm
    # The dispatcher and fused permutations cost.moe times (MoESpec.dispatcher's default).
    assert "--moe-permute-fusion" in parse_bash_array(flags.text)
    assert model.moe.dispatcher == "alltoall"


def test_dense_model_gets_no_expert_flags(build, bash_args):
    text = render_flags("megatron", build.cases["llama3_8b_128k_usp_tp2"]).text
    assert not [flag for flag in bash_args(text) if "expert" in flag or flag.startswith("--moe")]
    transformer_config(text, 4096)  # the dense flags pass TransformerConfig too


def test_megatron_core_refuses_what_the_rules_refuse():
    # The checker is live: an EP without experts is refused by TransformerConfig itself.
    with pytest.raises(ValueError, match="num_moe_experts"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, expert_model_parallel_size=2)


def test_deepseek_v3_flags_carry_mla_and_its_dense_first_layers():
    plan = ParallelPlan(tp=8, ulysses=2, dp=18, ep=32, etp=1, recompute="full")
    request = FlagRequest(model=DEEPSEEK_V3, workload=Workload(seq_len=65536, global_batch=36), plan=plan,
                          num_nodes=72, gpus_per_node=4)
    config = transformer_config(render_flags("megatron", request).text, 7168, MLATransformerConfig)
    assert config.multi_latent_attention
    assert (config.q_lora_rank, config.kv_lora_rank, config.qk_head_dim, config.qk_pos_emb_head_dim,
            config.v_head_dim) == (1536, 512, 128, 64, 128)
    assert config.moe_layer_freq == [0] * 3 + [1] * 58
    assert config.moe_shared_expert_intermediate_size == 2048
    assert config.num_query_groups in (None, 128)  # MLA: no GQA flag


def test_deepseek_v3_mla_up_proj_recompute_passes_mla_transformer_config():
    # Megatron-Bridge's DeepSeek-V3 recipes: selective granularity with mla_up_proj, not core_attn.
    plan = ParallelPlan(tp=2, ring=2, dp=32, ep=64, etp=1, recompute="mla_up_proj")
    request = FlagRequest(model=DEEPSEEK_V3, workload=Workload(seq_len=4096, global_batch=128), plan=plan,
                          num_nodes=16, gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    config = transformer_config(flags.text, 7168, MLATransformerConfig)
    assert config.recompute_granularity == "selective" and config.recompute_modules == ["mla_up_proj"]
    # The checker is live: megatron-core refuses mla_up_proj without MLA, as plan rule mla_up_proj does.
    with pytest.raises(ValueError, match="mla_up_proj"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, recompute_granularity="selective",
                          recompute_modules=["mla_up_proj"])


def test_mlp_recompute_passes_transformer_config_alone_and_with_mla_up_proj():
    # Megatron-Bridge's recipes: --recompute-modules mlp (dense models), mla_up_proj mlp (DeepSeek).
    llama = load_model("Llama-3-8B")
    for model, recompute, modules, config_class, plan in (
            (llama, "mlp", ["mlp"], TransformerConfig, ParallelPlan(tp=2, dp=32, pp=2, recompute="mlp")),
            (DEEPSEEK_V3, "mla_up_proj+mlp", ["mla_up_proj", "mlp"], MLATransformerConfig,
             ParallelPlan(tp=2, ring=2, dp=32, ep=64, etp=1, recompute="mla_up_proj+mlp"))):
        request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=128), plan=plan,
                              num_nodes=16, gpus_per_node=8)
        flags = render_flags("megatron", request)
        assert flags.supported, flags.reason
        assert f"--recompute-modules {' '.join(modules)}" in flags.text and "--recompute-method" not in flags.text
        config = transformer_config(flags.text, model.hidden_size, config_class)
        assert config.recompute_granularity == "selective" and config.recompute_modules == modules
        assert render_flags("mindspeed", request).supported
        for framework in ("deepspeed", "torchtitan"):
            refused = render_flags(framework, request)
            assert not refused.supported and f"recompute {recompute} cannot be expressed" in refused.reason


@pytest.mark.parametrize("recompute, modules", [("moe_act", ["moe_act"]),
                                                ("moe_act+layernorm", ["moe_act", "layernorm"])])
def test_moe_module_recompute_passes_transformer_config(recompute, modules):
    # Megatron-LM's Qwen3 MoE recipes: selective granularity with moe_act (and layernorm), not core_attn.
    plan = ParallelPlan(tp=2, dp=16, pp=2, ep=32, etp=1, recompute=recompute)
    request = FlagRequest(model=QWEN3_235B, workload=Workload(seq_len=4096, global_batch=128), plan=plan,
                          num_nodes=8, gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    assert f"--recompute-modules {' '.join(modules)}" in flags.text and "--recompute-method" not in flags.text
    config = transformer_config(flags.text, QWEN3_235B.hidden_size)
    assert config.recompute_granularity == "selective" and config.recompute_modules == modules
    assert render_flags("mindspeed", request).supported  # MindSpeed takes Megatron's recompute flags
    for framework in ("deepspeed", "torchtitan"):
        refused = render_flags(framework, request)
        assert not refused.supported and f"recompute {recompute} cannot be expressed" in refused.reason
    # The checker is live: megatron-core refuses moe_act without grouped GEMMs (a dense model has none).
    with pytest.raises(ValueError, match="moe_act"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, recompute_granularity="selective",
                          recompute_modules=modules)


def test_moe_module_recompute_under_delayed_fp8_is_refused_as_megatron_refuses_it():
    plan = ParallelPlan(tp=2, dp=16, pp=2, ep=32, etp=1, recompute="moe_act", precision="fp8")
    request = FlagRequest(model=QWEN3_235B, workload=Workload(seq_len=4096, global_batch=128), plan=plan,
                          num_nodes=8, gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert not flags.supported and "fp8_recipe delayed" in flags.reason
    tensorwise = request.model_copy(update={"plan": plan.model_copy(update={"fp8_recipe": "tensorwise"})})
    assert render_flags("megatron", tensorwise).supported


@pytest.mark.parametrize("factor, pad", [(1.25, False), (1.0, True)])
def test_capacity_factor_flags_pass_transformer_config(factor, pad):
    moe = QWEN3_235B.moe.model_copy(update={"capacity_factor": factor, "pad_to_capacity": pad})
    model = QWEN3_235B.model_copy(update={"moe": moe})
    plan = ParallelPlan(tp=1, ring=4, dp=18, ep=8, zero=1, recompute="full")
    request = FlagRequest(model=model, workload=Workload(seq_len=131072, global_batch=36), plan=plan,
                          num_nodes=18, gpus_per_node=4)
    flags = render_flags("megatron", request)
    config = transformer_config(flags.text, model.hidden_size)
    assert config.moe_expert_capacity_factor == factor
    assert config.moe_pad_expert_input_to_capacity is pad
    # torchtitan routes dropless: the same plan is refused there in one line.
    refused = render_flags("torchtitan", request)
    assert not refused.supported and "routes dropless" in refused.reason


def test_megatron_core_refuses_padding_without_a_capacity_as_the_spec_does():
    with pytest.raises(ValueError, match="moe_expert_capacity_factor"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_moe_experts=8,
                          moe_pad_expert_input_to_capacity=True)
    with pytest.raises(ValueError, match="pad_to_capacity needs a capacity_factor"):
        MoESpec.model_validate({**QWEN3_235B.moe.model_dump(), "pad_to_capacity": True})


def test_llama4_maverick_flags_carry_its_interleaved_moe_layers_and_sigmoid_router():
    plan = ParallelPlan(tp=4, ulysses=2, dp=9, ep=8, etp=1, recompute="full")
    request = FlagRequest(model=MAVERICK, workload=Workload(seq_len=131072, global_batch=18), plan=plan,
                          num_nodes=18, gpus_per_node=4)
    flags = render_flags("megatron", request)
    config = transformer_config(flags.text, 5120)
    # HF interleave_moe_layer_step 2: layers 1, 3, ..., 47 are MoE (Megatron counts layers from 0 too).
    assert config.moe_layer_freq == [0, 1] * 24
    assert config.moe_router_score_function == "sigmoid" and config.moe_router_topk == 1
    assert config.moe_shared_expert_intermediate_size == 8192
    assert any("chunked local attention (8192-token chunks, 3 local : 1 global" in note for note in flags.notes)


def test_force_balanced_routing_passes_transformer_config():
    balanced = QWEN3_235B.model_copy(update={"moe": QWEN3_235B.moe.model_copy(update={"routing": "balanced"})})
    plan = ParallelPlan(tp=1, pp=2, dp=128, ep=32, etp=1, zero=1)
    request = FlagRequest(model=balanced, workload=Workload(seq_len=4096, global_batch=8192), plan=plan,
                          num_nodes=64, gpus_per_node=4)
    config = transformer_config(render_flags("megatron", request).text, balanced.hidden_size)
    assert config.moe_router_force_load_balancing
    learned = FlagRequest(model=QWEN3_235B, workload=request.workload, plan=plan, num_nodes=64, gpus_per_node=4)
    assert not transformer_config(render_flags("megatron", learned).text, QWEN3_235B.hidden_size) \
        .moe_router_force_load_balancing


def _flex_dispatcher_flags(**moe_fields):
    """Megatron's flags for Qwen3-30B-A3B at ep 8 on one node with MoESpec `moe_fields`, and the
    TransformerConfig megatron-core builds from them."""
    model = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update=moe_fields)})
    request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64),
                          plan=ParallelPlan(tp=1, dp=8, ep=8, etp=1), num_nodes=1, gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    return flags, transformer_config(flags.text, model.hidden_size)


def test_hybridep_flags_pass_transformer_config():
    # MoESpec.dispatcher hybridep: the flex dispatcher's HybridEP backend, which megatron-core's own
    # TransformerConfig accepts; no --moe-permute-fusion (HybridEP permutes in its kernels).
    flags, config = _flex_dispatcher_flags(dispatcher="hybridep")
    assert (config.moe_token_dispatcher_type, config.moe_flex_dispatcher_backend) == ("flex", "hybridep")
    assert "--moe-permute-fusion" not in parse_bash_array(flags.text)


def test_deepep_flags_pass_transformer_config():
    # MoESpec.dispatcher deepep: the flex dispatcher's DeepEP backend with Megatron's fused permute
    # around it, and the run's SM count (megatron-core 0.16's --moe-deepep-num-sms).
    flags, config = _flex_dispatcher_flags(dispatcher="deepep", dispatcher_sms=24)
    assert (config.moe_token_dispatcher_type, config.moe_flex_dispatcher_backend) == ("flex", "deepep")
    assert config.moe_deepep_num_sms == 24
    assert "--moe-permute-fusion" in parse_bash_array(flags.text)  # TE-less CPU config turns it off
    # Megatron refuses padding to capacity on DeepEP; MoESpec refuses it first.
    with pytest.raises(ValueError, match="does not support moe_pad_expert_input_to_capacity"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_moe_experts=8,
                          moe_token_dispatcher_type="flex", moe_flex_dispatcher_backend="deepep",
                          moe_expert_capacity_factor=1.0, moe_pad_expert_input_to_capacity=True)


@pytest.mark.parametrize("precision", ["fp8", "mxfp8"])
def test_fp8_dropless_flags_pad_in_the_router_and_pass_transformer_config(precision, monkeypatch):
    # TransformerConfig accepts router padding under FP8 on the alltoall dispatcher (it refuses it
    # without fp8/fp4, or on allgather / alltoall_seq): TEGroupedMLP then skips its Fp8Padding.
    # Its FP8 MoE checks ask Transformer Engine's version (>= 1.11 for FP8 grouped GEMMs), which
    # this CPU environment lacks: taken as a recent one, as Megatron's TE spec needs anyway.
    monkeypatch.setattr("megatron.core.transformer.transformer_config.is_te_min_version", lambda *_, **__: True)
    plan = ParallelPlan(tp=1, dp=8, ep=8, etp=1, precision=precision)
    request = FlagRequest(model=QWEN3_30B, workload=Workload(seq_len=4096, global_batch=64), plan=plan, num_nodes=1,
                          gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert "--moe-router-padding-for-quantization" in parse_bash_array(flags.text)
    config = transformer_config(flags.text, QWEN3_30B.hidden_size)
    assert config.moe_router_padding_for_quantization and config.fp8 is not None
    assert config.moe_token_dispatcher_type == "alltoall"


def test_router_padding_only_where_it_applies():
    plan = ParallelPlan(tp=1, dp=8, ep=8, etp=1, precision="fp8")

    def emitted(model, precision="fp8", framework="megatron") -> bool:
        request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64),
                              plan=plan.model_copy(update={"precision": precision}), num_nodes=1, gpus_per_node=8)
        return "--moe-router-padding-for-quantization" in render_flags(framework, request).text

    def moe(**update):
        return QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update=update)})

    assert emitted(QWEN3_30B)
    assert not emitted(QWEN3_30B, precision="bf16")  # TransformerConfig refuses it without fp8/fp4
    assert not emitted(moe(dispatcher="hybridep"))  # HybridEP pads in its kernels
    assert not emitted(moe(capacity_factor=1.25))  # token dropping keeps Megatron's default
    assert not emitted(QWEN3_30B, framework="mindspeed")  # MindSpeed's runtime pads nothing (cost.runtime)
    with pytest.raises(ValueError, match="fp8/fp4 must be specified"):
        TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, num_moe_experts=8,
                          moe_token_dispatcher_type="alltoall", moe_router_padding_for_quantization=True)


def test_mtp_flags_pass_transformer_config_and_only_megatron_and_mindspeed_train_it():
    # ModelSpec.mtp_layers (cost.mtp): --mtp-num-layers, a TransformerConfig field megatron-core
    # accepts on DeepSeek-V3's MLA config; MindSpeed takes Megatron's flag; the others cannot say it.
    model = DEEPSEEK_V3.model_copy(update={"mtp_layers": 1})
    plan = ParallelPlan(tp=8, dp=4, ep=32, etp=1)
    request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64), plan=plan, num_nodes=4,
                          gpus_per_node=8)
    flags = render_flags("megatron", request)
    assert flags.supported, flags.reason
    assert parse_bash_array(flags.text)["--mtp-num-layers"] == ["1"]
    assert transformer_config(flags.text, 7168, MLATransformerConfig).mtp_num_layers == 1
    assert "--mtp-num-layers 1" in render_flags("mindspeed", request).text
    assert "--mtp-num-layers" not in parse_bash_array(render_flags(
        "megatron", request.model_copy(update={"model": DEEPSEEK_V3})).text)
    for framework in ("deepspeed", "yunchang", "torchtitan"):
        refused = render_flags(framework, request)
        assert not refused.supported and "mtp_layers 1 cannot be expressed" in refused.reason


ROUTERS = ["DeepSeek-V3", "Kimi-K2", "GLM-4.5", "GLM-4.5-Air", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Mixtral-8x7B",
           "Mixtral-8x22B", "Llama-4-Scout-17B-16E", "Llama-4-Maverick-17B-128E", "gpt-oss-120b"]


def _one_node(model, framework="megatron"):
    request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64),
                          plan=ParallelPlan(tp=1, dp=8, ep=8, etp=1), num_nodes=1, gpus_per_node=8)
    flags = render_flags(framework, request)
    assert flags.supported, flags.reason
    return flags


@pytest.mark.parametrize("name", ROUTERS)
def test_the_router_flags_reproduce_each_moe_builtins_router(name):
    # Megatron-Bridge's providers and bridges (217de1a2e^ / 067f987df): DeepSeek-V3 and GLM-4.5
    # moe_router_topk_scaling_factor 2.5, Kimi K2 2.827, GLM-4.5-Air 1.0, expert bias on all four; Llama 4
    # applies its top-1 weight on the expert's input; the softmax routers keep Megatron's top-k-then-softmax.
    model = load_model(name)
    config = transformer_config(_one_node(model).text, model.hidden_size,
                                MLATransformerConfig if model.mla is not None else TransformerConfig)
    expected = {"DeepSeek-V3": (True, 2.5), "Kimi-K2": (True, 2.827), "GLM-4.5": (True, 2.5),
                "GLM-4.5-Air": (True, None)}.get(name, (False, None))
    assert (config.moe_router_enable_expert_bias, config.moe_router_topk_scaling_factor) == expected
    assert config.moe_router_score_function == model.moe.router_score_function
    assert config.moe_apply_probs_on_input is name.startswith("Llama-4")
    assert not config.moe_router_pre_softmax
    # DeepSeek-V3's node-limited routing: each token's 8 experts within 4 of 8 groups (n_group, topk_group).
    groups = (8, 4) if name == "DeepSeek-V3" else (None, None)
    assert (config.moe_router_num_groups, config.moe_router_group_topk) == groups


def test_a_qwen3_moe_without_norm_topk_prob_routes_pre_softmax():
    # Qwen3MoeConfig's default norm_topk_prob false: softmax over every expert, top k kept unnormalised.
    model = QWEN3_30B.model_copy(update={"moe": QWEN3_30B.moe.model_copy(update={"router_pre_softmax": True})})
    assert transformer_config(_one_node(model).text, model.hidden_size).moe_router_pre_softmax


def test_mindspeed_takes_the_router_flags_its_megatron_has():
    # Megatron core_r0.12.0 arguments.py has the pre-softmax, expert-bias and scaling flags;
    # --moe-apply-probs-on-input came in core_v0.13.0, after MindSpeed's Megatron 0.12.1.
    deepseek = parse_bash_array(_one_node(DEEPSEEK_V3, "mindspeed").text, "MINDSPEED_ARGS")
    assert "--moe-router-enable-expert-bias" in deepseek and deepseek["--moe-router-topk-scaling-factor"] == ["2.5"]
    maverick = _one_node(MAVERICK, "mindspeed").text
    assert "--moe-apply-probs-on-input" not in parse_bash_array(maverick, "MINDSPEED_ARGS")
    comment = " ".join(line.strip(" #") for line in maverick.splitlines() if line.lstrip().startswith("#"))
    assert "Megatron 0.12.1 under MindSpeed has no --moe-apply-probs-on-input" in comment


def test_mindspeed_router_flags_are_megatrons_in_the_branch_mindspeed_llm_routes_them():
    # MindSpeed-LLM's TopKRouter.routing sends the default load-balancing type (aux_loss) through Megatron's
    # own topk_softmax_with_capacity with these options; its --norm-topk-prob would renormalise after the
    # 2.5 scaling (undoing it), so neither it nor another load-balancing type is emitted.
    args = parse_bash_array(_one_node(DEEPSEEK_V3, "mindspeed").text, "MINDSPEED_ARGS")
    router = {flag: value for flag, value in args.items() if "router" in flag or flag in ("--norm-topk-prob",
                                                                                           "--seq-aux")}
    assert router == {"--moe-router-topk": ["8"], "--moe-router-score-function": ["sigmoid"],
                      "--moe-router-enable-expert-bias": [], "--moe-router-topk-scaling-factor": ["2.5"],
                      "--moe-router-num-groups": ["8"], "--moe-router-group-topk": ["4"]}


def _with_router(model, **router):
    return model.model_copy(update={"moe": model.moe.model_copy(update=router)})


def _model_group_choice(scores: torch.Tensor, groups: int, open_groups: int) -> torch.Tensor:
    """The groups HF DeepseekV3TopkRouter.get_topk_indices (and Glm4MoeMoE, torchtitan's router)
    open: each ranked by the sum of its top 2 scores. (tokens, groups) boolean."""
    ranked = scores.view(scores.shape[0], groups, -1).topk(2, dim=-1)[0].sum(dim=-1)
    return torch.zeros_like(ranked, dtype=torch.bool).scatter(1, ranked.topk(open_groups, dim=-1)[1], True)


@pytest.mark.parametrize(("top_k", "open_groups", "agrees"), [(8, 4, True), (8, 2, False), (6, 3, True),
                                                               (4, 4, False)])
def test_megatron_core_ranks_the_groups_as_the_model_only_for_two_scores_a_group(top_k, open_groups, agrees):
    # megatron-core's own group_limited_topk against the model's top-2 ranking, on seeded sigmoid
    # scores over DeepSeek-V3's 256 experts in 8 groups: the chosen experts lie in the model's groups
    # exactly when top_k // group_topk is 2, and the flags refuse the rest in one line.
    from megatron.core.transformer.moe.moe_utils import group_limited_topk

    scores = torch.rand(512, 256, generator=torch.Generator().manual_seed(0))
    _, experts = group_limited_topk(scores, topk=top_k, num_tokens=512, num_experts=256, num_groups=8,
                                    group_topk=open_groups)
    opened = _model_group_choice(scores, 8, open_groups)
    inside = opened.gather(1, experts // 32)  # each chosen expert's group, opened by the model?
    assert bool(inside.all()) is agrees
    model = _with_router(DEEPSEEK_V3, top_k=top_k, router_group_topk=open_groups)
    request = FlagRequest(model=model, workload=Workload(seq_len=4096, global_batch=64),
                          plan=ParallelPlan(tp=1, dp=8, ep=8, etp=1), num_nodes=1, gpus_per_node=8)
    megatron, mindspeed = (render_flags(framework, request) for framework in ("megatron", "mindspeed"))
    assert megatron.supported is mindspeed.supported is agrees
    if not agrees:
        assert megatron.reason == (
            f"router_groups 8 with router_group_topk {open_groups} cannot be expressed: Megatron-Core ranks each "
            f"expert group by its top top_k // group_topk = {top_k} // {open_groups} = {top_k // open_groups} scores, "
            "DeepSeek-V3's router (HF n_group / topk_group) by its top 2, so it would route to other groups; run the "
            "model's own router instead (its transformers code, or torchtitan's with num_expert_groups, which ranks "
            "by the top 2)")
        assert mindspeed.reason == megatron.reason.replace("Megatron-Core", "MindSpeed's Megatron-Core 0.12.1")


def test_megatron_core_renormalises_a_sigmoid_top_k_so_unnormalised_routers_are_refused():
    # megatron-core's own routing: a sigmoid router's top 8 weights sum to 1 (before the scaling
    # factor) whatever the config; a model that keeps them raw (norm_topk_prob false) is refused.
    from megatron.core.transformer.moe.moe_utils import topk_routing_with_score_function

    logits = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    probs, _ = topk_routing_with_score_function(logits, 8, score_function="sigmoid", num_groups=8, group_topk=4)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(64))
    request = FlagRequest(model=_with_router(DEEPSEEK_V3, router_topk_norm=False),
                          workload=Workload(seq_len=4096, global_batch=64),
                          plan=ParallelPlan(tp=1, dp=8, ep=8, etp=1), num_nodes=1, gpus_per_node=8)
    megatron, mindspeed = (render_flags(framework, request) for framework in ("megatron", "mindspeed"))
    assert megatron.reason == (
        "router_topk_norm false cannot be expressed: DeepSeek-V3's sigmoid router keeps its top 8 scores unnormalised "
        "(HF norm_topk_prob false), and Megatron-Core divides a sigmoid router's top k by their sum; run the model's "
        "own router instead (its transformers code, or torchtitan's with route_norm false)")
    assert not mindspeed.supported and "MindSpeed's Megatron-Core 0.12.1 divides" in mindspeed.reason
    # DeepSeek-V3 as published (normalised, 8 // 4 = 2 scores a group) keeps its flags.
    assert _one_node(DEEPSEEK_V3).supported


def test_megatron_core_weighs_a_sigmoid_top_1_expert_by_its_score():
    # megatron-core's own routing at top_k 1 keeps the sigmoid score (`... if topk > 1 else scores`), times
    # the scaling factor; transformers' DeepSeek-V3/GLM router with norm_topk_prob true weighs it 1, which
    # the import refuses (tests/catalog/test_hf_layers.py), and with it false the score, as Megatron.
    from megatron.core.transformer.moe.moe_utils import topk_routing_with_score_function

    logits = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    probs, routing_map = topk_routing_with_score_function(logits, 1, score_function="sigmoid", scaling_factor=2.5)
    chosen = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(routing_map.nonzero()[:, 1:], chosen)
    torch.testing.assert_close(probs.gather(1, chosen), 2.5 * torch.sigmoid(logits.gather(1, chosen)))
    assert bool((probs.sum(dim=-1) < 2.5).all())  # never the 1 x 2.5 of a normalised top-1 weight
