"""yunchang snippet (shared reference framework_flags.md section 5): groups, ring impl, limits."""

from __future__ import annotations

import ast

from sp_planner.catalog import load_model
from sp_planner.flags import render_flags
from sp_planner.flags.option_refusals import FP8_ATTENTION_YUNCHANG


def calls(text: str) -> dict[str, ast.Call]:
    """Function name -> its (last) call in the snippet, which must be valid Python."""
    found = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            found[node.func.id] = node
    return found


def test_usp_snippet_groups_and_zigzag(build):
    flags = render_flags("yunchang", build.cases["llama3_8b_128k_usp_dp2"])
    assert flags.supported
    found = calls(flags.text)
    pg = found["set_seq_parallel_pg"]
    assert [ast.literal_eval(a) for a in pg.args[:2]] == [4, 2]  # (ulysses, ring)
    assert [(k.arg, ast.literal_eval(k.value)) for k in pg.keywords] == [("use_ulysses_low", True)]
    attn = found["LongContextAttention"]
    assert {k.arg: ast.unparse(k.value) for k in attn.keywords} == {
        "ring_impl_type": "'zigzag'", "attn_type": "AttnType.FA"}
    assert "sp_rank = rank % 8" in flags.text
    assert "tensor.chunk(4, dim=1)" in flags.text  # 2 * ring chunks for zigzag


def test_ring_of_one_uses_basic(build):
    flags = render_flags("yunchang", build.cases["llama2_7b_32k_ulysses8_zero3"])
    assert 'ring_impl_type="basic"' in flags.text and "tensor.chunk(8, dim=1)[sp_rank]" in flags.text


def test_zigzag_shard_function_matches_extract_local(build):
    # Run the emitted shard_sequence on a list-backed stand-in for torch: ranks must cover every
    # token exactly once, ring rank r holding chunks r and 2R-1-r (yunchang zigzag_extract_local).
    flags = render_flags("yunchang", build.request(build.llama3_8b, 16, 1, ulysses=2, ring=4, dp=1))
    source = flags.text.split("def shard_sequence", 1)[1].split("\n\n", 1)[0]

    class Seq(list):
        def chunk(self, n, dim):
            size = len(self) // n
            return [Seq(self[i * size:(i + 1) * size]) for i in range(n)]

    class FakeTorch:
        @staticmethod
        def cat(parts, dim):
            return Seq([x for part in parts for x in part])

    scope = {"torch": FakeTorch}
    exec("def shard_sequence" + source, scope)
    shards = [list(scope["shard_sequence"](Seq(range(16)), r)) for r in range(8)]
    assert sorted(x for s in shards for x in s) == list(range(16))
    # ring rank 0 (sp ranks 0, 1) holds chunks 0 and 7 of 8 (tokens 0-1 and 14-15), split by ulysses.
    assert shards[0] == [0, 1] and shards[1] == [14, 15]
    assert shards[6] == [6, 7] and shards[7] == [8, 9]  # ring rank 3: chunks 3 and 4


def test_contiguous_layout_uses_basic(build):
    request = build.request(build.llama3_8b, 65536, 2, ulysses=2, ring=4, ring_layout="contiguous")
    flags = render_flags("yunchang", request)
    assert 'ring_impl_type="basic"' in flags.text


def test_tp_or_pp_unsupported(build):
    flags = render_flags("yunchang", build.cases["llama3_70b_256k_ring_tp8_pp2"])
    assert not flags.supported and flags.reason.startswith("tp 8 and pp 2 cannot be expressed")
    assert "no tensor or pipeline axis" in flags.reason


def test_no_sequence_parallelism_unsupported(build):
    flags = render_flags("yunchang", build.request(build.llama2_7b, 4096, 8, dp=8))
    assert not flags.supported and "no sequence parallelism" in flags.reason


def test_ulysses_beyond_kv_heads_unsupported(build):
    # The plan rule allows U % G == 0 (KV replication), but yunchang does not replicate: 8 % 16 != 0.
    flags = render_flags("yunchang", build.request(build.llama3_8b, 65536, 1, gpus_per_node=16, ulysses=16))
    assert not flags.supported and "num_kv_heads 8" in flags.reason


def test_zigzag_needs_causal(build):
    flags = render_flags("yunchang", build.request(build.llama2_7b, 65536, 1, ulysses=2, ring=4, causal=False))
    assert not flags.supported and "needs a causal workload" in flags.reason


