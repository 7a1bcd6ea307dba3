"""flags.torchtitan_notes: the caveats both torchtitan interfaces print beside a plan."""

from __future__ import annotations

from sp_planner.flags.torchtitan_notes import expert_notes, fsdp_enabled, shared_notes


def test_a_model_with_dropout_is_told_torchtitan_has_none(build):
    case = build.cases["llama3_70b_256k_ring_tp8_pp2"]
    assert not any("dropout" in note for note in shared_notes(case))
    model = case.model.model_copy(update={"hidden_dropout": 0.1})
    notes = shared_notes(case.model_copy(update={"model": model}))
    assert [n for n in notes if "dropout" in n] == [
        "torchtitan's models have no dropout: the plan counts hidden dropout 0.1 and attention dropout 0, whose "
        "passes and masks this run will not have."]


def test_fsdp_runs_whenever_cp_shards_or_zero_shards_over_several_ranks(build):
    case = build.cases["llama3_8b_128k_usp_dp2"]  # dp 2, ring 2, ZeRO-1
    plan = case.plan

    def with_(**update):
        return case.model_copy(update={"plan": plan.model_copy(update=update)})

    assert fsdp_enabled(case)  # FSDP's mesh is dp_shard x cp
    assert fsdp_enabled(with_(ring=1, dp=4, zero=1))  # dp 4 shards
    assert not fsdp_enabled(with_(ring=1, dp=4, zero=0))  # plain DDP
    assert not fsdp_enabled(with_(ring=1, dp=1, dp_replicate=1, zero=1))  # nothing to shard over
    assert any("no ZeRO-1" in note for note in shared_notes(with_(ring=1, dp=4, zero=1)))
    assert not any("no ZeRO-1" in note for note in shared_notes(with_(ring=1, dp=4, zero=0)))


def test_dense_and_bf16_plans_get_no_expert_note(build):
    case = build.cases["llama3_70b_256k_ring_tp8_pp2"]
    assert expert_notes(case) == []


def test_a_sliding_window_model_is_told_torchtitan_attends_over_the_whole_sequence(build):
    from sp_planner.catalog import load_model

    case = build.cases["llama3_70b_256k_ring_tp8_pp2"]
    assert not any("sliding window" in note for note in shared_notes(case))
    notes = shared_notes(case.model_copy(update={"model": load_model("gemma-2-9b")}))
    assert [n for n in notes if "sliding window" in n] == [
        "The plan times Gemma-2-9B's 4,096-token sliding window on 21 of 42 layers and caps its logits at 50; "
        "torchtitan's llama3 and qwen3 models attend over the whole causal sequence, so the model you merge these "
        "sections into must apply them (FlexAttention's get_sliding_window_mask_mod, as torchtitan's gpt_oss does), "
        "or its attention costs more than planned."]
    # Llama 4's chunked attention is torchtitan's own (its llama4 model): no note.
    llama4 = shared_notes(case.model_copy(update={"model": load_model("llama-4-scout-17b-16e")}))
    assert not any("sliding window" in note for note in llama4)
