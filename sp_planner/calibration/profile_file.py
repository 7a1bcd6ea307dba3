"""A calibrated hardware profile as a YAML file: catalog.profile_to_yaml under a comment saying where it
came from, so that read_hardware_file reads it back equal and sp-plan --hardware takes it."""

from __future__ import annotations

from pathlib import Path

from sp_planner.catalog import profile_to_yaml
from sp_planner.fileio import write_text_atomic
from sp_planner.specs.hardware import HardwareProfile


def profile_yaml_text(profile: HardwareProfile) -> str:
    """The profile as YAML (catalog.profile_to_yaml, so read_hardware_file reads it back equal),
    under a comment saying where it came from."""
    header = (f"# Hardware profile measured by sp-calibrate on {profile.measured_on}.\n"
              "# Use it with: sp-plan --hardware THIS_FILE. Every figure names its origin under `sources`;\n"
              "# the fits and curves it was derived from are kept under `calibration`.\n")
    return header + profile_to_yaml(profile)


def write_profile(path: Path, profile: HardwareProfile) -> None:
    write_text_atomic(Path(path), profile_yaml_text(profile))
