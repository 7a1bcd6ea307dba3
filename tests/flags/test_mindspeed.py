"""MindSpeed flags: CP algorithm choice and its rules (shared reference framework_flags.md section 2)."""

from __future__ import annotations

from sp_planner.flags import render_flags


def test_usp_is_hybrid_cp_algo_with_ulysses_degree(build, bash_args):
    flags = render_flags("mindspeed", build.cases["llama3_8b_128k_usp_tp2"])
    assert flags.supported
    args = bash_args(flags.text, "MINDSPEED_ARGS")
    assert args["--context-parallel-size"] == ["8"]
    assert args["--context-parallel-algo"] == ["hybrid_cp_algo"]
    assert args["--ulysses-degree-in-cp"] == ["4"]
    assert args["--cp-window-size"] == ["1"]
    assert args["--attention-mask-type"] == ["causal"]
    assert "--use-cp-send-recv-overlap" in args and "--megatron-cp-in-bnsd" in args
    # MindSpeed picks its algorithm itself; Megatron's TE switches must not appear.
    assert "--cp-comm-type" not in args and "--hierarchical-context-parallel-sizes" not in args
    assert args["--tensor-model-parallel-size"] == ["2"] and "--sequence-parallel" in args


def test_ulysses_only_and_ring_only_algorithms(build, bash_args):
    ulysses = bash_args(render_flags("mindspeed", build.cases["llama2_7b_64k_ulysses_tp4"]).text, "MINDSPEED_ARGS")
    assert ulysses["--context-parallel-algo"] == ["ulysses_cp_algo"]
    assert "--ulysses-degree-in-cp" not in ulysses and "--cp-window-size" not in ulysses
    ring = bash_args(render_flags("mindspeed", build.cases["llama3_70b_256k_ring_tp8_pp2"]).text, "MINDSPEED_ARGS")
    assert ring["--context-parallel-algo"] == ["megatron_cp_algo"]
    assert ring["--cp-window-size"] == ["1"] and "--ulysses-degree-in-cp" not in ring


def test_no_cp_has_no_algorithm_flags(build, bash_args):
    args = bash_args(render_flags("mindspeed", build.request(build.llama3_8b, 8192, 8, tp=8)).text, "MINDSPEED_ARGS")
    assert args["--context-parallel-size"] == ["1"]
    assert "--context-parallel-algo" not in args and "--attention-mask-type" not in args


def test_non_causal_is_refused_not_given_a_general_mask(build):
    # general is the dataloader's lower-triangular mask, not a bidirectional one (flags.attention_mask).
    request = build.request(build.llama2_7b, 32768, 1, ulysses=2, ring=4, causal=False)
    flags = render_flags("mindspeed", request)
    assert not flags.supported and "--attention-mask-type general" not in flags.text
    assert flags.reason.count("a non-causal (bidirectional) plan cannot be expressed") == 1


def test_ring_algorithms_need_seq_divisible_by_2cp(build):
    # megatron_cp_algo: seq % (2*cp) == 0; 12 % 8 != 0 although the contiguous plan rule (12 % 4) holds.
    request = build.request(build.llama2_7b, 12, 4, gpus_per_node=4, ring=4, ring_layout="contiguous")
    flags = render_flags("mindspeed", request)
    assert not flags.supported and "2*cp = 2*4 (megatron_cp_algo)" in flags.reason


def test_zero_3_unsupported(build):
    flags = render_flags("mindspeed", build.cases["llama2_7b_32k_ulysses8_zero3"])
    assert not flags.supported and "ZeRO-1 only" in flags.reason


