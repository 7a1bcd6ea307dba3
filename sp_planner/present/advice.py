"""What would make a plan fit, when none does: each change is checked by searching again.

Only changes whose new search finds a fitting plan are suggested, each at the smallest step that
works: the mildest recompute, activation offloading where recompute is pinned off, ZeRO-3, micro
batch 1, unpinned degrees, the fewest nodes, the nearest rounder node count below the asked one, the
nearest sequence lengths below and above that more sequence splits divide, the longest halved
sequence, and for a pinned --vpp the nearest global batch whose micro-batches fill groups of pp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from sp_planner.cost.offload import OVERLAP_MIN_KEPT_LAYERS
from sp_planner.cost.expert_padding import GROUPED_MLP_PADS
from sp_planner.cost.runtime import MEGATRON_RUNTIME, Runtime
from sp_planner.estimate import PlanEstimate
from sp_planner.pipeline import interleave_breaks
from sp_planner.plan import ParallelPlan
from sp_planner.search import MAX_CANDIDATES, Pins, search, search_axes
from sp_planner.space import PIN_DEGREES
from sp_planner.space_count import count_candidates
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.batch import default_global_batch
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec
from sp_planner.specs.workload import Workload, tokens_per_gpu_problem
from sp_planner.units import format_tokens

# Node counts tried for "more GPUs": doubling up to this factor, then the counts in between.
MAX_NODE_FACTOR = 16
MAX_NODES_BETWEEN = 8
# Shortest sequence tried when halving it.
MIN_SEQ_LEN = 1024
# Candidates all the checking searches together may cost (a quarter of the largest search, so
# sp-plan with suggestions stays within its 30 s); a change whose search would pass it is not checked.
SUGGESTION_CANDIDATES = MAX_CANDIDATES // 4


class FitSuggestion(FrozenModel):
    change: str  # "recompute", "offload", "zero", "micro_batch", "dp_replicate", "unpin", "nodes", "seq_len",
    # "global_batch"
    option: str  # the sp-plan option that makes the change, e.g. "--nodes 4"
    description: str
    estimate: PlanEstimate  # the best plan that fits with the change
    # The global batch its search ran with (a change of nodes or length moves a default batch, and
    # "global_batch" is one): its micro-batches per step price the interleaved group.
    global_batch: int




def suggest_fits(
    model: ModelSpec,
    hardware: HardwareProfile,
    workload: Workload,
    *,
    num_nodes: int,
    gpus_per_node: int,
    pins: Pins,
    batch_scales_with_gpus: bool = False,
    runtime: Runtime = MEGATRON_RUNTIME,
    closest: ParallelPlan | None = None,
) -> tuple[FitSuggestion, ...]:
    """Changes that make some plan fit, each verified by a fresh search.

    `batch_scales_with_gpus`: the global batch is sp-plan's default (a token budget rounded to the
    GPU count, specs/batch.py), so the more-nodes search uses the batch that `--nodes N` alone would
    give; otherwise it is kept. `runtime`: the framework's (cost.runtime). `closest`: the search's
    closest plan; where it interleaves with micro-batches no multiple of pp (plan rule vpp: a --vpp
    pinned), the nearest global batches that make them one are tried.
    """

    spent = 0

    def best_fit(*, nodes: int = num_nodes, load: Workload = workload, changes: dict[str, object] | None = None
                 ) -> PlanEstimate | None:
        nonlocal spent
        if tokens_per_gpu_problem(load.seq_len, load.global_batch, nodes * gpus_per_node) is not None:
            return None  # a step sp-plan would refuse (specs.workload): not suggested
        changed = pins.model_copy(update=changes or {})
        pinned = [getattr(changed, axis) for axis in PIN_DEGREES if getattr(changed, axis) is not None]
        world = nodes * gpus_per_node
        if world % math.prod(pinned) != 0 or (len(pinned) == len(PIN_DEGREES) and math.prod(pinned) != world):
            return None  # the pinned degrees cannot fill this many GPUs
        cost = count_candidates(load, world, changed, gpus_per_node, axes=search_axes(model, hardware))
        if cost == 0:
            return None  # the pins (an HSDP replica count, say) leave no candidate on this many GPUs
        if spent + cost > SUGGESTION_CANDIDATES:
            return None  # past the budget: not checked, so not suggested
        spent += cost
        found = search(model, hardware, load, num_nodes=nodes, gpus_per_node=gpus_per_node, pins=changed, top_k=1,
                       runtime=runtime)
        return found.ranked[0] if found.ranked and found.ranked[0].fits else None

    found: list[FitSuggestion] = []

    def offer(change: str, option: str, description: str, est: PlanEstimate | None,
              global_batch: int = workload.global_batch) -> bool:
        if est is not None:
            found.append(FitSuggestion(change=change, option=option, description=description, estimate=est,
                                       global_batch=global_batch))
        return est is not None

    # An unpinned option was already searched over, so only pinned ones are worth relaxing. Offloading
    # runs without recompute (Megatron-Core rejects both), so beside it no recompute is a change to offer.
    for level in () if pins.cpu_offload_layers else _stronger_recompute(pins.recompute):
        if offer("recompute", f"--recompute {level}",
                 f"with --recompute {level} activations are recomputed in the backward pass",
                 best_fit(changes={"recompute": level})):
            break
    # Pinned to no recompute: activation CPU offloading keeps it so (Megatron only; pp 1; cost.offload),
    # half the layers first, then all but the two the copies need to overlap.
    if _offload_applies(pins, hardware, runtime):
        layers = model.num_layers
        for count in dict.fromkeys(n for n in (layers // 2, layers - OVERLAP_MIN_KEPT_LAYERS) if 0 < n < layers):
            if offer("offload", f"--cpu-offload-layers {count}",
                     f"with --cpu-offload-layers {count} the first {count} layers' activations wait in host memory "
                     "(no recompute)", best_fit(changes={"cpu_offload_layers": count, "pp": 1})):
                break
    if pins.zero is not None and pins.zero != 3:
        offer("zero", "--zero 3", "with --zero 3 parameters, gradients and optimizer state are sharded",
              best_fit(changes={"zero": 3}))
    # HSDP replicas hold whole copies of the states (the routed experts' too, cost.fsdp): one
    # replica shards over every data-parallel rank.
    if pins.dp_replicate is not None and pins.dp_replicate > 1:
        offer("dp_replicate", "--dp-replicate 1", "with --dp-replicate 1 ZeRO shards over every data-parallel rank "
              "(no HSDP replicas)", best_fit(changes={"dp_replicate": 1}))
    if pins.micro_batch is not None and pins.micro_batch > 1:
        offer("micro_batch", "--micro-batch 1", "with --micro-batch 1 each GPU holds one sequence's activations",
              best_fit(changes={"micro_batch": 1}))
    # A pinned micro-batch group (--vpp-group) the vpp rule refuses: the one sp-plan picks.
    if pins.vpp_group is not None:
        offer("unpin", "without --vpp-group", "letting sp-plan choose the micro-batch group",
              best_fit(changes={"vpp_group": None}))
    # Offloading pins pp 1 (cost.offload), which stays pinned while it does.
    pinned = [axis for axis in PIN_DEGREES
              if getattr(pins, axis) is not None and not (axis == "pp" and pins.cpu_offload_layers)]
    if pinned:
        offer("unpin", "without " + " ".join(f"--{axis}" for axis in pinned),
              "letting the search choose " + ", ".join(pinned), best_fit(changes={axis: None for axis in pinned}))

    def nodes_batch(count: int) -> int:
        # As `--nodes count` alone would run: the default batch if it was the default.
        return (default_global_batch(workload.seq_len, count * gpus_per_node) if batch_scales_with_gpus
                else workload.global_batch)

    def on_nodes(count: int) -> PlanEstimate | None:
        # As `--nodes count` alone would run: the same pins and batch.
        return best_fit(nodes=count, load=workload.model_copy(update={"global_batch": nodes_batch(count)}))

    nodes = _fewest_nodes(num_nodes, on_nodes)
    if nodes is not None:
        count, exhaustive, est = nodes
        fewest = "" if exhaustive else " (the fewest of the doublings of --nodes checked)"
        offer("nodes", f"--nodes {count}", f"would fit on {count} nodes ({count * gpus_per_node} GPUs){fewest}", est,
              nodes_batch(count))
    # Fewer nodes, where the count's awkward factors are what leave no plan: the nearest rounder count.
    for count in _rounder_counts(num_nodes):
        power = count & -count
        if offer("nodes", f"--nodes {count}", f"would fit on {count} nodes ({count * gpus_per_node} GPUs), a rounder "
                 f"count ({power} x {count // power}) below {num_nodes}", on_nodes(count), nodes_batch(count)):
            break
    # Interleaving needs at least pp micro-batches (Megatron's micro-batch group lies in [pp, m]; plan
    # rule vpp): the batches that make m a multiple of pp.
    if closest is not None and interleave_breaks(closest.pp, closest.vpp,
                                                 closest.num_micro_batches_of(workload.global_batch)):
        for batch in whole_group_batches(workload.global_batch, closest):
            m = closest.num_micro_batches_of(batch)
            if offer("global_batch", f"--global-batch {batch}",
                     f"with --global-batch {batch} the closest plan's {m} micro-batches fill groups of pp "
                     f"{closest.pp} (interleaved 1F1B)",
                     best_fit(load=workload.model_copy(update={"global_batch": batch})), batch):
                break
    def length_batch(length: int) -> int:
        # As `--seq-len length` alone would run: a default batch is a token budget, so it follows.
        return (default_global_batch(length, num_nodes * gpus_per_node) if batch_scales_with_gpus
                else workload.global_batch)

    def at_length(length: int) -> PlanEstimate | None:
        return best_fit(load=workload.model_copy(update={"seq_len": length, "global_batch": length_batch(length)}))

    # A length the sequence splits cannot divide (100,001 tokens: none of 2 or more) rules out every
    # plan that shards the sequence: the nearest lengths below and above that more splits divide.
    below, above = rounded_lengths(workload.seq_len, num_nodes * gpus_per_node)
    rounded_below = False
    for lengths in (below, above):
        for length in lengths:
            rounded = at_length(length)
            if rounded is not None:
                label = format_tokens(length)
                rounded_below = rounded_below or length < workload.seq_len
                offer("seq_len", f"--seq-len {label.lower()}", f"a sequence of {label} tokens, a multiple of "
                      f"{rounded.plan.seq_len_divisor()} (the best plan's sequence split), would fit", rounded,
                      length_batch(length))
                break
    # The longest halving, where no rounding down fits (that one is longer).
    for shorter in () if rounded_below else _halvings(workload.seq_len):
        label = format_tokens(shorter)
        if offer("seq_len", f"--seq-len {label.lower()}", f"a sequence of {label} tokens would fit",
                 at_length(shorter), length_batch(shorter)):
            break
    return tuple(found)


def whole_group_batches(global_batch: int, plan: ParallelPlan) -> list[int]:
    """The global batches nearest `global_batch` whose micro-batches per step are a multiple of the
    plan's pp (multiples of dp x micro_batch x pp), nearer first, the larger on a tie (it keeps the
    asked sequences); none of them 0. Where the plan has no pipeline, none."""
    if plan.pp == 1:
        return []
    unit = plan.dp * plan.micro_batch * plan.pp
    below = global_batch // unit * unit
    above = below + unit
    return sorted((b for b in (below, above) if b > 0 and b != global_batch),
                  key=lambda b: (abs(b - global_batch), -b))


def rounded_lengths(seq_len: int, world_size: int) -> tuple[list[int], list[int]]:
    """The lengths below and above `seq_len` that more sequence splits divide, nearer first: for each
    divisor d > 1 of 2 x world_size that `seq_len` is no multiple of, the nearest multiple of d on
    each side. A plan's split (plan_rules.seq_len_divisor: 2 x ring x ulysses x tp with zigzag,
    Megatron's S % (2 x CP) == 0, else ring x ulysses x tp) divides 2 x world_size, as its degrees
    divide the GPUs; 100,001 on 16 GPUs: [100000] and [100002, 100004, 100008, 100016, 100032]."""
    splits = [d for d in range(2, 2 * world_size + 1) if 2 * world_size % d == 0 and seq_len % d != 0]
    below = sorted({seq_len // d * d for d in splits} - {0}, reverse=True)
    above = sorted({-(-seq_len // d) * d for d in splits})
    return below, above


def _offload_applies(pins: Pins, hardware: HardwareProfile, runtime: Runtime) -> bool:
    """Offloading is worth checking: recompute pinned to none, no pipeline pinned, none offloaded
    yet, a measured host link, and Megatron's runtime (the only framework whose flags express it)."""
    return (pins.recompute == "none" and pins.pp in (None, 1) and not pins.cpu_offload_layers
            and hardware.host_link_bytes_per_s is not None
            # Megatron's with or without its router padding (flags.release_runtime).
            and runtime.model_copy(update={"expert_row_padding": GROUPED_MLP_PADS}) == MEGATRON_RUNTIME)


