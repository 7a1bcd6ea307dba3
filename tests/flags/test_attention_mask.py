"""The dense attention mask Megatron-LM's dataloader would build, turned off; MindSpeed's fused
attention with its compressed causal mask (flags.attention_mask)."""

from __future__ import annotations

import argparse
import shlex

import pytest

from sp_planner.catalog import load_model
from sp_planner.flags import FlagRequest, render_flags
from sp_planner.flags.attention_mask import (
    NO_DATALOADER_MASK,
    USE_FLASH_ATTN,
    dense_mask_bytes,
    mask_groups,
    megatron_deepspeed_mask_note,
    mindspeed_non_causal_failures,
)
from sp_planner.plan import ParallelPlan
from sp_planner.specs.workload import Workload


def test_dense_mask_is_one_byte_a_score_element():
    # torch.tril(torch.ones((s, s))) < 0.5 is a bool [s, s]: s^2 bytes a sample, 128K -> 2^34 = 16 GiB.
    assert dense_mask_bytes(131072) == 17_179_869_184
    assert dense_mask_bytes(2048) == 4 * 1024**2  # MindSpeed's compressed mask, 4 MiB
    assert dense_mask_bytes(262144) == 64 * 1024**3


def test_megatron_group_says_why_and_its_size(build):
    (comment, flags), = mask_groups(build.cases["llama3_8b_128k_usp_tp2"])
    assert flags == [NO_DATALOADER_MASK] == ["--no-create-attention-mask-in-dataloader"]
    assert "16.0 GiB a sample at 131072" in comment and "does not count" in comment
    (comment, _), = mask_groups(build.cases["llama3_70b_256k_ring_tp8_pp2"])
    assert "64.0 GiB a sample at 262144" in comment


def test_every_megatron_block_turns_the_mask_off_under_its_comment(build, bash_args):
    for name, req in build.cases.items():
        flags = render_flags("megatron", req)
        if not flags.supported:
            continue
        assert bash_args(flags.text)[NO_DATALOADER_MASK] == [], name  # a store_false flag, no value
        lines = flags.text.splitlines()
        at = lines.index(f"    {NO_DATALOADER_MASK}")
        assert lines[at - 3].startswith("    # no dense s-by-s attention mask from the dataloader"), name
        assert all(len(line) <= 80 for line in lines[at - 3:at]), name


def test_mindspeed_asks_for_fused_attention_not_the_megatron_flag(build, bash_args):
    """MindSpeed-LLM sets create_attention_mask_in_dataloader itself (training_basic.py lines 23-33),
    so Megatron's flag would be overridden; --use-flash-attn keeps its mask compressed."""
    for name, req in build.cases.items():
        flags = render_flags("mindspeed", req)
        if not flags.supported:
            continue
        args = bash_args(flags.text, "MINDSPEED_ARGS")
        assert args[USE_FLASH_ATTN] == [] and NO_DATALOADER_MASK not in args, name
    (comment, flags), = mask_groups(build.cases["llama2_7b_64k_ulysses_tp4"], mindspeed=True)
    assert flags == ["--use-flash-attn"]
    assert "compressed 2048-by-2048 causal mask (4.0 MiB)" in comment
    assert "(4.0 GiB a sample at 65536)" in comment


def _mindspeed_argv(text: str) -> list[str]:
    """The words inside MINDSPEED_ARGS=( ... ), comments dropped."""
    body = text.split("MINDSPEED_ARGS=(", 1)[1].rsplit(")", 1)[0]
    return shlex.split("\n".join(line for line in body.splitlines() if not line.strip().startswith("#")))


