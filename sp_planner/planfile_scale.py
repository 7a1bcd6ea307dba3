"""The softmax scale of a plan file written before plan files recorded it.

ModelSpec.softmax_scale came on 2026-12-05 (commit 4d58eaa) without a new schema_version: plan
files stay sp-planner.plan/1 and a field an older file lacks reads as its default. For this
field the default, None, means 1/sqrt(q/k head dim), so read that way an older plan of
Gemma-2-27B (query_pre_attn_scalar 144, not its head dim 128), Gemma-3-27B (168) or DeepSeek-V3
(YaRN mscale) would make sp-run compute another attention than the model's without a word. Every
file written since states the field (write_plan_file dumps every field, null for 1/sqrt(d)), so a
model without the key is one whose file does not say its scale. Its scale is then:
- the built-in model's of that name, where every architecture field the file states equals the
  built-in's (a note where that scale is not 1/sqrt(d));
- unknown (sp-run asks for --softmax-scale) where the model was imported from a Hugging Face
  config whose scale follows from fields a plan does not keep (DeepSeek-V3's rope_scaling,
  Gemma's query_pre_attn_scalar), or bears the name of a built-in of another scale but not its
  architecture;
- else 1/sqrt(d), what every sp-planner before it ran, with a note that says so (a model file of
  the user's, or a llama-style import, whose YaRN rope_scaling sp-planner did not read then).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from sp_planner.specs.model import ModelSpec

# What a model's entry holds besides its architecture: names and provenance, and the MoE options
# sp-plan writes into it from its own flags (--moe-routing, --moe-dispatcher, ...).
_NOT_ARCHITECTURE = frozenset({"name", "softmax_scale", "hf_repo", "sources"})
_MOE_RUN_OPTIONS = frozenset({"routing", "dispatcher", "dispatcher_sms", "expert_gemm", "capacity_factor",
                              "pad_to_capacity"})
# catalog.hf_config's provenance line: "<path> (Hugging Face config.json, model_type <type>)".
_HF_SOURCE = re.compile(r"\(Hugging Face config\.json, model_type (\w+)\)")
# Imported model types whose scale catalog.hf_config derives from a config field no plan keeps.
_CONFIG_SCALES = {"deepseek_v3": "rope_scaling (YaRN's mscale_all_dim)", "gemma2": "query_pre_attn_scalar",
                  "gemma3": "query_pre_attn_scalar", "gemma3_text": "query_pre_attn_scalar"}


class UnrecordedScale(NamedTuple):
    """What an older plan file's model scales q.k by (`scale`; None: 1/sqrt(q/k head dim)), a
    line saying how that was settled (`note`), or why it cannot be (`problem`: sp-run refuses
    without --softmax-scale)."""

    scale: float | None
    note: str | None
    problem: str | None


def unrecorded_scale(stated: Mapping[str, Any], model: ModelSpec, builtins: Mapping[str, ModelSpec], *,
                     source: str) -> UnrecordedScale | None:
    """None where the file's model entry (`stated`, as written) has a softmax_scale; else the
    scale of `model` (the entry read) as the module docstring rules. `source` names the file."""
    if "softmax_scale" in stated:
        return None
    d = model.qk_head_dim
    default = f"1/sqrt({d}) = {d**-0.5:.6g}"
    older = f"{source} was written before plan files recorded the softmax scale"
    ask = ("pass --softmax-scale with the model's scale, or write the plan again with sp-plan --out from the "
           "model's file")
    builtin = builtins.get(model.name)
    difference = None if builtin is None else first_difference(stated, model.model_dump(mode="json"),
                                                               builtin.model_dump(mode="json"))
    if builtin is not None and difference is None:
        if builtin.softmax_scale is None:
            return UnrecordedScale(None, None, None)  # the built-in's is 1/sqrt(d): nothing to settle
        return UnrecordedScale(builtin.softmax_scale, f"{older}; its model is the built-in {model.name}, whose "
                               f"scale {builtin.softmax_scale:.6g} (not {default}) is applied", None)
    model_type = hf_model_type(model)
    if model_type in _CONFIG_SCALES:
        return UnrecordedScale(None, None, (
            f"{older}, and its model {model.name} was imported from a Hugging Face config (model_type "
            f"{model_type}) whose scale follows from {_CONFIG_SCALES[model_type]}, which the plan does not "
            f"keep: {ask}"))
    if builtin is not None and builtin.softmax_scale is not None:
        return UnrecordedScale(None, None, (
            f"{older}, and its model bears the name of the built-in {model.name} (scale "
            f"{builtin.softmax_scale:.6g}) but not its architecture ({difference}): {ask}"))
    yarn = (f" (its model_type {model_type} config's YaRN rope_scaling, if it has one, was not read then)"
            if model_type is not None else "")
    return UnrecordedScale(None, f"{older}: its model {model.name} runs at {default}, as every model did "
                           f"then{yarn}; pass --softmax-scale if the model's is another", None)


def hf_model_type(model: ModelSpec) -> str | None:
    """The model_type of the Hugging Face config the model was imported from, None if it was not."""
    for line in model.sources:
        found = _HF_SOURCE.search(line)
        if found:
            return found.group(1)
    return None


def first_difference(stated: Mapping[str, Any], mine: Mapping[str, Any], theirs: Mapping[str, Any],
                     prefix: str = "") -> str | None:
    """The first architecture field the file states (`stated`'s keys, at every level) whose value
    read (`mine`) differs from the built-in's (`theirs`), as 'field value, built-in value'; None
    if none does. Fields the file leaves out came after it and are not compared."""
    skip = _MOE_RUN_OPTIONS if prefix == "moe." else _NOT_ARCHITECTURE if not prefix else frozenset()
    for key, value in stated.items():
        if key in skip:
            continue
        a, b = mine.get(key), theirs.get(key)
        if isinstance(value, Mapping) and isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = first_difference(value, a, b, f"{prefix}{key}.")
            if inner is not None:
                return inner
        elif a != b:
            return f"{prefix}{key} {a}, built-in {b}"
    return None
