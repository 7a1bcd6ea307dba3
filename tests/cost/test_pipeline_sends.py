"""cost.pipeline_sends: the interleaved fill's and drain's hops and the wraps' slack, by hand and
against the simulator on a pinned uneven split."""

import numpy as np
import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.pipeline_path import StageBlocks
from sp_planner.cost.pipeline_sends import interleaved_edge_sends_s, path_sends_s
from sp_planner.plan import ParallelPlan
from sp_planner.search import evaluate
from sp_planner.sim import simulate
from sp_planner.specs import Workload


def _stage(chunk_fwd_s, chunk_bwd_s, vpp, *, chunk0_fwd_s=0.0, chunk0_bwd_s=0.0, last_bwd_s=0.0):
    """A stage's blocks of vpp equal chunks, chunk 0's forward and backward `chunk0_fwd_s` and
    `chunk0_bwd_s` longer (the first stage's embedding), the last chunk's backward `last_bwd_s`
    longer (the last stage's loss)."""
    a = np.array
    forward = vpp * chunk_fwd_s + chunk0_fwd_s
    return StageBlocks(a([1.0]), a([0.0]), a([0.0]), a([forward]), a([chunk_bwd_s + chunk0_bwd_s]),
                       a([chunk_bwd_s + last_bwd_s]), 0.0, a([chunk_fwd_s]))


def _sends(first, middle, last, pp, vpp, hop_s=1e-3):
    return float(interleaved_edge_sends_s((first, middle, last), np.array([pp]), np.array([vpp]), hop_s)[0])


def test_equal_stages_wait_every_hop_but_beside_the_embedding():
    # pp 4, a 1 ms hop: 3 hops to the last stage and 3 back, and each of the vpp - 1 wraps each
    # way 4 more (2 (pp vpp - 1) at vpp 2), less 3 x the first stage's chunk-0 forward beyond
    # another chunk's (the fill's wrap into chunk 1) and 3 x its chunk-0 backward beyond another's
    # (the drain's wrap into chunk 0, which the stage runs for the last group's other micro-
    # batches while the last one goes round): 1 us and 1 s leave 4 - 3 = 1 ms and nothing.
    even = [_stage(0.01, 0.02, 2) for _ in range(3)]
    assert _sends(*even, pp=4, vpp=2) == pytest.approx(2 * (4 * 2 - 1) * 1e-3)
    first = _stage(0.01, 0.02, 2, chunk0_fwd_s=1e-3, chunk0_bwd_s=1.0)
    assert _sends(first, *even[1:], pp=4, vpp=2) == pytest.approx(6e-3 + 1e-3)
    # The last stage's loss backward hides none: the drain's wrap out of the last chunk waits for
    # the stage's chunk-0 backwards of the last group, not its last chunk's.
    first = _stage(0.01, 0.02, 2, chunk0_fwd_s=1e-3)
    assert _sends(first, even[1], _stage(0.01, 0.02, 2, last_bwd_s=1.0), pp=4, vpp=2) == pytest.approx(6e-3 + 5e-3)
    # vpp 4: the embedding's two wraps hide, the 2 x 2 between chunks wait 4 hops each.
    first, last = _stage(0.01, 0.02, 4, chunk0_fwd_s=1.0, chunk0_bwd_s=1.0), _stage(0.01, 0.02, 4, last_bwd_s=1.0)
    assert _sends(first, _stage(0.01, 0.02, 4), last, pp=4, vpp=4) == pytest.approx(6e-3 + 2 * 2 * 4e-3)
    assert _sends(*even, pp=1, vpp=2) == 0.0
    assert _sends(*even, pp=4, vpp=1) == pytest.approx(6e-3)  # no wraps


def test_a_stage_with_more_layers_hides_the_others_wraps():
    # pp 4, vpp 2, 10 ms a layer forward and 20 ms backward. 3, 2, 2 and 1 layers a chunk (a
    # 12/8/8/4 split): micro-batch 0 goes round the others in 50 ms forward while the first stage
    # runs its other three in 90 ms, 40 ms of slack for 4 ms of hops (backward 100 against 180):
    # only the fill's and drain's 6 hops wait. A slow middle stage (1/3/3/1): at rank 1, 3 x 30
    # against 10 + 30 + 10 forward, the same.
    first, middle, last = _stage(0.03, 0.06, 2), _stage(0.02, 0.04, 2), _stage(0.01, 0.02, 2)
    assert _sends(first, middle, last, pp=4, vpp=2) == pytest.approx(6e-3)
    ends = _stage(0.01, 0.02, 2)
    assert _sends(ends, _stage(0.03, 0.06, 2), ends, pp=4, vpp=2) == pytest.approx(6e-3)
    # Slack short of the hops: a first stage 0.5 ms a chunk longer forward (1 ms backward) has
    # 1.5 ms (3 ms) of it, so its wraps wait 2.5 ms and 1 ms.
    first = _stage(0.0105, 0.021, 2)
    assert _sends(first, _stage(0.01, 0.02, 2), _stage(0.01, 0.02, 2), pp=4, vpp=2) == pytest.approx(9.5e-3)


