"""Megatron-LM flags: values and validity rules from shared reference framework_flags.md section 1."""

from __future__ import annotations

from sp_planner.flags.option_refusals import FP8_ATTENTION_NO_FLAG
from sp_planner.flags import render_flags
from sp_planner.specs.model import ModelSpec


def test_usp_maps_to_hierarchical_cp_a2a_inner(build, bash_args):
    flags = render_flags("megatron", build.cases["llama3_8b_128k_usp_tp2"])
    assert flags.supported
    args = bash_args(flags.text)
    assert args["--tensor-model-parallel-size"] == ["2"]
    assert args["--context-parallel-size"] == ["8"]  # cp = ulysses 4 x ring 2
    assert args["--cp-comm-type"] == ["a2a+p2p"]
    assert args["--hierarchical-context-parallel-sizes"] == ["4", "2"]  # a2a level first
    assert args["--sequence-parallel"] == []
    assert args["--use-distributed-optimizer"] == []
    assert args["--recompute-granularity"] == ["selective"]
    assert "--recompute-method" not in args and "--recompute-num-layers" not in args
    assert args["--num-query-groups"] == ["8"] and "--group-query-attention" in args
    assert args["--micro-batch-size"] == ["1"] and args["--global-batch-size"] == ["8"]
    assert args["--seq-length"] == ["131072"]
    assert flags.text.startswith("export CUDA_DEVICE_MAX_CONNECTIONS=1\n")


def test_ulysses_only_is_a2a_and_ring_only_is_p2p(build, bash_args):
    a2a = bash_args(render_flags("megatron", build.cases["llama2_7b_64k_ulysses_tp4"]).text)
    assert a2a["--cp-comm-type"] == ["a2a"] and a2a["--context-parallel-size"] == ["2"]
    assert "--hierarchical-context-parallel-sizes" not in a2a
    assert "--group-query-attention" not in a2a  # Llama-2-7B is MHA
    p2p = bash_args(render_flags("megatron", build.cases["llama3_70b_256k_ring_tp8_pp2"]).text)
    assert p2p["--cp-comm-type"] == ["p2p"] and p2p["--context-parallel-size"] == ["4"]
    assert p2p["--pipeline-model-parallel-size"] == ["2"]
    assert p2p["--recompute-granularity"] == ["full"]
    assert p2p["--recompute-method"] == ["uniform"] and p2p["--recompute-num-layers"] == ["1"]


def test_no_tp_no_cp_drops_tp_sp_comm_type_and_env(build, bash_args):
    flags = render_flags("megatron", build.request(build.llama2_7b, 4096, 16, dp=8, zero=0))
    args = bash_args(flags.text)
    assert "--sequence-parallel" not in args and "--cp-comm-type" not in args
    assert "--use-distributed-optimizer" not in args  # zero 0 is plain DDP
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in flags.text
    assert args["--global-batch-size"] == ["16"]


def test_a2a_rejected_with_one_kv_head_per_tp_rank(build, bash_args):
    # Reference 1.4/1.5: Llama-70B (8 groups) with TP=8 leaves 1 KV head per rank, so a2a allows only CP=1.
    flags = render_flags("megatron", build.request(build.llama3_70b, 131072, 16, tp=8, ulysses=2, ring=2, pp=2))
    assert not flags.supported
    assert "1 KV heads per TP rank" in flags.reason and "ulysses 2" in flags.reason
    assert flags.text == ""


def test_zero_2_and_3_are_megatron_fsdp_without_the_connections_env(build, bash_args):
    for zero, strategy in ((2, "optim_grads"), (3, "optim_grads_params")):
        flags = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, tp=2, ring=4, zero=zero))
        args = bash_args(flags.text)
        assert args["--use-megatron-fsdp"] == [] and args["--data-parallel-sharding-strategy"] == [strategy]
        assert args["--ckpt-format"] == ["fsdp_dtensor"]  # validate_args asserts it for Megatron-FSDP
        assert "--use-distributed-optimizer" not in args
        # Megatron-FSDP asserts CUDA_DEVICE_MAX_CONNECTIONS != 1, even with tp and cp > 1
        assert "CUDA_DEVICE_MAX_CONNECTIONS" not in flags.text
        # The model's fp32 main gradients (cost.states) are core_v0.16's; core_v0.17+ needs the flag.
        assert any("--megatron-fsdp-main-grads-dtype fp32" in note for note in flags.notes)


