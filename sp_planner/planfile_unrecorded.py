"""The attention of a plan file's model where the file predates a field that changes it.

ModelSpec gained fields after plan files existed (first written 2026-11-22) without a new
schema_version: plan files stay sp-planner.plan/1 and a field an older file lacks reads as its
default. For the fields below, which change the attention sp-run computes, that default is the
attention every model had then, not necessarily the model's: an older plan of Gemma-2-27B would
run without its window, logit softcap and query_pre_attn_scalar scale, and say nothing. Every file
written since a field came states it (write_plan_file dumps every field, null included), so a
model entry without the key is one whose file does not say it. For each such field:
- the built-in model's of that name, where every architecture field the file states equals the
  built-in's (a note where the built-in's value is not the default);
- unknown (sp-run refuses, naming the field and its --plan flag where sp-run has one) where the
  model was imported from a Hugging Face config whose value follows from fields a plan does not
  keep, or bears the name of a built-in whose value is not the default but not its architecture;
- else the default, what every sp-planner before the field ran, with a note that says so.
qk_norm (de600a0), position_embedding and softmax_type came later too; sp-run applies none of them
(its Q and K are drawn, not projected or rotated; it refuses an ALiBi model and a sink softmax,
cli.run_model.refuse_unapplied), and each defaults to what older files meant (no model had sinks
before softmax_type).

The plan file's framework_version (the release sp-plan timed the plan for; torchtitan's runtime
differs by release since 7853893, 2026-12-06) is settled by the same rule (`unrecorded_release`):
the frameworks but torchtitan have one release; torchtitan's is its default, what sp-plan times
without --framework-version and what sp-simulate and sp-report timed every torchtitan plan file as
from 7853893 to the field, with a note where its releases time or size the plan differently (their
TP gathers; their loss, which 0.3.x runs in sequence chunks: every plan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sp_planner.catalog.hf_config import origin_model_type
from sp_planner.cost.attention_kernels import UNFUSED
from sp_planner.cost.gathered_transpose import fp8_gathers, mx_gathers
from sp_planner.cost.runtime import TORCHTITAN_RUNTIMES
from sp_planner.flags.torchtitan import DEFAULT_VERSION
from sp_planner.plan import PRECISIONS, ParallelPlan
from sp_planner.specs.model import ModelSpec
from sp_planner.units import format_tokens

# What a model's entry holds besides its architecture: names and provenance, and the MoE options
# sp-plan writes into it from its own flags (--moe-routing, --moe-dispatcher, ...).
_NOT_ARCHITECTURE = frozenset({"name", "hf_repo", "sources"})
_MOE_RUN_OPTIONS = frozenset({"routing", "dispatcher", "dispatcher_sms", "expert_gemm", "capacity_factor",
                              "pad_to_capacity"})
_REWRITE = "write the plan again with sp-plan --out from the model's file"


class LaterField(NamedTuple):
    """A ModelSpec field that changes sp-run's attention and came after plan files did."""

    key: str  # the model entry's key
    what: str  # what plan files did not record, in words ("the ...")
    noun: str  # "the model's <noun>"
    # Imported model_type -> the config fields catalog.hf_config derives the value from.
    from_config: Mapping[str, str]
    plan_flag: str | None  # sp-run's option that gives it with --plan
    other_flags: str  # sp-run's options that give it without --plan
    described: Callable[[ModelSpec], str]  # a built-in's value, in words
    default_run: Callable[[ModelSpec], str]  # how a model runs without the field
    unless: str  # when that default is not the model's
    contrast: Callable[[ModelSpec], str] = lambda model: ""  # after `described` where it is applied


def _mla(model: ModelSpec) -> str:
    assert model.mla is not None
    return f"MLA head dims (q/k {model.qk_head_dim}, v {model.mla.v_head_dim})"


def _window(model: ModelSpec) -> str:
    w = model.window
    assert w is not None
    cap = f", logit softcap {w.logit_softcapping:g}" if w.logit_softcapping is not None else ""
    layers = "every layer" if w.global_layers == 0 else f"{w.local_layers} local : {w.global_layers} global layers"
    return f"window ({w.kind}, {format_tokens(w.window_tokens)} tokens, {layers}{cap})"


def _one_over_sqrt_d(model: ModelSpec) -> str:
    return f"1/sqrt({model.qk_head_dim}) = {model.qk_head_dim**-0.5:.6g}"


