"""DeepSpeed ds_config (shared reference framework_flags.md section 3): Ulysses only, TP = PP = 1."""

from __future__ import annotations

import json

from sp_planner.flags import render_flags


def test_ulysses_zero3_config_values(build):
    flags = render_flags("deepspeed", build.cases["llama2_7b_32k_ulysses8_zero3"])
    assert flags.supported
    config = json.loads(flags.text)
    assert config == {
        "train_batch_size": 4,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 4,  # 4 / (micro 1 x dp 1)
        "sequence_parallel_size": 8,
        "zero_optimization": {"stage": 3, "overlap_comm": True},
        "bf16": {"enabled": True},
    }


def test_batch_identity_with_data_parallel(build):
    # DeepSpeed requires train_batch_size == micro * grad_acc * dp, dp excluding the SP ranks.
    request = build.request(build.llama3_8b, 65536, 32, ulysses=4, dp=2, micro_batch=2, zero=2)
    config = json.loads(render_flags("deepspeed", request).text)
    # No data_parallel_size: with it DeepSpeed builds a mesh whose ZeRO group, without the mpu,
    # holds the dp ranks only (utils/groups.py); the note passes ALST's mpu, whose group is sp x dp.
    assert "data_parallel_size" not in config and config["sequence_parallel_size"] == 4
    note = next(n for n in render_flags("deepspeed", request).notes if n.startswith("Hugging Face models"))
    assert "deepspeed.initialize(config=..., mpu=mpu)" in note and "sp x dp = 8 ranks" in note
    assert config["gradient_accumulation_steps"] == 8  # 32 / (2 x 2)
    assert config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * 2 == 32
    assert config["zero_optimization"] == {"stage": 2, "overlap_comm": True}


def test_ring_and_usp_unsupported(build):
    for case in ("llama3_8b_128k_usp_dp2", "llama3_70b_256k_ring_tp8_pp2"):
        flags = render_flags("deepspeed", build.cases[case])
        assert not flags.supported and flags.text == ""
        assert "Ulysses all-to-all only" in flags.reason and "Ring Attention or USP" in flags.reason


def test_ulysses_with_tp_unsupported_megatron_deepspeed_rule(build):
    flags = render_flags("deepspeed", build.cases["llama2_7b_64k_ulysses_tp4"])
    assert not flags.supported
    assert flags.reason.startswith("tp 4 with ulysses 2 cannot be expressed")
    assert "TP == 1 and PP == 1" in flags.reason


def test_tp_without_sp_unsupported_no_axis(build):
    flags = render_flags("deepspeed", build.request(build.llama2_7b, 4096, 8, tp=2, pp=2, dp=2))
    assert not flags.supported and flags.reason.startswith("tp 2 and pp 2 cannot be expressed in a ds_config")


def test_kv_replication_note(build):
    # ALST accepts sp % kv_heads == 0 and copies each KV head over sp/kv ranks: 16 / 8 = 2.
    flags = render_flags("deepspeed", build.request(build.llama3_8b, 65536, 16, gpus_per_node=16, ulysses=16))
    assert flags.supported
    assert any("replicates each KV head over 2 ranks" in note for note in flags.notes)


def test_zero3_keeping_parameters_raises_the_reuse_distance_to_the_model(build):
    """Stage 3 keeps a parameter used again within stage3_max_reuse_distance parameters (default
    1e9): at the model's count every layer stays gathered until its backward."""
    request = build.request(build.llama3_8b, 65536, 16, ulysses=8, dp=2, zero=3, reshard_after_forward=False)
    flags = render_flags("deepspeed", request)
    assert flags.supported, flags.reason
    zero = json.loads(flags.text)["zero_optimization"]
    assert zero["stage3_max_reuse_distance"] == zero["stage3_max_live_parameters"] == build.llama3_8b.num_params
    resharded = build.request(build.llama3_8b, 65536, 16, ulysses=8, dp=2, zero=3)
    assert "stage3_max_reuse_distance" not in json.loads(render_flags("deepspeed", resharded).text)["zero_optimization"]


def test_megatron_deepspeed_note_passes_the_models_dropout(build):
    # Megatron-DeepSpeed's --hidden-dropout / --attention-dropout default to 0.1 (megatron/arguments.py).
    case = build.cases["llama2_7b_32k_ulysses8_zero3"]
    (note,) = [n for n in render_flags("deepspeed", case).notes if n.startswith("Megatron-DeepSpeed")]
    assert "--hidden-dropout 0 --attention-dropout 0 too" in note
    model = case.model.model_copy(update={"hidden_dropout": 0.1, "attention_dropout": 0.1})
    (note,) = [n for n in render_flags("deepspeed", case.model_copy(update={"model": model})).notes
               if n.startswith("Megatron-DeepSpeed")]
    assert "--hidden-dropout 0.1 --attention-dropout 0.1 too" in note
