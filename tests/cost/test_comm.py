"""Communication bytes and links of the toy model (conftest), derived by hand."""

import pytest

from sp_planner.cost.runtime import DEEPSPEED_RUNTIME, MEGATRON_RUNTIME
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.specs import Workload

# tp 2 x ulysses 2 x ring 2, seq 64, 2 sequences of micro-batch 1 -> 2 micro-batches, 2 layers.
PLAN = ParallelPlan(dp=1, tp=2, ulysses=2, ring=2, zero=1, micro_batch=1)
WORKLOAD = Workload(seq_len=64, global_batch=2)
PER_STAGE = 2 * 2  # layers x micro-batches


def _estimate(model, hardware, gpus_per_node, plan=PLAN):
    return evaluate(model, hardware, WORKLOAD, plan, num_nodes=8 // gpus_per_node,
                    gpus_per_node=gpus_per_node)


def test_bytes_by_hand(toy_model, hardware):
    comm = _estimate(toy_model, hardware, 8).comm_bytes
    # Ulysses: 16 tokens per rank; Q and O 2 heads, K and V 1 head replicated to 2 for ulysses 2:
    # (512 + 512 + 512 + 512) elements, half sent, bf16 -> 2048 B forward, 2048 B backward.
    assert comm.ulysses_all_to_all == 4096 * PER_STAGE
    # Ring: blocks of 32 tokens x 1 KV head x 16 = 512 elements. Forward K, V for 1 step (2048 B);
    # backward K, V again (2048 B) and, Megatron's Transformer Engine ring, bf16 dK, dV for 1 hop
    # (2048 B; cost.ring_impl).
    assert comm.ring_p2p == 6144 * PER_STAGE
    # TP: 16 tokens x 64 x 2 B = 2048 B gathered, half sent; 6 all-gathers, 4 reduce-scatters a
    # layer, and per micro-batch the embedding's reduce-scatter and its all-gather backward and
    # (pp 1) the output layer's all-gather forward, all-gather and reduce-scatter backward.
    assert comm.tp_all_gather == 6 * 1024 * PER_STAGE + (1 + 2) * 1024 * 2
    assert comm.tp_reduce_scatter == 4 * 1024 * PER_STAGE + (1 + 1) * 1024 * 2
    assert comm.pp_p2p == 0
    # ZeRO-1 over dp x cp = 4 ranks, 43584 parameters per rank (see test_memory):
    # fp32 gradients reduce-scattered, bf16 parameters gathered, 3/4 of each sent.
    assert comm.dp_reduce_scatter == 4 * 43584 * 3 // 4
    assert comm.dp_all_gather == 2 * 43584 * 3 // 4


def test_yunchangs_ring_sends_fp32_gradients_home(toy_model, hardware):
    # yunchang's ring (DeepSpeed's runtime): fp32 dK, dV for 2 hops, the last one home (8192 B).
    comm = evaluate(toy_model, hardware, WORKLOAD, PLAN, num_nodes=1, gpus_per_node=8,
                    runtime=DEEPSPEED_RUNTIME).comm_bytes
    assert comm.ring_p2p == (2048 + 2048 + 8192) * PER_STAGE


def test_full_recompute_adds_forward_traffic(toy_model, hardware):
    base = _estimate(toy_model, hardware, 8).comm_bytes
    full = _estimate(toy_model, hardware, 8, PLAN.model_copy(update={"recompute": "full"})).comm_bytes
    assert full.ulysses_all_to_all == base.ulysses_all_to_all * 3 // 2
    assert full.ring_p2p - base.ring_p2p == 2048 * PER_STAGE
    assert full.tp_all_gather - base.tp_all_gather == 2 * 1024 * PER_STAGE
    assert full.tp_reduce_scatter - base.tp_reduce_scatter == 2 * 1024 * PER_STAGE


def test_zero_variants(toy_model, hardware):
    def dp(zero):
        comm = _estimate(toy_model, hardware, 8, PLAN.model_copy(update={"zero": zero})).comm_bytes
        return comm.dp_reduce_scatter, comm.dp_all_gather

    share = 43584 * 3 // 4
    assert dp(0) == (4 * share, 4 * share)  # fp32 all-reduce = reduce-scatter + all-gather
    assert dp(2) == (2 * 4 * share, 2 * share)  # reduce-scatter every micro-batch
    # ZeRO-3 as Megatron-FSDP: the layers gathered in forward and backward, per micro-batch; the
    # root unit (embedding 100 x 64 / tp 2 = 3200, output layer 3200, final norm 64: 6464 of the
    # 43584) in bf16 once a step (cost.fsdp.root_gathers_per_micro_batch).
    layers_share, root_share = (43584 - 6464) * 2 * 3 // 4, 6464 * 2 * 3 // 4
    assert dp(3) == (2 * 4 * share, 2 * 2 * layers_share + root_share)


