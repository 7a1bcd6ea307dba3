"""sp-plan's exit-2 checks of pinned degrees: what the pins alone already rule out, refused before
any search (the hard rules of sp_planner.plan, the FSDP pins, the pipeline split of pinned virtual
stages)."""

from __future__ import annotations

import math

from sp_planner.errors import UserInputError
from sp_planner.pipeline_split import generic_layout, search_split
from sp_planner.plan import ParallelPlan, violations
from sp_planner.space import PIN_DEGREES
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload


def gpus_left_to(degrees: dict[str, int | None], world_size: int, axis: str) -> int:
    """The GPUs the pinned degrees other than `axis` leave, which every value of `axis` divides."""
    return world_size // math.prod(v for name, v in degrees.items() if name != axis and v is not None)


def check_degrees(degrees: dict[str, int | None], world_size: int) -> None:
    """Pinned degrees must divide the GPU count, and all five pinned must fill it."""
    for axis, value in degrees.items():
        if value is not None and value <= 0:
            raise UserInputError(f"--{axis} must be at least 1, got {value}")
    given = {axis: value for axis, value in degrees.items() if value is not None}
    product = math.prod(given.values())
    named = " x ".join(f"{axis} {value}" for axis, value in given.items())
    if world_size % product != 0:
        raise UserInputError(
            f"pinned degrees {named} = {product} do not divide the GPU count {world_size}; "
            "pick degrees whose product divides nodes x gpus-per-node"
        )
    if len(given) == len(PIN_DEGREES) and product != world_size:
        raise UserInputError(
            f"pinned degrees {named} = {product} use fewer GPUs than the {world_size} available; "
            f"leave --dp out to derive it, or set --dp {given['dp'] * world_size // product}"
        )