def test_allgather_ring_is_kvallgather_cp_algo_with_transformer_engine(build, bash_args):
    """MindSpeed's features path (26.0.0 on, master 028de58c): kvallgather_cp_algo needs a causal
    mask, seq % 2cp and --transformer-impl transformer_engine, and has no Ulysses level."""
    gather = render_flags("mindspeed", build.request(build.llama3_8b, 65536, 8, ring=8, cp_comm="allgather"))
    assert gather.supported, gather.reason
    args = bash_args(gather.text, "MINDSPEED_ARGS")
    assert args["--context-parallel-algo"] == ["kvallgather_cp_algo"]
    assert args["--transformer-impl"] == ["transformer_engine"] and args["--attention-mask-type"] == ["causal"]
    assert "--cp-window-size" not in args and "--use-cp-send-recv-overlap" not in args
    assert any("features path from 26.0.0" in note for note in gather.notes)
    fp8 = render_flags("mindspeed", build.request(build.llama3_8b, 65536, 8, ring=8, cp_comm="allgather",
                                                  precision="fp8"))
    assert fp8.text.count("--transformer-impl transformer_engine") == 1  # FP8 asks for it too: once
    usp = render_flags("mindspeed", build.request(build.llama3_8b, 65536, 8, ulysses=2, ring=4, cp_comm="allgather"))
    assert not usp.supported and "kvallgather_cp_algo is one level" in usp.reason


def test_alibi_runs_under_cp_only_as_megatron_cp_algo(build, bash_args):
    # mindspeed/arguments.py (028de58c) lines 645-657 and context_parallel_feature.py 41-44, 53-55.
    alibi = build.llama2_7b.model_copy(update={"position_embedding": "alibi"})
    ring = render_flags("mindspeed", build.request(alibi, 32768, 1, ring=8))
    assert ring.supported, ring.reason
    assert bash_args(ring.text, "MINDSPEED_ARGS")["--alibi-fusion-attn-type"] == ["2"]
    assert any("--position-embedding-type alibi" in note for note in ring.notes)
    usp = render_flags("mindspeed", build.request(alibi, 32768, 1, ulysses=2, ring=4))
    assert not usp.supported and "ALiBi under hybrid_cp_algo" in usp.reason
    bidirectional = render_flags("mindspeed", build.request(alibi, 32768, 1, ring=8, causal=False))
    assert not bidirectional.supported and "a non-causal (bidirectional) plan" in bidirectional.reason
    # A RoPE model's flags carry none of it.
    rope = bash_args(render_flags("mindspeed", build.request(build.llama2_7b, 32768, 1, ring=8)).text, "MINDSPEED_ARGS")
    assert "--alibi-fusion-attn-type" not in rope


def test_dropout_is_the_models_not_megatrons_default(build, bash_args):
    # MindSpeed keeps Megatron's --hidden-dropout / --attention-dropout (default 0.1 each,
    # core_v0.12.1 arguments.py lines 1465-1468): the plan's values are passed.
    llama = bash_args(render_flags("mindspeed", build.cases["llama3_8b_128k_usp_tp2"]).text, "MINDSPEED_ARGS")
    assert llama["--hidden-dropout"] == ["0"] and llama["--attention-dropout"] == ["0"]
    model = build.llama3_8b.model_copy(update={"hidden_dropout": 0.1, "attention_dropout": 0.05})
    args = bash_args(render_flags("mindspeed", build.request(model, 8192, 8, tp=8)).text, "MINDSPEED_ARGS")
    assert args["--hidden-dropout"] == ["0.1"] and args["--attention-dropout"] == ["0.05"]


def test_untied_embeddings_are_stated(build, bash_args):
    # Megatron (which MindSpeed patches) ties input and output embeddings unless
    # --untie-embeddings-and-output-weights (core_v0.12.1 arguments.py line 1307, store_true).
    llama = bash_args(render_flags("mindspeed", build.cases["llama3_8b_128k_usp_tp2"]).text, "MINDSPEED_ARGS")
    assert llama["--untie-embeddings-and-output-weights"] == []
    tied = build.llama3_8b.model_copy(update={"tie_word_embeddings": True})
    args = bash_args(render_flags("mindspeed", build.request(tied, 8192, 8, tp=8)).text, "MINDSPEED_ARGS")
    assert "--untie-embeddings-and-output-weights" not in args