def test_zero3_root_gathered_every_micro_batch_elsewhere(toy_model, hardware):
    # DeepSpeed stage 3 releases and gathers every module's parameters each forward and backward:
    # the whole rank's parameters, root unit included, twice a micro-batch.
    comm = evaluate(toy_model, hardware, WORKLOAD, PLAN.model_copy(update={"zero": 3}), num_nodes=1,
                    gpus_per_node=8, runtime=DEEPSPEED_RUNTIME).comm_bytes
    assert comm.dp_all_gather == 2 * 2 * 2 * 43584 * 3 // 4


def test_pipeline_sends_sequence_shards(toy_model, hardware):
    plan = ParallelPlan(dp=1, pp=2, tp=2, micro_batch=1)
    comm = evaluate(toy_model, hardware, WORKLOAD, plan, num_nodes=1, gpus_per_node=4).comm_bytes
    # activation forward + gradient backward of 64 tokens / tp 2 x 64 x 2 B, per micro-batch
    assert comm.pp_p2p == 2 * 2 * (32 * 64 * 2)


def test_a_pipeline_synced_once_a_step_reduces_and_gathers_once(toy_model, hardware):
    # torchtitan under pp 2 (torch.distributed.pipelining, cost.fsdp.stage_synced), dp 2, tp 2, 2
    # micro-batches: the first stage's rank holds the embedding (100 x 64 / 2 = 3200) and a layer
    # (18560): 21760 parameters, half of each buffer sent over dp 2. fp32 gradients reduced once,
    # 4 x 21760 / 2; bf16 parameters gathered once kept after forward, 2 x 21760 / 2, or in the
    # first forward and both backwards resharded.
    from sp_planner.cost.runtime import TORCHTITAN_RUNTIME

    def dp(reshard):
        plan = ParallelPlan(dp=2, pp=2, tp=2, zero=3, micro_batch=1, reshard_after_forward=reshard)
        comm = evaluate(toy_model, hardware, Workload(seq_len=64, global_batch=4), plan, num_nodes=1, gpus_per_node=8,
                        runtime=TORCHTITAN_RUNTIME).comm_bytes
        return comm.dp_reduce_scatter, comm.dp_all_gather

    assert dp(False) == (4 * 21760 // 2, 2 * 21760 // 2)
    assert dp(True) == (4 * 21760 // 2, 3 * 2 * 21760 // 2)


@pytest.mark.parametrize("gpus_per_node, links", [
    (8, dict(tp_all_gather="intra", ulysses_all_to_all="intra", ring_p2p="intra", dp_reduce_scatter="intra")),
    # 4 per node: tp (stride 1) and ulysses (stride 2, span 4) stay inside; the ring (stride 4)
    # and the dp x cp group (stride 2, span 8) cross nodes.
    (4, dict(tp_all_gather="intra", ulysses_all_to_all="intra", ring_p2p="inter", dp_reduce_scatter="inter")),
    (2, dict(tp_all_gather="intra", ulysses_all_to_all="inter", ring_p2p="inter", dp_reduce_scatter="inter")),
])
def test_links_follow_rank_order(toy_model, hardware, gpus_per_node, links):
    est = _estimate(toy_model, hardware, gpus_per_node)
    for name, link in links.items():
        assert getattr(est.comm_links, name) == link
    assert est.comm_links.pp_p2p == "none"


def test_a_collective_a_plan_does_not_run_has_no_link(toy_model, hardware):
    # The dense toy model has no routed experts: no expert-DP traffic, so no link, though its edp
    # group (the 8 GPUs over 2 nodes) spans nodes; every other unused collective says none too.
    est = _estimate(toy_model, hardware, 4)
    for name, num_bytes in est.comm_bytes.model_dump().items():
        assert (num_bytes == 0) == (getattr(est.comm_links, name) == "none"), name


def test_allgather_cp_bytes_by_hand(toy_model, hardware):
    plan = PLAN.model_copy(update={"cp_comm": "allgather"})
    comm = _estimate(toy_model, hardware, 8, plan).comm_bytes
    # Same 512-element K (or V) block per ring rank. Forward all-gathers K and V (R-1 = 1 block
    # each sent, bf16: 2048 B), backward gathers them again (2048 B) and reduce-scatters the
    # full-sequence dK, dV in Transformer Engine's bf16 (R-1 = 1 block each: 2048 B; cost.ring_impl).
    # Nothing goes P2P.
    assert comm.cp_all_gather == 4096 * PER_STAGE
    assert comm.cp_reduce_scatter == 2048 * PER_STAGE
    # yunchang's runtime (DeepSpeed's) reduce-scatters them in fp32: 4096 B.
    fp32 = evaluate(toy_model, hardware, WORKLOAD, plan, num_nodes=1, gpus_per_node=8,
                    runtime=DEEPSPEED_RUNTIME).comm_bytes
    assert fp32.cp_reduce_scatter == 4096 * PER_STAGE
    assert comm.ring_p2p == 0
    assert comm.ulysses_all_to_all == 4096 * PER_STAGE  # unchanged
    again = _estimate(toy_model, hardware, 8, plan.model_copy(update={"recompute": "selective"})).comm_bytes
    assert again.cp_all_gather - comm.cp_all_gather == 2048 * PER_STAGE  # the forward gather re-run
    assert again.cp_reduce_scatter == comm.cp_reduce_scatter
    links = _estimate(toy_model, hardware, 4, plan).comm_links
    assert (links.cp_all_gather, links.ring_p2p) == ("inter", "none")  # ring stride 4 x 2 spans 2 nodes


def test_hsdp_and_kept_parameters_by_hand(toy_model, hardware):
    # dp 2 (2 replicas of dp_shard 1) x ulysses 2 x tp 2: shard group = dp_shard x cp = 2 ranks, one
    # micro-batch (global batch 2 / dp 2).
    plan = ParallelPlan(dp=2, tp=2, ulysses=2, zero=3, dp_replicate=2)
    comm = _estimate(toy_model, hardware, 8, plan).comm_bytes
    share = 43584 // 2  # (n-1)/n of a buffer over 2 ranks
    assert comm.dp_reduce_scatter == 4 * share
    assert comm.dp_all_gather == 2 * 2 * share  # forward and backward gathers, bf16
    # the fp32 shard (43584/2 parameters) all-reduced over 2 replicas: 2 x 1/2 of 4 x 21792 B
    assert comm.dp_all_reduce == 4 * 43584 // 2
    kept = _estimate(toy_model, hardware, 8, plan.model_copy(update={"reshard_after_forward": False})).comm_bytes
    assert kept.dp_all_gather == 2 * share  # forward only
    # replicas are dp_shard x cp x tp = 4 ranks apart: inside an 8-GPU node, across 4-GPU nodes
    assert _estimate(toy_model, hardware, 8, plan).comm_links.dp_all_reduce == "intra"
    assert _estimate(toy_model, hardware, 4, plan).comm_links.dp_all_reduce == "inter"


def test_gradients_move_in_the_frameworks_width(toy_model, hardware):
    # DeepSpeed with bf16 reduces gradients in bf16 (engine.communication_data_type defaults to
    # the model's dtype): half Megatron's fp32 bytes; parameters are gathered in bf16 by both.
    # torch FSDP's reduce_dtype float32 moves Megatron's widths.
    from sp_planner.cost.states import DEEPSPEED_STATES, TORCH_FSDP_STATES

    def dp(zero, states):
        plan = PLAN.model_copy(update={"zero": zero})
        comm = evaluate(toy_model, hardware, WORKLOAD, plan, num_nodes=1, gpus_per_node=8,
                        runtime=MEGATRON_RUNTIME.model_copy(update={"states": states})).comm_bytes
        return comm.dp_reduce_scatter, comm.dp_all_gather

    share = 43584 * 3 // 4
    # ZeRO-3 gathers as Megatron-FSDP: the layers twice a micro-batch, the root unit once a step.
    gathers3 = 2 * 2 * ((43584 - 6464) * 2 * 3 // 4) + 6464 * 2 * 3 // 4
    assert dp(0, DEEPSPEED_STATES) == (2 * share, 2 * share)  # bf16 all-reduce
    assert dp(2, DEEPSPEED_STATES) == (2 * 2 * share, 2 * share)
    assert dp(3, DEEPSPEED_STATES) == (2 * 2 * share, gathers3)
    assert dp(3, TORCH_FSDP_STATES) == (2 * 4 * share, gathers3)
