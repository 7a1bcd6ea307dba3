"""cli.plan_kernel: the kernel that times sp-plan's plans, its refusals and its notes."""

import json

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cli.plan_kernel import set_up_kernel
from sp_planner.cli.question import resolve_question
from sp_planner.cost.attention_kernels import with_attention_kernel
from sp_planner.errors import UserInputError
from tests.cli.conftest import assert_one_line_error

FREE = {"tp": None, "pp": None, "dp": None, "ulysses": None, "ring": None}


def _question(model="llama3-8b", hardware="h100-sxm"):
    return resolve_question(model=model, hardware=hardware, num_nodes=1, gpus_per_node=None, seq_len="32k",
                            global_batch=None, degrees=dict(FREE), zero=None, recompute=None, micro_batch=None)


def _setup(question, **changes):
    options = dict(framework="megatron", attention_kernel=None, framework_version=None, ulysses=None, ring=None,
                   fp8_attention=False)
    return set_up_kernel(question, **{**options, **changes})


def test_megatron_times_cudnn_on_hopper_and_the_users_kernel_when_named():
    h100 = load_hardware("h100-sxm")
    setup = _setup(_question())
    assert setup.question.attention_kernel == "cudnn"
    assert setup.question.hardware.efficiency.attention_fwd == \
        with_attention_kernel(h100, "cudnn").efficiency.attention_fwd
    assert setup.question.flag_choices.attention_kernel is None and setup.curves_note is None
    assert setup.kernel_notes == (None, None, None, None, None)
    chosen = _setup(_question(), attention_kernel="fa3")
    assert chosen.question.attention_kernel == "fa3" and chosen.question.flag_choices.attention_kernel == "fa3"


def test_gemma2_on_l40s_says_te_runs_unfused_attention_and_refuses_a_pinned_context_split():
    # Head dim 256 on sm89: Transformer Engine disables flash-attn 2 and runs its unfused attention,
    # which takes no context parallelism (flags.flash_head_dim).
    question = _question(model="gemma-2-9b", hardware="l40s")
    notes = [note for note in _setup(question).kernel_notes if note is not None]
    assert len(notes) == 1 and "unfused" in notes[0]
    with pytest.raises(UserInputError):
        _setup(question, ulysses=4)
    # The flags know it, so Megatron's refuse the search's context-parallel plans (flags.megatron);
    # under --framework all too (its megatron flags go to the next plan they express).
    assert _setup(question).question.flag_choices.te_unfused_attention
    assert _setup(question, framework="all").question.flag_choices.te_unfused_attention
    assert not _setup(_question()).question.flag_choices.te_unfused_attention


def test_the_flags_know_when_the_chips_are_ascend_npus():
    # cost.families.on_npu, the one device check, set for the flags' refusals (flags.base._group_fix).
    assert _setup(_question(hardware="ascend-910b"), framework="mindspeed").question.flag_choices.on_npu
    assert not _setup(_question()).question.flag_choices.on_npu


def test_fp8_attention_is_refused_outside_framework_all_and_off_cudnn():
    with pytest.raises(UserInputError, match="--fp8-attention: no command-line flag of megatron"):
        _setup(_question(hardware="b200"), fp8_attention=True)
    with pytest.raises(UserInputError, match="--fp8-attention is cuDNN's FP8 SDPA"):
        _setup(_question(hardware="b200"), framework="all", attention_kernel="fa2", fp8_attention=True)


def test_megatrons_ranking_of_gemma2_on_l40s_holds_no_context_parallel_plan(sp_plan):
    # TE runs its unfused attention there, which takes no context parallelism and times Megatron's
    # plans: the search holds ulysses x ring 1 plans only (before: tp 1 x ulysses 4 first overall),
    # while --framework all's ranking, which yunchang's and DeepSpeed's flash-attn 2 calls run,
    # keeps its context-parallel best, timed with FA2. Megatron's at 16K: at 32K on one node none
    # fits beside the unfused attention's buffers (cost.unfused_memory).
    args = ("--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--format", "json", "--top", "3")
    result = sp_plan(*args, "--seq-len", "16k")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["question"]["attention_kernel"] == "unfused"
    assert [(p["ulysses"], p["ring"]) for p in answer["plans"]] == [(1, 1)] * 3
    assert answer["framework_plans"][0]["step_time_s"] == answer["plans"][0]["step_time_s"]
    every = json.loads(sp_plan(*args, "--seq-len", "32k", "--framework", "all").stdout)
    assert every["question"]["attention_kernel"] == "fa2"
    best = every["plans"][0]
    assert (best["tp"], best["ulysses"], best["ring"]) == (1, 4, 1)
    assert best["flags"]["megatron"]["reason"].startswith("cp 4 cannot run: Transformer Engine runs Gemma-2-9B's")
    assert best["flags"]["yunchang"]["supported"] and best["flags"]["deepspeed"]["supported"]


