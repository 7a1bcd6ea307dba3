"""Calibrated profiles: figures derived from the measurements, fallbacks with warnings."""

from __future__ import annotations

import pytest
import yaml

from sp_planner.calibration.fit import calibration_data
from sp_planner.calibration.profile import build_profile
from sp_planner.calibration.profile_file import write_profile
from sp_planner.catalog import load_hardware, read_hardware_file
from sp_planner.cost.collective_sizes import size_factor
from sp_planner.errors import UserInputError
from sp_planner.specs.hardware import SOURCED_FIELDS

H100 = load_hardware("H100-SXM")
DATE = "2025-06-01"


def _build(measurements, base=H100):
    return build_profile(calibration_data(measurements), base=base, name="h100-test", date=DATE)


def test_profile_with_base_keeps_spec_sheet_rates_and_matches_measured_rates(make_measurements):
    result = _build(make_measurements())
    p = result.profile
    assert result.warnings == ()
    assert p.peak_bf16_flops == 989e12 and p.measured_on == DATE
    assert p.efficiency.gemm == 0.7078  # 700 / 989 to 4 digits
    assert [(c.tokens, c.efficiency) for c in p.efficiency.attention_fwd] == [(1024, 0.5056), (8192, 0.6067)]
    assert [(c.tokens, c.efficiency) for c in p.efficiency.attention_bwd] == [(1024, 0.4044), (8192, 0.4853)]
    # Causal / full-mask rates (conftest ATTENTION_RATES): 350/500, 520/600 forward; 300/400, 420/480 backward.
    assert [(c.tokens, c.efficiency) for c in p.efficiency.attention_causal_fwd] == [(1024, 0.7), (8192, 0.8667)]
    assert [(c.tokens, c.efficiency) for c in p.efficiency.attention_causal_bwd] == [(1024, 0.75), (8192, 0.875)]
    # Inside a node the 8-rank group: busbw 360 GB/s / 1.1 (slowest rank) over NVLink's 450 line rate.
    assert p.intra_node.bandwidth_bytes_per_s == 450e9 and p.intra_node.kind == "nvlink"
    assert p.intra_node.bandwidth_bytes_per_s * p.efficiency.intra_node.all_gather == pytest.approx(
        360e9 / 1.1, rel=1e-3)
    # Across nodes the one-rank-per-node group (45 GB/s / 1.1 per NIC), not the 16-rank group.
    assert p.efficiency.inter_node.all_to_all == pytest.approx(45 / 1.1 / 50, rel=1e-3)
    # All-to-all against group size, from the 2- and 8-rank groups (300 and 360 GB/s, / 1.1, / 450).
    assert [(g.group_size, g.efficiency) for g in p.efficiency.intra_node.all_to_all_by_group_size] == [
        (2, 0.6061), (8, 0.7273)]
    assert p.efficiency.inter_node.all_to_all_by_group_size == ()
    # Latency: median over both intra groups of 1.1 x alpha / steps; the middle two are 8.8 us.
    assert p.intra_node.latency_s == pytest.approx(8.8e-6, rel=1e-3)
    assert (p.hbm_bytes, p.gpus_per_node) == (85e9, 8)
    assert (p.hbm_bandwidth_bytes_per_s, p.memory_reserve_bytes) == (3.35e12, H100.memory_reserve_bytes)
    assert set(SOURCED_FIELDS) <= set(p.sources)
    assert p.sources["efficiency.gemm"].startswith("sp-calibrate 2025-06-01")
    assert p.calibration is not None and len(p.calibration.collectives) == 20


def test_a_b200_die_base_keeps_its_sustained_share(make_measurements):
    # sp-calibrate's timings are short runs, as a B200 base's figures are: the calibrated profile
    # keeps the base's 0.804 (and H100's 1 stays 1, stating nothing).
    gb200 = load_hardware("gb200-nvl72")
    p = _build(make_measurements(), base=gb200).profile
    assert p.efficiency.sustained_fraction == gb200.efficiency.sustained_fraction == 0.804
    assert p.sources["efficiency.sustained_fraction"].startswith("from GB200-NVL72: Azure")
    assert _build(make_measurements()).profile.efficiency.sustained_fraction == 1.0


def test_missing_curve_falls_back_to_the_base_with_a_warning(make_measurements):
    result = _build(make_measurements(skip=("attention_bwd",)))
    assert result.profile.efficiency.attention_bwd == H100.efficiency.attention_bwd
    assert result.warnings == ("efficiency.attention_bwd: no full-mask attention bwd curve was measured; "
                               "using H100-SXM's spec-sheet figure",)
    assert result.profile.sources["efficiency.attention_bwd"].startswith("from H100-SXM: FlashAttention-3")


def test_unmeasured_causal_ratio_is_left_to_the_default(make_measurements):
    # No backward samples at all: no backward ratio (cost.attention_kernels.causal_ratio's FA2 default).
    p = _build(make_measurements(skip=("attention_bwd",))).profile
    assert p.efficiency.attention_causal_bwd is None
    assert p.efficiency.attention_causal_fwd is not None


def test_missing_curve_without_a_base_is_an_error(make_measurements):
    with pytest.raises(UserInputError, match=r"efficiency.attention_bwd: .* pass --base NAME"):
        _build(make_measurements(skip=("attention_bwd",), device_name="NVIDIA RTX 6000 Ada"), base=None)


