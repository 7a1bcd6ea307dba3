"""The emitted Megatron-LM flags, checked by megatron-core itself (PyPI megatron-core 0.16.1):
every flag is mapped onto its TransformerConfig / ModelParallelConfig field (an unmapped flag fails
the test, so nothing is emitted unchecked), the config is built so that its __post_init__
validation runs (pipeline split, virtual stages, FP8 format and recipe, sequence parallelism, CP),
and megatron-core's RankGenerator (order tp-cp-ep-dp-pp) must build the same tp / cp / dp / pp
groups as sp_planner.layout. The training-level rules megatron-core does not hold (batch
divisibility, the interleaved schedule's micro-batch count) are checked as megatron/training and
pipeline_parallel/schedules.py state them.

Megatron-LM's own argument parser and validate_args (megatron/training/arguments.py, not on PyPI)
accepted the same flag sets during development (see the commit that added this file)."""

from __future__ import annotations

import shlex

import pytest

torch = pytest.importorskip("torch")  # megatron-core needs torch; the dev extra installs both
from megatron.core.distributed import DistributedDataParallelConfig  # noqa: E402
from megatron.core.parallel_state import RankGenerator  # noqa: E402
from megatron.core.transformer.enums import AttnBackend  # noqa: E402
from megatron.core.transformer.transformer_config import TransformerConfig  # noqa: E402

from sp_planner.catalog import load_model  # noqa: E402
from sp_planner.flags import megatron  # noqa: E402
from sp_planner.layout import rank_groups  # noqa: E402
from tests.flags.conftest import CASES, LLAMA3_8B, request  # noqa: E402

# Flag -> (TransformerConfig field, how to read its values). Flags that configure megatron/training
# rather than the model config map to None and are checked by _training_rules.
FIELDS = {
    "--tensor-model-parallel-size": ("tensor_model_parallel_size", int),
    "--pipeline-model-parallel-size": ("pipeline_model_parallel_size", int),
    "--num-virtual-stages-per-pipeline-rank": ("virtual_pipeline_model_parallel_size", int),
    "--decoder-first-pipeline-num-layers": ("num_layers_in_first_pipeline_stage", int),
    "--decoder-last-pipeline-num-layers": ("num_layers_in_last_pipeline_stage", int),
    "--account-for-embedding-in-pipeline-split": ("account_for_embedding_in_pipeline_split", None),
    "--account-for-loss-in-pipeline-split": ("account_for_loss_in_pipeline_split", None),
    "--context-parallel-size": ("context_parallel_size", int),
    "--cp-comm-type": ("cp_comm_type", str),
    "--hierarchical-context-parallel-sizes": ("hierarchical_context_parallel_sizes", list),
    "--sequence-parallel": ("sequence_parallel", None),
    "--num-layers": ("num_layers", int),
    "--num-attention-heads": ("num_attention_heads", int),
    "--num-query-groups": ("num_query_groups", int),
    "--recompute-granularity": ("recompute_granularity", str),
    "--recompute-method": ("recompute_method", str),
    "--recompute-num-layers": ("recompute_num_layers", int),
    "--fp8-format": ("fp8", str),
    "--fp8-recipe": ("fp8_recipe", str),
    "--bf16": ("bf16", None),
    # megatron/training/argument_utils.py (d98e8a6) line 312: kw_args['fp8_param'] = args.fp8_param_gather.
    "--fp8-param-gather": ("fp8_param", None),
    # arguments.py (d98e8a6) line 1950 turns cpu_offloading on for N > 0 (_config_kwargs does too).
    "--cpu-offloading-num-layers": ("cpu_offloading_num_layers", int),
    "--hidden-dropout": ("hidden_dropout", float),
    "--attention-dropout": ("attention_dropout", float),
    # arguments.py (d98e8a6) builds the flag from this field with ArgumentGroupFactory, whose enum
    # type is config_type[cli_arg] with choices list(AttnBackend) (argument_utils.py _get_enum_kwargs).
    "--attention-backend": ("attention_backend", lambda name: AttnBackend[name]),
}
TRAINING = {"--group-query-attention", "--seq-length", "--max-position-embeddings", "--micro-batch-size",
            "--global-batch-size", "--use-distributed-optimizer",
            # Data-parallel sharding (DistributedDataParallelConfig and megatron/training), checked by
            # test_megatron_core_cp_fsdp.py.
            "--use-megatron-fsdp", "--data-parallel-sharding-strategy", "--num-distributed-optimizer-instances",
            "--ckpt-format", "--use-torch-fsdp2", "--torch-fsdp2-no-reshard-after-forward",
            "--no-gradient-accumulation-fusion", "--untie-embeddings-and-output-weights",
            # DistributedDataParallelConfig overlap, checked by _training_rules.
            "--overlap-grad-reduce", "--overlap-param-gather",
            # DistributedDataParallelConfig / OptimizerConfig, checked by _training_rules.
            "--reuse-grad-buf-for-mxfp8-param-ag",
            # OptimizerConfig, checked by test_precision_aware_optimizer_flags_are_optimizer_config_fields.
            "--use-precision-aware-optimizer", "--exp-avg-dtype", "--exp-avg-sq-dtype",
            # GPTDatasetConfig.create_attention_mask, checked by test_dataloader_mask_is_turned_off.
            "--no-create-attention-mask-in-dataloader"}