def test_non_causal_mindspeed_plan_is_refused_at_every_cp(build):
    """MindSpeed trains a GPT model causally under both mask types: general takes the dataloader's
    mask, torch.tril(ones(s, s)) < 0.5 (megatron/core/datasets/gpt_dataset.py at core_v0.12.1 lines
    653-656, 692), so a bidirectional plan has no flags, at cp 1 (where none was emitted and the default
    causal ran) as under CP (where general was emitted)."""
    causal = build.cases["llama3_8b_128k_usp_tp2"]
    assert mindspeed_non_causal_failures(causal) == []
    no_cp = build.request(build.llama3_8b, 8192, 8, tp=8, causal=False)
    usp = build.request(build.llama3_8b, 131072, 8, tp=2, ulysses=4, ring=2, dp=1, zero=1, causal=False)
    for request in (no_cp, usp):
        (failure,) = mindspeed_non_causal_failures(request)
        assert failure.startswith("a non-causal (bidirectional) plan cannot be expressed")
        assert "lower-triangular" in failure and failure.endswith('plan a causal workload ("causal": true)')
        flags = render_flags("mindspeed", request)
        assert not flags.supported and failure in flags.reason and flags.text == ""


def test_attention_mask_type_parses_as_mindspeed_llm_declares_it(build):
    """MindSpeed-LLM's parser (context_parallel_feature.py lines 31-37 at c77308a1): choices causal and
    general, default causal, registered at every cp. Every CP block states causal; a cp-1 block
    leaves the default, also causal."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--attention-mask-type", type=str, default="causal", choices=["causal", "general"])
    checked = 0
    for name, req in build.cases.items():
        flags = render_flags("mindspeed", req)
        if not flags.supported:
            continue
        words = _mindspeed_argv(flags.text)
        at = words.index("--attention-mask-type")
        assert parser.parse_args(words[at:at + 2]).attention_mask_type == "causal", name
        checked += 1
    assert checked == 4  # the ZeRO-3 case is refused (MindSpeed has ZeRO-1 only)
    no_cp = _mindspeed_argv(render_flags("mindspeed", build.request(build.llama3_8b, 8192, 8, tp=8)).text)
    assert "--attention-mask-type" not in no_cp and parser.parse_args([]).attention_mask_type == "causal"
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--attention-mask-type", "full"])


def test_mla_block_keeps_mindspeeds_compressed_mask():
    """MindSpeed's generate_mask.get_attention_mask builds an uncompressed s x s mask when
    config.multi_head_latent_attention is set (generate_mask.py lines 44-56, 65-68 at 028de58c), which
    MindSpeed's own --multi-head-latent-attention sets (mla_feature.py lines 24-29, store_true, default
    False). The block spells MLA as Megatron's --multi-latent-attention (arguments.py at core_v0.12.1
    line 1309), which leaves it False: the 2048 x 2048 mask (4 MiB), not s^2 = 1 GiB at 32K."""
    plan = ParallelPlan(tp=2, dp=32, ep=64, etp=1, recompute="full")
    req = FlagRequest(model=load_model("DeepSeek-V3"), workload=Workload(seq_len=32768, global_batch=64),
                      plan=plan, num_nodes=plan.world_size // 8, gpus_per_node=8)
    flags = render_flags("mindspeed", req)
    assert flags.supported, flags.reason
    parser = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--multi-latent-attention", action="store_true")
    parser.add_argument("--multi-head-latent-attention", action="store_true", default=False)
    words = _mindspeed_argv(flags.text)
    args, _ = parser.parse_known_args(words)
    assert args.multi_latent_attention is True and args.multi_head_latent_attention is False
    (comment, _), = mask_groups(req, mindspeed=True)
    assert "compressed 2048-by-2048 causal mask (4.0 MiB)" in comment
    assert "(1.0 GiB a sample at 32768)" in comment  # what the other spelling would have built
    assert dense_mask_bytes(32768) == 2**30


def test_megatron_deepspeed_note_asks_for_fa2_and_no_pipeline_model(build):
    """Megatron-DeepSpeed skips its mask only under a flash flag (pretrain_gpt.py line 116 at 4efb479d);
    the float32 mask is 4 bytes an element: 4 x 32768^2 = 4 GiB."""
    req = build.cases["llama2_7b_32k_ulysses8_zero3"]
    note = megatron_deepspeed_mask_note(req)
    assert "--use-flash-attn-v2" in note and "--no-pipeline-parallel" in note
    assert "(4.0 GiB in float32 at 32768, then bool)" in note
    (megatron_deepspeed,) = [n for n in render_flags("deepspeed", req).notes if n.startswith("Megatron-DeepSpeed")]
    assert megatron_deepspeed.endswith(" " + note)
