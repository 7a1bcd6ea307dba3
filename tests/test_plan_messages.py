"""plan_messages: the rule messages' own parts, by hand (the messages through plan.violations:
tests/test_pipeline_layout.py, tests/test_rules.py)."""

from __future__ import annotations

from sp_planner.plan import ParallelPlan
from sp_planner.plan_messages import empty_chunks_text, even_vpp_text, layers_message, rule_message, vpp_message
from sp_planner.plan_rules import RuleFacts


def test_even_vpp_text_names_the_divisors_nearest_the_pinned_vpp():
    # 16 layers a stage divide by 2, 4, 8, 16; nearest 64 in log distance: 16, 8, 4.
    assert even_vpp_text(16, 64) == "pin --vpp 4, 8 or 16, which split the 16 layers per stage evenly"
    # 12: 2, 3, 4, 6, 12; nearest 5: 4 (0.22), 6 (0.18), 3 (0.51).
    assert even_vpp_text(12, 5) == "pin --vpp 3, 4 or 6, which split the 12 layers per stage evenly"
    assert even_vpp_text(7, 2) == "pin --vpp 7, which splits the 7 layers per stage evenly"
    assert even_vpp_text(1, 2) == "1 layer per stage interleaves with no vpp above 1: pin --vpp 1"


def test_batch_message_names_the_product_that_must_divide_it():
    facts = RuleFacts(num_heads=32, num_kv_heads=8, seq_len=8192, global_batch=100)
    plan = ParallelPlan(dp=8, micro_batch=2)
    assert rule_message("batch", facts, plan) == ("global_batch 100 is not divisible by dp*micro_batch = 8*2 "
                                                  "(Megatron: GBS % (MBS*DP) == 0)")


def test_empty_chunks_text_counts_the_idle_chunks_and_names_an_even_vpp():
    # Llama-3-8B's 32 layers pinned 16/16 over pp 2 x vpp 64: 63 empty chunks a stage
    # (tests/test_pipeline_layout.py); 16 layers a stage divide by 4, 8, 16 (even_vpp_text).
    plan = ParallelPlan(pp=2, vpp=64, first_stage_layers=16, last_stage_layers=16)
    assert empty_chunks_text(32, plan) == (
        "the pipeline layout leaves 126 of its 128 model chunks (pp 2 x vpp 64) without a layer (Megatron prints "
        "each as \"(empty stage)\"): each is still a pipeline hop and a schedule slot doing nothing; pin --vpp 4, "
        "8 or 16, which split the 16 layers per stage evenly")
    # Unequal stages: 12/20 over pp 2 x vpp 16, the first stage's 12 layers in chunk 0 and 15 empty
    # chunks after it, the last's 20 as 1 x 15 + 5; gcd(12, 20) = 4.
    uneven = ParallelPlan(pp=2, vpp=16, first_stage_layers=12, last_stage_layers=20)
    assert empty_chunks_text(32, uneven).endswith(
        "pin a --vpp that divides the 12/20 layers of the first/last stage: a "
        "divisor of 4")
    assert "leaves 15 of its 32 model chunks" in empty_chunks_text(32, uneven)
    # 1/15/1 over pp 4 x vpp 4: 3 empty chunks on each end stage; no vpp above 1 divides 1.
    ends = empty_chunks_text(32, ParallelPlan(pp=4, vpp=4, first_stage_layers=1, last_stage_layers=1))
    assert "leaves 6 of its 16" in ends and ends.endswith("the 1/15/1 layers of the first/middle/last stage: only "
                                                          "--vpp 1 does")
    # Every chunk holds a layer: no note (the even split; a layout with 8/8 over pp 4 x vpp 3).
    assert empty_chunks_text(32, ParallelPlan(pp=4, vpp=4)) is None
    assert empty_chunks_text(32, ParallelPlan(pp=4, vpp=3, first_stage_layers=8, last_stage_layers=8)) is None


def test_layers_message_at_pp_1_proposes_no_split():
    # Llama-3-8B's 32 layers at pp 1 x vpp 3: interleaving needs pp > 1 (the vpp rule), so neither
    # another --vpp nor a first = last pin (pp > 1 only, pipeline.split_breaks) would run; at pp 4 the
    # 8 layers a stage take --vpp 2, 4 or 8 or the pin first = last = 8.
    assert layers_message(32, ParallelPlan(dp=8, pp=1, vpp=3)) == (
        "num_layers 32 is not divisible by pp 1 x vpp 3, and interleaving needs pp > 1: pin --vpp 1, or a --pp "
        "above 1")
    assert layers_message(32, ParallelPlan(dp=2, pp=4, vpp=3)) == (
        "num_layers 32 is not divisible by pp 4 x vpp 3; pin --vpp 2, 4 or 8, which split the 8 layers per stage "
        "evenly, or pin first = last = 8, which runs as --pipeline-model-parallel-layout, or another uneven split "
        "(first/last stage layers)")


def test_vpp_message_names_the_groups_megatron_accepts_and_the_nearest_batches():
    # pp 2 x vpp 2, dp 1, micro batch 1, 3 sequences: m 3, which Megatron runs with N 3 only
    # (pipeline_order.megatron_group_sizes: N 2 leaves a last group of 1 < pp); a plan pinning 2 is refused.
    plan = ParallelPlan(tp=8, pp=2, vpp=2, vpp_group=2)
    assert vpp_message(3, plan) == (
        "vpp_group 2 with pp 2 and m 3: Megatron refuses it (schedules.py: pp <= N <= m, and m % N zero or at "
        "least pp); use one of 3, or leave it out (sp-plan then prices 3: Megatron's default pp where pp divides "
        "m, else the smallest N it accepts, the fewest forwards before the first backward)")
    # dp 2 x pp 4 x vpp 4, 20 sequences: m 10, which Megatron runs with N 5, 6 or 10 (sp-plan
    # --vpp-group: any of them runs); 11 is above m.
    wide = ParallelPlan(dp=2, pp=4, vpp=4)
    text = vpp_message(20, wide.model_copy(update={"vpp_group": 11}))
    assert text.startswith("vpp_group 11 with pp 4 and m 10: Megatron refuses it (schedules.py: pp <= N <= m, and "
                           "m % N zero or at least pp); use one of 5, 6, 10, or leave it out (sp-plan then prices 5:")
    assert vpp_message(20, ParallelPlan(dp=2, pp=1, vpp_group=4)).startswith("vpp_group 4 needs vpp > 1")
    # pp 4 x vpp 2, 18 sequences: m 18, which Megatron runs with N 6, 7, 9-14 or 18 (the last group
    # m % N zero or at least 4); the message lists six and the last, N = m, not six alone.
    assert "m % N zero or at least pp); use one of 6, 7, 9, 10, 11, 12, ..., 18, or leave it out (sp-plan then " \
        "prices 6:" in vpp_message(18, ParallelPlan(tp=2, pp=4, vpp=2, vpp_group=5))
    # 6 sequences: m 3 < pp 4, which no group size runs; 8 is the smallest batch that does.
    assert vpp_message(6, wide) == (
        "vpp 4 (interleaved 1F1B) needs at least pp 4 micro-batches per step, has 3 (Megatron schedules.py: the "
        "micro-batch group size lies in [pp, m]); use a global batch of 8 or more (m 4)")
    assert vpp_message(4, ParallelPlan(dp=4, vpp=2)) == (
        "vpp 2 (interleaved 1F1B) needs pp > 1: virtual stages interleave a pipeline's stages; use --vpp 1 or a "
        "--pp above 1")