def _argv(text: str) -> list[str]:
    """The words inside MEGATRON_ARGS=( ... ), comments dropped."""
    body = text.split("MEGATRON_ARGS=(", 1)[1].rsplit(")", 1)[0]
    return shlex.split("\n".join(line for line in body.splitlines() if not line.strip().startswith("#")))


def _parse(argv: list[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for word in argv:
        if word.startswith("--"):
            flags[word] = []
            current = word
        else:
            flags[current].append(word)
    return flags


def _config_kwargs(flags: dict[str, list[str]], model) -> dict[str, object]:
    kwargs: dict[str, object] = {"hidden_size": model.hidden_size, "ffn_hidden_size": model.intermediate_size}
    for flag, values in flags.items():
        if flag in TRAINING:
            continue
        assert flag in FIELDS, f"{flag} is emitted but not checked against megatron-core"
        field, kind = FIELDS[flag]
        if kind is None:
            assert values == [], flag
            kwargs[field] = True
        elif kind is list:
            kwargs[field] = [int(v) for v in values]
        else:
            (value,) = values
            kwargs[field] = kind(value)
    if kwargs.get("cpu_offloading_num_layers", 0) > 0:
        kwargs["cpu_offloading"] = True  # megatron/training/arguments.py (d98e8a6) lines 1950-1951
    if kwargs.get("bf16"):
        # megatron/training/arguments.py core_transformer_config_from_args: pipeline_dtype = params_dtype.
        kwargs["params_dtype"] = kwargs["pipeline_dtype"] = torch.bfloat16
    return kwargs


def _training_rules(flags: dict[str, list[str]], req) -> None:
    p = req.plan
    world = req.world_size
    tp, pp, cp = (int(flags[f][0]) for f in ("--tensor-model-parallel-size", "--pipeline-model-parallel-size",
                                              "--context-parallel-size"))
    assert world % (tp * pp * cp) == 0
    dp = world // (tp * pp * cp)  # parallel_state.py: DP excludes CP
    assert dp == p.dp
    mbs, gbs = int(flags["--micro-batch-size"][0]), int(flags["--global-batch-size"][0])
    assert gbs % (mbs * dp) == 0  # megatron/training num_microbatches_calculator
    m = gbs // (mbs * dp)
    if "--num-virtual-stages-per-pipeline-rank" in flags:
        # schedules.py forward_backward_pipelining_with_interleaving, group size = pp by default.
        assert pp <= m and m % pp == 0
    if "--overlap-param-gather" in flags:
        # arguments.py validate_args: needs the distributed optimizer (or Megatron-FSDP) and
        # --overlap-grad-reduce.
        assert "--overlap-grad-reduce" in flags
        assert "--use-distributed-optimizer" in flags or "--use-megatron-fsdp" in flags
    if "--fp8-param-gather" in flags:
        # arguments.py validate_args (d98e8a6 lines 1095-1097): the distributed optimizer or an FSDP.
        assert "--use-distributed-optimizer" in flags or "--use-megatron-fsdp" in flags
    if flags.get("--fp8-recipe") == ["mxfp8"] and "--fp8-param-gather" in flags:
        # Megatron-Bridge pairs them (v0.2.0 training/mixed_precision.py lines 88-91).
        assert "--reuse-grad-buf-for-mxfp8-param-ag" in flags
    # __post_init__ asserts --reuse-grad-buf-for-mxfp8-param-ag only with --fp8-param-gather.
    DistributedDataParallelConfig(use_distributed_optimizer="--use-distributed-optimizer" in flags,
                                  fp8_param_gather="--fp8-param-gather" in flags,
                                  reuse_grad_buf_for_mxfp8_param_ag="--reuse-grad-buf-for-mxfp8-param-ag" in flags)
    seq = int(flags["--seq-length"][0])
    assert seq <= int(flags["--max-position-embeddings"][0])
    if cp > 1:
        assert seq % (2 * cp) == 0  # arguments.py: CP load balancing


def _check(req) -> TransformerConfig:
    out = megatron.render(req)
    assert out.supported, out.reason
    flags = _parse(_argv(out.text))
    config = TransformerConfig(**_config_kwargs(flags, req.model))  # __post_init__ validates
    _training_rules(flags, req)
    p = req.plan
    generator = RankGenerator(tp=p.tp, ep=1, dp=p.dp, pp=p.pp, cp=p.cp, order="tp-cp-ep-dp-pp")
    ours = rank_groups(p)
    for kind in ("tp", "cp", "dp", "pp"):
        assert generator.get_ranks(kind) == ours[kind], kind
    return config


LLAMA31_405B = load_model("llama3.1-405b")
GPT3_DROPOUT = load_model("GPT-3-175B").model_copy(update={"hidden_dropout": 0.1, "attention_dropout": 0.1})
# Llama 3 paper (arXiv 2407.21783) Table 4, 16K GPUs: TP 8, CP 16, PP 16, DP 8, 128K tokens,
# batch 16 sequences per DP rank; interleaved pipeline; first and last stage one layer fewer;
# all-gather CP; FSDP without resharding after forward (Megatron-FSDP optim_grads = zero 2).
LLAMA3_405B_4D = request(LLAMA31_405B, 131072, 128, tp=8, ring=16, pp=16, dp=8, zero=2, vpp=4,
                         first_stage_layers=7, last_stage_layers=7, cp_comm="allgather")
EXTRA = {
    "llama3_405b_4d_vpp4": LLAMA3_405B_4D,
    "llama3_405b_4d_fp8_zero1": LLAMA3_405B_4D.model_copy(update={"plan": LLAMA3_405B_4D.plan.model_copy(
        update={"zero": 1, "precision": "fp8"})}),
    "llama3_405b_pp8_counted": request(LLAMA31_405B, 8192, 64, tp=8, pp=8, dp=1, vpp=2,
                                       first_stage_layers=15, last_stage_layers=15),
    "llama3_405b_pp16_explicit_vpp2": request(LLAMA31_405B, 8192, 64, tp=8, pp=16, vpp=2,
                                              first_stage_layers=6, last_stage_layers=8),
    "llama3_8b_fp8_h100": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, precision="fp8"),
    # Current scaling with FP8 weights, as Megatron-Bridge's FP8-CS preset runs.
    "llama3_8b_fp8_tensorwise_zero1": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, zero=1, precision="fp8",
                                              fp8_recipe="tensorwise"),
    "llama3_8b_mxfp8_pp4_vpp2": request(LLAMA3_8B, 8192, 64, tp=2, pp=4, vpp=2, precision="mxfp8"),
    "llama3_8b_mxfp8_zero1": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, zero=1, precision="mxfp8"),
    # FP8 block scaling, as Megatron-LM's Qwen3-30B-A3B H100 FP8 recipe runs it.
    "llama3_8b_fp8_blockwise": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, zero=1, precision="fp8",
                                       fp8_recipe="blockwise"),
    # Activation CPU offloading, as Megatron-Bridge's Llama-3 70B GB200 recipe runs it.
    "llama3_8b_cpu_offload": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, zero=1, cpu_offload_layers=16),
    # bf16 Adam moments, as Megatron-LM's MXFP8 Qwen3-235B recipes keep them.
    "llama3_8b_bf16_adam_moments": request(LLAMA3_8B, 8192, 64, tp=2, dp=4, zero=1, adam_moments_bf16=True),
    # GPT-3's shape with Megatron's own dropout, as Narayanan et al. 2021 trained it (their Table 1
    # runs; the corpus's Megatron-* models state 0.1).
    "gpt3_175b_dropout": request(GPT3_DROPOUT, 2048, 1536, tp=8, pp=8, dp=2),
    # Timed with sp-plan --attention-kernel fa3 / cudnn on an H100: the flags select that backend.
    "llama3_8b_128k_usp_fa3": CASES["llama3_8b_128k_usp_tp2"].model_copy(update={"attention_kernel": "fa3"}),
    "llama3_8b_128k_usp_cudnn": CASES["llama3_8b_128k_usp_tp2"].model_copy(update={"attention_kernel": "cudnn"}),
    "llama3_70b_ring_fa2": CASES["llama3_70b_256k_ring_tp8_pp2"].model_copy(update={"attention_kernel": "fa2"}),
}


