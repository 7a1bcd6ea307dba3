"""Megatron-LM's data-parallel flags for a plan's ZeRO stage, HSDP replicas and reshard choice.

Sources (NVIDIA/Megatron-LM main d98e8a6, megatron/training/arguments.py; megatron-core 0.16
distributed_data_parallel_config.py; shared reference moe_fp8_pipeline_frameworks.md 1.7):
- ZeRO-1: --use-distributed-optimizer; --num-distributed-optimizer-instances R keeps R optimizer
  copies, each sharded over dp/R x cp ranks (it must divide DP, parallel_state.py).
- ZeRO-2/3: Megatron-FSDP, --use-megatron-fsdp with --data-parallel-sharding-strategy optim_grads
  (gradients and optimizer sharded) or optim_grads_params (also parameters, re-gathered in
  backward); it needs --ckpt-format fsdp_dtensor and CUDA_DEVICE_MAX_CONNECTIONS unset or > 1
  (validate_args asserts both); --num-distributed-optimizer-instances R > 1 makes it HSDP
  (mcore_fsdp_adapter.py). Megatron-FSDP has no switch to keep parameters gathered after forward.
- ZeRO-3 without reshard after forward: PyTorch FSDP2, --use-torch-fsdp2
  --torch-fsdp2-no-reshard-after-forward, which validate_args refuses with pipeline parallelism,
  with the distributed optimizer and with gradient accumulation fusion, and which needs
  --ckpt-format torch_dist and untied embeddings.
"""

from __future__ import annotations

from sp_planner.flags.base import FlagRequest


# The plan's memory and gradient traffic count Megatron-FSDP's main gradients in fp32, as
# core_v0.16 builds them (cost.states). From core_v0.17.0 (b969f76, "Add dtype customization to
# Megatron-FSDP") --megatron-fsdp-main-grads-dtype defaults to "auto", the parameters' bf16, and
# --megatron-fsdp-grad-comm-dtype "auto" follows it (arguments.py at d98e8a6, lines 3691-3699).
# Earlier releases do not know the flag, so it is named in a note, not emitted.
FSDP_GRADS_NOTE = ("the plan counts Megatron-FSDP's main gradients and their reduce-scatter in fp32, as "
                   "Megatron-LM up to core_v0.16 runs them; from core_v0.17 add --megatron-fsdp-main-grads-dtype "
                   "fp32 (its default 'auto' keeps bf16 gradients: less memory and traffic than planned).")


def uses_fsdp(request: FlagRequest) -> bool:
    """Megatron-FSDP or torch FSDP2 (both refuse CUDA_DEVICE_MAX_CONNECTIONS=1)."""
    return request.plan.zero >= 2


def data_parallel_flags(request: FlagRequest) -> tuple[list[str], list[str], list[str]]:
    """(flags, failures, notes) for the plan's ZeRO stage, dp_replicate and reshard_after_forward."""
    p = request.plan
    replicas = [f"--num-distributed-optimizer-instances {p.dp_replicate}"] if p.dp_replicate > 1 else []
    if p.zero == 0:
        return [], [], []
    if p.zero == 1:
        return ["--use-distributed-optimizer", *replicas], [], []
    if p.zero == 3 and not p.reshard_after_forward:
        return _torch_fsdp2(request)
    strategy = "optim_grads" if p.zero == 2 else "optim_grads_params"
    flags = ["--use-megatron-fsdp", f"--data-parallel-sharding-strategy {strategy}", *replicas,
             "--ckpt-format fsdp_dtensor"]
    notes = ["Megatron-FSDP asserts CUDA_DEVICE_MAX_CONNECTIONS is unset or > 1, so it is not exported.",
             FSDP_GRADS_NOTE]
    return flags, [], notes


def _torch_fsdp2(request: FlagRequest) -> tuple[list[str], list[str], list[str]]:
    p, m = request.plan, request.model
    failures = []
    if p.pp > 1:
        failures.append(
            f"zero 3 without reshard after forward with pp {p.pp} cannot be expressed: Megatron-FSDP always "
            "re-gathers parameters in backward, and --torch-fsdp2-no-reshard-after-forward needs "
            "--use-torch-fsdp2, which Megatron refuses with pipeline parallelism; use zero 2 "
            "(Megatron-FSDP optim_grads: parameters stay gathered, as the Llama 3 paper's FSDP without "
            "resharding), reshard_after_forward true (optim_grads_params) or pp 1")
    if p.ep > 1:
        # arguments.py at d98e8a6 lines 1036-1037 (and core_v0.16.0): "--use-torch-fsdp2 is not
        # supported with expert parallelism".
        failures.append(
            f"zero 3 without reshard after forward with ep {p.ep} cannot be expressed: "
            "--torch-fsdp2-no-reshard-after-forward needs --use-torch-fsdp2, which Megatron refuses with expert "
            "parallelism; use zero 2 (Megatron-FSDP optim_grads: parameters stay gathered), reshard_after_forward "
            "true (optim_grads_params) or ep 1")
    if p.dp_replicate > 1:
        failures.append(
            f"dp_replicate {p.dp_replicate} with zero 3 and no reshard after forward cannot be expressed: "
            "Megatron's torch FSDP2 path has no HSDP setting; use dp_replicate 1 or reshard_after_forward true")
    if m.tie_word_embeddings:
        failures.append("--use-torch-fsdp2 requires --untie-embeddings-and-output-weights, but "
                        f"{m.name} ties its embeddings")
    flags = ["--use-torch-fsdp2", "--torch-fsdp2-no-reshard-after-forward", "--no-gradient-accumulation-fusion",
             "--ckpt-format torch_dist", "--untie-embeddings-and-output-weights"]
    return (flags if not failures else []), failures, []
