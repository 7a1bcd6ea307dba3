"""The message of each hard rule a plan breaks (plan.facts_violations), naming the offending values
and, for the layers rule, the splits or --vpp values that would work; and the note on a pinned
split that leaves model chunks empty, which no rule refuses (empty_chunks_text)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from sp_planner.cost.deepep import DEEPEP_GROUP_SIZES
from sp_planner.pipeline_order import megatron_group_sizes, micro_batch_group
from sp_planner.pipeline_chunks import empty_chunks, stage_chunk_sizes
from sp_planner.plan_rules import RuleFacts

if TYPE_CHECKING:
    from sp_planner.plan import ParallelPlan


def rule_message(rule: str, f: RuleFacts, plan: ParallelPlan) -> str:
    """One line naming the values that break `rule`, in Megatron's terms where it has them."""
    split = plan.tp * plan.ulysses
    if rule == "heads":
        return f"num_heads {f.num_heads} is not divisible by tp*ulysses = {plan.tp}*{plan.ulysses}"
    if rule == "kv_heads":
        return (f"num_kv_heads {f.num_kv_heads} and tp*ulysses {split} must divide one another "
                "(Megatron: G % TP == 0 or TP % G == 0; Ulysses: G % U == 0 or U % G == 0)")
    if rule == "seq_len":
        divisor = plan.seq_len_divisor()
        zigzag = " x 2 for zigzag" if divisor != plan.tp * plan.cp else ""
        return (f"seq_len {f.seq_len} is not divisible by {divisor} "
                f"(tp {plan.tp} x ulysses {plan.ulysses} x ring {plan.ring}{zigzag})")
    if rule == "layers":
        return layers_message(f.num_layers, plan)
    if rule == "experts":
        if f.num_experts == 0:
            return f"ep {plan.ep} and etp {plan.etp} need an MoE model; this model is dense (use ep 1, etp 1)"
        return f"num_experts {f.num_experts} is not divisible by ep {plan.ep} (Megatron: num_experts % EP == 0)"
    if rule == "expert_replicas":
        return (f"dp_replicate {plan.dp_replicate} (HSDP) does not divide the expert-data-parallel degree edp "
                f"{plan.edp} = {plan.world_size // plan.pp} GPUs a stage / (ep {plan.ep} x etp {plan.etp}): the "
                "routed experts shard over edp / dp_replicate ranks (Megatron asserts edp % "
                "num_distributed_optimizer_instances == 0, parallel_state.py); use a dp_replicate that divides "
                f"{plan.edp}, or a smaller ep x etp")
    if rule == "expert_grid":
        return (f"ep*etp = {plan.ep}*{plan.etp} does not divide the {plan.world_size // plan.pp} GPUs of a "
                "pipeline stage (Megatron: world % (ETP*EP*PP) == 0)")
    if rule == "ffn":
        if f.ffn_size % plan.tp:
            return (f"the MLP's hidden width {f.ffn_size} is not divisible by tp {plan.tp} (Megatron's "
                    "tensor-parallel linear layers split it evenly)")
        return (f"an expert's hidden width {f.expert_ffn_size} is not divisible by etp {plan.etp} (Megatron's "
                "expert tensor parallelism splits it evenly)")
    if rule == "window_ring" and f.window_chunked:
        return (f"ring {plan.ring} over chunked local-attention layers (chunk {f.window_tokens} < seq_len "
                f"{f.seq_len}) is not modelled (which ring steps a chunk skips depends on the layout); use "
                "ulysses and tp")
    if rule == "window_ring":
        return (f"ring {plan.ring} over sliding-window layers (window {f.window_tokens} < seq_len {f.seq_len}) is "
                "not modelled, and Transformer Engine runs sliding windows with context parallelism only as "
                "a2a or all_gather; use ulysses and tp")
    if rule == "dsa_cp":
        what = f"ulysses {plan.ulysses}" if plan.ulysses > 1 else f"ring {plan.ring} with cp_comm p2p"
        return (f"{what} cannot run DeepSeek Sparse Attention: Megatron-LM's DSAttention supports context "
                "parallelism as all-gather only (transformer_config.py: cp_comm_type=allgather); use "
                "--cp-comm allgather on the ring axis, ulysses 1")
    if rule == "vpp":
        return vpp_message(f.global_batch, plan)
    if rule == "deepep_group":
        return (f"the DeepEP dispatcher runs over the expert tp x ep group, etp {plan.etp} x ep {plan.ep} = "
                f"{plan.etp * plan.ep} ranks; DeepEP's Buffer has configs for "
                f"{', '.join(map(str, DEEPEP_GROUP_SIZES))} ranks only (deep_ep/buffer.py get_dispatch_config)")
    if rule == "mla_up_proj":
        return ("recompute mla_up_proj re-runs multi-latent attention's up-projections; this model has no MLA "
                "(Megatron: mla_up_proj in recompute_modules needs multi_latent_attention); use selective or full")
    if rule == "mlp":
        return (f"recompute {plan.recompute} re-runs the dense layers' MLP; every layer of this model is MoE "
                "(Megatron: recompute_mlp applies to non-MoE layers only); use moe_act, selective or full")
    if rule == "moe_act":
        return (f"recompute {plan.recompute} re-runs the routed experts' activation function; this model has no "
                "MoE layers (Megatron: moe_act in recompute_modules needs moe_grouped_gemm); use selective or full")
    if rule == "offload":
        return (f"cpu_offload_layers {plan.cpu_offload_layers} must be below num_layers {f.num_layers} "
                "(Megatron-Core offloads at most num_layers - 1; Transformer Engine needs 2 layers kept to "
                "overlap the copies)")
    assert rule == "batch", rule
    return (f"global_batch {f.global_batch} is not divisible by dp*micro_batch = {plan.dp}*{plan.micro_batch} "
            "(Megatron: GBS % (MBS*DP) == 0)")