# The golden cases Megatron can express (zero 3 it refuses), and the pipeline / precision ones.
CHECKED = {**{name: r for name, r in CASES.items() if megatron.render(r).supported}, **EXTRA}


@pytest.mark.parametrize("req", CHECKED.values(), ids=CHECKED)
def test_megatron_core_accepts_the_flags(req):
    config = _check(req)
    p = req.plan
    assert config.virtual_pipeline_model_parallel_size == (p.vpp if p.vpp > 1 else None)
    assert config.fp8 == {"bf16": None, "fp8": "e4m3" if p.fp8_blockwise else "hybrid", "mxfp8": "e4m3"}[p.precision]
    # The recipe the cost model timed (cost.precision.quantize_bytes_per_elem).
    recipe = {"bf16": None, "fp8": p.fp8_recipe, "mxfp8": "mxfp8"}[p.precision]
    assert (config.fp8_recipe if p.precision != "bf16" else None) == recipe
    assert not config.fp8_dot_product_attention  # no flag sets it (flags.option_refusals.FP8_ATTENTION_NO_FLAG)
    # FP8 weights exactly where the cost model counts them (cost.fp8_params).
    assert config.fp8_param == (p.precision != "bf16" and p.zero == 1)
    # Activation offloading exactly as the cost model times it (cost.offload).
    assert config.cpu_offloading == (p.cpu_offload_layers > 0)
    assert config.cpu_offloading_num_layers == p.cpu_offload_layers
    assert config.cpu_offloading_activations and not config.cpu_offloading_weights
    # The dropout the cost model counted (cost.dropout), 0 for the Llama cases.
    assert (config.hidden_dropout, config.attention_dropout) == (req.model.hidden_dropout,
                                                                 req.model.attention_dropout)
    # Untied exactly where the model is (gpt_builders.py: share_embeddings_and_output_weights =
    # not --untie-embeddings-and-output-weights); GPT-3 ties, the Llama cases do not.
    flags = _parse(_argv(megatron.render(req).text))
    assert ("--untie-embeddings-and-output-weights" not in flags) == req.model.tie_word_embeddings
    # The backend of the kernel the plan was timed with, auto (Transformer Engine's choice) without one.
    backend = {None: AttnBackend.auto, "fa2": AttnBackend.flash, "fa3": AttnBackend.flash,
               "cudnn": AttnBackend.fused}[req.attention_kernel]
    assert config.attention_backend == backend


