"""yunchang (USP) Python snippet for a plan (shared reference framework_flags.md section 5 and
usp_yunchang_notes.md section 3; yunchang 0.6.4).

yunchang is an attention library, not a trainer: set_seq_parallel_pg (yunchang/globals.py) builds
Ulysses and Ring groups from contiguous blocks of ulysses*ring global ranks, with data parallelism as
the only other axis. It has no tensor or pipeline axis, so plans with tp > 1 or pp > 1 cannot be
expressed with it alone (its groups would cut across the TP/PP ranks).
"""

from __future__ import annotations

from sp_planner.cost.window import local_window
from sp_planner.flags.experts import yunchang_failures
from sp_planner.flags.kernel_choice import yunchang_attn_type
from sp_planner.flags.base import (
    FlagRequest,
    FrameworkFlags,
    describe_degrees,
    refusal,
    supported,
)


def ring_impl(request: FlagRequest) -> str:
    """zigzag for a load-balanced causal ring, basic otherwise (yunchang/hybrid/utils.py keys)."""
    p = request.plan
    return "zigzag" if (p.ring > 1 and p.ring_layout == "zigzag") else "basic"


def _fsdp_words(p) -> str:
    replicas = f", HSDP with {p.dp_replicate} replicas" if p.dp_replicate > 1 else ""
    return replicas + ("" if p.reshard_after_forward else ", no reshard after forward")


def _failures(request: FlagRequest) -> list[str]:
    p, m, s = request.plan, request.model, request.workload.seq_len
    failures = []
    if p.cp == 1:
        failures.append(
            "the plan has no sequence parallelism (ulysses = ring = 1); yunchang only provides SP attention"
        )
    if p.tp > 1 or p.pp > 1:
        failures.append(
            f"{describe_degrees(p, ('tp', 'pp'))} cannot be expressed: yunchang has no tensor or pipeline "
            "axis; set_seq_parallel_pg makes each block of ulysses*ring consecutive ranks one SP group "
            "with data parallelism outside it (yunchang/globals.py), so its groups would mix TP/PP "
            "ranks; use Megatron-LM or MindSpeed context parallelism instead, which place Ulysses and "
            "Ring inside their TP x CP layout"
        )
    if p.ulysses > 1:
        # The all-to-all reshapes heads into (U, heads/U) for Q and for K/V separately, with no KV-head
        # replication (yunchang/comm/all_to_all.py): H % U == 0 and G % U == 0.
        if m.num_heads % p.ulysses != 0 or m.num_kv_heads % p.ulysses != 0:
            failures.append(
                f"num_heads {m.num_heads} and num_kv_heads {m.num_kv_heads} must both divide by ulysses "
                f"{p.ulysses} (yunchang does not replicate KV heads)"
            )
    if p.ring > 1 and p.allgather:
        failures.append(
            f"all-gather CP on ring {p.ring} cannot be expressed: yunchang's ring_impl_type values (basic, "
            "zigzag, strip, basic_pytorch, basic_flashinfer, basic_npu; yunchang/hybrid/utils.py) all pass "
            "K/V between neighbours; it has no K/V all-gather attention; use cp_comm p2p"
        )
    if m.position_embedding == "alibi":
        # Every ring_impl_type's autograd function asserts alibi_slopes is None
        # (yunchang/ring/ring_flash_attn.py line 172, zigzag_ring_flash_attn.py line 207 at 56118e0).
        failures.append("ALiBi cannot be expressed: yunchang's ring attention functions assert alibi_slopes is None "
                        "(yunchang/ring/ring_flash_attn.py), also at ring 1; use megatron or mindspeed")
    window = m.window
    if window is not None and window.kind == "chunked" and local_window(m, s) is not None:
        failures.append(f"chunked local attention ({window.window_tokens}-token chunks) cannot be expressed: "
                        "LongContextAttention takes flash-attn's sliding window_size only, no block-diagonal "
                        "chunk mask; use megatron")
    impl = ring_impl(request)
    if impl == "zigzag":
        # zigzag asserts causal=True (yunchang/ring/zigzag_ring_flash_attn.py).
        if not request.workload.causal:
            failures.append(
                "the zigzag ring layout needs a causal workload; use ring_layout contiguous (basic)"
            )
        # zigzag_extract_local: chunk(2*R), then chunk(U): S % (2*R*U) == 0
        # (yunchang/comm/extract_local.py).
        divisor = 2 * p.ring * p.ulysses
    else:
        divisor = p.cp  # basic_extract_local: chunk(ulysses*ring)
    if s % divisor != 0:
        failures.append(f"seq_len {s} is not divisible by {divisor} ({impl} extraction in yunchang)")
    return failures


def _shard_function(request: FlagRequest) -> list[str]:
    """A sharding helper for any (batch, seq, ...) tensor. yunchang's own EXTRACT_FUNC_DICT functions
    accept only 4-D/5-D q/k/v-shaped tensors (yunchang/comm/extract_local.py), not token ids."""
    p, s = request.plan, request.workload.seq_len
    shape = f"(batch, {s}, ...) -> (batch, {s // p.cp}, ...)"
    if ring_impl(request) == "basic":
        return [
            "def shard_sequence(tensor, sp_rank):",
            f"    # {shape},",
            "    # as yunchang's basic_extract_local.",
            f"    return tensor.chunk({p.cp}, dim=1)[sp_rank]",
        ]
    chunks = 2 * p.ring
    return [
        "def shard_sequence(tensor, sp_rank):",
        f"    # {shape}, as yunchang's",
        f"    # zigzag_extract_local: ring rank r keeps chunks r and {chunks - 1}-r of {chunks},",
        f"    # then ulysses rank u keeps slice u of {p.ulysses}.",
        f"    ring_rank, ulysses_rank = divmod(sp_rank, {p.ulysses})",
        f"    chunks = tensor.chunk({chunks}, dim=1)",
        f"    pair = torch.cat([chunks[ring_rank], chunks[{chunks - 1} - ring_rank]], dim=1)",
        f"    return pair.chunk({p.ulysses}, dim=1)[ulysses_rank]",
    ]