def test_hsdp_replicas_are_distributed_optimizer_instances(build, bash_args):
    for zero in (1, 3):
        args = bash_args(render_flags("megatron", build.request(
            build.llama3_8b, 65536, 16, tp=2, dp=4, zero=zero, dp_replicate=2)).text)
        assert args["--num-distributed-optimizer-instances"] == ["2"]
    assert "--num-distributed-optimizer-instances" not in bash_args(render_flags(
        "megatron", build.request(build.llama3_8b, 65536, 16, tp=2, dp=4, zero=3)).text)


def test_zero3_keeping_parameters_is_torch_fsdp2_only_without_pp(build, bash_args):
    flags = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, tp=2, dp=4, zero=3,
                                                   reshard_after_forward=False))
    args = bash_args(flags.text)
    assert args["--use-torch-fsdp2"] == [] and args["--torch-fsdp2-no-reshard-after-forward"] == []
    assert args["--ckpt-format"] == ["torch_dist"] and "--use-distributed-optimizer" not in args
    refused = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, tp=2, pp=2, dp=2, zero=3,
                                                     reshard_after_forward=False))
    assert not refused.supported and "pp 2" in refused.reason and "pipeline parallelism" in refused.reason
    # "--use-torch-fsdp2 is not supported with expert parallelism" (arguments.py at d98e8a6).
    from sp_planner.catalog import load_model
    from sp_planner.flags import FlagRequest
    from sp_planner.plan import ParallelPlan
    from sp_planner.specs import Workload

    moe = FlagRequest(model=load_model("qwen3-30b-a3b"), workload=Workload(seq_len=32768, global_batch=8),
                      plan=ParallelPlan(tp=1, ring=8, dp=4, ep=8, zero=3, reshard_after_forward=False),
                      num_nodes=4, gpus_per_node=8)
    refused = render_flags("megatron", moe)
    assert not refused.supported and "ep 8" in refused.reason and "expert parallelism" in refused.reason


def test_zero3_keeping_fp8_parameters_runs_torch_fsdp2_with_bf16_weights(build, bash_args):
    # With Transformer Engine >= 2.0 Megatron turns --fp8-param-gather off under --use-torch-fsdp2 and
    # gathers bf16 weights (arguments.py at d98e8a6 lines 1051-1056), as the plan is priced
    # (cost.fp8_params.fp8_weights_modelled, torch_fsdp2_casts): no --fp8-param-gather, a note says so.
    # Megatron-FSDP (reshard after forward) gathers FP8 and keeps the flag.
    fp8 = dict(tp=2, dp=4, zero=3, precision="fp8")
    kept = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, reshard_after_forward=False, **fp8))
    args = bash_args(kept.text)
    assert kept.supported and args["--use-torch-fsdp2"] == [] and "--fp8-param-gather" not in args
    assert any("torch FSDP2 (--use-torch-fsdp2) gathers the GEMM weights in bf16" in n for n in kept.notes)
    args = bash_args(render_flags("megatron", build.request(build.llama3_8b, 65536, 8, **fp8)).text)
    assert args["--use-megatron-fsdp"] == [] and args["--fp8-param-gather"] == []


def test_allgather_ring_is_cp_comm_type_all_gather_and_refused_under_ulysses(build, bash_args):
    flags = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, tp=2, ring=4, cp_comm="allgather"))
    args = bash_args(flags.text)
    assert args["--cp-comm-type"] == ["all_gather"] and args["--context-parallel-size"] == ["4"]
    usp = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, ulysses=2, ring=4,
                                                 cp_comm="allgather"))
    assert not usp.supported and "a2a + all_gather" in usp.reason


def test_seq_must_divide_by_2cp_even_with_contiguous_layout(build, bash_args):
    # The plan's own rule for a contiguous ring is seq % (ring*ulysses*tp) = 12 % 4 == 0, but Megatron
    # load-balances every CP shard: seq % (2*cp) = 12 % 8 != 0 (arguments.py:1335-1338).
    request = build.request(build.llama2_7b, 12, 4, gpus_per_node=4, ring=4, ring_layout="contiguous")
    flags = render_flags("megatron", request)
    assert not flags.supported and "2*cp = 2*4" in flags.reason