def vpp_message(global_batch: int, plan: ParallelPlan) -> str:
    """The vpp rule's message: interleaving needs a pipeline and at least pp micro-batches (the
    micro-batch group N Megatron accepts lies in [pp, m]); a plan's own N (vpp_group, sp-plan
    --vpp-group) must be one Megatron accepts (pipeline_order.megatron_group_sizes), with the nearest
    global batches that make m a multiple of pp where m is too small."""
    head = f"vpp {plan.vpp} (interleaved 1F1B)"
    if plan.vpp == 1:  # the rule breaks at vpp 1 for a micro-batch group alone
        return (f"vpp_group {plan.vpp_group} needs vpp > 1: the micro-batch group is the interleaved schedule's; "
                "leave vpp_group out")
    if plan.pp == 1:
        return f"{head} needs pp > 1: virtual stages interleave a pipeline's stages; use --vpp 1 or a --pp above 1"
    m = plan.num_micro_batches_of(global_batch)
    per_micro = plan.dp * plan.micro_batch  # sequences a micro-batch step takes over the replicas
    unit = per_micro * plan.pp  # the global batches whose m is a multiple of pp
    below, above = global_batch // unit * unit, (global_batch // unit + 1) * unit
    batches = (f"a global batch of {below} or {above} (m {below // per_micro} or {above // per_micro})" if below
               else f"a global batch of {above} or more (m {above // per_micro})")
    if m < plan.pp:
        return (f"{head} needs at least pp {plan.pp} micro-batches per step, has {m} (Megatron schedules.py: the "
                f"micro-batch group size lies in [pp, m]); use {batches}")
    sizes = megatron_group_sizes(plan.pp, m)
    # The first six sizes and the last (N = m always runs), so a long list still ends where it ends.
    shown = ", ".join(map(str, sizes)) if len(sizes) <= 7 else ", ".join(map(str, sizes[:6])) + f", ..., {sizes[-1]}"
    return (f"vpp_group {plan.vpp_group} with pp {plan.pp} and m {m}: Megatron refuses it (schedules.py: "
            f"pp <= N <= m, and m % N zero or at least pp); use one of {shown}, or leave it out (sp-plan then "
            f"prices {int(micro_batch_group(plan.pp, m))}: Megatron's default pp where pp divides m, else the "
            "smallest N it accepts, the fewest forwards before the first backward)")


