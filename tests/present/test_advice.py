"""Fit suggestions: the node-count search, the recompute order, the sequence halvings."""

from __future__ import annotations

from sp_planner.catalog import load_hardware, load_model
from sp_planner.plan import ParallelPlan
from sp_planner.present.advice import (
    _fewest_nodes,
    _halvings,
    _rounder_counts,
    _stronger_recompute,
    rounded_lengths,
    suggest_fits,
    whole_group_batches,
)
from sp_planner.search import Pins, search
from sp_planner.specs.batch import default_global_batch
from sp_planner.specs.workload import Workload


def test_fewest_nodes_doubles_then_checks_the_counts_between():
    tried: list[int] = []

    def fits_from_six(count: int):
        tried.append(count)
        return "plan" if count >= 6 else None

    assert _fewest_nodes(2, fits_from_six) == (6, True, "plan")
    assert tried == [4, 8, 3, 5, 6]


def test_fewest_nodes_finds_a_count_between_earlier_doublings():
    # Fitting need not be monotone: 3 nodes fit although 4 do not.
    assert _fewest_nodes(2, lambda count: "plan" if count in (3, 8) else None) == (3, True, "plan")


def test_fewest_nodes_gives_up_past_sixteen_times():
    assert _fewest_nodes(1, lambda count: None) is None
    tried: list[int] = []
    _fewest_nodes(3, lambda count: tried.append(count))
    assert tried == [6, 12, 24, 48]


def test_fewest_nodes_skips_a_long_gap_and_says_so():
    # From 10 nodes: 20 fails, 40 fits; the 28 untried counts between are too many to try.
    assert _fewest_nodes(10, lambda count: "plan" if count >= 25 else None) == (40, False, "plan")


def test_rounder_counts_below_are_the_largest_multiples_of_larger_powers_of_two():
    # 999: 998 = 2 x 499 and 996 = 4 x 249 are not round (power of two under the odd part); 992 = 32 x 31,
    # 960 = 64 x 15, 896 = 128 x 7, 768 = 256 x 3, 512; none below half of 999.
    assert _rounder_counts(999) == [992, 960, 896, 768, 512]
    assert _rounder_counts(31) == [24, 16]  # 30 = 2 x 15 and 28 = 4 x 7 are not round
    assert _rounder_counts(12) == [8] and _rounder_counts(3) == [2]
    assert _rounder_counts(8) == [] and _rounder_counts(1) == []  # a power of two is as round as it gets


def test_a_rounder_node_count_below_is_suggested_where_the_asked_one_has_awkward_factors():
    # Llama-3-8B at 4M tokens on 31 x 4 GB200s (124 GPUs = 4 x 31): no plan fits; 24 nodes, the nearest
    # round count below (8 x 3), does with the batch --nodes 24 alone gives; 62 and 124 nodes do not.
    model, hardware = load_model("llama3-8b"), load_hardware("gb200-nvl72")
    seq_len = 4 * 1024 * 1024
    workload = Workload(seq_len=seq_len, global_batch=default_global_batch(seq_len, 124))
    assert not search(model, hardware, workload, num_nodes=31, gpus_per_node=4, pins=Pins()).ranked[0].fits
    suggestions = suggest_fits(model, hardware, workload, num_nodes=31, gpus_per_node=4, pins=Pins(),
                               batch_scales_with_gpus=True)
    fewer = [s for s in suggestions if s.change == "nodes" and int(s.option.split()[1]) < 31]
    assert [s.option for s in fewer] == ["--nodes 24"]
    assert fewer[0].description == "would fit on 24 nodes (96 GPUs), a rounder count (8 x 3) below 31"
    assert fewer[0].estimate.fits and fewer[0].estimate.plan.world_size == 96


def test_recompute_levels_above_the_pinned_one():
    assert list(_stronger_recompute(None)) == []
    assert list(_stronger_recompute("none")) == ["selective", "full"]
    assert list(_stronger_recompute("selective")) == ["full"]
    assert list(_stronger_recompute("full")) == []


def test_halvings_stop_at_1k():
    assert list(_halvings(8192)) == [4096, 2048, 1024]
    assert list(_halvings(1500)) == []


def test_rounded_lengths_are_the_nearest_multiples_of_each_split_of_twice_the_gpus():
    # 16 GPUs: splits 2, 4, 8, 16, 32 (2 x ring x ulysses x tp with zigzag); 100,000 = 32 x 3125.
    assert rounded_lengths(100_001, 16) == ([100_000], [100_002, 100_004, 100_008, 100_016, 100_032])
    # 12 GPUs: splits 2, 3, 4, 6, 8, 12, 24, none dividing 1001 = 7 x 11 x 13. Below: 1000 (2, 4, 8),
    # 999 (3), 996 (6, 12), 984 (24); above: 1002 (2, 3, 6), 1004 (4), 1008 (8, 12, 24).
    assert rounded_lengths(1001, 12) == ([1000, 999, 996, 984], [1002, 1004, 1008])
    assert rounded_lengths(131_072, 16) == ([], [])  # 2^17: every split of 16 GPUs divides it
    assert rounded_lengths(3, 4) == ([2], [4, 8])  # splits 2, 4, 8: 3 // 4 * 4 = 0 is no length


