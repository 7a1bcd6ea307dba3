"""flags.dsa: Megatron-LM's DeepSeek Sparse Attention flags as the plan is timed, and the other
frameworks' refusal of a DSA model."""

import pytest

from sp_planner.catalog import load_model
from sp_planner.flags import FlagRequest, render_flags
from sp_planner.flags.base import FRAMEWORKS
from sp_planner.plan import ParallelPlan
from sp_planner.specs import Workload

V32 = load_model("deepseek-v3.2-exp")


def _request(model=V32, **plan):
    return FlagRequest(model=model, workload=Workload(seq_len=131072, global_batch=8),
                       plan=ParallelPlan(**{"tp": 2, "ring": 8, "cp_comm": "allgather", "dp": 4, "ep": 8, **plan}),
                       num_nodes=8, gpus_per_node=8)


def test_megatron_emits_the_dsa_arguments_of_its_transformer_config_and_all_gather_cp():
    flags = render_flags("megatron", _request())
    assert flags.supported, flags.reason
    for flag in ("--experimental-attention-variant dsa", "--dsa-indexer-n-heads 64", "--dsa-indexer-head-dim 128",
                 "--dsa-indexer-topk 2048", "--dsa-kernel-backend tilelang", "--no-rope-fusion",
                 "--cp-comm-type all_gather"):
        assert f"    {flag}\n" in flags.text, flag
    assert "--dsa-indexer-loss-coeff" not in flags.text  # timed without the indexer loss
    assert any("not trained" in note and "KL loss" in note for note in flags.notes)


def test_a_dense_model_gets_no_dsa_flag():
    flags = render_flags("megatron", _request(model=load_model("DeepSeek-V3")))
    assert flags.supported and "dsa" not in flags.text and not any("indexer" in n for n in flags.notes)


@pytest.mark.parametrize("framework", [f for f in FRAMEWORKS if f != "megatron"])
def test_every_other_framework_refuses_a_dsa_plan(framework):
    flags = render_flags(framework, _request(tp=1, ring=1, cp_comm="p2p", dp=64, ep=8))
    assert not flags.supported
    assert "DeepSeek Sparse Attention cannot be expressed" in flags.reason and "use megatron" in flags.reason


def test_ring_p2p_is_refused_by_the_plan_rule():
    flags = render_flags("megatron", _request(cp_comm="p2p"))
    assert not flags.supported and "all-gather only" in flags.reason


def test_the_trained_indexer_gets_its_loss_flags_and_no_note():
    trained = V32.model_copy(update={"dsa": V32.dsa.model_copy(update={"indexer_loss": "sparse"})})
    flags = render_flags("megatron", _request(model=trained))
    assert flags.supported, flags.reason
    for flag in ("--dsa-indexer-loss-coeff 0.01", "--dsa-indexer-use-sparse-loss", "--dsa-kernel-backend tilelang"):
        assert f"    {flag}\n" in flags.text, flag
    assert not any("not trained" in note for note in flags.notes)