def test_unmeasured_collectives_fall_back_per_field(make_measurements):
    result = _build(make_measurements(groups={("intra", 8): (20e-6, 360e9)}, world_size=8))
    assert result.profile.inter_node == H100.inter_node
    assert result.profile.efficiency.inter_node == H100.efficiency.inter_node
    assert result.warnings == ("inter_node and efficiency.inter_node: no inter-node collective was measured; "
                               "using H100-SXM's figures",)
    assert result.profile.sources["efficiency.inter_node"].startswith("from H100-SXM: ")


def test_without_a_base_the_best_measured_rates_become_the_peaks(make_measurements):
    result = _build(make_measurements(device_name="cpu (x86_64)"), base=None)
    p = result.profile
    assert result.warnings[0].startswith("no built-in profile matches 'cpu (x86_64)'")
    assert p.peak_bf16_flops == pytest.approx(700e12) and p.efficiency.gemm == 1.0
    assert p.intra_node.kind == "pcie" and p.inter_node.kind == "ethernet"  # placeholders
    assert p.intra_node.bandwidth_bytes_per_s == pytest.approx(360e9 / 1.1, rel=1e-3)
    assert p.inter_node.bandwidth_bytes_per_s == pytest.approx(45e9 / 1.1, rel=1e-3)
    assert p.hbm_bandwidth_bytes_per_s == 2.8e12
    # 3% of the 85 GB measured for fragmentation; the measured 1.5 GB runtime is counted per plan.
    assert p.memory_reserve_bytes == pytest.approx(2.55e9)


def test_one_node_without_a_base_copies_intra_figures(make_measurements):
    result = _build(make_measurements(groups={("intra", 2): (8e-6, 300e9)}, world_size=2, ranks_per_node=2,
                                      device_name="cpu"), base=None)
    assert result.profile.inter_node.bandwidth_bytes_per_s == result.profile.intra_node.bandwidth_bytes_per_s
    assert any(w.startswith("inter_node: one node was measured") for w in result.warnings)
    # Every figure says where it came from, the copied efficiencies too.
    assert set(SOURCED_FIELDS) <= set(result.profile.sources)
    assert "copied from efficiency.intra_node" in result.profile.sources["efficiency.inter_node"]


def test_no_collectives_and_no_base_is_an_error(make_measurements):
    with pytest.raises(UserInputError, match="intra_node: no collective was measured"):
        _build(make_measurements(skip=("collectives",), device_name="cpu"), base=None)


def test_busbw_above_the_line_rate_raises_it(make_measurements):
    result = _build(make_measurements(groups={("intra", 8): (20e-6, 550e9)}, world_size=8))
    assert result.profile.intra_node.bandwidth_bytes_per_s == pytest.approx(500e9, rel=1e-3)
    assert result.profile.efficiency.intra_node.all_reduce == 1.0
    assert "beats H100-SXM's line rate 450.0 GB/s" in result.warnings[0]


def test_corrupt_profiles_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserInputError, match="malformed") as err:
        load_hardware(str(bad))
    assert "\n" not in str(err.value)
    no_curve = tmp_path / "no-curve.yaml"
    data = H100.model_dump(mode="json")
    del data["efficiency"]["attention_bwd"]
    no_curve.write_text(yaml.safe_dump(data))
    with pytest.raises(UserInputError, match="efficiency.attention_bwd: Field required"):
        load_hardware(str(no_curve))


def test_a_calibrated_profile_keeps_its_own_alpha_beta_fit(make_measurements):
    # sp-calibrate fits alpha and beta over the sizes it timed on the machine itself: no built-in
    # curve by message size (cost.collective_sizes) goes on top, even under a built-in's name.
    measured = build_profile(calibration_data(make_measurements()), base=H100, name="H100-SXM", date=DATE).profile
    assert float(size_factor(measured, "all_gather", 64 * 2**20, 8)) == 1.0
    assert float(size_factor(H100, "all_gather", 64 * 2**20, 8)) > 1.05


def test_measured_on_gpus_the_profile_names_the_bases_gpu(make_measurements, tmp_path):
    # The base's kernel benchmarks, MFU ceiling, GEMM and host tables then apply (cost.families.profile_key).
    profile = _build(make_measurements()).profile
    assert profile.base_profile == "H100-SXM"
    path = tmp_path / "my-cluster.yaml"
    write_profile(path, profile)
    assert "\nbase_profile: H100-SXM\n" in path.read_text() and read_hardware_file(path) == profile


def test_a_user_base_passes_on_its_own_gpu_or_none(make_measurements):
    data = make_measurements()
    named = H100.model_copy(update={"name": "my-h100", "base_profile": "H100-SXM"})
    assert _build(data, base=named).profile.base_profile == "H100-SXM"
    assert _build(data, base=H100.model_copy(update={"name": "my-h100"})).profile.base_profile is None


def test_measured_on_cpu_the_profile_names_no_gpu(make_measurements):
    # A CPU measurement (gloo) is not the base's GPU: none of its tables may apply.
    cpu = make_measurements(device_name="cpu", backend="gloo", nccl_version=None, runtime_reserved_bytes=None)
    assert _build(cpu).profile.base_profile is None
    assert _build(make_measurements()).profile.base_profile == "H100-SXM"