# In the order they came (git log -S<field> -- sp_planner/specs/model.py).
LATER_FIELDS = (
    LaterField("mla", "the MLA head dims (mla)", "MLA head dims",  # 2281d5a, 2026-12-02
               {"deepseek_v3": "kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim"}, None,
               "--head-dim and --v-head-dim", _mla, lambda m: f"q, k and v at head dim {m.head_dim}",
               "it is an MLA model"),
    # WindowSpec with logit_softcapping, f8275ed, 2026-12-02 (window.kind came in e27c2c5 the same
    # day: a window without it is sliding, as every window was then)
    LaterField("window", "the attention window and logit softcap (window)", "window",
               {"mistral": "sliding_window", "mixtral": "sliding_window",
                "gemma2": "sliding_window and attn_logit_softcapping",
                "gemma3": "sliding_window and layer_types", "gemma3_text": "sliding_window and layer_types",
                "llama4_text": "attention_chunk_size and no_rope_layers"}, None,
               "--window, --window-kind and --softcap", _window,
               lambda m: "every layer as full attention without a logit softcap",
               "it has local-attention layers or a logit softcap"),
    LaterField("softmax_scale", "the softmax scale", "scale",  # 4d58eaa, 2026-12-05
               {"deepseek_v3": "rope_scaling (YaRN's mscale_all_dim)", "gemma2": "query_pre_attn_scalar",
                "gemma3": "query_pre_attn_scalar", "gemma3_text": "query_pre_attn_scalar"}, "--softmax-scale",
               "--softmax-scale", lambda m: f"scale {m.attention_scale:.6g}", lambda m: f"at {_one_over_sqrt_d(m)}",
               "the model's is another", lambda m: f" (not {_one_over_sqrt_d(m)})"),
)


class Unrecorded(NamedTuple):
    """How an older plan file's model entry was settled: the LATER_FIELDS keys it lacks
    (`missing`), the values its model takes for them (`updates`: a built-in's, or given), a line
    saying how that was settled (`note`), or why it cannot be (`problem`: sp-run refuses)."""

    missing: tuple[str, ...]
    updates: Mapping[str, Any]
    note: str | None
    problem: str | None
    unsettled: tuple[str, ...] = ()  # the keys `problem` names: neither the file nor the catalog tells them


def unrecorded_fields(stated: Mapping[str, Any], model: ModelSpec, builtins: Mapping[str, ModelSpec], *,
                      source: str, given: Mapping[str, Any] | None = None) -> Unrecorded | None:
    """None where the file's model entry (`stated`, as written) has every LATER_FIELDS key; else
    each missing one settled as the module docstring rules, but those in `given` (the flags' values),
    which the model takes as given. `model` is the entry read; `source` names the file."""
    missing = [f for f in LATER_FIELDS if f.key not in stated]
    if not missing:
        return None
    keys = tuple(f.key for f in missing)
    given = given or {}
    updates = {f.key: given[f.key] for f in missing if f.key in given}
    open_ = [f for f in missing if f.key not in given]
    builtin = builtins.get(model.name)
    difference = None if builtin is None else first_difference(stated, model.model_dump(mode="json"),
                                                               builtin.model_dump(mode="json"))
    if builtin is not None and difference is None:
        told = [f for f in open_ if getattr(builtin, f.key) is not None]
        updates |= {f.key: getattr(builtin, f.key) for f in told}
        note = None if not told else (
            f"{_older(source, told)}; its model is the built-in {model.name}, whose "
            f"{_and(f.described(builtin) + f.contrast(builtin) for f in told)} "
            f"{'is' if len(told) == 1 else 'are'} applied")
        return Unrecorded(keys, updates, note, None)
    model_type = origin_model_type(model)
    imported = [f for f in open_ if model_type in f.from_config]
    clashing = [f for f in open_ if f not in imported and builtin is not None and getattr(builtin, f.key) is not None]
    problems = []
    if imported:
        assert model_type is not None
        problems.append(
            f"{_older(source, imported)}, and its model {model.name} was imported from a Hugging Face config "
            f"(model_type {model_type}) whose {_and(_follows(f, model_type) for f in imported)}, which the plan "
            f"does not keep: {_ask(imported)}")
    if clashing:
        assert builtin is not None
        problems.append(
            f"{_older(source, clashing)}, and its model bears the name of the built-in {model.name} "
            f"({', '.join(f.described(builtin) for f in clashing)}) "
            f"but not its architecture ({difference}): {_ask(clashing)}")
    if problems:
        return Unrecorded(keys, updates, None, "; ".join(problems), tuple(f.key for f in imported + clashing))
    if not open_:
        return Unrecorded(keys, updates, None, None)
    yarn = (f" (its model_type {model_type} config's YaRN rope_scaling, if it has one, was not read then)"
            if model_type is not None and any(f.key == "softmax_scale" for f in open_) else "")
    hints = [f"pass {f.plan_flag} if {f.unless}" for f in open_ if f.plan_flag]
    rewrite = [f.unless for f in open_ if not f.plan_flag]
    hints += [f"{_REWRITE} if {' or '.join(rewrite)}"] if rewrite else []
    return Unrecorded(keys, updates, (
        f"{_older(source, open_)}: its model {model.name} runs {_and(f.default_run(model) for f in open_)}, as "
        f"every model did then{yarn}; {'; '.join(hints)}"), None)