def _dropout_arg(request: FlagRequest) -> str:
    """The model's attention dropout as LongContextAttention's dropout_p, whose default is 0.0
    (yunchang/hybrid/attn_layer.py forward at 0.6.4, 8aa888f); nothing to pass at 0."""
    p = request.model.attention_dropout
    return f", dropout_p={p:g}" if p > 0 else ""


def _attention_calls(request: FlagRequest) -> list[str]:
    """The attention call of each kind of layer. A local layer's query attends to the window_tokens
    keys up to itself (cost.window), flash-attn's window_size (W - 1, 0); Gemma 2's logit cap is
    flash-attn's softcap on every layer. LongContextAttention.forward passes both to the kernel
    (yunchang/hybrid/attn_layer.py at 56118e0; the ring is refused over windows by the plan rules)."""
    m, w = request.model, request.workload
    causal = "True" if w.causal else "False"
    window = m.window
    softcap = f", softcap={window.logit_softcapping:g}" if window and window.logit_softcapping else ""
    call = f"out = attn(q, k, v{_dropout_arg(request)}, causal={causal}{softcap}"
    tokens = local_window(m, w.seq_len)
    if window is None or tokens is None:
        return [call + ")"]
    local_call = f"{call}, window_size=({tokens - 1}, 0))"
    if m.num_local_layers == m.num_layers:
        return [f"# Every layer is sliding-window: the {tokens} keys up to the query.", local_call]
    return [f"# {window.local_layers} sliding-window then {window.global_layers} global layers from the first "
            f"({m.num_local_layers} of {m.num_layers}).",
            f"# Sliding-window layers: the {tokens} keys up to the query.", local_call,
            "# Global layers: full attention.", call + ")"]


def snippet(request: FlagRequest) -> str:
    p, w = request.plan, request.workload
    # flash-attn 2 unless the plan was timed with FA3 and yunchang's FA3 type computes the model's
    # attention (flags.kernel_choice.yunchang_attn_type).
    attn_type = yunchang_attn_type(request.attention_kernel, request.model, w)
    return "\n".join([
        "import torch",
        "import torch.distributed as dist",
        "from yunchang import LongContextAttention, set_seq_parallel_pg",
        "from yunchang.kernels import AttnType",
        "",
        f"# ulysses {p.ulysses} x ring {p.ring} = {p.cp}-way sequence parallelism, dp {p.dp}, "
        f"{request.world_size} ranks.",
        "# Ulysses groups are consecutive ranks, ring groups are strided by ulysses",
        "# (use_ulysses_low=True).",
        "rank, world_size = dist.get_rank(), dist.get_world_size()",
        f"assert world_size == {request.world_size}",
        f"set_seq_parallel_pg({p.ulysses}, {p.ring}, rank, world_size, use_ulysses_low=True)",
        f'attn = LongContextAttention(ring_impl_type="{ring_impl(request)}", attn_type=AttnType.{attn_type})',
        "",
        "# Before the model, shard inputs, labels and RoPE position ids along the",
        f"# sequence (dim 1); each data-parallel replica is a block of {p.cp} consecutive",
        "# ranks.",
        *_shard_function(request),
        "",
        f"sp_rank = rank % {p.cp}",
        "# likewise labels and position_ids",
        "input_ids = shard_sequence(input_ids, sp_rank)",
        "",
        f"# In each attention layer q, k and v are (batch, {w.seq_len // p.cp}, heads, head_dim)",
        "# on every rank.",
        *_attention_calls(request),
    ])


def _attn_type_note(attn_type: str) -> str:
    if attn_type == "FA3":
        # HAS_FLASH_ATTN_HOPPER: flash_attn_interface imports (yunchang/kernels/attention.py at 0.6.4).
        return ("AttnType.FA3 needs flash-attn 3 (the Hopper build's flash_attn_interface); the torch_* attention "
                "types are forward only.")
    return "AttnType.FA needs flash-attn >= 2.6 for the backward pass; the torch_* attention types are forward only."


def render(request: FlagRequest) -> FrameworkFlags:
    refused = refusal("yunchang", request, lambda: _failures(request) + yunchang_failures(request))
    if refused is not None:
        return refused
    p = request.plan
    notes = [
        f"yunchang builds only the Ulysses and Ring groups: data parallelism and ZeRO (plan: zero "
        f"{p.zero} over the dp x sp ranks{_fsdp_words(p)}) and recompute ({p.recompute}) come from "
        "your training loop (e.g. DeepSpeed or FSDP). The plan's time assumes DeepSpeed's overlap: "
        'gradient reduction during the backward ("overlap_comm": true) for ZeRO >= 1, none for '
        "ZeRO-0, and the ZeRO-1/2 parameter gather exposed after the step.",
        _attn_type_note(yunchang_attn_type(request.attention_kernel, request.model, request.workload)),
        "Shard every sequence tensor with shard_sequence so that tokens sit where the ring_impl_type "
        "expects them.",
    ]
    if request.model.attention_dropout > 0:
        notes.append(f"dropout_p={request.model.attention_dropout:g} is the model's attention dropout, "
                     "for training: pass 0.0 in evaluation.")
    if p.precision != "bf16":
        notes.append(f"The plan's {p.precision} GEMMs come from your training framework (e.g. Transformer Engine "
                     "or torchao float8); yunchang's attention stays bf16, as planned.")
    return supported("yunchang", snippet(request), notes)
