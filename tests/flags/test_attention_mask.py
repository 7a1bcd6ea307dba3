"""The dense attention mask Megatron-LM's dataloader would build, turned off; MindSpeed's fused
attention with its compressed causal mask (flags.attention_mask)."""

from __future__ import annotations

from sp_planner.flags import render_flags
from sp_planner.flags.attention_mask import (
    NO_DATALOADER_MASK,
    USE_FLASH_ATTN,
    dense_mask_bytes,
    mask_groups,
    megatron_deepspeed_mask_note,
    mindspeed_mask_notes,
)


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


def test_non_causal_mindspeed_plan_says_its_dataloader_mask_is_uncounted(build):
    causal = build.cases["llama3_8b_128k_usp_tp2"]
    assert mindspeed_mask_notes(causal) == []
    general = build.request(build.llama3_8b, 131072, 8, tp=2, ulysses=4, ring=2, dp=1, zero=1, causal=False)
    (note,) = mindspeed_mask_notes(general)
    assert "--attention-mask-type general" in note and "16.0 GiB a sample at 131072" in note
    assert note in render_flags("mindspeed", general).notes
    (comment, _), = mask_groups(general, mindspeed=True)
    assert "causal" not in comment  # a general mask is not compressed
    # Without context parallelism no --attention-mask-type is emitted, so no note.
    no_cp = build.request(build.llama3_8b, 8192, 8, tp=8, causal=False)
    assert mindspeed_mask_notes(no_cp) == []


def test_megatron_deepspeed_note_asks_for_fa2_and_no_pipeline_model(build):
    """Megatron-DeepSpeed skips its mask only under a flash flag (pretrain_gpt.py line 116 at 4efb479d);
    the float32 mask is 4 bytes an element: 4 x 32768^2 = 4 GiB."""
    req = build.cases["llama2_7b_32k_ulysses8_zero3"]
    note = megatron_deepspeed_mask_note(req)
    assert "--use-flash-attn-v2" in note and "--no-pipeline-parallel" in note
    assert "(4.0 GiB in float32 at 32768, then bool)" in note
    (megatron_deepspeed,) = [n for n in render_flags("deepspeed", req).notes if n.startswith("Megatron-DeepSpeed")]
    assert megatron_deepspeed.endswith(" " + note)