def _older(source: str, fields: list[LaterField]) -> str:
    return f"{source} was written before plan files recorded {_and(f.what for f in fields)}"


def _ask(fields: list[LaterField]) -> str:
    """What gives the fields: their --plan flags, else a plan written again."""
    if all(f.plan_flag for f in fields):
        return f"pass {_and(_passed(f) for f in fields)}, or {_REWRITE}"
    without = [f for f in fields if not f.plan_flag]
    return f"{_REWRITE} (sp-run gives {_and(_given_by(f) for f in without)} only without --plan)"


def _follows(field: LaterField, model_type: str) -> str:
    return f"{field.noun} follows from {field.from_config[model_type]}"


def _passed(field: LaterField) -> str:
    return f"{field.plan_flag} with the model's {field.noun}"


def _given_by(field: LaterField) -> str:
    return f"the {field.noun} by {field.other_flags}"


def _and(parts) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


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


class UnrecordedRelease(NamedTuple):
    """How a plan file without framework_version was settled: the release it is timed as
    (`version`; None for a framework with one) and a line saying so where that matters (`note`)."""

    version: str | None
    note: str | None


def unrecorded_release(framework: str | None, plan: ParallelPlan, *, source: str) -> UnrecordedRelease:
    """The release a plan file that lacks framework_version is timed as (module docstring): for
    torchtitan its default, with a note where another release would time or size `plan`
    differently: its TP gathers, and its loss (0.3.x's in chunks, cost.loss_memory)."""
    if framework != "torchtitan":
        return UnrecordedRelease(None, None)
    timed, sized = not _releases_time_alike(plan), not _releases_hold_alike_at_loss()
    if not (timed or sized):
        return UnrecordedRelease(DEFAULT_VERSION, None)
    verb = " and ".join(word for word, differs in (("timed", timed), ("sized", sized)) if differs)
    whose = " and ".join(clause for clause, differs in (
        ("whose TP all-gathers move other bytes for this plan than torchtitan 0.2.x's", timed),
        ("whose loss, run in sequence chunks, holds other bytes at its peak than 0.2.x's on the whole logits",
         sized)) if differs)
    note = (f"{source} was written before plan files recorded the framework release (framework_version): its plan "
            f"is {verb} as torchtitan {DEFAULT_VERSION} (sp-plan's default) runs it, {whose}; write the plan again "
            "with sp-plan --out --framework torchtitan --framework-version 0.2.2 if it was made for 0.2.x")
    return UnrecordedRelease(DEFAULT_VERSION, note)


def _releases_hold_alike_at_loss() -> bool:
    """Whether every torchtitan release's loss holds the same bytes (cost.loss_memory): 0.3.x's
    runs in chunks, 0.2.x's on the whole logits, for every plan."""
    return len({r.loss_memory for r in TORCHTITAN_RUNTIMES.values()}) == 1


def _releases_time_alike(plan: ParallelPlan) -> bool:
    """Whether every torchtitan release gathers `plan`'s TP inputs alike: their runtimes differ in
    their TP gathers and their loss only, and in which plans they compile, which sizes activations
    but times nothing (cost.compiled_layers; tests/test_planfile_unrecorded.py checks it)."""
    code = PRECISIONS.index(plan.precision)  # the cost functions take precision codes
    gathered = {(bool(fp8_gathers(tp=plan.tp, precision=code, gathers=r.tp_gathers, fp8_blockwise=plan.fp8_blockwise,
                                  sequence_parallel=r.sequence_parallel)),
                 bool(mx_gathers(tp=plan.tp, precision=code, gathers=r.tp_gathers,
                                 sequence_parallel=r.sequence_parallel)))
                for r in TORCHTITAN_RUNTIMES.values()}
    return len(gathered) == 1


def unfused_untimed_note(*, framework: str | None, te_unfused: bool, attention_kernel: str | None, chosen: bool,
                         model_name: str, gpu: str, source: str) -> str | None:
    """A Megatron plan file timed with a published curve where Transformer Engine runs its unfused
    attention (flags.flash_head_dim.te_runs_unfused; sp-plan records attention_kernel "unfused"
    there since 628e4fe3): written by sp-plan --framework all (before it refused --out there) or
    before then. Its readers replay that curve's time and memory, which Megatron does not run
    (Gemma-2-9B 32K on 8 B300s under dropout: 32.82 s fitting, against 185.86 s and 4,964 GiB)."""
    if framework != "megatron" or not te_unfused or attention_kernel == UNFUSED or chosen:
        return None
    curve = "its profile's" if attention_kernel is None else f"{attention_kernel}'s"
    return (f"{source} was timed with {curve} attention curve, but Transformer Engine runs {model_name}'s attention "
            f"unfused on {gpu}, which Megatron's time and memory follow: these figures are not Megatron's; write "
            "it again with sp-plan --framework megatron --out")