def layers_message(num_layers: int, plan: ParallelPlan) -> str:
    """The layers rule's message: what does not divide, and splits or --vpp values that would."""
    vpp = f" x vpp {plan.vpp}" if plan.vpp > 1 else ""
    if plan.first_stage_layers is None and plan.last_stage_layers is None:
        if plan.pp == 1:
            # vpp > 1 without a pipeline (the vpp rule says so too): no other --vpp and no first/last
            # pin (those need pp > 1, pipeline.split_breaks) makes the plan run.
            return (f"num_layers {num_layers} is not divisible by pp 1{vpp}, and interleaving needs pp > 1: pin "
                    "--vpp 1, or a --pp above 1")
        if plan.vpp == 1 or num_layers % plan.pp:
            return (f"num_layers {num_layers} is not divisible by pp {plan.pp}{vpp}; an uneven split "
                    "(first/last stage layers) may fit")
        per_stage = num_layers // plan.pp
        even = even_vpp_text(per_stage, plan.vpp)
        if per_stage < plan.vpp:
            # Fewer layers than virtual stages: any split leaves a model chunk without a layer (a
            # layout Megatron parses, pipeline_parallel_layer_layout.py prints "(empty stage)", but
            # every empty chunk is a pipeline hop and a schedule slot doing nothing).
            return (f"num_layers {num_layers} is not divisible by pp {plan.pp}{vpp}, and with fewer layers than "
                    f"its {plan.pp * plan.vpp} virtual stages any split leaves some empty; {even}")
        return (f"num_layers {num_layers} is not divisible by pp {plan.pp}{vpp}; {even}, or pin first = last = "
                f"{per_stage}, which runs as --pipeline-model-parallel-layout, or another uneven split "
                "(first/last stage layers)")
    return (f"first/last stage layers {plan.first_stage_layers}/{plan.last_stage_layers} do not split "
            f"{num_layers} layers over pp {plan.pp}{vpp} (each stage a layer at least, the middle layers even "
            "over pp - 2 stages, none at pp 2; with vpp > 1 a split the --decoder-first/last-pipeline-num-layers "
            "flags cannot express runs as --pipeline-model-parallel-layout)")


def even_vpp_text(per_stage: int, vpp: int) -> str:
    """The --vpp values nearest `vpp` that split a stage's `per_stage` layers evenly (at most three)."""
    divisors = [d for d in range(2, per_stage + 1) if per_stage % d == 0]
    if not divisors:
        return f"{per_stage} layer per stage interleaves with no vpp above 1: pin --vpp 1"
    nearest = sorted(sorted(divisors, key=lambda d: abs(math.log(d / vpp)))[:3])
    choices = ", ".join(map(str, nearest[:-1])) + (" or " if len(nearest) > 1 else "") + str(nearest[-1])
    return f"pin --vpp {choices}, which split{'s' if len(nearest) == 1 else ''} the {per_stage} layers per stage evenly"


def empty_chunks_text(num_layers: int, plan: ParallelPlan) -> str | None:
    """The note on a plan whose pipeline layout leaves model chunks without a layer (a pinned split
    with more virtual stages than a stage has layers; pipeline_chunks.empty_chunks): how many, what
    they cost, and the --vpp values that split the stages evenly. None where no chunk is empty."""
    first, last = plan.first_stage_layers or 0, plan.last_stage_layers or 0
    empty = empty_chunks(num_layers, plan.pp, plan.vpp, first, last) if plan.vpp > 1 else 0
    if not empty:
        return None
    stages = [sum(chunks) for chunks in stage_chunk_sizes(num_layers, plan.pp, plan.vpp, first, last)]
    if len(set(stages)) == 1:
        fix = even_vpp_text(stages[0], plan.vpp)
    else:  # the first, a middle (pp > 2) and the last stage's layers
        ends = "/".join(map(str, [stages[0], *stages[1:-1][:1], stages[-1]]))
        common = math.gcd(*stages)
        fix = (f"pin a --vpp that divides the {ends} layers of the first{'/middle' if plan.pp > 2 else ''}/last "
               "stage" + (f": a divisor of {common}" if common > 1 else ": only --vpp 1 does"))
    return (f"the pipeline layout leaves {empty} of its {plan.pp * plan.vpp} model chunks (pp {plan.pp} x vpp "
            f"{plan.vpp}) without a layer (Megatron prints each as \"(empty stage)\"): each is still a pipeline "
            f"hop and a schedule slot doing nothing; {fix}")
