"""Built-in model architectures (sp_planner/data/models.json) and the model loader."""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path

from sp_planner.catalog.hf_config import HF_REPO, load_hf_config
from sp_planner.catalog.hf_fields import WHAT
from sp_planner.catalog.names import (
    FILE_SUFFIXES,
    builtin_file_error,
    find,
    looks_like_path,
    lookup_table,
    unknown_name_error,
)
from sp_planner.errors import UserInputError
from sp_planner.specs.model import ModelSpec

# Other spellings of a built-in, kept few and unambiguous.
MODEL_ALIASES: dict[str, str] = {
    "Mistral-7B-v0.1": "Mistral-7B",
    "Mixtral-8x7B-v0.1": "Mixtral-8x7B",
}
_LISTED_IN = 'README.md\'s "Models:"'
_HINT = "or give a Hugging Face config.json's path."


@functools.cache
def builtin_models() -> dict[str, ModelSpec]:
    """Name -> spec, in the order of the data file. The data ships inside the package."""
    text = (resources.files("sp_planner") / "data" / "models.json").read_text(encoding="utf-8")
    specs = [ModelSpec.model_validate(entry) for entry in json.loads(text)]
    return {spec.name: spec for spec in specs}


def builtin_model_names() -> list[str]:
    return list(builtin_models())


@functools.cache
def _table() -> dict[str, str]:
    return lookup_table(builtin_models(), MODEL_ALIASES)


def load_model(name_or_path: str) -> ModelSpec:
    """A built-in model by (forgiving) name, or a Hugging Face config.json / checkpoint directory."""
    if not name_or_path.strip():  # Path("") is the current folder, whose config.json would be read
        raise UserInputError("the model name is empty; give a built-in model name (e.g. Llama-3-8B) or the path "
                             "to a Hugging Face config.json")
    if not looks_like_path(name_or_path):
        name = find(name_or_path, _table())
        if name is not None:
            return builtin_models()[name]
        if not Path(name_or_path).exists():
            raise unknown_name_error(
                name_or_path, _table(), what="model", listed_in=_LISTED_IN, hint=_HINT
            )
    hub_error = hub_repo_error(name_or_path)
    if hub_error is not None:
        raise hub_error
    builtin = builtin_file_error(name_or_path, _table(), what=WHAT, kind="model")
    if builtin is not None:
        raise builtin
    return load_hf_config(Path(name_or_path))


def hub_repo_error(name_or_path: str) -> UserInputError | None:
    """The one line for a Hub repository id (Qwen/Qwen3-30B-A3B) that names nothing on disk: the
    model is read from a local config.json, nothing is downloaded. It names the built-in model of
    that repository (hf_repo) or of that name where there is one; None for anything else."""
    if (HF_REPO.match(name_or_path) is None or name_or_path.startswith(".")  # ./x, ../x: a path, no repository
            or Path(name_or_path).suffix.lower() in FILE_SUFFIXES):
        return None
    if os.path.lexists(name_or_path):  # lexists: False, not an error, for a name too long
        return None
    owner_name = name_or_path.lower()
    builtin = next((spec.name for spec in builtin_models().values()
                    if spec.hf_repo is not None and spec.hf_repo.lower() == owner_name), None)
    builtin = builtin or find(name_or_path.split("/")[1], _table())
    instead = f"give the built-in --model {builtin}, or save" if builtin is not None else "save"
    return UserInputError(
        f"model {name_or_path!r} is no file or folder here, and sp-planner downloads nothing from the Hugging Face "
        f"Hub: for that repository {instead} https://huggingface.co/{name_or_path}/blob/main/config.json and pass "
        "that file's path")
