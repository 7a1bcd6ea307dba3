"""The run sp-run asks for (executor.config.RunConfig): one attention layer of a plan file's model
and plan, or the shape its flags give, each refused in the option's terms where it cannot run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sp_planner.cli.run_model import Layer, model_attention, refuse_unapplied
from sp_planner.errors import UserInputError
from sp_planner.executor.config import MAX_SCORE_FACTOR, RunConfig
from sp_planner.planfile import PlanFile
from sp_planner.units import parse_tokens


def config_from_plan(plan_file: PlanFile, shape: Mapping[str, Any], layer: Layer | None,
                      **run_options: Any) -> tuple[RunConfig, str | None]:
    """The run of one attention layer of the plan, and which layer it is where the model has two kinds."""
    given = [name for name, value in shape.items() if value is not None]
    if given:
        raise UserInputError(f"--plan sets degrees and shapes; drop {', '.join(given)} or drop --plan")
    model, plan = plan_file.model, plan_file.plan
    refuse_unapplied(model)
    attention, note = model_attention(model, plan_file.workload.seq_len, layer)
    if "window" in attention and not plan_file.workload.causal:
        # Said here, in the plan file's terms: check_config's "add --causal" is for flags, which --plan refuses.
        other = " (or run a global layer with --layer global)" if model.num_local_layers < model.num_layers else ""
        raise UserInputError(f"the plan file's workload is not causal (\"causal\": false), but {model.name}'s "
                             f"{attention['window_kind']}-window layers are a causal model's local attention: set "
                             f"\"causal\": true in the plan file's workload{other}")
    return RunConfig(
        ulysses=plan.ulysses, ring=plan.ring, tp=plan.tp, ring_layout=plan.ring_layout, cp_comm=plan.cp_comm,
        batch=plan.micro_batch, seq_len=plan_file.workload.seq_len, causal=plan_file.workload.causal,
        num_heads=model.num_heads, num_kv_heads=model.num_kv_heads, **attention, **run_options,
    ), note


def config_from_flags(shape: Mapping[str, Any], **run_options: Any) -> RunConfig:
    """The run the flags describe (`shape`: each shape option's value, None where not given), with
    the shape options refused that say nothing without the others they need."""
    missing = [name for name in ("--seq-len", "--heads", "--head-dim") if shape[name] is None]
    if missing:
        raise UserInputError(f"give {', '.join(missing)} (or --plan plan.json)")
    if shape["--window-kind"] is not None and shape["--window"] is None:
        raise UserInputError(f"--window-kind {shape['--window-kind']} shapes a local window: give --window "
                             "(its length in tokens), or drop --window-kind")
    for option in ("--softmax-scale", "--softcap"):
        finite_positive(shape[option], option)
    # Without a ring axis these run as contiguous p2p (executor.sharding), and the summary omits them:
    # a run that passed would seem to have validated them (sp-plan refuses --cp-comm allgather --ring 1 too).
    ring_only = [f"{option} {shape[option]}" for option, default in (("--ring-layout", "contiguous"),
                                                                       ("--cp-comm", "p2p"))
                 if shape[option] not in (None, default)]
    if ring_only and (shape["--ring"] or 1) == 1:
        raise UserInputError(f"{' and '.join(ring_only)} shape{'' if len(ring_only) > 1 else 's'} the ring axis: "
                             f"give --ring 2 or more, not --ring 1 (or drop {'them' if len(ring_only) > 1 else 'it'})")
    heads = shape["--heads"]
    return RunConfig(
        ulysses=shape["--ulysses"] or 1, ring=shape["--ring"] or 1, seq_len=parse_tokens(shape["--seq-len"]),
        batch=shape["--batch"] or 1, num_heads=heads, num_kv_heads=shape["--kv-heads"] or heads,
        head_dim=shape["--head-dim"], causal=bool(shape["--causal"]),
        ring_layout=shape["--ring-layout"] or "contiguous", cp_comm=shape["--cp-comm"] or "p2p",
        v_head_dim=shape["--v-head-dim"], softmax_scale=shape["--softmax-scale"], softcap=shape["--softcap"],
        window=None if shape["--window"] is None else parse_tokens(shape["--window"], what="--window"),
        window_kind=shape["--window-kind"] or "sliding", **run_options,
    )


def finite_positive(value: float | None, option: str) -> None:
    """A float option that must be a finite number above 0 (typer's FloatRange lets nan through)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= MAX_SCORE_FACTOR):
        raise UserInputError(f"{option} {value:g}: must be a finite positive number (at most {MAX_SCORE_FACTOR:g})")