def test_an_uneven_split_agrees_with_the_simulator():
    # Llama-3-8B, 64 H100, pp 4 vpp 4 with 12/8/8/4 layers, ZeRO-1, 2048 tokens, 4 micro-batches:
    # the first stage's chunks hide every wrap, as the simulator times them (2.4% above it when
    # every wrap waited its hops).
    model, h100 = load_model("Llama-3-8B"), load_hardware("H100")
    plan = ParallelPlan(dp=16, pp=4, vpp=4, tp=1, zero=1, first_stage_layers=12, last_stage_layers=4)
    workload = Workload(seq_len=2048, global_batch=4 * 16)
    sim = simulate(model, h100, workload, plan, num_nodes=8, gpus_per_node=8, detail=False)
    est = evaluate(model, h100, workload, plan, num_nodes=8, gpus_per_node=8)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=1e-3)
    assert est.time.pp_comm_s == pytest.approx(sim.critical_path_by_kind_s["pp_comm"], rel=1e-3)


@pytest.mark.parametrize(("hardware", "tp", "zero", "split", "nodes", "seq", "micro_batches"), [
    ("L40S", 1, 0, (4, 4, 3, 3), 1, 2048, 4),  # 32 layers 3/13/13/3: chunks 0/1/1/1, 4/4/4/1, 1/1/1/0
    ("H100", 1, 1, (8, 2, 3, 5), 8, 4096, 8),  # 3/4 x 6/5: chunks 1/2, 2/2, 2/3 (a heavier last stage)
    ("H100", 1, 0, (4, 2, 7, 9), 4, 4096, 8),  # 7/8/8/9: 3/4, 4/4, 4/5
])
def test_interleaved_end_chunks_agree_with_the_simulator(hardware, tp, zero, split, nodes, seq, micro_batches):
    # Llama-3-8B: a middle stage's short end chunk is its last (its chunks before it full), and
    # the drain's wrap waits for the last micro-batch's round trip beside the stage's chunk-0
    # backwards, as sim.pipeline runs Megatron's order. Before: +1.18% (L40S, 3/3, 15.5 ms of
    # pipeline sends against 4.2 ms simulated), -0.80% (pp 8, 3/5: 22 hops against 30) and
    # -0.29% (7/9: 10 against 14), each the sends alone; the compute paths agreed already.
    pp, vpp, first, last = split
    model, hw = load_model("Llama-3-8B"), load_hardware(hardware)
    dp = nodes * (4 if nodes == 1 else 8) // (pp * tp)
    plan = ParallelPlan(dp=dp, pp=pp, vpp=vpp, tp=tp, zero=zero, first_stage_layers=first, last_stage_layers=last)
    workload = Workload(seq_len=seq, global_batch=micro_batches * dp)
    gpus = 4 if nodes == 1 else 8
    sim = simulate(model, hw, workload, plan, num_nodes=nodes, gpus_per_node=gpus, detail=False)
    est = evaluate(model, hw, workload, plan, num_nodes=nodes, gpus_per_node=gpus)
    assert est.time.pp_comm_s == pytest.approx(sim.critical_path_by_kind_s["pp_comm"], rel=1e-6)
    bare_est = est.step_time_s - est.time.dp_comm_exposed_s - est.time.mfu_ceiling_s
    bare_sim = sim.step_time_s - sim.dp_exposed_s - sim.critical_path_by_kind_s["mfu_ceiling"]
    assert bare_est == pytest.approx(bare_sim, rel=1e-6)


