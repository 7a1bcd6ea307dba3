"""Ulysses, Ring and USP on 2 and 4 spawned gloo ranks against the fp32 reference; every case
with ring > 1 runs twice, the ring axis passing K/V round the ring (p2p) and all-gathering them.

One spawn per world size runs every case of that size (sp_planner.executor.spawn); each case is
then asserted on its own. Every rank compares its shard of O, dQ, dK, dV (bf16: at most twice a
single-device bf16 run's error) and the bytes it sent with sp_planner.cost.attention_comm.
"""

from __future__ import annotations

import itertools

import pytest

from sp_planner.executor.config import RunConfig
from sp_planner.layout import rank_groups
from sp_planner.plan import CP_COMMS, ParallelPlan

from .spawned import every_rank_passes, lazy_outcomes, memory_matches_replay

DEGREES = {2: [(2, 1), (1, 2)], 4: [(4, 1), (1, 4), (2, 2)]}
# (heads, kv heads): MHA, GQA, and GQA with fewer KV heads than some Ulysses degrees.
HEADS = [(4, 4), (4, 2), (4, 1)]


def _cases(world: int) -> list[RunConfig]:
    cases = []
    shapes = itertools.cycle([(1, 8, 5), (2, 16, 3), (1, 16, 7)])  # batch, head_dim, odd multiplier
    for (ulysses, ring), causal, dtype, (heads, kv) in itertools.product(
            DEGREES[world], (True, False), ("float32", "bfloat16"), HEADS):
        for layout, cp_comm in (itertools.product(("contiguous", "zigzag"), CP_COMMS) if ring > 1
                                else [("contiguous", "p2p")]):
            batch, head_dim, odd = next(shapes)
            cases.append(RunConfig(
                ulysses=ulysses, ring=ring, batch=batch, seq_len=2 * ulysses * ring * odd, num_heads=heads,
                num_kv_heads=kv, head_dim=head_dim, causal=causal, ring_layout=layout, dtype=dtype,
                cp_comm=cp_comm, iters=0))
    u, r = DEGREES[world][-1]
    # contiguous only needs S % (U*R): an odd length; fp16; the explicit math kernel end to end.
    for cp_comm in CP_COMMS:
        cases.append(RunConfig(ulysses=u, ring=r, seq_len=u * r * 13, num_heads=4, num_kv_heads=2, head_dim=8,
                               causal=True, cp_comm=cp_comm, iters=0))
        cases.append(RunConfig(ulysses=u, ring=r, seq_len=2 * u * r * 3, num_heads=4, num_kv_heads=1, head_dim=8,
                               causal=True, ring_layout="zigzag", dtype="float16", cp_comm=cp_comm, iters=0))
        cases.append(RunConfig(ulysses=u, ring=r, seq_len=2 * u * r * 5, num_heads=4, num_kv_heads=2, head_dim=8,
                               causal=True, ring_layout="zigzag", kernel="math", cp_comm=cp_comm, iters=0))
    return cases


CASES = {world: _cases(world) for world in DEGREES}
PARAMS = [pytest.param(world, i, id=f"w{world}-u{c.ulysses}r{c.ring}-{'causal' if c.causal else 'full'}-"
                       f"{c.ring_layout}-{c.cp_comm}-{c.dtype}-h{c.num_heads}kv{c.num_kv_heads}-s{c.seq_len}-{c.kernel}")
          for world, cases in CASES.items() for i, c in enumerate(cases)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Lazily spawn each world size once; cached for every case of the module. Each in a folder
    that does not exist yet, as make gpu-check passes it."""
    return lazy_outcomes(CASES, lambda world: tmp_path_factory.mktemp(f"world{world}") / "ranks")


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("world", "index"), PARAMS)
def test_case_matches_reference_and_contract(outcomes, world, index):
    cfg = CASES[world][index]
    # and each rank's peak memory is what executor.step_memory's replay of the code allocates
    memory_matches_replay(every_rank_passes(outcomes(world), index, cfg), cfg)


@pytest.mark.parametrize("world", sorted(DEGREES))
def test_mesh_groups_agree_with_plan_layout(outcomes, world):
    for index, cfg in enumerate(CASES[world]):
        expected = rank_groups(ParallelPlan(ulysses=cfg.ulysses, ring=cfg.ring))
        for rank, results in outcomes(world).items():
            groups = results[index].groups
            assert list(groups.ulysses) in expected["ulysses"]
            assert list(groups.ring) in expected["ring"]
            assert rank in groups.ulysses and rank in groups.ring


def test_usp_groups_are_inner_ulysses_strided_ring(outcomes):
    index = next(i for i, c in enumerate(CASES[4]) if (c.ulysses, c.ring) == (2, 2))
    by_rank = {rank: results[index].groups for rank, results in outcomes(4).items()}
    assert [by_rank[r].ulysses for r in range(4)] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    assert [by_rank[r].ring for r in range(4)] == [(0, 2), (1, 3), (0, 2), (1, 3)]
