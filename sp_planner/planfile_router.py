"""The MoE router of a plan file written before plan files recorded it (423906e, 2026-12-07).

MoESpec's router fields (specs.moe.ROUTER_FIELDS) came after plan files did, without a new
schema_version: an older file's model.moe lacks them and reads as the defaults, Megatron's default
router, not DeepSeek-V3's (expert bias, top-k scaling 2.5, 8 groups open 4), Kimi K2's, GLM-4.5's
or Llama 4's (router_topk_norm came later still: a file with the others but not it is older too).
Most of them are no cost term (specs.moe); the groups are one only through the HybridEP and DeepEP
dispatch's reach (cost.group_routing). The flags are the rest: sp-report renders each framework's
flags from the file's model (report.recommendation), and with the defaults they would train another
router, so it refuses a router it cannot settle; sp-simulate times such a file's HybridEP or DeepEP
dispatch with the default router, routing among all experts, and says so (router_timing_note);
sp-run reads no router. Every
file written since states them (write_plan_file dumps every field), so a model.moe without one is
a file that does not say it. As planfile_unrecorded settles the attention fields, the router is:
- the built-in model's of that name, where every architecture field the file states equals the
  built-in's (a note where that router is not Megatron's default);
- for a model imported from a Hugging Face config whose router follows from config fields a plan
  does not keep (_FROM_CONFIG), unknown: sp-report refuses, asking for the plan written again;
- for an import whose router follows from its model_type alone (_OF_MODEL_TYPE: Llama 4), that
  router, with a note; for any other import the default, which is what its importer gives;
- else the default, what every sp-planner before the fields rendered, with a note that says so.
Dense models (moe null) have no router.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from sp_planner.catalog.hf_config import origin_model_type
from sp_planner.flags.megatron_moe import router_flags
from sp_planner.planfile_unrecorded import _REWRITE, first_difference
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.moe import ROUTER_FIELDS, MoESpec

_WHAT = "the MoE router (model.moe's router fields)"

# Imported model_type -> the config fields its importer reads the router from, which plans do not
# keep (catalog.hf_layers.moe, catalog.hf_glm.moe; kimi_k2 is read as deepseek_v3).
_ROUTED_GROUPS = "routed_scaling_factor, n_group, topk_group and norm_topk_prob"
_FROM_CONFIG = {"deepseek_v3": _ROUTED_GROUPS, "kimi_k2": _ROUTED_GROUPS, "glm4_moe": _ROUTED_GROUPS,
                "qwen3_moe": "norm_topk_prob"}
# Imported model_type -> the router its importer gives whatever the config says (catalog.hf_layers.moe:
# Llama4TextMoe scales the top-1 expert's input; a llama4 config is read, and recorded, as llama4_text).
# tests/test_planfile_router.py checks both tables against the importers.
_OF_MODEL_TYPE: Mapping[str, Mapping[str, Any]] = {"llama4_text": {"probs_on_input": True}}


class UnrecordedRouter(NamedTuple):
    """How an older plan file's MoE router was settled: the ROUTER_FIELDS its model.moe lacks
    (`missing`), the values its MoESpec takes for them (`updates`), a line saying how (`note`), or
    why it cannot be (`problem`: what renders flags refuses)."""

    missing: tuple[str, ...]
    updates: Mapping[str, Any]
    note: str | None
    problem: str | None


def unrecorded_router(stated: Mapping[str, Any], model: ModelSpec, builtins: Mapping[str, ModelSpec], *,
                      source: str) -> UnrecordedRouter | None:
    """None for a dense model or a file's model entry (`stated`, as written) whose moe has every
    ROUTER_FIELDS key; else the missing ones settled as the module docstring rules. `model` is the
    entry read; `source` names the file."""
    moe = stated.get("moe")
    if model.moe is None or not isinstance(moe, Mapping):
        return None
    missing = tuple(key for key in ROUTER_FIELDS if key not in moe)
    if not missing:
        return None
    older = f"{source} was written before plan files recorded {_WHAT}"
    builtin = builtins.get(model.name)
    difference = None if builtin is None else first_difference(stated, model.model_dump(mode="json"),
                                                               builtin.model_dump(mode="json"))
    if builtin is not None and builtin.moe is not None and difference is None:
        updates = {key: getattr(builtin.moe, key) for key in missing}
        flags = router_flags(model.moe.model_copy(update=updates))
        note = None if not flags else (f"{older}; its model is the built-in {model.name}, whose router "
                                       f"(Megatron {' '.join(flags)}) is applied")
        return UnrecordedRouter(missing, updates, note, None)
    model_type = origin_model_type(model)
    imported = f"its model {model.name} was imported from a Hugging Face config (model_type {model_type})"
    from_config, of_type = _FROM_CONFIG.get(model_type or ""), _OF_MODEL_TYPE.get(model_type or "")
    if from_config is not None:
        return UnrecordedRouter(missing, {}, None, (
            f"{older}, and {imported} whose router follows from {from_config}, which the plan does not keep: its "
            f"flags would train another router; {_REWRITE}"))
    if of_type is not None:
        updates = {key: value for key, value in of_type.items() if key in missing}
        try:  # Llama 4's input-side weight needs top-1 routing, which an edited file may not keep
            settled = MoESpec.model_validate(model.moe.model_dump() | updates)
        except ValidationError as err:
            return UnrecordedRouter(missing, {}, None, (
                f"{older}, and {imported} whose router cannot route this model.moe "
                f"({err.errors()[0]['msg']}): {_REWRITE}"))
        return UnrecordedRouter(missing, updates, (
            f"{older}; {imported}, whose router (Megatron {' '.join(router_flags(settled))}) is applied"), None)
    if model_type is not None:  # its importer gives Megatron's default router
        return UnrecordedRouter(missing, {}, None, None)
    named = "" if builtin is None or builtin.moe is None or not router_flags(builtin.moe) else (
        f" (it bears the name of the built-in {model.name}, whose router is Megatron "
        f"{' '.join(router_flags(builtin.moe))}, but not its architecture: {difference})")
    return UnrecordedRouter(missing, {}, (
        f"{older}: its model {model.name}'s flags carry Megatron's default router{named}, as every model's did "
        f"then; {_REWRITE} if its router is another"), None)


def router_timing_note(router: UnrecordedRouter | None, model: ModelSpec, *, source: str) -> str | None:
    """sp-simulate's line for a file whose router could not be settled (`problem`): its HybridEP or
    DeepEP dispatch reaches only the ranks of a group-limited router's chosen groups
    (cost.group_routing), which the file does not say, so it is timed routing among all experts.
    None where the router was settled or the dispatcher sends every copy (alltoall)."""
    if router is None or router.problem is None or model.moe is None or model.moe.dispatcher == "alltoall":
        return None
    return (f"{source} was written before plan files recorded {_WHAT}: its {model.moe.dispatcher} dispatch is "
            f"timed routing among all experts, an upper bound where {model.name} routes within expert groups; "
            f"{_REWRITE}")