def test_dropout_is_explicit_because_megatron_defaults_to_0_1():
    """Megatron-LM builds --hidden-dropout / --attention-dropout from these fields (arguments.py at
    d98e8a64dd, ArgumentGroupFactory(TransformerConfig)): left out, a Llama plan would run at 0.1."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}
    assert (defaults["hidden_dropout"], defaults["attention_dropout"]) == (0.1, 0.1)
    flags = _parse(_argv(megatron.render(CASES["llama3_8b_128k_usp_tp2"]).text))
    assert flags["--hidden-dropout"] == ["0"] and flags["--attention-dropout"] == ["0"]
    flags = _parse(_argv(megatron.render(EXTRA["gpt3_175b_dropout"]).text))
    assert flags["--hidden-dropout"] == ["0.1"] and flags["--attention-dropout"] == ["0.1"]


def test_embeddings_are_untied_only_by_the_flag():
    """GPTModel shares the output layer with the embedding only when asked (its parameter's default
    is False), but Megatron-LM's builder asks unless --untie-embeddings-and-output-weights is given
    (gpt_builders.py at d98e8a64dd line 96; a store_true flag, arguments.py lines 2460-2461)."""
    import inspect

    from megatron.core.models.gpt import GPTModel

    param = inspect.signature(GPTModel.__init__).parameters["share_embeddings_and_output_weights"]
    assert param.default is False
    llama = _parse(_argv(megatron.render(CASES["llama3_8b_128k_usp_tp2"]).text))
    assert llama["--untie-embeddings-and-output-weights"] == []
    gpt3 = _parse(_argv(megatron.render(EXTRA["gpt3_175b_dropout"]).text))
    assert "--untie-embeddings-and-output-weights" not in gpt3


def test_llama3_405b_4d_uses_the_counted_split():
    flags = _parse(_argv(megatron.render(LLAMA3_405B_4D).text))
    assert "--account-for-embedding-in-pipeline-split" in flags and "--account-for-loss-in-pipeline-split" in flags
    assert flags["--num-virtual-stages-per-pipeline-rank"] == ["4"]
    assert "--decoder-first-pipeline-num-layers" not in flags
    assert flags["--cp-comm-type"] == ["all_gather"] and flags["--context-parallel-size"] == ["16"]
    assert flags["--data-parallel-sharding-strategy"] == ["optim_grads"]


def test_megatron_core_rejects_what_the_planner_rejects():
    """The checker can fail: megatron-core refuses 7 first-stage layers with vpp 2 as explicit
    counts, which the planner's layers rule also refuses."""
    from sp_planner.plan import violations

    bad = request(LLAMA31_405B, 8192, 64, tp=8, pp=16, vpp=2, first_stage_layers=7, last_stage_layers=9)
    assert [v.rule for v in violations(bad.plan, bad.model, bad.workload)] == ["layers"]
    with pytest.raises(ValueError, match="divisible by virtual pipeline"):
        TransformerConfig(num_layers=126, hidden_size=16384, num_attention_heads=128,
                          pipeline_model_parallel_size=16, virtual_pipeline_model_parallel_size=2,
                          num_layers_in_first_pipeline_stage=7, num_layers_in_last_pipeline_stage=9,
                          pipeline_dtype=torch.bfloat16)


