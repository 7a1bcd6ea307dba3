"""What sp-calibrate measures: sizes, groups and shapes."""

from __future__ import annotations

import pytest

from sp_planner.calibration.schedule import build_schedule, collective_groups, message_sizes
from sp_planner.catalog import load_model
from sp_planner.units import GIB, KIB, MIB


def test_message_sizes():
    full = message_sizes("cuda", quick=False)
    assert full[0] == 64 * KIB and full[-1] == GIB and len(full) == 15  # 2^16 .. 2^30
    assert message_sizes("cuda", quick=True) == (64 * KIB, 512 * KIB, 4 * MIB, 32 * MIB, 256 * MIB, GIB)
    assert message_sizes("cpu", quick=True) == (64 * KIB, MIB, 16 * MIB)
    assert message_sizes("cpu", quick=False) == (64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB)


def _shape(groups):
    return [(g.link, g.ranks) for g in groups]


def test_groups_inside_and_across_nodes():
    groups = collective_groups(16, 8, quick=False)
    assert _shape(groups) == [("intra", (0, 1)), ("intra", (0, 1, 2, 3)), ("intra", tuple(range(8))),
                              ("inter", (0, 8)), ("inter", tuple(range(16)))]
    # an awkward node size keeps the node group; --quick keeps 2 and the node
    assert [len(g.ranks) for g in collective_groups(6, 6, quick=False)] == [2, 4, 6]
    assert [len(g.ranks) for g in collective_groups(6, 6, quick=True)] == [2, 6]
    # one GPU per node: only the NIC group; one rank: nothing to time
    assert _shape(collective_groups(3, 1, quick=True)) == [("inter", (0, 1, 2))]
    assert collective_groups(1, 1, quick=True) == ()


def test_world_must_tile_nodes():
    with pytest.raises(ValueError, match="not a multiple of 8 ranks per node"):
        collective_groups(12, 8, quick=False)


def test_model_layer_gemms():
    schedule = build_schedule(device="cuda", quick=False, world_size=8, ranks_per_node=8,
                              model=load_model("Llama-3-70B"))
    # hidden 8192, 64 query and 8 KV heads of 128, SwiGLU 28672: fused QKV (64+16)*128 = 10240
    assert [(g.name, g.m, g.k, g.n) for g in schedule.gemm] == [
        ("qkv", 4096, 8192, 10240), ("attn_out", 4096, 8192, 8192),
        ("mlp_up", 4096, 8192, 57344), ("mlp_down", 4096, 28672, 8192)]
    assert schedule.attention_tokens == (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
    assert (schedule.attention_head_dim, schedule.dtype) == (128, "bfloat16")


def test_cpu_quick_schedule_is_small():
    schedule = build_schedule(device="cpu", quick=True, world_size=2, ranks_per_node=2)
    # bfloat16 as on a GPU: `sp-run --plan` runs the plan's bf16 on CPUs too, so the profile times it
    # (emulated or not, that rate is the run's).
    assert schedule.dtype == "bfloat16" and schedule.attention_tokens == (128, 256, 512)
    assert max(2 * g.m * g.n * g.k for g in schedule.gemm) < 1e9  # well under a second on one core
