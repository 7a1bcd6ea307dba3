"""DeepSpeed ds_config for a plan (shared reference framework_flags.md, section 3).

DeepSpeed's sequence parallelism is Ulysses only: DistributedAttention (deepspeed/sequence/layer.py)
and ALST (deepspeed/runtime/sequence_parallel/ulysses_sp.py) all-to-all heads; neither has a ring
(P2P) attention, so ring > 1 (Ring Attention or USP) cannot be expressed.
"""

from __future__ import annotations

import json

from sp_planner.flags.attention_mask import megatron_deepspeed_mask_note
from sp_planner.flags.experts import deepspeed_failures
from sp_planner.flags.base import (
    FlagRequest,
    FrameworkFlags,
    describe_degrees,
    dropout_flags,
    refusal,
    supported,
)


# DeepSpeed trains in bf16 only: sp-plan refuses --precision fp8/mxfp8 with it before searching.
NO_FP8 = ("DeepSpeed has no FP8 training recipe (deepspeed/runtime has no FP8 path; FP8 exists only as quantization "
          "utilities, deepspeed/ops/fp_quantizer); train in FP8 with Megatron-LM (Transformer Engine) or torchtitan "
          "(float8), or use precision bf16")


def precision_failure(precision: str) -> str | None:
    """Why DeepSpeed cannot train at `precision` (a plan's, or sp-plan's --precision other than auto),
    None for bf16."""
    return None if precision == "bf16" else f"precision {precision} cannot be expressed: {NO_FP8}"


def _failures(request: FlagRequest) -> list[str]:
    p, m, s = request.plan, request.model, request.workload.seq_len
    failures = []
    if p.ring > 1:
        failures.append(
            f"ring {p.ring} cannot be expressed: DeepSpeed's sequence parallelism is Ulysses all-to-all "
            "only (deepspeed/sequence/layer.py, runtime/sequence_parallel/ulysses_sp.py) with no "
            "ring/P2P attention, so it cannot run Ring Attention or USP (ulysses x ring)"
            + (", nor all-gather CP (no K/V all-gather attention either)" if p.allgather else "")
        )
    if p.dp_replicate > 1:
        failures.append(
            f"dp_replicate {p.dp_replicate} cannot be expressed: DeepSpeed ZeRO shards over every data-parallel "
            "(x sequence-parallel) rank; its hierarchical variants (MiCS mics_shard_size, ZeRO++ "
            "zero_hpz_partition_size) change other traffic than HSDP's and are not emitted; use dp_replicate 1"
        )
    if p.tp > 1 or p.pp > 1:
        degrees = describe_degrees(p, ("tp", "pp"))
        if p.ulysses > 1:
            failures.append(
                f"{degrees} with ulysses {p.ulysses} cannot be expressed: Megatron-DeepSpeed asserts "
                "TP == 1 and PP == 1 whenever its sequence parallel size > 1 "
                "(megatron/core/parallel_state.py:144-147), and ALST/ds_config has no tensor or pipeline axis"
            )
        else:
            failures.append(
                f"{degrees} cannot be expressed in a ds_config: it has no tensor or pipeline degree "
                "(those come from Megatron-DeepSpeed's own flags, which this planner does not emit)"
            )
    if (precision := precision_failure(p.precision)) is not None:
        failures.append(precision)
    if p.ulysses > 1:
        # DistributedAttention / ALST: attn_heads % sp == 0 (layer.py; ulysses_sp.py).
        if m.num_heads % p.ulysses != 0:
            failures.append(f"num_attention_heads {m.num_heads} is not divisible by ulysses {p.ulysses}")
        # ALST: kv_heads % sp == 0 or sp % kv_heads == 0 (KV heads replicated in the latter case).
        g = m.num_kv_heads
        if not (g % p.ulysses == 0 or p.ulysses % g == 0):
            failures.append(f"num_kv_heads {g} and ulysses {p.ulysses} must divide one another (ALST)")
        # ALST's UlyssesSPDataLoaderAdapter needs the batch seqlen divisible by sp.
        if s % p.ulysses != 0:
            failures.append(f"seq_len {s} is not divisible by ulysses {p.ulysses}")
    return failures