def test_blackwell_under_attention_dropout_times_what_transformer_engine_runs():
    # Gemma-2's 256 under dropout: no cuDNN training on sm10x (flags.fused_head_dim), so TE runs FA2
    # on B200, whose published curve times the plans (before: cuDNN's), and its unfused attention on
    # B300, which times them (before: cuDNN's curve stood in), said in a note, and context parallelism
    # is refused; under --framework all cuDNN's curve times every framework's plans, said in the note.
    def dropout(hardware):
        question = _question(model="gemma-2-9b", hardware=hardware)
        return question.model_copy(update={"model": question.model.model_copy(update={"attention_dropout": 0.1})})

    b200 = _setup(dropout("b200"))
    assert b200.question.attention_kernel == "fa2"
    assert b200.question.hardware.efficiency.attention_bwd == \
        with_attention_kernel(load_hardware("b200"), "fa2").efficiency.attention_bwd
    assert [i for i, note in enumerate(b200.kernel_notes) if note] == [3]
    assert "so Transformer Engine runs flash-attn 2" in str(b200.kernel_notes[3])
    b300 = _setup(dropout("b300"))
    assert b300.question.attention_kernel == "unfused" and b300.question.flag_choices.te_unfused_attention
    assert b300.question.hardware.efficiency.attention_unfused
    assert "unfused attention, which times the plans" in str(b300.kernel_notes[2])
    every = _setup(dropout("b300"), framework="all")
    assert every.question.attention_kernel == "cudnn" and not every.question.hardware.efficiency.attention_unfused
    assert "while the plans are timed with cuDNN's fused attention (--framework megatron times megatron's with it)" \
        in str(every.kernel_notes[2])
    with pytest.raises(UserInputError, match="no cuDNN fused attention trains it there under attention dropout"):
        _setup(dropout("b300"), ring=2)
    # Without dropout cuDNN trains 256 there from TE v2.18: cuDNN times them, and a note says the release.
    plain = _setup(_question(model="gemma-2-9b", hardware="b200"))
    assert plain.question.attention_kernel == "cudnn" and "from Transformer Engine v2.18" in str(plain.kernel_notes[3])


def test_torchtitan_on_l40s_says_where_its_sdpa_falls_back_to_the_math_backend():
    # PyTorch's SDPA flash trains 256 on sm89 without dropout (torchtitan has none): no word, timed as
    # SDPA flash; at 224 flash refuses, cuDNN's SDPA takes <= 128 there, so math runs: a note.
    question = _question(model="gemma-2-9b", hardware="l40s")
    setup = _setup(question, framework="torchtitan")
    assert setup.question.attention_kernel == "sdpa" and setup.kernel_notes[3] is None
    dim_224 = question.model_copy(update={"model": question.model.model_copy(update={"head_dim": 224})})
    assert "so it runs the math backend" in str(_setup(dim_224, framework="torchtitan").kernel_notes[3])


def test_torchtitan_0_2_2_is_timed_with_cudnn_its_sdpa_runs_first_and_0_3_0_with_sdpa_flash():
    # torchtitan v0.2.2 runs SDPA under sdpa_kernel([CUDNN, FLASH, MATH], set_priority=True); 0.3.0
    # (the default) runs FlexAttention, for which SDPA flash's curve stands in.
    h100 = load_hardware("h100-sxm")
    old = _setup(_question(), framework="torchtitan", framework_version="0.2.2")
    assert old.question.attention_kernel == "cudnn"
    cudnn = with_attention_kernel(h100, "cudnn").efficiency
    assert old.question.hardware.efficiency.attention_bwd == cudnn.attention_bwd
    assert [note for note in old.kernel_notes if note is not None] == []
    new = _setup(_question(), framework="torchtitan")
    assert new.question.attention_kernel == "sdpa"
    # The user's --attention-kernel sdpa on 0.2.2: its flags run cuDNN, a note says so.
    chosen = _setup(_question(), framework="torchtitan", framework_version="0.2.2", attention_kernel="sdpa")
    assert "torchtitan's flags run cudnn" in str(chosen.kernel_notes[4])


def test_megatron_at_128k_on_l40s_offers_no_plan_that_cannot_hold_its_unfused_scores(sp_plan):
    # Before, tp 8 x dp 16 with full recompute ranked first at 39.1 GiB (95.62 s, timed with FA2),
    # while the layer full recompute rebuilds holds its 2 heads' s x s scores: 6 bytes each from 16K
    # keys (TE's torch softmax, cost.kernels), 192 GiB. Now that plan needs 209.8 GiB and none fits.
    args = ("--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "16", "--seq-len", "128k",
            "--framework", "megatron", "--format", "json", "--top", "3")
    answer = json.loads(sp_plan(*args).stdout)
    assert answer["question"]["attention_kernel"] == "unfused" and answer["framework_plans"] == []
    assert not any(p["fits"] for p in answer["plans"])
    pinned = json.loads(sp_plan(*args, "--tp", "8", "--pp", "1", "--recompute", "full", "--zero", "1").stdout)
    tp8 = pinned["plans"][0]
    assert not tp8["fits"] and tp8["memory_peak_bytes"] > 192 * 2**30


def test_framework_all_writes_no_megatron_plan_file_where_te_runs_unfused(sp_plan, tmp_path):
    # --framework all writes its plan file as Megatron's but times Gemma-2-9B on L40S with FA2's
    # curve, where Megatron runs TE's unfused attention: the file's 389.62 s tp 1 x ulysses 4 plan
    # is one Megatron cannot run (and a non-CP one would be timed 4x too fast). Refused before the search.
    out = tmp_path / "plan.json"
    base = ("--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "32k")
    result = sp_plan(*base, "--framework", "all", "--out", str(out))
    assert_one_line_error(result, "--out with --framework all writes a Megatron plan file",
                          "Gemma-2-9B's attention unfused on L40S", "(it times fa2)")
    assert not out.exists()
    # One framework writes it, timed as it runs it (at 16K, where a plan fits beside the unfused
    # attention's buffers); H100 (no unfused attention) keeps --framework all's file.
    assert sp_plan(*base[:-1], "16k", "--framework", "megatron", "--out", str(out), "--top", "1").exit_code == 0
    assert json.loads(out.read_text())["attention_kernel"] == "unfused"
    fine = sp_plan("--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "1", "--seq-len", "4k", "--tp", "8",
                   "--framework", "all", "--out", str(tmp_path / "h100.json"), "--top", "1")
    assert fine.exit_code == 0, fine.stderr
