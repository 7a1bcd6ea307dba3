"""The caveats torchtitan's flags print beside a plan, shared by the 0.2.x TOML
(flags/torchtitan_v02.py) and the 0.3.x command line (flags/torchtitan.py): what the plan prices
that the run will do differently."""

from __future__ import annotations

from sp_planner.flags.base import FlagRequest
from sp_planner.flags.torchtitan_router import router_notes


def fsdp_enabled(request: FlagRequest) -> bool:
    """FSDP runs over dp_shard x cp (ParallelDims.fsdp_enabled), so whenever cp > 1."""
    p = request.plan
    return p.ring > 1 or (p.zero > 0 and p.dp_shard > 1)


def expert_notes(request: FlagRequest) -> list[str]:
    """MoE plans in float8/MX: the converters swap nn.Linear only, so the routed experts run bf16,
    as the plan prices them (cost.tp_gathers); the grouped-GEMM converter is rowwise float8 only
    and refuses pp and cp (v0.2.2 components/quantization/float8.py lines 176-239), and is not
    emitted."""
    p = request.plan
    if request.model.moe is None or p.precision == "bf16":
        return []
    return ["The float8/MX linear converters swap nn.Linear only: the routed experts (GroupedExperts) run in bf16, as "
            "the plan prices them; torchtitan's quantize.grouped_mm.float8 converter (rowwise scaling, no pp or cp) "
            "is not emitted."]


def shared_notes(request: FlagRequest) -> list[str]:
    """Caveats of torchtitan 0.2.x and 0.3.x alike."""
    p = request.plan
    notes: list[str] = []
    if p.zero == 1 and fsdp_enabled(request):
        notes.append(
            "torchtitan has no ZeRO-1: FSDP2 also shards gradients, so fsdp_reshard_after_forward = "
            '"never" (ZeRO-2) is used; it needs no more memory than the plan.'
        )
    if p.zero == 0 and p.ring > 1:
        notes.append(
            "torchtitan always shards weights over the CP ranks (FSDP mesh = dp_shard x cp), so with "
            "zero 0 parameters and gradients are sharded over cp and FSDP all-gathers are added to the "
            "plan's traffic."
        )
    if p.ring > 1 and p.ring_layout == "contiguous":
        notes.append(
            "torchtitan load-balances causal CP with the head-tail (zigzag) layout; the plan's contiguous "
            "ring layout cannot be selected."
        )
    if p.recompute == "selective":
        notes.append(
            "torchtitan's selective mode is per-op (saves matmul and attention outputs, recomputes the "
            "rest), not Megatron's attention-core recompute; activation memory differs from the plan's "
            "estimate."
        )
    if p.ring > 1 and p.allgather:
        notes.append(
            "PyTorch context parallel's allgather rotater gathers K/V once in forward, but its backward "
            "passes the fp32 dK/dV round the ring by all-to-all every step instead of one reduce-scatter "
            "(torch _context_parallel/_attention.py); the backward bytes differ from the plan's. On "
            "torchtitan 0.3.0, context parallelism over FlexAttention all-gathers K/V (flex_cp_allgather)."
        )
    m = request.model
    if m.hidden_dropout > 0 or m.attention_dropout > 0:
        # No torchtitan model has dropout, nor a config key for it (torchtitan/models at v0.2.2 and at
        # b5bcd76c: only flux's data pipeline drops prompts).
        notes.append(f"torchtitan's models have no dropout: the plan counts hidden dropout {m.hidden_dropout:g} and "
                     f"attention dropout {m.attention_dropout:g}, whose passes and masks this run will not have.")
    if m.window is not None and m.window.kind == "sliding":
        # torchtitan's llama3 and qwen3 models attend causally over the whole sequence (v0.2.2); only its
        # gpt_oss model applies models/attention.py get_sliding_window_mask_mod (FlexAttention). The
        # window is the user's own model's to apply; without it every layer runs the full causal square.
        cap = (f" and caps its logits at {m.window.logit_softcapping:g}" if m.window.logit_softcapping else "")
        notes.append(f"The plan times {m.name}'s {m.window.window_tokens:,}-token sliding window on "
                     f"{m.num_local_layers} of {m.num_layers} layers{cap}; torchtitan's llama3 and qwen3 models "
                     "attend over the whole causal sequence, so the model you merge these sections into must "
                     "apply them (FlexAttention's get_sliding_window_mask_mod, as torchtitan's gpt_oss does), or "
                     "its attention costs more than planned.")
    if p.vpp > 1:
        notes.append("Interleaved1F1B is planned with the interleaved schedule's bubble (pp - 1)/vpp; "
                     "torchtitan's ZBVZeroBubble and DualPipeV schedules are not modelled.")
    return notes + router_notes(request)