@pytest.mark.parametrize(("vpp", "rel"), [(2, 1e-6), (4, 1e-3)])
def test_a_chunk_of_dense_layers_agrees_with_the_simulator(vpp, rel):
    # DeepSeek-V3 on 128 H100s, pp 4 x vpp 2 or 4, 16/13 layers, ep 8, ZeRO-1, 4K tokens, 8
    # micro-batches: the first stage's chunk 0 holds the 3 dense layers, so its wraps' slack is its
    # own layers', not the stage's average (MoE-heavy) layer's. Before, without the data-parallel
    # exposure: -0.174% (vpp 2, 7.6 ms of sends) and -0.478% (vpp 4, 9.0 ms against 30 hops of
    # 1.26 ms, 37.9 ms now); after 0.000% and +0.046% (vpp 4's sim hides 4 of the 30 hops beside
    # its path: docs/cost-model.md, Stop 56).
    model, h100 = load_model("DeepSeek-V3"), load_hardware("H100")
    plan = ParallelPlan(dp=32, pp=4, vpp=vpp, ep=8, zero=1, first_stage_layers=16, last_stage_layers=13)
    workload = Workload(seq_len=4096, global_batch=256)
    sim = simulate(model, h100, workload, plan, num_nodes=16, gpus_per_node=8, detail=False)
    est = evaluate(model, h100, workload, plan, num_nodes=16, gpus_per_node=8)
    bare_est = est.step_time_s - est.time.dp_comm_exposed_s - est.time.mfu_ceiling_s
    bare_sim = sim.step_time_s - sim.dp_exposed_s - sim.critical_path_by_kind_s["mfu_ceiling"]
    assert bare_est == pytest.approx(bare_sim, rel=rel)
    # Every wrap waits its 4 hops (no chunk of a stage longer than the others' on the way round)
    # besides the 2 (pp - 1) of micro-batch 0 and the last one; the steady sends hide behind the
    # chunks' forwards. One hop: 4096 x 7168 bf16 activations between nodes, 1.2634 ms
    # (cost.links.p2p_time_s). Before: 7.2 hops at vpp 4, 6.0 at vpp 2.
    hops = 2 * (4 - 1) + 2 * (vpp - 1) * 4
    assert est.time.pp_comm_s == pytest.approx(hops * 1.2634e-3, rel=1e-4)


def test_groups_of_n_hide_the_wraps_behind_the_groups_other_micro_batches():
    # pp 4, vpp 2, equal stages of 10 ms chunk forwards, 20 ms backwards, 1 ms hops. In groups of
    # pp (m 8) a wrap's micro-batch goes round the 3 other stages (30 ms forward, 60 backward)
    # while p runs the group's 3 others, no slack: 6 hops + 4 at each wrap, 14 ms. m 10 runs groups
    # of 5 (pipeline_order.micro_batch_group): 4 others, 40 and 80 ms, hide both wraps; m 9 (5 + 4) the
    # fill's wrap only, the drain's in the last group of 4 waits.
    even = [_stage(0.01, 0.02, 2) for _ in range(3)]

    def sends(m):
        return float(interleaved_edge_sends_s(tuple(even), np.array([4]), np.array([2]), 1e-3, np.array([m]))[0])
    assert sends(8) == pytest.approx(14e-3) == _sends(*even, pp=4, vpp=2)
    assert sends(10) == pytest.approx(6e-3)
    assert sends(9) == pytest.approx(10e-3)


def test_zero2_gathers_on_micro_batch_0s_forwards_take_the_fills_slack():
    # pp 4, vpp 2, equal stages of 10 ms chunk forwards, 20 ms backwards, 1 ms hops, m 9 (groups
    # of 5 + 4): over the compute the fill's wrap hides (p's 4 others, 40 ms, against 30 ms
    # round). ZeRO-2's gathers ride each chunk's first forward, micro-batch 0's, the one going
    # round: 5 ms a chunk (gather_s 10 ms over 2 chunks) make it 45 ms, and the wrap's 4 hops
    # wait; 2.5 ms a chunk leave 40 - 37.5 = 2.5 ms of slack and 1.5 ms of hops. Backwards the
    # traffic lengthens (30 ms) move nothing: the drain's wraps are the compute's.
    bare = tuple(_stage(0.01, 0.02, 2) for _ in range(3))

    def extra(gather_s, bwd_s=0.02):
        blocks = tuple(_stage(0.01, bwd_s, 2)._replace(gather_s=np.array([gather_s])) for _ in range(3))
        return float(path_sends_s(blocks, bare, np.array([4]), np.array([2]), 1e-3, np.array([9]))[0])
    assert extra(0.010) == pytest.approx(4e-3)
    assert extra(0.005) == pytest.approx(1.5e-3)
    assert extra(0.0, bwd_s=0.03) == 0.0
    assert extra(0.010, bwd_s=0.03) == pytest.approx(4e-3)
