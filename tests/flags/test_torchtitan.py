"""torchtitan 0.2.x TOML (--framework-version 0.2.2; shared reference framework_flags.md section 4):
ring-only CP, S % (2*cp*tp). The rules are shared with 0.3.x (test_torchtitan_v03.py)."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from sp_planner.cost.gemm_work import gemm_work
from sp_planner.cost.runtime import TORCHTITAN_RUNTIMES
from sp_planner.cost.tp_gathers import TE_TP_GATHERS
from sp_planner.catalog import load_hardware
from sp_planner.flags import FlagRequest, torchtitan_v02
from sp_planner.plan import PRECISIONS
from sp_planner.flags import render_flags as _render_flags


def render_flags(framework: str, request: FlagRequest):
    return _render_flags(framework, request.model_copy(update={"framework_version": "0.2.2"}))


def test_ring_tp_pp_config_values(build):
    flags = render_flags("torchtitan", build.cases["llama3_70b_256k_ring_tp8_pp2"])
    assert flags.supported
    config = tomllib.loads(flags.text)
    assert config["training"] == {"seq_len": 262144, "local_batch_size": 16, "global_batch_size": 16}
    assert config["parallelism"] == {
        "data_parallel_replicate_degree": 1,
        "data_parallel_shard_degree": 1,
        "fsdp_reshard_after_forward": "never",  # zero 1 -> FSDP2 without re-shard (ZeRO-2)
        "tensor_parallel_degree": 8,
        "pipeline_parallel_degree": 2,
        "pipeline_parallel_microbatch_size": 1,  # 16 local / 1 = 16 pipeline micro-batches
        "pipeline_parallel_schedule": "1F1B",
        # 80 layers, 40 per stage: the embedding and output weigh nothing in torchtitan's split.
        "pipeline_parallel_layers_per_stage": 40,
        "pipeline_parallel_first_stage_less_layers": 0,
        "pipeline_parallel_last_stage_less_layers": 0,
        "context_parallel_degree": 4,
        "context_parallel_rotate_method": "alltoall",
    }
    assert config["activation_checkpoint"] == {"mode": "full"}
    assert any("no ZeRO-1" in note for note in flags.notes)


def test_zero3_data_parallel_without_pp(build):
    request = build.request(build.llama3_8b, 65536, 32, tp=2, ring=2, dp=4, micro_batch=2, zero=3,
                            recompute="selective")
    config = tomllib.loads(render_flags("torchtitan", request).text)
    # no PP: local batch = micro batch, gradient accumulation = 32 / (2 * 4) = 4 steps
    assert config["training"] == {"seq_len": 65536, "local_batch_size": 2, "global_batch_size": 32}
    assert config["parallelism"]["data_parallel_shard_degree"] == 4
    assert config["parallelism"]["fsdp_reshard_after_forward"] == "always"
    assert "pipeline_parallel_microbatch_size" not in config["parallelism"]
    assert config["activation_checkpoint"] == {"mode": "selective", "selective_ac_option": "op"}


def test_zero0_is_ddp_and_none_recompute(build):
    config = tomllib.loads(render_flags("torchtitan", build.request(build.llama2_7b, 4096, 16, dp=8, zero=0)).text)
    assert config["parallelism"]["data_parallel_replicate_degree"] == 8
    assert config["parallelism"]["data_parallel_shard_degree"] == 1
    assert "context_parallel_rotate_method" not in config["parallelism"]
    assert config["activation_checkpoint"] == {"mode": "none"}


def test_zero0_ddp_with_tp_unsupported(build):
    flags = render_flags("torchtitan", build.request(build.llama2_7b, 4096, 16, dp=2, tp=4, zero=0))
    assert not flags.supported and flags.reason.startswith("zero 0 with dp 2 and tp 4 cannot be expressed")


def test_ulysses_unsupported(build):
    for case in ("llama3_8b_128k_usp_tp2", "llama2_7b_64k_ulysses_tp4", "llama2_7b_32k_ulysses8_zero3"):
        flags = render_flags("torchtitan", build.cases[case])
        assert not flags.supported and "ring attention only" in flags.reason


def test_seq_rule_2_cp_tp(build):
    # The plan rule with ring 1 is seq % tp = 4098 % 2 == 0; torchtitan needs seq % (tp*2*cp) = 4098 % 4.
    flags = render_flags("torchtitan", build.request(build.llama2_7b, 4098, 4, tp=2, dp=4))
    assert not flags.supported and "tp*2*cp = 2*2*1" in flags.reason


def test_kv_heads_must_divide_tp(build):
    flags = render_flags("torchtitan", build.request(build.llama3_70b, 8192, 1, gpus_per_node=16, tp=16))
    assert not flags.supported and "num_kv_heads 8 is not divisible by tp 16" in flags.reason


def test_pipeline_split_and_float8_sections(build):
    request = build.request(build.llama3_8b, 8192, 64, tp=2, pp=4, vpp=2, precision="fp8", fp8_recipe="tensorwise")
    config = tomllib.loads(render_flags("torchtitan", request).text)
    assert config["parallelism"]["pipeline_parallel_schedule"] == "Interleaved1F1B"
    # 32 layers even over 4 ranks x 2 virtual stages: 4 per stage, nothing taken off first/last.
    assert config["parallelism"]["pipeline_parallel_layers_per_stage"] == 4
    assert config["parallelism"]["pipeline_parallel_first_stage_less_layers"] == 0
    assert config["model"] == {"converters": ["float8"]}
    assert config["quantize"]["linear"]["float8"] == {"recipe_name": "tensorwise", "filter_fqns": ["output"]}
    # Compiled, as torchtitan's float8 needs to fuse its casts (the cost model prices them fused).
    assert config["compile"] == {"enable": True, "components": ["model", "loss"]}


def test_delayed_scaling_is_refused_and_current_scaling_kept(build):
    # torchao float8 scales each tensor from its own amax (0.2.2 job_config.py line 738): a plan
    # priced with delayed scaling's free amax is not one torchtitan runs; tensorwise is.
    current = build.request(build.llama3_8b, 8192, 64, tp=2, pp=4, vpp=2, precision="fp8", fp8_recipe="tensorwise")
    assert render_flags("torchtitan", current).supported
    delayed = current.model_copy(update={"plan": current.plan.model_copy(update={"fp8_recipe": "delayed"})})
    flags = render_flags("torchtitan", delayed)
    assert (flags.supported, flags.text) == (False, "")
    assert flags.reason == ("fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao) scales each "
                            "tensor from its own amax, it has no delayed scaling (its recipes: tensorwise, rowwise, "
                            "rowwise_with_gw_hp); plan with --fp8-recipe tensorwise")
    # bf16 and MXFP8 read no recipe: the plan's default delayed refuses nothing there.
    for precision in ("bf16", "mxfp8"):
        other = delayed.model_copy(update={"plan": delayed.plan.model_copy(update={"precision": precision})})
        assert render_flags("torchtitan", other).supported, precision


def test_hsdp_keep_parameters_and_allgather_cp(build):
    request = build.request(build.llama3_8b, 65536, 32, tp=2, ring=2, dp=4, zero=3, dp_replicate=2,
                            reshard_after_forward=False, cp_comm="allgather")
    flags = render_flags("torchtitan", request)
    parallelism = tomllib.loads(flags.text)["parallelism"]
    # HSDP: 2 replicas of FSDP over dp_shard 2 (x cp 2); parameters kept from forward to backward
    assert parallelism["data_parallel_replicate_degree"] == 2
    assert parallelism["data_parallel_shard_degree"] == 2
    assert parallelism["fsdp_reshard_after_forward"] == "never"
    assert parallelism["context_parallel_rotate_method"] == "allgather"
    assert any("allgather rotater" in note for note in flags.notes)


def test_replicas_without_shard_is_ddp_and_refused_with_tp(build):
    request = build.request(build.llama3_8b, 65536, 16, tp=2, dp=4, zero=1, dp_replicate=4)
    flags = render_flags("torchtitan", request)
    assert not flags.supported and flags.reason.startswith("dp_replicate 4 = dp 4 (no FSDP shard) and tp 2")


def test_tied_embeddings_refuse_pipeline(build):
    # torchtitan raises NotImplementedError for weight tying with PP (decoder.py b5bcd76 168-171).
    tied = build.llama2_7b.model_copy(update={"tie_word_embeddings": True})
    for version in ("0.2.2", "0.3.0"):
        piped = build.request(tied, 4096, 16, dp=4, pp=2).model_copy(update={"framework_version": version})
        flags = _render_flags("torchtitan", piped)
        assert not flags.supported and "tie_word_embeddings with pp 2 cannot be expressed" in flags.reason
    assert render_flags("torchtitan", build.request(tied, 4096, 16, dp=8)).supported


@pytest.mark.parametrize("precision", ["bf16", "fp8", "mxfp8"])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_the_toml_compiles_where_the_cost_model_prices_fused_casts(build, precision, tp):
    # One rule (torchtitan_v02.compiles) writes [compile]: every float8 plan, MXFP8 at tp 1 only
    # (mx.py refuses compile with TP), never bf16; where it stays off, a note says the plan prices
    # the eager casts as fused.
    flags = render_flags("torchtitan", build.request(build.llama3_8b, 8192, 8, tp=tp, dp=8 // tp, zero=3,
                                                     precision=precision, fp8_recipe="tensorwise"))
    assert flags.supported, flags.reason
    compiled = tomllib.loads(flags.text).get("compile", {}).get("enable", False)
    assert compiled == torchtitan_v02.compiles(precision, tp) == (precision == "fp8" or (precision, tp) == ("mxfp8", 1))
    assert any("torch.compile stays off" in note for note in flags.notes) == (precision != "bf16" and not compiled)
    assert any("compile's other fusions" in note for note in flags.notes) == compiled


def test_the_0_2_runtime_prices_casts_as_compiled(build):
    # Under torch.compile each tensor is cast once a pass (cost.precision's count, as Transformer
    # Engine's): at tp 1, where no gather differs, the 0.2.x runtime's layer work is TE's to the bit,
    # for both per-tensor FP8 and MXFP8.
    hardware = load_hardware("b200")
    for precision in ("fp8", "mxfp8"):
        one = dict(seq_len=8192, tp=np.array([1]), micro_batch=1, cp=1, ep=1, etp=1,
                   precision=np.array([PRECISIONS.index(precision)]), fp8_current=np.array([True]), gpus_per_node=8)
        titan = gemm_work(build.llama3_8b, hardware, **one, tp_gathers=TORCHTITAN_RUNTIMES["0.2"].tp_gathers)
        te = gemm_work(build.llama3_8b, hardware, **one, tp_gathers=TE_TP_GATHERS)
        assert (titan.fwd_s[0], titan.bwd_s[0]) == (te.fwd_s[0], te.bwd_s[0])


@pytest.mark.parametrize("tp, precision, supported", [
    (2, "fp8", False), (8, "fp8", False),  # torchtitan raises for tensorwise float8 with TP
    (1, "fp8", True), (2, "bf16", True), (2, "mxfp8", True),  # no float8 TP, or float8 off
])
def test_deepseek_v3_refuses_tensorwise_float8_with_tp(build, tp, precision, supported):
    # v0.2.2 models/deepseek_v3/infra/parallelize.py lines 75-87: NotImplementedError("Currently,
    # float8 tensorwise TP is not tested for deepseekv3") where float8 is on, not rowwise, with TP.
    from sp_planner.catalog import load_model

    deepseek = load_model("DeepSeek-V3")
    request = build.request(deepseek, 4096, 64, tp=tp, dp=64 // tp, ep=8, zero=3, recompute="full",
                            precision=precision, fp8_recipe="tensorwise" if precision == "fp8" else "delayed")
    flags = render_flags("torchtitan", request)
    assert flags.supported == supported, flags.reason
    if not supported:
        assert flags.reason == (f"fp8 with tp {tp} cannot be expressed for DeepSeek-V3 on torchtitan 0.2.2: its "
                                "deepseek_v3 model (multi-latent attention) raises NotImplementedError for tensorwise "
                                "float8 with tensor parallelism (models/deepseek_v3/infra/parallelize.py); use tp 1 "
                                "(expert and data parallelism) or bf16")
    # A dense model's float8 TP runs torchao's float8 styles: expressed.
    assert render_flags("torchtitan", build.request(build.llama3_8b, 8192, 8, tp=tp, dp=8 // tp, zero=3,
                                                    precision="fp8", fp8_recipe="tensorwise")).supported


def test_1f1b_needs_a_micro_batch_per_stage(build):
    # torch.distributed.pipelining Schedule1F1B raises when n_microbatches < the number of stages;
    # Megatron's 1F1B runs it (a longer bubble).
    few = build.request(build.llama3_70b, 8192, 2, tp=8, pp=4)
    for version in ("0.2.2", "0.3.0"):
        flags = _render_flags("torchtitan", few.model_copy(update={"framework_version": version}))
        assert not flags.supported and "2 micro-batches per step with pp 4" in flags.reason
    assert _render_flags("megatron", few).supported
    assert _render_flags("torchtitan", build.request(build.llama3_70b, 8192, 4, tp=8, pp=4)).supported


def test_a_vpp_that_does_not_divide_a_ranks_layers_is_refused(build):
    # torchtitan counts ceil((layers + first_less + last_less) / layers_per_stage) virtual stages
    # (pipeline_parallel.py _get_pipeline_metadata, v0.2.2 lines 71-97). Llama-3-8B pinned 16/16 on
    # pp 2: vpp 4 -> 4 a stage, 32 / 4 = 8 = pp x vpp stages; vpp 3 -> 16 // 3 = 5, ceil(32 / 5) = 7,
    # which pp 2 does not divide (torchtitan raises); vpp 64 -> layers_per_stage 0 (a division by 0).
    def flags(vpp: int):
        request = build.request(build.llama3_8b, 8192, 128, pp=2, vpp=vpp, dp=8, first_stage_layers=16,
                                last_stage_layers=16)
        return render_flags("torchtitan", request)

    fits = flags(4)
    assert fits.supported
    assert tomllib.loads(fits.text)["parallelism"]["pipeline_parallel_layers_per_stage"] == 4
    for vpp, per_stage in ((3, 5), (64, 0)):
        refused = flags(vpp)
        assert not refused.supported
        assert (f"vpp {vpp} with 16 layers a pipeline rank cannot be expressed: torchtitan's "
                f"pipeline_parallel_layers_per_stage (16 // {vpp} = {per_stage})") in refused.reason