def test_precision_aware_optimizer_flags_are_optimizer_config_fields():
    # megatron-core's OptimizerConfig holds what the three flags set (megatron/training/arguments.py
    # maps --use-precision-aware-optimizer, --exp-avg-dtype and --exp-avg-sq-dtype onto it); building
    # one needs TE's FusedAdam, so the fields and their dtypes are checked.
    import dataclasses

    from megatron.core.optimizer import OptimizerConfig

    names = {f.name for f in dataclasses.fields(OptimizerConfig)}
    assert {"use_precision_aware_optimizer", "exp_avg_dtype", "exp_avg_sq_dtype", "store_param_remainders"} <= names
    flags = _parse(_argv(megatron.render(EXTRA["llama3_8b_bf16_adam_moments"]).text))
    assert flags["--use-precision-aware-optimizer"] == [] and "--use-distributed-optimizer" in flags
    assert flags["--exp-avg-dtype"] == ["bf16"] and flags["--exp-avg-sq-dtype"] == ["bf16"]
    defaults = {f.name: f.default for f in dataclasses.fields(OptimizerConfig)}
    # The 16-bit master remainder cost.states counts for bf16 plans is megatron-core's default.
    assert defaults["store_param_remainders"] is True



def test_attention_backend_parses_as_megatron_lm_declares_it():
    """The flag as Megatron-LM's parser declares it: ArgumentGroupFactory(TransformerConfig) gives the
    enum field attention_backend type=AttnBackend[name], choices=list(AttnBackend) (megatron/training/
    argument_utils.py _get_enum_kwargs at d98e8a6; the same add_argument at core_v0.12.1 line 1237).
    The block states it under its own comment; SDPA has no backend."""
    import argparse

    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--attention-backend", type=lambda name: AttnBackend[name], choices=list(AttnBackend),
                        default=AttnBackend.auto)
    for kernel, backend in (("fa3", AttnBackend.flash), ("fa2", AttnBackend.flash), ("cudnn", AttnBackend.fused)):
        req = CASES["llama3_8b_128k_usp_tp2"].model_copy(update={"attention_kernel": kernel})
        text = megatron.render(req).text
        assert "    # attention kernel the plan was timed with\n    --attention-backend " in text
        words = _argv(text)
        at = words.index("--attention-backend")
        assert parser.parse_args(words[at:at + 2]).attention_backend == backend
    for kernel in (None, "sdpa"):
        req = CASES["llama3_8b_128k_usp_tp2"].model_copy(update={"attention_kernel": kernel})
        assert "--attention-backend" not in megatron.render(req).text
    assert parser.parse_args([]).attention_backend == AttnBackend.auto
    with pytest.raises((argparse.ArgumentError, KeyError)):
        parser.parse_args(["--attention-backend", "sdpa"])


def test_dataloader_mask_is_turned_off():
    """megatron-core's GPT dataset builds a dense [s, s] causal mask a sample unless its config says
    not to (GPTDatasetConfig.create_attention_mask, default True); Megatron-LM's parser declares the
    flag store_false into create_attention_mask_in_dataloader (arguments.py at d98e8a6 line 3332,
    core_v0.12.1 line 2311), which pretrain_gpt.py passes on as create_attention_mask (line 419).
    Every Megatron block turns it off."""
    import argparse
    import dataclasses

    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    defaults = {f.name: f.default for f in dataclasses.fields(GPTDatasetConfig)}
    assert defaults["create_attention_mask"] is True
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--no-create-attention-mask-in-dataloader", action="store_false",
                        dest="create_attention_mask_in_dataloader")
    assert parser.parse_args([]).create_attention_mask_in_dataloader is True
    for name, req in CHECKED.items():
        words = _argv(megatron.render(req).text)
        at = words.index("--no-create-attention-mask-in-dataloader")
        assert parser.parse_args(words[at:at + 1]).create_attention_mask_in_dataloader is False, name
        assert at + 1 == len(words) or words[at + 1].startswith("--"), name  # takes no value