def test_contiguous_layout_note_when_it_runs(build, bash_args):
    request = build.request(build.llama2_7b, 32768, 4, gpus_per_node=4, ring=4, ring_layout="contiguous")
    flags = render_flags("megatron", request)
    assert flags.supported and any("contiguous ring layout" in note for note in flags.notes)


def test_query_groups_must_divide_tp_or_be_divided(build, bash_args):
    # 12 heads, 6 KV groups, tp 4, ulysses 3: the plan rule (tp*ulysses = 12 vs 6 groups) passes, but
    # Megatron needs G % TP == 0 or TP % G == 0 (transformer_config.py): 6 vs 4 fails.
    model = ModelSpec(name="odd", hidden_size=768, intermediate_size=2048, num_layers=4, num_heads=12,
                      num_kv_heads=6, head_dim=64, vocab_size=1000)
    flags = render_flags("megatron", build.request(model, 12288, 1, gpus_per_node=12, tp=4, ulysses=3))
    assert not flags.supported and "num_query_groups 6 and tp 4" in flags.reason


def test_kv_replication_note_when_tp_exceeds_groups(build, bash_args):
    flags = render_flags("megatron", build.request(build.llama3_8b, 65536, 8, gpus_per_node=16, tp=16))
    assert flags.supported
    assert any("replicates each KV head over 2 TP ranks" in note for note in flags.notes)


def test_other_frameworks_refuse_allgather_cp_and_hsdp_by_name(build):
    gather = build.request(build.llama3_8b, 65536, 8, ulysses=2, ring=4, cp_comm="allgather")
    assert "kvallgather_cp_algo" in render_flags("mindspeed", gather).reason
    assert "no K/V all-gather attention" in render_flags("yunchang", gather).reason
    assert "nor all-gather CP" in render_flags("deepspeed", gather).reason
    hsdp = build.request(build.llama3_8b, 65536, 16, ulysses=4, dp=4, zero=3, dp_replicate=2)
    assert "dp_replicate 2 cannot be expressed" in render_flags("deepspeed", hsdp).reason
    assert "dp_replicate 2 cannot be expressed" in render_flags("mindspeed", hsdp).reason


def test_fp8_plans_with_the_distributed_optimizer_keep_fp8_weights(build, bash_args):
    # The cost model counts FP8 GEMM weights for FP8/MXFP8 with ZeRO-1 (cost.fp8_params), so the flags
    # say so: --fp8-param-gather (validate_args asserts the distributed optimizer), with MXFP8 also
    # --reuse-grad-buf-for-mxfp8-param-ag, as Megatron-Bridge's bf16_with_mxfp8_mixed pairs them.
    fp8 = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1, precision="fp8"))
    args = bash_args(fp8.text)
    assert args["--fp8-param-gather"] == [] and "--use-distributed-optimizer" in args
    assert "--reuse-grad-buf-for-mxfp8-param-ag" not in args
    assert any("--fp8-param-gather" in note and "1 byte a parameter" in note for note in fp8.notes)
    mx = bash_args(render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1,
                                                          precision="mxfp8")).text)
    assert mx["--fp8-param-gather"] == [] and mx["--reuse-grad-buf-for-mxfp8-param-ag"] == []
    # Megatron-FSDP with sharded parameters (ZeRO-3) keeps per-tensor FP8 weights as its shards
    # (cost.fp8_params: Megatron-FSDP's FP8 parameters), gathered unit by unit in FP8.
    fsdp = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=3, precision="fp8"))
    fsdp_args = bash_args(fsdp.text)
    assert fsdp_args["--fp8-param-gather"] == [] and "--use-megatron-fsdp" in fsdp_args
    assert any("Megatron-FSDP shards and gathers unit by unit in FP8" in note for note in fsdp.notes)
    # Plain DDP, ZeRO-2, MXFP8 under Megatron-FSDP and bf16 keep bf16 weights, as the model counts them.
    for zero, precision in ((0, "fp8"), (2, "fp8"), (3, "mxfp8"), (1, "bf16")):
        flags = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=zero,
                                                       precision=precision))
        assert "--fp8-param-gather" not in bash_args(flags.text), (zero, precision)
    # MindSpeed's runtime keeps bf16 weights (cost.runtime), so its flags do not emit it.
    ms = render_flags("mindspeed", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1, precision="fp8"))
    assert ms.supported and "--fp8-param-gather" not in ms.text
    assert any("all communication stays bf16" in note for note in ms.notes)