def ds_config(request: FlagRequest) -> dict[str, object]:
    """The ds_config dict. DeepSpeed checks train_batch_size == micro * grad_acc * dp, where dp is
    the mpu's data-parallel size, else the world over sequence_parallel_size (runtime/config.py
    lines 711-724 at edaa7221). No data_parallel_size: with both sizes deepspeed.initialize builds a
    (data_parallel, sequence_parallel) mesh (deepspeed/__init__.py:203-206), and without an mpu
    ZeRO then shards over that mesh's data-parallel ranks only (utils/groups.py
    _get_sequence_data_parallel_group falls back to the data-parallel group, lines 845-851), not
    over sp x dp as planned; the mpu the notes name gives sp x dp."""
    p, w = request.plan, request.workload
    return {
        "train_batch_size": w.global_batch,
        "train_micro_batch_size_per_gpu": p.micro_batch,
        "gradient_accumulation_steps": request.num_micro_batches,
        **({"sequence_parallel_size": p.ulysses} if p.ulysses > 1 else {}),
        # ZeRO partitions over the mpu's sequence-data-parallel group, sp x dp (runtime/engine.py
        # dp_process_group=self.seq_data_parallel_group, lines 1839 and 2351).
        # overlap_comm: ZeRO's gradient reduction overlapped with the backward, as cost.overlap's
        # DEEPSPEED_OVERLAP assumes (runtime/zero/config.py; stage 3 prefetches by default).
        "zero_optimization": ({"stage": p.zero, "overlap_comm": True, **_keep_gathered(request)} if p.zero
                              else {"stage": 0}),
        "bf16": {"enabled": True},
    }


def _keep_gathered(request: FlagRequest) -> dict[str, int]:
    """ZeRO-3 keeping the gathered parameters from forward to backward (reshard_after_forward
    false): stage 3 keeps a parameter that is used again within stage3_max_reuse_distance parameters
    (runtime/zero/partitioned_param_coordinator.py __params_to_release at edaa7221) and holds up to
    stage3_max_live_parameters (both 1e9 by default, runtime/zero/config.py lines 240-248): at the
    model's parameter count, every layer's are kept until its backward."""
    p = request.plan
    if p.zero != 3 or p.reshard_after_forward:
        return {}
    count = request.model.num_params
    return {"stage3_max_live_parameters": count, "stage3_max_reuse_distance": count}


def render(request: FlagRequest) -> FrameworkFlags:
    refused = refusal("deepspeed", request, lambda: _failures(request) + deepspeed_failures(request))
    if refused is not None:
        return refused
    p, m, w = request.plan, request.model, request.workload
    notes = ["Save the JSON as ds_config.json and pass it to deepspeed.initialize(config=...)."]
    if p.ulysses > 1:
        notes += [
            "Hugging Face models (ALST, transformers >= 4.51.3): mpu = "
            "UlyssesSPAttentionHF.register_with_transformers("
            f"model_name_or_path, core_attn_implementation, sequence_parallel_size={p.ulysses}, "
            f"micro_batch_size={p.micro_batch}, seq_length={w.seq_len}, seq_length_is_variable=False), "
            "then deepspeed.initialize(config=..., mpu=mpu), as DeepSpeed's ALST tutorial does: the mpu's "
            f"groups (sequence-parallel ranks contiguous) make ZeRO shard over sp x dp = {p.ulysses * p.dp} ranks, "
            f"as planned; without it ZeRO shards over the {p.dp} data-parallel ranks only. Eager attention is "
            "rejected.",
            # Its --hidden-dropout and --attention-dropout default to 0.1 (deepspeedai/Megatron-DeepSpeed
            # megatron/arguments.py at 4efb479d, lines 768-771); the plan's values are the model's.
            f"Megatron-DeepSpeed: pass --ds-sequence-parallel-size {p.ulysses} and never "
            "--sequence-parallel (megatron/initialize.py raises RuntimeError on the combination); its mpu "
            f"carries the same groups. Pass {' '.join(dropout_flags(m))} too, the dropout the plan assumes: "
            "both default to 0.1 there. " + megatron_deepspeed_mask_note(request),
        ]
        if p.ulysses > m.num_kv_heads:
            notes.append(
                f"ulysses {p.ulysses} > num_kv_heads {m.num_kv_heads}: ALST replicates each KV head over "
                f"{p.ulysses // m.num_kv_heads} ranks."
            )
    if p.recompute == "full":
        notes.append(
            "Full recompute is switched on in the model (e.g. model.gradient_checkpointing_enable()), "
            "not in ds_config."
        )
    elif p.recompute == "selective":
        notes.append(
            "Selective (attention-only) recompute has no ds_config key; the model code must provide it, "
            "otherwise activation memory exceeds the plan."
        )
    return supported("deepspeed", json.dumps(ds_config(request), indent=2), notes)
