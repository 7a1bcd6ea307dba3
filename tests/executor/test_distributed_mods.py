"""A softmax scale other than 1/sqrt(head dim) (Gemma 2/3, DeepSeek-V3), Gemma 2's logit softcap,
sliding and chunked windows, and MLA's q/k and v head dims through every
distributed path (Ulysses, ring p2p and all-gather in both layouts, USP) on 2 and 4 spawned gloo
ranks: every rank's O, dQ, dK, dV against the single-device fp32 reference, and its bytes against
sp_planner.cost.attention_comm (as tests/executor/test_distributed.py does for plain attention).
"""

from __future__ import annotations

import itertools

import pytest

from sp_planner.executor.config import RunConfig
from sp_planner.plan import CP_COMMS

from .spawned import every_rank_passes, lazy_outcomes, memory_matches_replay

DEGREES = {2: [(2, 1), (1, 2)], 4: [(4, 1), (1, 4), (2, 2)]}
# Per feature: fields of RunConfig. Windows of 5 and 3 tokens are shorter than a ring rank's
# block (8 tokens and more), so whole blocks are hidden from some queries and skipped; the chunked
# window of 6 cuts across the ranks' blocks. A scale of 0.9 is 2.5x the default 1/sqrt(8): the CPU
# flash kernel must be handed it (a scale alone needs no math kernel), the math kernel beside a
# softcap and window too.
FEATURES = {
    "scale": dict(head_dim=8, softmax_scale=0.9),
    "mla": dict(head_dim=20, v_head_dim=12),
    "mla-wide-v": dict(head_dim=8, v_head_dim=16),
    "softcap": dict(head_dim=8, softcap=1.5),
    "sliding": dict(head_dim=8, window=5),
    "chunked": dict(head_dim=8, window=6, window_kind="chunked"),
    "all-bf16": dict(head_dim=24, v_head_dim=16, softmax_scale=0.3, softcap=2.0, window=3, dtype="bfloat16"),
}


def _cases(world: int) -> list[tuple[str, RunConfig]]:
    cases = []
    heads = itertools.cycle([(4, 2), (4, 4), (4, 1)])
    for (ulysses, ring), feature in itertools.product(DEGREES[world], FEATURES):
        paths = itertools.product(("contiguous", "zigzag"), CP_COMMS) if ring > 1 else [("contiguous", "p2p")]
        for layout, cp_comm in paths:
            h, kv = next(heads)
            cfg = RunConfig(ulysses=ulysses, ring=ring, seq_len=2 * ulysses * ring * 4, num_heads=h,
                            num_kv_heads=kv, causal=True, ring_layout=layout, cp_comm=cp_comm, iters=0,
                            **FEATURES[feature])
            cases.append((feature, cfg))
    return cases


CASES = {world: _cases(world) for world in DEGREES}
PARAMS = [pytest.param(world, i, id=f"w{world}-{feature}-u{c.ulysses}r{c.ring}-{c.ring_layout}-{c.cp_comm}-"
                       f"h{c.num_heads}kv{c.num_kv_heads}")
          for world, cases in CASES.items() for i, (feature, c) in enumerate(cases)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Lazily spawn each world size once; cached for every case of the module."""
    configs = {world: [c for _, c in cases] for world, cases in CASES.items()}
    return lazy_outcomes(configs, lambda world: tmp_path_factory.mktemp(f"mods{world}") / "ranks")


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("world", "index"), PARAMS)
def test_case_matches_reference_and_contract(outcomes, world, index):
    feature, cfg = CASES[world][index]
    results = every_rank_passes(outcomes(world), index, cfg)
    memory_matches_replay(results, cfg)  # MLA's padded flash calls; the math kernel is not replayed
    for result in results:
        if cfg.score_mods:  # only the math kernel applies them, and the run says so
            assert result.kernel.startswith("math") and "softcap" in (result.kernel_note or "")
        elif cfg.v_dim != cfg.head_dim:  # MLA on the CPU flash kernel, zero-padded to one head dim
            assert f"zero-padded to {cfg.kernel_head_dim}" in result.kernel
        else:  # the scale alone: the CPU flash kernel, given it
            assert result.kernel.startswith("cpu-flash") and cfg.softmax_scale == 0.9


def test_mla_ring_moves_k_at_its_head_dim_and_v_at_its_own(outcomes):
    """Ring 2, p2p, fp32, MLA q/k 20 and v 12: each K block 8 tokens x 2 KV heads x 20, each V block
    x 12; forward and backward send both once, the fp32 dK/dV accumulators twice (R hops)."""
    index = next(i for i, (f, c) in enumerate(CASES[2])
                 if f == "mla" and c.ring == 2 and c.cp_comm == "p2p" and c.ring_layout == "contiguous")
    cfg = CASES[2][index][1]
    kv = cfg.num_kv_heads
    k_block, v_block = 8 * kv * 20, 8 * kv * 12
    expected = 2 * (k_block + v_block) * 4 + 2 * (k_block + v_block) * 4
    for results in outcomes(2).values():
        assert results[index].comm_bytes_measured.p2p == expected
