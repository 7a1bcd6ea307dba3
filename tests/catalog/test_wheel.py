"""The built-in catalog ships inside the wheel: every hardware_profiles/*.yaml and models.json,
as real files (sp_planner/data/hardware_profiles is a symlink to the repo-root folder)."""

import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_profile_and_the_model_data(tmp_path):
    # Build from a copy so the repository gets no build/ or egg-info from this test.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "hardware_profiles", src / "hardware_profiles")
    shutil.copytree(REPO / "sp_planner", src / "sp_planner", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    assert (src / "sp_planner" / "data" / "hardware_profiles").is_symlink()

    out = tmp_path / "wheel"
    # No isolation: fast and offline, but needs setuptools>=77 in this environment (the dev extra).
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run([*command, "-w", str(out), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("sp_planner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: info for info in archive.infolist()}
        profiles = REPO.glob("hardware_profiles/*.yaml")
        expected = {f"sp_planner/data/hardware_profiles/{p.name}": p for p in profiles}
        expected["sp_planner/data/models.json"] = REPO / "sp_planner" / "data" / "models.json"
        # every built-in profile plus the model data (a glob that found nothing would pass vacuously)
        assert len(expected) == 15  # 14 profiles (tests/catalog/test_hardware_profiles.py) + models.json
        for member, source in expected.items():
            assert member in members, f"{member} missing from {wheel.name}"
            assert not stat.S_ISLNK(members[member].external_attr >> 16), f"{member} is a link"
            assert archive.read(member) == source.read_bytes(), member