def _stronger_recompute(pinned: str | None) -> Iterator[str]:
    """Recompute levels above a pinned one, mildest first; none when recompute is not pinned."""
    order = ("none", "selective", "full")
    if pinned in ("mla_up_proj", "moe_act", "moe_act+layernorm", "mlp", "mla_up_proj+mlp"):
        yield "full"  # module recomputes free what selective does not: only full is surely stronger
    elif pinned is not None:
        yield from order[order.index(pinned) + 1:]


def _fewest_nodes(
    num_nodes: int, fit_on: Callable[[int], PlanEstimate | None]
) -> tuple[int, bool, PlanEstimate] | None:
    """Double the node count until a plan fits, then try the untried counts below it, smallest first.

    Fitting is not monotone in the node count (divisibility), so every count below the first
    fitting doubling is tried when there are at most MAX_NODES_BETWEEN of them. Returns (nodes,
    whether every count below it was checked, the best plan there), or None.
    """
    tried: set[int] = set()
    count = num_nodes * 2
    while count <= num_nodes * MAX_NODE_FACTOR:
        est = fit_on(count)
        tried.add(count)
        if est is not None:
            untried = [c for c in range(num_nodes + 1, count) if c not in tried]
            if len(untried) > MAX_NODES_BETWEEN:
                return count, False, est
            for smaller in untried:
                est_small = fit_on(smaller)
                if est_small is not None:
                    return smaller, True, est_small
            return count, True, est
        count *= 2
    return None


def _rounder_counts(num_nodes: int) -> list[int]:
    """Node counts below `num_nodes` to try when its odd factors leave no plan, largest first: for each
    power of two above the one dividing `num_nodes`, the largest multiple of it below, where that is at
    least half of `num_nodes` and round (its power of two at least its odd part, so the parallel
    degrees, powers of two like the sequence lengths and head counts they divide, can fill most of
    it): 992, 960, 896, 768 and 512 below 999."""
    counts: list[int] = []
    step = (num_nodes & -num_nodes) * 2
    while step <= num_nodes:
        count = num_nodes // step * step
        power = count & -count
        if 2 * count >= num_nodes and power >= count // power and count not in counts:
            counts.append(count)
        step *= 2
    return counts


def _halvings(seq_len: int) -> Iterator[int]:
    shorter = seq_len // 2
    while shorter >= MIN_SEQ_LEN:
        yield shorter
        shorter //= 2
