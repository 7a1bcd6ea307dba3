"""resolve_question: options to specs, workload and pins, with the pinned hard rules checked first."""

from __future__ import annotations

import pytest

from sp_planner.catalog import load_hardware
from sp_planner.cli.question import default_batch_note, resolve_question
from sp_planner.errors import UserInputError

FREE = {"tp": None, "pp": None, "dp": None, "ulysses": None, "ring": None}


def _resolve(**changes):
    options = dict(model="llama3-8b", hardware="a800", num_nodes=2, gpus_per_node=None, seq_len="128k",
                   global_batch=None, degrees=dict(FREE), zero=None, recompute=None, micro_batch=None)
    options.update(changes)
    return resolve_question(**options)


def test_defaults_come_from_the_profile_and_the_token_budget():
    q = _resolve()
    assert q.gpus_per_node == load_hardware("a800").gpus_per_node == 8
    assert q.world_size == 16
    # 4M tokens per step (specs/batch.py) / 128K = 32 sequences, a multiple of the 16 GPUs.
    assert (q.workload.seq_len, q.workload.global_batch, q.workload.causal) == (131072, 32, True)
    assert q.default_batch and not q.all_degrees_pinned


def test_explicit_batch_and_gpus():
    q = _resolve(gpus_per_node=4, global_batch=3)
    assert (q.world_size, q.workload.global_batch, q.default_batch) == (8, 3, False)


def test_a_default_batch_far_over_its_token_budget_is_noted():
    # 999 nodes of 8 GPUs = 8 x 999 at 128K: the 32 sequences of the 4M-token budget are rounded up
    # to 999, the GPU count's odd factor that data parallelism must take (specs/batch.py): 131M
    # tokens, 31x the budget, said in one note; a batch the user gave, or the budget met, says nothing.
    big = _resolve(hardware="h100", num_nodes=999)
    assert big.workload.global_batch == 999
    assert default_batch_note(big) == (
        "the default global batch, 999 sequences of 128K tokens, is 31x its 4M-token budget per step: data "
        "parallelism takes the 7,992 GPUs' odd factors and must divide it; --global-batch sets the batch")
    assert default_batch_note(_resolve(hardware="h100", num_nodes=999, global_batch=999)) is None
    assert default_batch_note(_resolve(hardware="h100", num_nodes=9)) is None  # 36 sequences: 1.1x
    assert default_batch_note(_resolve()) is None


def test_a_step_over_2_to_the_24_tokens_a_gpu_is_refused_with_the_largest_batch_that_fits():
    # 2**24 x 16 GPUs / 131072 = 2048 sequences at most; 2049 is one sequence over. The default batch
    # over it (9 nodes: the GPU count's odd factor 9 x 1G-token sequences) is named as the default.
    assert _resolve(seq_len="128k", global_batch=2048).workload.tokens_per_step == 2**28
    with pytest.raises(UserInputError) as over:
        _resolve(seq_len="128k", global_batch=2049)
    assert str(over.value) == (
        "--seq-len 128k, --global-batch 2049: 2,049 sequences of 131,072 tokens on 16 GPUs is 16,785,408 tokens a "
        "GPU a step, more than the 16,777,216 (2**24) the planner takes (546x DeepSeek-V3's); give a global batch "
        "of at most 2,048 sequences")
    with pytest.raises(UserInputError, match=r"^--seq-len 1073741824, the default global batch: 9 sequences .* "
                                             r"at most 1 sequence$"):
        _resolve(hardware="h100", num_nodes=9, seq_len="1073741824")


def test_dp_follows_from_the_other_four_degrees():
    q = _resolve(degrees={"tp": 2, "pp": 1, "dp": None, "ulysses": 4, "ring": 1})
    assert q.all_degrees_pinned
    assert q.pins.dp is None  # the search derives dp = 16 / 8 = 2; it was not the user's pin


def test_derived_dp_is_checked_against_the_batch_rule():
    # dp = 16 / (tp 1 x ulysses 2) = 8 does not divide a global batch of 4.
    with pytest.raises(UserInputError, match=r"batch rule.*dp\*micro_batch = 8\*1"):
        _resolve(global_batch=4, degrees={"tp": 1, "pp": 1, "dp": None, "ulysses": 2, "ring": 1})


