"""calibration.profile_file: a calibrated profile as YAML that sp-plan --hardware reads back equal."""

from __future__ import annotations

from sp_planner.calibration.fit import calibration_data
from sp_planner.calibration.profile import build_profile
from sp_planner.calibration.profile_file import profile_yaml_text, write_profile
from sp_planner.catalog import load_hardware, read_hardware_file

H100 = load_hardware("H100-SXM")


def test_yaml_round_trip(make_measurements, tmp_path):
    profile = build_profile(calibration_data(make_measurements()), base=H100, name="h100-test",
                            date="2025-06-01").profile
    path = tmp_path / "my-cluster.yaml"
    write_profile(path, profile)
    text = path.read_text()
    assert text == profile_yaml_text(profile)
    assert text.splitlines()[:2] == ["# Hardware profile measured by sp-calibrate on 2025-06-01.",
                                     "# Use it with: sp-plan --hardware THIS_FILE. Every figure names its origin "
                                     "under `sources`;"]
    assert "\nname: h100-test\n" in text
    assert read_hardware_file(path) == profile
    assert load_hardware(str(path)) == profile
