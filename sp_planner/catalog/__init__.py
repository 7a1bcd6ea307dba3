"""The built-in catalog: model architectures and hardware profiles, and loaders for user files."""

from sp_planner.catalog.hardware import (
    builtin_gpu,
    builtin_hardware_names,
    builtin_profile_name,
    load_hardware,
    profile_to_yaml,
    read_hardware_file,
)
from sp_planner.catalog.hf_config import import_notes, load_hf_config
from sp_planner.catalog.models import builtin_model_names, load_model

__all__ = [
    "builtin_gpu",
    "builtin_hardware_names",
    "builtin_model_names",
    "builtin_profile_name",
    "import_notes",
    "load_hardware",
    "load_hf_config",
    "load_model",
    "profile_to_yaml",
    "read_hardware_file",
]
