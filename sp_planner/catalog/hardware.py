"""Built-in hardware profiles (hardware_profiles/*.yaml, shipped as package data) and the loader."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import yaml

from sp_planner.catalog.names import (
    builtin_file_error,
    find,
    looks_like_path,
    lookup_table,
    normalise,
    unknown_name_error,
)
from sp_planner.errors import UserInputError
from sp_planner.fileio import read_structured, validate_as
from sp_planner.specs.hardware import HardwareProfile

# Short names people type, where one built-in profile is meant.
HARDWARE_ALIASES: dict[str, str] = {
    "H100": "H100-SXM",
    "910B": "Ascend-910B",
}
# Short names that fit several built-in profiles of different memory: the user must pick one, since
# a silent pick decides which plans fit.
AMBIGUOUS_HARDWARE: dict[str, tuple[str, ...]] = {
    "A100": ("A100-40GB", "A100-80GB"),
}
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_WHAT = "hardware profile"
_LISTED_IN = 'README.md\'s "Hardware:"'
_HINT = "or give a profile YAML's path (its format: hardware_profiles/)."


@functools.cache
def builtin_profiles() -> dict[str, HardwareProfile]:
    """Name -> profile, sorted by name. sp_planner/data/hardware_profiles links to hardware_profiles/."""
    folder = resources.files("sp_planner") / "data" / "hardware_profiles"
    profiles = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            # libyaml's C loader where PyYAML has it (same safe schema, about 10x faster: the
            # built-in profiles are read on every sp-plan call).
            data = yaml.load(entry.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
            profiles.append(validate_as(HardwareProfile, data, what=_WHAT, path=entry.name))
    by_name = {p.name: p for p in sorted(profiles, key=lambda p: p.name.lower())}
    assert len(by_name) == len(profiles), "two built-in hardware profiles share a name"
    return by_name


def builtin_hardware_names() -> list[str]:
    return list(builtin_profiles())


@functools.cache
def _table() -> dict[str, str]:
    return lookup_table(builtin_profiles(), HARDWARE_ALIASES)


def builtin_profile_name(query: str) -> str | None:
    """The built-in profile `query` names, spelt as the profile spells it (forgiving: case,
    separators and aliases, as --hardware); None where it names none or is ambiguous."""
    return find(query, _table())


def builtin_gpu(profile: HardwareProfile) -> str | None:
    """The built-in profile whose GPU `profile` is: its base_profile, else its own name where that is
    a built-in's (any case, as the cost model's tables match it); None for a profile of no built-in GPU."""
    if profile.base_profile is not None:
        return profile.base_profile
    by_key = {name.lower(): name for name in builtin_profiles()}
    return by_key.get(profile.name.lower())


def read_hardware_file(path: Path) -> HardwareProfile:
    """A user profile: malformed YAML, wrong types, unknown or out-of-range fields -> UserInputError."""
    data = read_structured(Path(path), what=_WHAT)
    return validate_as(HardwareProfile, data, what=_WHAT, path=path)


def load_hardware(name_or_path: str) -> HardwareProfile:
    """A built-in profile by (forgiving) name or alias, or a path to a profile YAML."""
    if not name_or_path.strip():  # Path("") is the current folder, which would be read as the profile
        raise UserInputError("the hardware name is empty; give a built-in profile name (e.g. H100-SXM) or the "
                             "path to a hardware profile YAML")
    if not looks_like_path(name_or_path):
        for short, variants in AMBIGUOUS_HARDWARE.items():
            if normalise(name_or_path) == normalise(short):
                raise UserInputError(f"hardware {name_or_path!r} is ambiguous: say which, "
                                     f"{' or '.join(variants)} (their memory decides which plans fit)")
        name = find(name_or_path, _table())
        if name is not None:
            return builtin_profiles()[name]
        if not Path(name_or_path).exists():
            raise unknown_name_error(
                name_or_path, _table(), what="hardware", listed_in=_LISTED_IN, hint=_HINT
            )
    builtin = builtin_file_error(name_or_path, _table(), what=_WHAT, kind="profile")
    if builtin is not None:
        raise builtin
    return read_hardware_file(Path(name_or_path))


def profile_to_yaml(profile: HardwareProfile) -> str:
    """YAML text that read_hardware_file turns back into an equal profile."""
    return yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, width=100)
