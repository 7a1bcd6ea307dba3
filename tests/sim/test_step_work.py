"""sim.step_work: the first stage's embedding collectives per micro-batch."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.embedding_work import embedding_work
from sp_planner.cost.runtime import MEGATRON_RUNTIME as RT
from sp_planner.plan import ParallelPlan
from sp_planner.sim.cluster import build_cluster
from sp_planner.sim.step_work import step_work
from sp_planner.specs.workload import Workload

MODEL = load_model("llama3-8b")
A800 = load_hardware("a800")
WORKLOAD = Workload(seq_len=8192, global_batch=8)
PLAN = ParallelPlan(dp=2, tp=2, pp=2)


def test_a_learned_position_table_all_reduces_the_embedding_forward():
    # Megatron-Core reduce-scatters the embedding output only without a learned position table
    # (language_model_embedding.py at d98e8a64dd lines 51-56); with one it all-reduces it (a
    # reduce-scatter's and an all-gather's worth) and splits it: one TP all-gather more forward,
    # the split's all-gather backward as before. The twins' other embedding work differs by the
    # position add and table passes (cost.embedding_work), taken out here.
    cluster = build_cluster(A800, 1)
    learned = MODEL.model_copy(update={"position_embedding": "learned_absolute"})
    (rope_work, phases), (learned_work, _) = (step_work(cluster, m, WORKLOAD, PLAN) for m in (MODEL, learned))
    tp_ag = next(p.duration_s for p in phases if p.name == "tp all-gather")
    tokens = WORKLOAD.seq_len  # micro-batch 1, cp 1
    emb = [embedding_work(m, A800, tp=2, pp=2, tokens=tokens, seq_len=WORKLOAD.seq_len, grad_bytes=RT.states.grad_bytes,
                          wrapper=RT.grad_sync.wrapper, sequence_parallel=True) for m in (MODEL, learned)]
    extra_fwd = learned_work.first_stage_fwd_s - rope_work.first_stage_fwd_s - float(emb[1].fwd_s - emb[0].fwd_s)
    assert tp_ag > 0 and extra_fwd == pytest.approx(tp_ag, rel=1e-9)
    extra_bwd = learned_work.first_stage_bwd_s - rope_work.first_stage_bwd_s - float(emb[1].bwd_s - emb[0].bwd_s)
    assert extra_bwd == pytest.approx(0.0, abs=1e-12)
