from __future__ import annotations

from sp_planner.catalog import load_hardware
from sp_planner.report.assumptions import NO_SOURCE, profile_rows


def test_profile_rows_format_the_numbers_and_carry_their_sources():
    profile = load_hardware("a800")
    rows = {row.field: row for row in profile_rows(profile)}
    assert rows["peak_bf16_flops"].value == "312.0 TFLOPS"
    assert rows["peak_bf16_flops"].sources == (profile.sources["peak_bf16_flops"],)
    assert rows["intra_node"].value == "nvlink, 200 GB/s, 3.4 µs latency"
    # The link's own source, then its latency's.
    assert rows["intra_node"].sources == (profile.sources["intra_node"],
                                          "latency_s: " + profile.sources["intra_node.latency_s"])
    assert rows["efficiency.gemm"].value == f"{profile.efficiency.gemm:.2f}"
    assert rows["efficiency.intra_node"].value.startswith(
        f"all-reduce {profile.efficiency.intra_node.all_reduce:.2f}, all-gather")
    # The share of HBM bandwidth every memory-bound pass runs at, with its (transferred) source.
    assert rows["efficiency.memory_bound"].value == "0.76"
    assert rows["efficiency.memory_bound"].sources == (profile.sources["efficiency.memory_bound"],)
    # The a800 profile states no fabric, so the report says so instead of inventing one.
    assert rows["fabric"].sources == (NO_SOURCE,)


def test_sources_fall_back_to_the_parent_field_and_unknown_keys_are_kept():
    sources = {"efficiency": "one paper", "extra.key": "a note"}
    profile = load_hardware("a800").model_copy(update={"sources": sources})
    rows = {row.field: row for row in profile_rows(profile)}
    assert rows["efficiency.gemm"].sources == ("one paper",)
    assert rows["hbm_bytes"].sources == (NO_SOURCE,)
    assert rows["extra.key"].sources == ("a note",)


def test_a_profile_that_names_its_gpu_shows_it():
    a800 = load_hardware("a800")
    assert "base_profile" not in {row.field for row in profile_rows(a800)}
    mine = a800.model_copy(update={"name": "my-a800", "base_profile": "A800"})
    assert {row.field: row.value for row in profile_rows(mine)}["base_profile"] == "A800"