def with_derived_dp(degrees: dict[str, int | None], world_size: int) -> dict[str, int | None]:
    """dp filled in when every other degree is pinned, since the GPU count then fixes it."""
    others = [degrees[axis] for axis in PIN_DEGREES if axis != "dp"]
    if degrees["dp"] is None and all(value is not None for value in others):
        return {**degrees, "dp": world_size // math.prod(v for v in others if v is not None)}
    return degrees


def check_pins(
    degrees: dict[str, int | None],
    micro_batch: int | None,
    model: ModelSpec,
    workload: Workload,
    experts: dict[str, int] | None = None,
    vpp: int | None = None,
    *,
    world_size: int,
    recompute: str | None = None,
    split: tuple[int, int] | None = None,
    vpp_group: int | None = None,
) -> None:
    """Exit-2 check of the hard rules the pinned values alone already break (`split`: the pinned
    first and last stage layers, else the search's search_split; `vpp_group`: --vpp-group, which
    the vpp rule checks where the micro-batch count is pinned).

    Unpinned degrees are set to 1, the least they can be; every rule but kv_heads and deepep_group
    is a divisibility that any larger degree only tightens, so a violation here holds for every plan.
    kv_heads (G % (tp*u) == 0 or (tp*u) % G == 0) can be repaired by a larger ulysses, so it is
    only checked when tp and ulysses are both pinned; deepep_group (etp x ep among DeepEP's sizes)
    only when ep and etp are.
    """
    pp, stage_vpp = degrees["pp"] or 1, vpp or 1
    first, last = split or (int(x) for x in search_split(model.num_layers, pp, stage_vpp, model.mtp_layers,
                                                               recipes=vpp is not None))
    partial = ParallelPlan(
        **{axis: (value or 1) for axis, value in degrees.items()},
        micro_batch=micro_batch or 1, vpp=stage_vpp, first_stage_layers=first or None, last_stage_layers=last or None,
        recompute=recompute or "none", vpp_group=vpp_group, **(experts or {}),
    )
    skip = set() if (degrees["tp"] and degrees["ulysses"]) else {"kv_heads"}
    # The expert grid must divide a stage's GPUs (world / pp). Unpinned degrees are 1 in `partial`,
    # so the rule itself waits for all five; the stage's GPUs are known before that.
    skip |= set() if all(degrees.values()) else {"expert_grid"}
    # DeepEP's group sizes are a set, not a divisibility: a larger ep or etp can repair one.
    skip |= set() if {"ep", "etp"} <= {k for k, v in (experts or {}).items() if v} else {"deepep_group"}
    # DSA's CP rule (dsa_cp) refuses a ring moving K/V p2p, which the cp_comm the search tries
    # (all-gather where ulysses is 1) repairs; a pinned ulysses above 1 breaks it for every plan.
    if (degrees["ulysses"] or 1) == 1:
        skip.add("dsa_cp")
    _check_expert_grid(experts or {}, degrees["pp"], world_size)
    # The interleaving rule reads the micro-batch count, which unpinned dp and micro-batch change.
    if not all(degrees[axis] for axis in PIN_DEGREES) or micro_batch is None:
        skip.add("vpp")
    if degrees["pp"] is None and stage_vpp > 1:
        # Pinned virtual stages with pp left to the search: an uneven split may hold on a larger pp
        # (Qwen2.5-7B's 28 layers: vpp 3 on pp 5, first = last = 5), so the layers rule is checked
        # over every pp the GPUs allow.
        skip.add("layers")
        _check_some_pp_splits(degrees, model, workload, stage_vpp, world_size)
    broken = [v for v in violations(partial, model, workload) if v.rule not in skip]
    if broken:
        rule = broken[0]
        raise UserInputError(f"the pinned plan breaks the {rule.rule} rule: {rule.message}"
                             + _rule_fix(rule.rule, partial, model, workload, world_size=world_size,
                                         dp_free=not all(degrees[axis] for axis in PIN_DEGREES if axis != "dp")))


def check_vpp_group(vpp_group: int | None, vpp: int | None, pp: int | None) -> None:
    """Refuse --vpp-group where no plan runs it: the micro-batch group is the interleaved schedule's
    (--vpp 2 or more), and Megatron takes N >= pp (schedules.py at d98e8a6 lines 1160-1168: "The
    number of contiguous micro-batches in a virtual pipeline stage should range in [PP, M]"). The
    rest, N <= m and m % N, waits for the micro-batch count (the vpp rule)."""
    if vpp_group is None:
        return
    if vpp is None or vpp == 1:
        raise UserInputError(f"--vpp-group {vpp_group} sets the interleaved schedule's micro-batch group: it needs "
                             f"--vpp 2 or more{' (not --vpp 1)' if vpp == 1 else ''}, or drop --vpp-group")
    if pp is not None and vpp_group < pp:
        raise UserInputError(f"--vpp-group {vpp_group} is below --pp {pp}: Megatron's micro-batch group lies in "
                             f"[pp, m] (schedules.py); use --vpp-group {pp} or more, or drop --vpp-group")


def _rule_fix(rule: str, plan: ParallelPlan, model: ModelSpec, workload: Workload, *, world_size: int,
              dp_free: bool) -> str:
    """How to mend a rule the pins break, where its message names no fix: the nearest lengths or
    global batches the pins divide, the pins that would pass ('' for another rule). `dp_free`:
    whether dp may change without other pins (not every other degree pinned)."""
    if rule == "seq_len":
        return _seq_len_fix(plan, workload.seq_len)
    if rule == "batch":
        return _batch_fix(plan, model, workload, world_size, dp_free)
    if rule == "heads":
        return _heads_fix(plan, model, workload, world_size)
    if rule == "experts" and model.moe is not None:
        return f"; pin --ep to a divisor of {model.moe.num_experts}"
    return ""


def _passes(plan: ParallelPlan, model: ModelSpec, workload: Workload, rules: tuple[str, ...], **change: int) -> bool:
    """Whether the pins with `change` break none of `rules` (plan.violations, the rules themselves)."""
    changed = plan.model_copy(update=change)
    return not any(v.rule in rules for v in violations(changed, model, workload))


def _batch_fix(plan: ParallelPlan, model: ModelSpec, workload: Workload, world_size: int, dp_free: bool) -> str:
    """The batch rule: the nearest global batches dp x micro_batch divides, and the largest smaller
    micro batch, or dp where the other pins leave it free and the GPUs take it, that passes with
    the batch given."""
    unit, global_batch = plan.dp * plan.micro_batch, workload.global_batch
    below, above = global_batch // unit * unit, -(-global_batch // unit) * unit
    fixes = [f"--global-batch {below} or {above}" if below else f"--global-batch {above}"]
    micro = next((m for m in range(plan.micro_batch - 1, 0, -1)
                  if _passes(plan, model, workload, ("batch",), micro_batch=m)), None)
    if micro is not None:
        fixes.append(f"--micro-batch {micro}")
    others = plan.tp * plan.pp * plan.ulysses * plan.ring  # the other pinned degrees (unpinned: 1)
    dp = next((d for d in range(plan.dp - 1, 0, -1)
               if world_size % (d * others) == 0 and _passes(plan, model, workload, ("batch",), dp=d)),
              None) if dp_free else None
    if dp is not None:
        fixes.append(f"--dp {dp}")
    return f"; use {', or '.join(fixes)}"


def _heads_fix(plan: ParallelPlan, model: ModelSpec, workload: Workload, world_size: int) -> str:
    """The heads rule: the tp x ulysses products that pass it and the KV heads' rule (as tp, ulysses
    1) and fit the GPUs the pinned pp and ring leave."""
    room = world_size // (plan.pp * plan.ring)
    splits = [s for s in range(1, room + 1)
              if room % s == 0 and _passes(plan, model, workload, ("heads", "kv_heads"), tp=s, ulysses=1)]
    return f"; pin tp x ulysses to {', '.join(map(str, splits[:-1]))} or {splits[-1]}" if len(splits) > 1 else (
        f"; pin tp x ulysses to {splits[0]}")


def _seq_len_fix(plan: ParallelPlan, seq_len: int) -> str:
    """How to mend the seq_len rule: the nearest lengths the pinned split divides."""
    divisor = plan.seq_len_divisor()
    below, above = seq_len // divisor * divisor, -(-seq_len // divisor) * divisor
    lengths = f"--seq-len {below} or {above}" if below else f"--seq-len {above}"
    return f"; use {lengths}, or pin smaller degrees"


def _check_expert_grid(experts: dict[str, int], pp: int | None, world_size: int) -> None:
    """Refuse pinned ep x etp that divides no pipeline stage's GPUs: a stage holds world / pp GPUs,
    pp pinned, else a divisor of the world (pp 1 the largest), which ep*etp must divide
    (Megatron: world % (ETP*EP*PP) == 0)."""
    ep, etp = experts.get("ep", 1), experts.get("etp", 1)
    stage_gpus = world_size // (pp or 1)
    if stage_gpus % (ep * etp) != 0:
        where = f"the {stage_gpus} GPUs of a pipeline stage (pp {pp})" if pp else f"the {world_size} GPUs"
        raise UserInputError(f"the pinned plan breaks the expert_grid rule: ep*etp = {ep}*{etp} does not divide "
                             f"{where} (Megatron: world % (ETP*EP*PP) == 0); pick ep x etp dividing {stage_gpus}")


def _check_some_pp_splits(degrees: dict[str, int | None], model: ModelSpec, workload: Workload, vpp: int,
                          world_size: int) -> None:
    """Refuse --vpp when no pipeline degree the other pins leave splits the layers (ParallelPlan's
    layers rule with the search's split, pipeline_split.search_split, which the search does not run as a
    --pipeline-model-parallel-layout of generic ends: space_choices._vpp_keep)."""
    free = gpus_left_to(degrees, world_size, "pp")
    others = {axis: 1 for axis in degrees if axis != "pp"}
    for pp in (d for d in range(2, free + 1) if free % d == 0):
        first, last = (int(x) for x in search_split(model.num_layers, pp, vpp, model.mtp_layers, recipes=True))
        plan = ParallelPlan(**others, pp=pp, vpp=vpp, first_stage_layers=first or None, last_stage_layers=last or None)
        layout = bool(generic_layout(model.num_layers, pp, vpp, first, last, recipes=True))
        if not layout and not any(v.rule == "layers" for v in violations(plan, model, workload)):
            return
    raise UserInputError(f"--vpp {vpp}: no pipeline degree these GPUs allow (a divisor of {free} above 1) splits "
                         f"{model.num_layers} layers into {vpp} virtual stages per rank; pick another --vpp or drop it")


def check_fsdp_pins(dp: int | None, zero: int | None, dp_replicate: int | None,
                     reshard_after_forward: bool | None, *, data_parallel_gpus: int) -> None:
    """Exit-2 check of FSDP pins that no plan can honour (ParallelPlan's own FSDP rules);
    `data_parallel_gpus`: the GPUs the pinned degrees leave, which every dp divides."""
    if dp_replicate is not None:
        if dp_replicate < 1:
            raise UserInputError(f"--dp-replicate must be at least 1, got {dp_replicate}")
        if dp is not None and dp % dp_replicate != 0:
            raise UserInputError(f"--dp-replicate {dp_replicate} does not divide dp {dp} "
                                 "(HSDP: dp = dp_replicate x dp_shard)")
        if data_parallel_gpus % dp_replicate != 0:
            raise UserInputError(f"--dp-replicate {dp_replicate} divides no data-parallel degree here: dp divides "
                                 f"{data_parallel_gpus} (the GPUs the other degrees leave); give a divisor of "
                                 f"{data_parallel_gpus} (HSDP: dp = dp_replicate x dp_shard)")
        if dp_replicate > 1 and zero == 0:
            raise UserInputError(f"--dp-replicate {dp_replicate} needs --zero 1, 2 or 3 (zero 0 replicates "
                                 "everything already)")
    if reshard_after_forward is not None and zero is not None and zero != 3:
        option = "--reshard-after-forward" if reshard_after_forward else "--no-reshard-after-forward"
        raise UserInputError(f"{option} needs --zero 3 (got --zero {zero}): only ZeRO-3/FSDP shards parameters")


def check_split_pins(split: tuple[int | None, int | None] | None, pp: int | None) -> tuple[int, int] | None:
    """--first-stage-layers and --last-stage-layers, both or neither, with --pp above 1: the pinned
    (first, last) stage layers, or None."""
    if split is None:
        return None
    first, last = split
    if first is None or last is None:
        raise UserInputError("--first-stage-layers and --last-stage-layers go together: give both (the middle stages "
                             "share the rest)")
    if pp is None or pp < 2:
        raise UserInputError(f"--first-stage-layers {first} and --last-stage-layers {last} split a pipeline: they need "
                             "--pp 2 or more")
    return first, last