def test_kv_heads_rule_waits_until_tp_and_ulysses_are_both_pinned(tmp_path):
    # 56 heads, 8 KV heads (Yi-34B's attention) with an MLP tp 7 can split (20608 = 7 x 2944; Yi's
    # own 20480 cannot, the ffn rule). tp 7 with ulysses 1 breaks the rule (8 and 7 do not divide
    # one another) but ulysses 8 repairs it (tp*u = 56, a multiple of 8), so tp 7 alone is accepted.
    import json

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 7168, "intermediate_size": 20608,
                                  "num_hidden_layers": 60, "num_attention_heads": 56, "num_key_value_heads": 8,
                                  "vocab_size": 64000}))
    q = _resolve(model=str(config), num_nodes=7, gpus_per_node=8, seq_len="7k", degrees={**FREE, "tp": 7})
    assert q.pins.tp == 7
    with pytest.raises(UserInputError, match="kv_heads rule: num_kv_heads 8 and tp\\*ulysses 7"):
        _resolve(model=str(config), num_nodes=7, gpus_per_node=8, seq_len="7k",
                 degrees={**FREE, "tp": 7, "ulysses": 1})
    # Yi-34B itself: tp 7 cannot split its MLP.
    with pytest.raises(UserInputError, match="ffn rule: the MLP's hidden width 20480 is not divisible by tp 7"):
        _resolve(model="yi-34b", num_nodes=7, gpus_per_node=8, seq_len="7k", degrees={**FREE, "tp": 7})


def test_pinned_virtual_stages_check_every_pipeline_degree_the_gpus_allow():
    """Qwen2.5-7B's 28 layers: no even split into 3 virtual stages, but pp 5 runs the counted one
    (first = last = 30/5 - 1 = 5 layers) on 40 GPUs, and on 16 GPUs pp 2 Megatron-Bridge's recipe
    layout (pipeline_split.recipe_split: chunks of ceil(28 / 6) = 5, 15 / 13); into 16 virtual
    stages a rank (chunks of 1 leave 28 - 31 layers) none splits."""
    q = _resolve(model="qwen2.5-7b", num_nodes=5, vpp=3)
    assert q.pins.vpp == 3
    assert _resolve(model="qwen2.5-7b", vpp=3).pins.vpp == 3
    with pytest.raises(UserInputError, match=r"^--vpp 16: no pipeline degree these GPUs allow \(a divisor of 16 "
                                             r"above 1\) splits 28 layers into 16 virtual stages per rank"):
        _resolve(model="qwen2.5-7b", vpp=16)
    with pytest.raises(UserInputError, match=r"^--vpp 2 interleaves pipeline stages: it needs --pp 2 or more"):
        _resolve(degrees={**FREE, "pp": 1}, vpp=2)


def test_pins_that_mean_nothing_are_refused():
    with pytest.raises(UserInputError, match=r"^--cp-comm allgather gathers K/V along the ring axis: it needs "
                                             r"--ring 2 or more, not --ring 1"):
        _resolve(degrees={**FREE, "ring": 1}, cp_comm="allgather")
    for flag, option in ((True, "--reshard-after-forward"), (False, "--no-reshard-after-forward")):
        with pytest.raises(UserInputError, match=rf"^{option} needs --zero 3 \(got --zero 2\)"):
            _resolve(zero=2, reshard_after_forward=flag)


def test_a_pinned_allgather_keeps_only_plans_with_a_ring():
    from sp_planner.search import search

    q = _resolve(cp_comm="allgather")
    result = search(q.model, q.hardware, q.workload, num_nodes=q.num_nodes, gpus_per_node=q.gpus_per_node,
                    pins=q.pins, top_k=20)
    assert result.ranked and all(est.plan.ring > 1 and est.plan.cp_comm == "allgather" for est in result.ranked)


def test_pinned_expert_grid_larger_than_a_stage_is_refused():
    # Qwen3-30B-A3B on 8 GPUs: ep 16 can never fit (an exit-2 input error, not "no plan fits").
    with pytest.raises(UserInputError, match=r"^the pinned plan breaks the expert_grid rule: ep\*etp = 16\*1"):
        _resolve(model="qwen3-30b-a3b", num_nodes=1, seq_len="32k", expert_degrees={"ep": 16})
    assert _resolve(model="qwen3-30b-a3b", num_nodes=1, seq_len="32k", expert_degrees={"ep": 8}).pins.ep == 8


def test_deepep_is_refused_where_it_has_no_figure_and_its_group_rule_waits_for_ep_and_etp():
    # DeepEP (cost.deepep): no figure on GB200 NVL72 or A800; its group sizes are a set, so an unpinned
    # ep (1 in the pin check) is left to the search, while a pinned etp 1 x ep 1 (one rank) is refused.
    moe = dict(model="qwen3-30b-a3b", seq_len="4k", moe_dispatcher="deepep")
    for hardware in ("gb200-nvl72", "a800"):
        with pytest.raises(UserInputError, match="--moe-dispatcher deepep: the DeepEP dispatcher has no published"):
            _resolve(hardware=hardware, **moe)
    with pytest.raises(UserInputError, match="needs 8 GPUs a node"):
        _resolve(hardware="h100-sxm", gpus_per_node=4, **moe)
    assert _resolve(hardware="h100-sxm", **moe).model.moe.dispatcher == "deepep"
    with pytest.raises(UserInputError, match="deepep_group rule: .*etp 1 x ep 1 = 1 ranks"):
        _resolve(hardware="h100-sxm", expert_degrees={"ep": 1, "etp": 1}, **moe)