def test_a_length_no_split_divides_is_offered_the_nearest_rounded_lengths():
    # Llama-3-8B at 100,001 tokens on 2 x 8 H100: odd, so no plan shards the sequence and none fits
    # (tp 1 x dp 2 x pp 8 needs 92.4 GiB of 79.2). 100,000 (ulysses 8 x zigzag ring 2: 32) and
    # 100,002 (a split of 2) fit; the halving to 50,000 is shorter than the rounding down, not offered.
    model, hardware = load_model("llama3-8b"), load_hardware("h100")
    workload = Workload(seq_len=100_001, global_batch=default_global_batch(100_001, 16))
    assert not search(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=Pins()).ranked[0].fits
    suggestions = suggest_fits(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=Pins(),
                               batch_scales_with_gpus=True)
    lengths = [s for s in suggestions if s.change == "seq_len"]
    assert [s.option for s in lengths] == ["--seq-len 100000", "--seq-len 100002"]
    assert lengths[1].description == ("a sequence of 100002 tokens, a multiple of 2 (the best plan's sequence "
                                      "split), would fit")
    for s, length in zip(lengths, (100_000, 100_002), strict=True):
        assert s.estimate.fits and length % s.estimate.plan.seq_len_divisor() == 0
        assert s.estimate.plan.seq_len_divisor() > 1


def test_every_suggestion_fits_when_searched_again():
    model, hardware = load_model("llama3-70b"), load_hardware("a800")
    workload = Workload(seq_len=32 * 1024, global_batch=8)
    pins = Pins(recompute="none", zero=1, tp=8)
    assert not search(model, hardware, workload, num_nodes=1, gpus_per_node=8, pins=pins).ranked[0].fits
    suggestions = suggest_fits(model, hardware, workload, num_nodes=1, gpus_per_node=8, pins=pins)
    assert {s.change for s in suggestions} >= {"nodes"}
    for s in suggestions:
        assert s.estimate.fits
        assert s.estimate.memory_peak_bytes <= hardware.hbm_bytes
        if s.change == "nodes":
            nodes = int(s.option.split()[1])
            assert s.estimate.plan.world_size == nodes * 8 and s.estimate.plan.tp == 8


def test_offloading_is_suggested_where_recompute_is_pinned_off():
    # Megatron-Bridge's Llama-3-70B GB200 layout without its offloading needs 339 GiB a GPU under
    # sp-plan's Megatron defaults (bf16 gradients' fp32 copies, the unfused loss, bf16 weights
    # beside their FP8 casts; the recipe's own runtime needs 180 of 184 GiB with its 40 layers
    # offloaded, validation row mbd-70b-gb200-cs). With recompute pinned off, offloading half the
    # layers (the first offer) still needs 193.5 GiB; all but the 2 the copies overlap with, 78 of
    # the 80, fits and is faster than full recompute (the copies hide behind the layers,
    # cost.offload).
    model, hardware = load_model("llama3-70b"), load_hardware("gb200-nvl72")
    workload = Workload(seq_len=8192, global_batch=256)
    pins = Pins(recompute="none", zero=3, precision="fp8", micro_batch=2, tp=1, ulysses=1, ring=1, pp=1)
    assert not search(model, hardware, workload, num_nodes=16, gpus_per_node=4, pins=pins).ranked[0].fits
    found = {s.change: s for s in suggest_fits(model, hardware, workload, num_nodes=16, gpus_per_node=4, pins=pins)}
    offload, recompute = found["offload"], found["recompute"]
    assert offload.option == "--cpu-offload-layers 78" and offload.estimate.plan.cpu_offload_layers == 78
    assert offload.estimate.fits and offload.estimate.time.offload_s == 0.0
    assert offload.estimate.step_time_s < recompute.estimate.step_time_s
    # No host link measured (B300): not offered.
    b300 = suggest_fits(model, load_hardware("b300"), workload, num_nodes=16, gpus_per_node=4, pins=pins)
    assert "offload" not in {s.change for s in b300}


def test_offloading_pinned_keeps_pp_1_and_no_recompute_in_every_change_tried():
    # sp-plan --cpu-offload-layers pins pp 1 and recompute none (cli.option_checks.offload_pins); the
    # recompute and unpin changes built plans Megatron-Core rejects (a ParallelPlan error, stop 57).
    model, hardware = load_model("llama3-70b"), load_hardware("h100")
    workload = Workload(seq_len=32 * 1024, global_batch=8)
    pins = Pins(recompute="none", cpu_offload_layers=40, pp=1, tp=8)
    suggestions = suggest_fits(model, hardware, workload, num_nodes=1, gpus_per_node=8, pins=pins)
    assert [s.option for s in suggestions] == ["--nodes 4"]
    plan = suggestions[0].estimate.plan
    assert (plan.pp, plan.recompute, plan.cpu_offload_layers, plan.world_size) == (1, "none", 40, 32)


