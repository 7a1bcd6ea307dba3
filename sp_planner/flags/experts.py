"""What each framework can say about expert parallelism (ep, etp), for the MoE plans of the search.

Megatron-LM and MindSpeed emit Megatron's MoE flags (flags/megatron_moe.py moe_groups; MindSpeed-LLM
takes Megatron's --expert-model-parallel-size, reference moe_fp8_pipeline_frameworks.md 4.1).
torchtitan has expert_parallel_degree (0.2.2 also expert_tensor_parallel_degree, 1 or tp only;
0.3.0 removed it and folds EP over dp_shard x cp x tp). DeepSpeed and yunchang get a reason.
"""

from __future__ import annotations

from sp_planner.flags.base import FlagRequest


def _splits_experts(request: FlagRequest) -> bool:
    return request.plan.ep > 1 or request.plan.etp > 1


def dispatcher_failures(request: FlagRequest, framework: str) -> list[str]:
    """HybridEP and DeepEP (MoESpec.dispatcher) are Megatron-Core's flex dispatcher backends; no other
    framework this planner emits for runs them (MindSpeed's NPUs have no DeepEP; sp-plan emits no
    torchtitan DeepEP configuration, whose own DeepEP path the cost model does not time)."""
    moe = request.model.moe
    if moe is None or moe.dispatcher == "alltoall":
        return []
    backend = {"hybridep": "HybridEP", "deepep": "DeepEP"}[moe.dispatcher]
    return [f"token dispatcher {moe.dispatcher} cannot be expressed: {framework} has no {backend} backend "
            "(Megatron-Core's flex dispatcher) that sp-plan emits; leave out --moe-dispatcher, or use megatron"]


def capacity_failures(request: FlagRequest, framework: str, where: str) -> list[str]:
    """Token dropping (MoESpec.capacity_factor) changes the estimate even at ep 1; a framework whose
    emitted flags cannot set it would run the model's own (dropless) routing instead."""
    moe = request.model.moe
    if moe is None or moe.capacity_factor is None:
        return []
    return [f"capacity factor {moe.capacity_factor:g} cannot be expressed: {framework} {where}; leave out "
            "--moe-capacity-factor, or use megatron or mindspeed"]


def deepspeed_failures(request: FlagRequest) -> list[str]:
    """DeepSpeed's EP lives in the model code, not in the config this planner emits."""
    capacity = capacity_failures(request, "DeepSpeed", "sets it in the model code "
                                 "(deepspeed.moe.layer.MoE(capacity_factor=...)), not in the ds_config emitted here")
    if not _splits_experts(request):
        return capacity + dispatcher_failures(request, "DeepSpeed")
    p = request.plan
    return capacity + [
        f"ep {p.ep} x etp {p.etp} cannot be expressed: DeepSpeed sets expert parallelism in the model "
        "code (deepspeed.moe.layer.MoE(ep_size=...)) or in 0.19's AutoEP ds_config section "
        "'expert_parallel' (autoep_size, expert_tensor_parallel_size), with no documented combination "
        "with Ulysses/ALST sequence parallelism; use megatron or mindspeed for MoE plans, or ep 1, etp 1"
    ]


def yunchang_failures(request: FlagRequest) -> list[str]:
    """yunchang parallelizes attention only; the MLP (experts included) belongs to the trainer."""
    capacity = capacity_failures(request, "yunchang", "parallelizes attention only, and the MLP's routing belongs "
                                 "to the trainer around it")
    if not _splits_experts(request):
        return capacity + dispatcher_failures(request, "yunchang")
    p = request.plan
    return capacity + [
        f"ep {p.ep} x etp {p.etp} cannot be expressed: yunchang is an attention library (Ulysses/ring "
        "process groups only) and has no expert parallelism; the training framework around it must "
        "split the experts; use megatron or mindspeed for MoE plans"
    ]


def torchtitan_failures(request: FlagRequest) -> list[str]:
    """torchtitan's expert mesh: ETP is 1 or tp (0.2.2 job_config), ep x etp divides dp_shard x cp x tp
    (ParallelDims: dp_shard*cp*tp == efsdp*ep*etp), dp_shard excluding HSDP's replicas."""
    moe = request.model.moe
    failures = []
    if moe is not None and moe.capacity_factor is not None:
        # torchtitan routes dropless: MoEArgs has no capacity field and TokenChoiceTopKRouter sends
        # every token to its top_k experts (pytorch/torchtitan torchtitan/models/moe/moe.py).
        failures.append(f"capacity factor {moe.capacity_factor:g} cannot be expressed: torchtitan's MoE routes "
                        "dropless; leave out --moe-capacity-factor, or use megatron or mindspeed")
    failures += dispatcher_failures(request, "torchtitan (0.2.2, 0.3.0)")
    if not _splits_experts(request):
        return failures
    p = request.plan
    if p.etp not in (1, p.tp):
        failures.append(f"etp {p.etp} cannot be expressed: torchtitan's expert tensor parallel degree is 1 or "
                        f"tp ({p.tp})")
    # The sparse mesh (pp, dp_replicate, efsdp, ep, etp) has efsdp = dp_shard*cp*tp // (ep*etp)
    # (v0.2.2 distributed/parallel_dims.py build_mesh): HSDP replicas stay outside it, and with
    # zero 0 every data-parallel rank is a replica (parallelism_items).
    dp_shard = p.dp_shard if p.zero > 0 else 1
    if (dp_shard * p.ring * p.tp) % (p.ep * p.etp) != 0:
        failures.append(f"ep x etp = {p.ep} x {p.etp} does not divide dp_shard x cp x tp = {dp_shard} x {p.ring} x "
                        f"{p.tp} (torchtitan folds EP over the FSDP and TP ranks of one replica)")
    return failures


def torchtitan_items(request: FlagRequest, *, expert_tp: bool = True) -> list[tuple[str, object]]:
    """[parallelism] keys for the expert degrees (MoE models only). `expert_tp`: the release has
    expert_tensor_parallel_degree (0.2.x; 0.3.0 removed it, its experts folding over dp_shard x cp x
    tp: shared reference moe_fp8_pipeline_frameworks.md section 3.2)."""
    if request.model.moe is None:
        return []
    items: list[tuple[str, object]] = [("expert_parallel_degree", request.plan.ep)]
    return items + ([("expert_tensor_parallel_degree", request.plan.etp)] if expert_tp else [])


def torchtitan_debug_items(request: FlagRequest) -> list[tuple[str, object]]:
    """[debug] keys: force-balanced routing (MoESpec.routing "balanced") is torchtitan's
    debug.moe_force_load_balance, round-robin experts "for debugging usage only" (0.2.2
    config/job_config.py Debug, 0.3.0 config/configs.py DebugConfig)."""
    moe = request.model.moe
    if moe is None or moe.routing != "balanced":
        return []
    return [("moe_force_load_balance", True)]
