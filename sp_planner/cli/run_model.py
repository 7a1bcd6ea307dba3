"""What sp-run runs of a plan's model beyond its heads: MLA's two head dims, a softmax scale other
than 1/sqrt(q/k head dim), a logit softcap (each settled for plan files that predate it), and
which layer of a model with local (sliding-window or chunked) attention layers. Torch-free.

A plan's ModelSpec holds MLA as the mean head dim of its Q/K and V (the width the cost model
needs); the executor runs the real ones (q/k qk_nope + qk_rope, v v_head_dim). Gemma 2/3 and
DeepSeek-V3 scale the scores by ModelSpec.softmax_scale on every layer; Gemma 2 caps the
logits of every layer. A model with local layers runs one local layer (the window applied) unless
--layer global asks for one of its full-attention layers; a window not shorter than the
sequence leaves every layer full attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sp_planner.errors import UserInputError
from sp_planner.planfile import PlanFile, load_plan_file
from sp_planner.specs.attention import VANILLA
from sp_planner.specs.model import ALIBI, ModelSpec
from sp_planner.units import format_tokens

Layer = Literal["local", "global"]


def settled_plan(path: Path, softmax_scale: float | None) -> tuple[PlanFile, str | None]:
    """The plan file with its model's attention settled, and a note for stderr. A file written
    before plan files recorded some of its model's attention fields (planfile_unrecorded) takes
    --softmax-scale for the scale, else the values its loading settled, and is refused where one
    could not be settled; a file that records the scale refuses --softmax-scale, as the plan's other
    shapes refuse their flags."""
    loaded = load_plan_file(path, None if softmax_scale is None else {"softmax_scale": softmax_scale})
    plan_file, unrecorded = loaded.plan_file, loaded.unrecorded
    if softmax_scale is not None and (unrecorded is None or "softmax_scale" not in unrecorded.missing):
        raise UserInputError(f"--softmax-scale: plan file {path} records its model's softmax scale "
                             f"({plan_file.model.attention_scale:.6g}); drop --softmax-scale or drop --plan")
    if unrecorded is None:
        return plan_file, None
    if unrecorded.problem is not None:
        raise UserInputError(unrecorded.problem)
    return plan_file, unrecorded.note


def refuse_unapplied(model: ModelSpec) -> None:
    """Refuse a model whose attention scores sp-run cannot compute: ALiBi adds a per-head linear bias
    to them (Press et al. 2022, arXiv 2108.12409), which none of sp-run's kernels applies (its score
    modifications are a logit softcap and local windows, executor.score_mod), DSA keeps each query's
    top-k keys only, and a sink softmax adds a logit to every row's denominator; run anyway, the plan
    would validate and time attention without it and say nothing."""
    if model.position_embedding == ALIBI:
        raise UserInputError(f"{model.name} biases its attention scores with ALiBi (position_embedding "
                             f"\"{ALIBI}\"), which sp-run's attention does not apply (it applies a logit softcap and "
                             "local windows only); for plain attention at the plan's shapes, give them as flags "
                             "instead of --plan")
    if model.dsa is not None:
        # DeepSeek-V3.2's sparse attention (ModelSpec.dsa): each query attends to its top-k keys only.
        raise UserInputError(f"{model.name} attends to the top {model.dsa.index_topk} keys its DeepSeek Sparse "
                             "Attention indexer picks, which sp-run's attention does not apply (it is dense); for "
                             "plain attention at the plan's shapes, give them as flags instead of --plan")
    if model.softmax_type != VANILLA:
        # gpt-oss's sinks (ModelSpec.softmax_type learnable): one more logit in every softmax row, which
        # sp-run's online-softmax merges do not carry.
        raise UserInputError(f"{model.name}'s attention softmax is {model.softmax_type} (attention sinks), which "
                             "sp-run's attention does not apply (its softmax is vanilla); for plain attention at the "
                             "plan's shapes, give them as flags instead of --plan")


def model_attention(model: ModelSpec, seq_len: int, layer: Layer | None) -> tuple[dict[str, Any], str | None]:
    """RunConfig fields for the model's attention (head dims, softmax scale, softcap, window) and a note saying
    which layer runs (None where every layer is alike)."""
    fields: dict[str, Any] = {"head_dim": model.qk_head_dim}
    if model.mla is not None:
        fields["v_head_dim"] = model.mla.v_head_dim
    if model.softmax_scale is not None:
        fields["softmax_scale"] = model.softmax_scale
    w = model.window
    if w is None:
        if layer is not None:
            raise UserInputError(f"--layer {layer}: {model.name} has no local-attention layers; drop --layer")
        return fields, None
    if w.logit_softcapping is not None:
        fields["softcap"] = w.logit_softcapping
    span = f"{w.kind}-window ({format_tokens(w.window_tokens)}-token)"
    if w.window_tokens >= seq_len:
        if layer is not None:
            raise UserInputError(f"--layer {layer}: {model.name}'s {span} layers see the whole {seq_len}-token "
                                 "sequence, as its global layers do; drop --layer")
        return fields, (f"{model.name}'s {span} layers see the whole {seq_len}-token sequence: every layer runs "
                        "as full attention")
    if layer == "global" and model.num_local_layers == model.num_layers:
        raise UserInputError(f"--layer global: every layer of {model.name} is a {span} layer")
    chosen = layer or "local"
    if chosen == "local":
        fields["window"], fields["window_kind"] = w.window_tokens, w.kind
    other = "" if model.num_local_layers == model.num_layers else (
        f" (--layer {'global' if chosen == 'local' else 'local'} runs the other kind)")
    return fields, (f"{model.name} has {model.num_local_layers} {span} layers of {model.num_layers}; sp-run runs "
                    f"one {chosen} layer{other}")