def test_a_pinned_hsdp_replica_count_is_relaxed_to_one():
    # HSDP over routed experts breaks the expert_replicas rule: Qwen3-30B-A3B pinned to 4 replicas
    # on 32 H100s at 128K had no suggestion ("None of the changes tried ..."); one replica fits.
    model, hardware = load_model("qwen3-30b-a3b"), load_hardware("h100")
    workload = Workload(seq_len=131072, global_batch=32)
    pins = Pins(tp=1, ulysses=4, ring=2, dp=4, pp=1, ep=32, etp=1, zero=3, dp_replicate=4)
    assert not search(model, hardware, workload, num_nodes=4, gpus_per_node=8, pins=pins).ranked[0].fits
    found = {s.change: s for s in suggest_fits(model, hardware, workload, num_nodes=4, gpus_per_node=8, pins=pins)}
    relaxed = found["dp_replicate"]
    assert relaxed.option == "--dp-replicate 1" and relaxed.estimate.fits
    assert relaxed.estimate.plan.dp_replicate == 1 and relaxed.estimate.plan.ep == 32


def test_whole_group_batches_are_the_nearest_multiples_of_dp_micro_batch_pp():
    # pp 2, dp 1, micro batch 1: 3 sequences lie between 2 and 4, the larger first on the tie.
    assert whole_group_batches(3, ParallelPlan(tp=8, pp=2, vpp=2)) == [4, 2]
    # dp 2 x pp 4 (8 a group): 20 -> 24 and 16 at 4 each; 7 -> 8 only (0 is no batch); 23 -> 24, 16.
    plan = ParallelPlan(dp=2, pp=4, vpp=2)
    assert whole_group_batches(20, plan) == [24, 16]
    assert whole_group_batches(7, plan) == [8]
    assert whole_group_batches(23, plan) == [24, 16]
    assert whole_group_batches(5, ParallelPlan(dp=2, vpp=2)) == []  # no pipeline: no groups


def test_a_pinned_vpp_with_fewer_micro_batches_than_pp_is_offered_the_nearest_batch():
    # Llama-3-8B at 128K on 2 x 8 A800, --pp 2 --vpp 2 --global-batch 1: every plan breaks the vpp
    # rule (m 1 < pp 2 at dp 1: no micro-batch group Megatron accepts); 2 sequences (m 2, one group
    # of pp) is the nearest, and a plan fits there. 3 sequences run in one group of 3
    # (pipeline_order.micro_batch_group): a plan fits, nothing to offer.
    model, hardware = load_model("llama3-8b"), load_hardware("a800")
    workload = Workload(seq_len=128 * 1024, global_batch=1)
    pins = Pins(pp=2, vpp=2)
    result = search(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=pins)
    closest = result.ranked[0]
    assert not closest.fits and closest.reason.startswith("vpp: vpp 2 (interleaved 1F1B) needs at least pp 2")
    suggestions = suggest_fits(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=pins,
                               closest=closest.plan)
    batch = [s for s in suggestions if s.change == "global_batch"]
    assert [s.option for s in batch] == ["--global-batch 2"]
    assert batch[0].estimate.fits and batch[0].estimate.plan.vpp == 2
    three = search(model, hardware, workload.model_copy(update={"global_batch": 3}), num_nodes=2, gpus_per_node=8,
                   pins=pins).ranked[0]
    assert three.fits and three.plan.vpp == 2
    # Without the closest plan (sp-plan's older callers) no batch is offered.
    assert not [s for s in suggest_fits(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=pins)
                if s.change == "global_batch"]


def test_a_batch_over_the_step_token_limit_is_not_suggested(monkeypatch):
    # As above, with the limit (specs.workload.MAX_TOKENS_PER_GPU) lowered to one 128K sequence on the
    # 16 GPUs: the --global-batch 2 that fits is a step sp-plan would refuse, so it is not offered.
    from sp_planner.specs import workload as workload_module

    model, hardware = load_model("llama3-8b"), load_hardware("a800")
    workload = Workload(seq_len=128 * 1024, global_batch=1)
    pins = Pins(pp=2, vpp=2)
    closest = search(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=pins).ranked[0]
    monkeypatch.setattr(workload_module, "MAX_TOKENS_PER_GPU", 128 * 1024 // 16)
    suggestions = suggest_fits(model, hardware, workload, num_nodes=2, gpus_per_node=8, pins=pins,
                               closest=closest.plan)
    assert not [s for s in suggestions if s.change == "global_batch"]