def test_attention_dropout_is_passed_as_dropout_p(build):
    # LongContextAttention.forward defaults dropout_p to 0.0 (yunchang 0.6.4): nothing to pass for
    # Llama, the model's probability otherwise.
    llama = render_flags("yunchang", build.cases["llama3_8b_128k_usp_dp2"])
    assert "dropout_p" not in llama.text and not any("dropout" in note for note in llama.notes)
    model = build.llama3_8b.model_copy(update={"attention_dropout": 0.1})
    case = build.cases["llama3_8b_128k_usp_dp2"]
    flags = render_flags("yunchang", case.model_copy(update={"model": model}))
    attn = calls(flags.text)["attn"]
    assert {k.arg: ast.literal_eval(k.value) for k in attn.keywords} == {"dropout_p": 0.1, "causal": True}
    assert any(note.startswith("dropout_p=0.1 is the model's attention dropout") for note in flags.notes)


def test_sliding_window_layers_pass_window_size_and_softcap(build):
    # A local layer attends to the window_tokens keys up to the query (cost.window): flash-attn's
    # window_size (W - 1, 0); Gemma 2's logit cap is softcap on every layer. LongContextAttention
    # passes both to the kernel (yunchang/hybrid/attn_layer.py).
    mistral = render_flags("yunchang", build.request(load_model("mistral-7b"), 65536, 8, ulysses=8))
    assert mistral.supported, mistral.reason
    (call,) = [node for node in ast.walk(ast.parse(mistral.text))
               if isinstance(node, ast.Call) and ast.unparse(node.func) == "attn"]
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords} == {"causal": True, "window_size": (4095, 0)}
    gemma = render_flags("yunchang", build.request(load_model("gemma-2-9b"), 65536, 8, ulysses=8))
    local, full = [{k.arg: ast.literal_eval(k.value) for k in node.keywords} for node in ast.walk(ast.parse(gemma.text))
                   if isinstance(node, ast.Call) and ast.unparse(node.func) == "attn"]
    assert local == {"causal": True, "softcap": 50, "window_size": (4095, 0)}
    assert full == {"causal": True, "softcap": 50}
    # A window no shorter than the sequence is full attention, as the plan times it.
    short = render_flags("yunchang", build.request(load_model("mistral-7b"), 4096, 8, ulysses=8))
    assert "window_size" not in short.text


def test_chunked_attention_and_alibi_refused(build):
    scout = render_flags("yunchang", build.request(load_model("llama-4-scout-17b-16e"), 65536, 8, ulysses=8))
    assert not scout.supported and "chunked local attention (8192-token chunks)" in scout.reason
    alibi = build.llama2_7b.model_copy(update={"position_embedding": "alibi"})
    flags = render_flags("yunchang", build.request(alibi, 32768, 1, ulysses=8))
    assert not flags.supported and "assert alibi_slopes is None" in flags.reason


def test_attn_type_is_fa3_only_where_yunchangs_fa3_computes_the_models_attention(build):
    # sp-plan --attention-kernel fa3: yunchang's AttnType.FA3 calls flash-attn 3 with causal=False
    # (yunchang/kernels/attention.py at 0.6.4), so only a bidirectional plan gets it.
    bidirectional = build.request(build.llama3_8b, 131072, 8, causal=False, ulysses=4, ring=2, dp=2,
                                  ring_layout="contiguous").model_copy(update={"attention_kernel": "fa3"})
    flags = render_flags("yunchang", bidirectional)
    attn = calls(flags.text)["LongContextAttention"]
    assert {k.arg: ast.unparse(k.value) for k in attn.keywords} == {
        "ring_impl_type": "'basic'", "attn_type": "AttnType.FA3"}
    assert any(note.startswith("AttnType.FA3 needs flash-attn 3") for note in flags.notes)
    causal = build.cases["llama3_8b_128k_usp_dp2"].model_copy(update={"attention_kernel": "fa3"})
    assert render_flags("yunchang", causal) == render_flags("yunchang", build.cases["llama3_8b_128k_usp_dp2"])


def test_fp8_attention_is_refused_and_bf16_attention_is_expressed(build):
    # yunchang's attention types that train (FA, FA3) are flash-attn's bf16 kernels; its SAGE_FP8 types run
    # forward only: a plan timed with FP8 attention is not one yunchang runs
    # (flags.option_refusals.FP8_ATTENTION_YUNCHANG).
    # Its FP8 GEMMs come from the training framework, so the same plan with bf16 attention is expressed.
    fp8 = build.request(build.llama3_8b, 131072, 2, ulysses=8, dp=2, zero=1, precision="fp8", fp8_attention=True)
    refused = render_flags("yunchang", fp8)
    assert not refused.supported and refused.reason.endswith(FP8_ATTENTION_YUNCHANG)
    bf16 = build.request(build.llama3_8b, 131072, 2, ulysses=8, dp=2, zero=1, precision="fp8")
    flags = render_flags("yunchang", bf16)
    assert flags.supported and "yunchang's attention stays bf16, as planned" in " ".join(flags.notes)