def test_fp8_recipe_follows_the_plan(build, bash_args):
    # Delayed scaling is Megatron's default and the plan's; tensorwise (current scaling) is emitted
    # as the plan states it, and only per-tensor FP8 carries a recipe of its own.
    delayed = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="fp8"))
    assert bash_args(delayed.text)["--fp8-recipe"] == ["delayed"]
    assert any("--fp8-recipe tensorwise" in note for note in delayed.notes)
    current = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="fp8",
                                                     fp8_recipe="tensorwise"))
    assert bash_args(current.text)["--fp8-recipe"] == ["tensorwise"]
    assert any("amax in a pass before its cast" in note for note in current.notes)
    mx = render_flags("megatron", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="mxfp8",
                                                fp8_recipe="tensorwise"))
    assert bash_args(mx.text)["--fp8-recipe"] == ["mxfp8"]
    ms = render_flags("mindspeed", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="fp8",
                                                 fp8_recipe="tensorwise"))
    assert "--fp8-recipe tensorwise" in ms.text


def test_fp8_attention_has_no_flag_and_is_refused(build, bash_args):
    """Megatron-LM builds no flag for TransformerConfig.fp8_dot_product_attention (arguments.py's
    exclude list); MindSpeed runs Megatron's arguments."""
    req = build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1, precision="mxfp8", fp8_attention=True)
    for name in ("megatron", "mindspeed"):
        flags = render_flags(name, req)
        assert not flags.supported and flags.reason.endswith(FP8_ATTENTION_NO_FLAG)
    plain = build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1, precision="mxfp8")
    assert render_flags("megatron", plain).supported
    assert "fp8-dot-product-attention" not in render_flags("megatron", plain).text
    # torchao's converters quantize linear layers only.
    titan = render_flags("torchtitan", req)
    assert not titan.supported and "fp8_attention cannot be expressed" in titan.reason


def test_cpu_offload_flag_and_its_refusals(build, bash_args):
    req = build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1, cpu_offload_layers=16)
    assert bash_args(render_flags("megatron", req).text)["--cpu-offloading-num-layers"] == ["16"]
    plain = build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, zero=1)
    assert "--cpu-offloading" not in render_flags("megatron", plain).text
    for framework in ("mindspeed", "torchtitan"):
        other = render_flags(framework, req)
        assert not other.supported and "cpu_offload_layers 16 cannot be expressed" in other.reason, framework
    single = build.request(build.llama3_8b, 8192, 64, ulysses=8, cpu_offload_layers=16)
    for framework in ("deepspeed", "yunchang"):
        other = render_flags(framework, single)
        assert not other.supported and "Megatron-LM only" in other.reason, framework


def test_context_parallelism_is_refused_where_transformer_engine_runs_its_unfused_attention(build, bash_args):
    # Gemma-2's head dim 256 on sm89 (FlagChoices.te_unfused_attention, set from the GPU by
    # flags.flash_head_dim.te_runs_unfused): TE's unfused attention takes no context parallelism.
    from sp_planner.catalog import load_model

    gemma = load_model("Gemma-2-9B")
    usp = build.request(gemma, 32768, 8, ulysses=8).model_copy(update={"te_unfused_attention": True})
    flags = render_flags("megatron", usp)
    assert not flags.supported and flags.reason == (
        "cp 8 cannot run: Transformer Engine runs Gemma-2-9B's attention (head dim 256) unfused on this GPU, and its "
        "unfused attention takes no context parallelism (get_attention_backend at d0067d0); use ulysses 1 ring 1")
    tp = build.request(gemma, 32768, 8, tp=8).model_copy(update={"te_unfused_attention": True})
    assert bash_args(render_flags("megatron", tp).text)["--context-parallel-size"] == ["1"]
    # Where a fused kernel runs (the default), the same plan is Megatron's; yunchang calls flash-attn.
    assert render_flags("megatron", usp.model_copy(update={"te_unfused_attention": False})).supported
    assert render_flags("yunchang", build.request(gemma, 32768, 8, ulysses=8).model_copy(
        update={"te_unfused_attention": True})).supported
