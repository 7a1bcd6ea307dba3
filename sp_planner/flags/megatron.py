"""Megatron-LM command-line flags for a plan (shared reference framework_flags.md, section 1).

Ulysses and Ring map onto Megatron's context parallelism (CP = ulysses * ring) through Transformer
Engine's --cp-comm-type: a2a (Ulysses), p2p (Ring), all_gather (the ring axis with cp_comm
allgather) or a2a+p2p (USP, hierarchical: a2a inner). ZeRO, HSDP and reshard: megatron_fsdp;
experts: megatron_moe. The model's dropout is always stated (Megatron's default is 0.1), and its
untied embeddings (Megatron ties them by default).
"""

from __future__ import annotations

import textwrap

from sp_planner.recompute import RECOMPUTE_MODULES
from sp_planner.flags.flash_head_dim import fa2_head_dim
from sp_planner.flags.base import (
    FlagGroup,
    FlagRequest,
    FrameworkFlags,
    dropout_flags,
    kv_heads_per_tp_rank,
    megatron_tp_head_failures,
    megatron_zero_failure,
    refusal,
    plural,
    supported,
)
from sp_planner.flags.attention_mask import mask_groups, megatron_non_causal_failures
from sp_planner.flags.kernel_choice import megatron_backend_flags
from sp_planner.flags.stages import pipeline_comment, pipeline_flags, pipeline_notes, precision_flags, precision_notes
from sp_planner.flags.megatron_fsdp import data_parallel_flags, uses_fsdp
from sp_planner.flags.dsa import dsa_groups, dsa_notes
from sp_planner.flags.megatron_moe import expert_bias_failures, moe_groups, router_failures
from sp_planner.flags.softmax import softmax_notes, softmax_shape_flags
from sp_planner.flags.positions import position_failures, position_note
from sp_planner.specs.model import ModelSpec


def bash_array(name: str, groups: list[FlagGroup]) -> str:
    """A bash array of flags, one per line, each group under a comment; use it as "${NAME[@]}"."""
    lines = [f"{name}=("]
    seen: set[str] = set()
    for comment, group_flags in groups:
        flags = [flag for flag in group_flags if flag not in seen]  # a flag two groups need, once
        seen.update(flags)
        if flags:
            # Comments wrapped to the 80 columns of a terminal (a flag line is what it is).
            lines.extend(textwrap.wrap(comment, width=80, initial_indent="    # ", subsequent_indent="    #   ",
                                       break_on_hyphens=False, break_long_words=False))
            lines.extend(f"    {flag}" for flag in flags)
    lines.append(")")
    return "\n".join(lines)


def cp_description(request: FlagRequest) -> str:
    p = request.plan
    return (
        f"{request.world_size} GPUs = tp {p.tp} x cp {p.cp} (ulysses {p.ulysses} x ring {p.ring}) "
        f"x pp {p.pp} x dp {p.dp}"
    )


def common_failures(request: FlagRequest, name: str) -> list[str]:
    """Rules a Megatron-based framework without Megatron-FSDP (MindSpeed) checks, CP algorithm aside."""
    failures = megatron_tp_head_failures(request.model, request.plan.tp)
    if request.model.moe is not None and request.model.linear_bias and request.plan.etp > 1:
        failures.append(f"etp {request.plan.etp}: Megatron supports biased experts only with "
                        "--expert-tensor-parallel-size 1 (transformer_config.py)")
    zero = megatron_zero_failure(request.plan, name)
    if request.plan.dp_replicate > 1:
        failures.append(f"dp_replicate {request.plan.dp_replicate} cannot be expressed: {name} emits no HSDP "
                        "(distributed optimizer instances); use dp_replicate 1")
    return failures + ([zero] if zero else [])


def common_groups(request: FlagRequest, cp_flags: list[str], dp_flags: list[str] | None = None, *,
                  mindspeed: bool = False) -> list[FlagGroup]:
    """Flag groups shared by Megatron-LM and MindSpeed; cp_flags choose the CP algorithm, dp_flags
    (default: ZeRO-1 as the distributed optimizer) the data-parallel sharding; `mindspeed` picks
    MindSpeed's spellings (flags/stages.py)."""
    p, m, w = request.plan, request.model, request.workload
    parallel = [f"--tensor-model-parallel-size {p.tp}"]
    # TP-SP shards LayerNorm/dropout activations over TP; with TP=1 Megatron drops it (validate_args).
    if p.tp > 1:
        parallel.append("--sequence-parallel")
    parallel += [f"--pipeline-model-parallel-size {p.pp}", *pipeline_flags(request, vpp_as_layers=mindspeed),
                 f"--context-parallel-size {p.cp}", *cp_flags]
    shape = [f"--num-layers {m.num_layers}", f"--num-attention-heads {m.num_heads}"]
    if m.num_kv_heads < m.num_heads:
        shape += ["--group-query-attention", f"--num-query-groups {m.num_kv_heads}"]
    if m.mla is not None:
        # MLA (arguments.py; exclusive with --group-query-attention). --kv-lora-rank's CLI default is
        # 32, not the dataclass's 512, so every dimension is passed (reference 1.2).
        a = m.mla
        shape += ["--multi-latent-attention", *([f"--q-lora-rank {a.q_lora_rank}"] if a.q_lora_rank else []),
                  f"--kv-lora-rank {a.kv_lora_rank}", f"--qk-head-dim {a.qk_nope_head_dim}",
                  f"--qk-pos-emb-head-dim {a.qk_rope_head_dim}", f"--v-head-dim {a.v_head_dim}"]
    shape += softmax_shape_flags(request)  # gpt-oss's sinks: TE's kernel and CP choice depend on it
    # Batch: GBS % (MBS*DP) == 0 and DP excludes CP (megatron/training/config/training_config.py).
    batch = [
        f"--seq-length {w.seq_len}",
        f"--max-position-embeddings {w.seq_len}",  # --seq-length must not exceed it (arguments.py:3305)
        f"--micro-batch-size {p.micro_batch}",
        f"--global-batch-size {w.global_batch}",
    ]
    memory = []
    if dp_flags is not None:
        memory += dp_flags
    elif p.zero == 1:
        memory.append("--use-distributed-optimizer")  # ZeRO-1 over dp x cp (arguments.py:3156)
    # Recompute (TransformerConfig): selective forbids method/num-layers; full requires both.
    if p.recompute == "selective":
        memory.append("--recompute-granularity selective")
    elif p.recompute in RECOMPUTE_MODULES:
        # Named modules, not core_attn: MLA's up-projections (transformer_config.py at d98e8a64 lines
        # 1940-1941, 1969-1973; multi_latent_attention.py lines 171-174; cost.mla_recompute), the
        # MoE activation and the standalone norms (lines 560-581, 1964-1967; cost.module_recompute).
        modules = " ".join(RECOMPUTE_MODULES[p.recompute])
        memory += ["--recompute-granularity selective", f"--recompute-modules {modules}"]
    elif p.recompute == "full":
        memory += ["--recompute-granularity full", "--recompute-method uniform", "--recompute-num-layers 1"]
    if p.adam_moments_bf16:
        # TE FusedAdam's moments in bf16 (OptimizerConfig exp_avg_dtype, exp_avg_sq_dtype; cost.states).
        memory += ["--use-precision-aware-optimizer", "--exp-avg-dtype bf16", "--exp-avg-sq-dtype bf16"]
    if p.cpu_offload_layers:
        # Activation CPU offloading of the first N layers (arguments.py sets cpu_offloading when
        # N > 0; activations only, TransformerConfig's default; cost.offload).
        memory.append(f"--cpu-offloading-num-layers {p.cpu_offload_layers}")
    memory += precision_flags(request, explicit_te=mindspeed, fp8_params=not mindspeed)
    micro = plural(request.num_micro_batches, "micro-batch")
    return [
        (f"parallelism: {cp_description(request)}" + (f"; {pipeline_comment(request)}" if p.pp > 1 else ""),
         parallel),
        ("model shape the head rules depend on", shape),
        ("dropout the plan's time and memory assume (Megatron's default is 0.1 each)", dropout_flags(m)),
        ("untied input and output embeddings, as the plan counts them (Megatron ties them by default)",
         untie_flags(m)),
        *moe_groups(request, mindspeed=mindspeed),
        *mtp_groups(m),
        (f"sequence and batch: dp {p.dp}, {micro} per step", batch),
        *mask_groups(request, mindspeed=mindspeed),
        ("memory and precision", memory),
        ("communication overlap the plan's time assumes", overlap_flags(p)),
    ]


def mtp_groups(model: ModelSpec) -> list[FlagGroup]:
    """The multi-token prediction depths the plan trains (ModelSpec.mtp_layers, cost.mtp), none
    without: Megatron's default trains none (--mtp-num-layers None, arguments.py at d98e8a6)."""
    if not model.mtp_layers:
        return []
    return [("multi-token prediction depths the plan trains, on the last stage (Megatron's default: none)",
             [f"--mtp-num-layers {model.mtp_layers}"])]


def untie_flags(model: ModelSpec) -> list[str]:
    """--untie-embeddings-and-output-weights for a model with its own output layer
    (ModelSpec.tie_word_embeddings False), nothing for a tied one: Megatron-LM ties them unless told
    (a store_true flag, arguments.py at d98e8a64dd lines 2460-2461, core_v0.12.1 line 1307;
    gpt_builders.py line 96 passes share_embeddings_and_output_weights=not it to GPTModel), and the
    plan prices tying (one table in the parameters and states, ModelSpec; the gradient sums,
    cost.embedding_grad; the all-reduce between pipeline ends, cost.tied_embedding), so an untied
    model run as emitted would otherwise train a different, tied model."""
    return [] if model.tie_word_embeddings else ["--untie-embeddings-and-output-weights"]


def overlap_flags(plan) -> list[str]:
    """The overlap cost.overlap.MEGATRON_OVERLAP models: gradient buckets reduced during backward;
    with the distributed optimizer, the parameter gather behind the next forward
    (--overlap-param-gather needs it and --overlap-grad-reduce; arguments.py, framework_flags.md 1)."""
    flags = ["--overlap-grad-reduce"]
    if plan.zero == 1:
        flags.append("--overlap-param-gather")
    return flags


def env_lines(request: FlagRequest) -> list[str]:
    # Asserted with TP>1 or CP>1 on pre-Blackwell GPUs (megatron/training/arguments.py ~1453-1478),
    # except under FSDP, which asserts the opposite (megatron_fsdp).
    if (request.plan.tp > 1 or request.plan.cp > 1) and not uses_fsdp(request):
        return ["export CUDA_DEVICE_MAX_CONNECTIONS=1"]
    return []


# PyTorch's caching allocator maps growable segments instead of fixed blocks, which the memory
# model's small fragmentation reserve assumes (cost.runtime_memory): Megatron-Bridge's performance
# guide recommends it against "segmentation penalties" (docs/performance-guide.md, memory section,
# at 067f987df), its memory-tuning skill measured a Llama 3 70B run on 80 GB H100s go out of memory
# at a 58.8 GB peak without it and pass with it (skills/nemo-mbridge-perf-memory-tuning/SKILL.md
# lines 150-154, 185-188), and Megatron-Core's MoE README exports it "to prevent memory
# fragmentation" (megatron/core/transformer/moe/README.md). Megatron refuses it only with CUDA
# graphs (unless NCCL_GRAPH_REGISTER=0) and with NCCL user buffers before torch 2.11, neither of
# which sp-plan emits.
EXPANDABLE_SEGMENTS = "export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"


def common_notes(request: FlagRequest, var: str, script: str = "pretrain_gpt.py", *,
                 mindspeed: bool = False) -> list[str]:
    p = request.plan
    notes = [
        *pipeline_notes(request),
        *precision_notes(request, fp8_params=not mindspeed),
        f'Pass "${{{var}[@]}}" to {script} along with the model\'s architecture, tokenizer and '
        "data flags (hidden and FFN sizes, normalization, position embedding), which are not "
        "emitted here.",
        position_note(request, mindspeed=mindspeed),
    ]
    window = request.model.window
    if window is not None and window.window_tokens < request.workload.seq_len:
        pattern = f"{window.local_layers} local : {window.global_layers} global layers"
        if window.kind == "chunked":
            notes.append(f"The model's chunked local attention ({window.window_tokens}-token chunks, {pattern}) "
                         "is architecture, timed as independent causal chunks: set it with the other "
                         "architecture flags if your Megatron build has it.")
        else:
            notes.append(f"The model's sliding window ({window.window_tokens} tokens, {pattern}) is architecture: "
                         "set it with the other architecture flags; Transformer Engine runs it with context "
                         "parallelism only as a2a or all_gather.")
    if p.ring > 1 and p.ring_layout == "contiguous":
        notes.append(
            "CP shards are always load-balanced (2*cp chunks, zigzag) in Megatron's data path; the "
            "plan's contiguous ring layout cannot be selected, so attention work per rank is more even "
            "than planned."
        )
    if p.tp > request.model.num_kv_heads:
        notes.append(
            f"tp {p.tp} > num_query_groups {request.model.num_kv_heads}: Megatron replicates each KV head "
            f"over {p.tp // request.model.num_kv_heads} TP ranks."
        )
    return notes


def _cp_flags(request: FlagRequest) -> tuple[list[str], list[str], list[str]]:
    """(flags, failures, notes) for Megatron's --cp-comm-type (Transformer Engine CP backend)."""
    p, m, s = request.plan, request.model, request.workload.seq_len
    if p.cp == 1:
        return [], [], []
    failures, notes = [], []
    if request.te_unfused_attention:
        # get_attention_backend at d0067d0: "Disabling UnfusedDotProductAttention as it does not
        # support context parallelism" leaves no backend (flags.flash_head_dim).
        failures.append(f"cp {p.cp} cannot run: Transformer Engine runs {m.name}'s attention (head dim "
                        f"{fa2_head_dim(m)}) unfused on this GPU, and its unfused attention takes no context "
                        "parallelism (get_attention_backend at d0067d0); use ulysses 1 ring 1")
    # Load balancing: seq % (2*CP) == 0 when CP > 1 (megatron/training/arguments.py:1335-1338).
    if s % (2 * p.cp) != 0:
        failures.append(f"seq_len {s} is not divisible by 2*cp = 2*{p.cp} (Megatron CP load balancing)")
    if p.ulysses > 1:
        # a2a splits the heads a TP rank holds over the a2a group (all of CP for a2a, the first
        # hierarchical level for a2a+p2p): (H/TP) % U == 0 and (G/TP) % U == 0
        # (transformer_engine/.../context_parallel.py, a2a head checks; reference section 1.4).
        q_heads, kv_heads = m.num_heads // p.tp, kv_heads_per_tp_rank(m, p.tp)
        if q_heads % p.ulysses != 0 or kv_heads % p.ulysses != 0:
            failures.append(
                f"Transformer Engine's a2a needs the {q_heads} query heads and {kv_heads} KV heads per "
                f"TP rank to divide by ulysses {p.ulysses} (no KV-head replication in a2a); lower "
                "ulysses or tp, or move the degree to ring (p2p)"
            )
    if p.ring > 1 and p.allgather:
        # TE's all_gather is a single-level CP method (values p2p, all_gather, a2a, a2a+p2p;
        # context_parallel.py attn_forward_func_with_cp raises on others).
        if p.ulysses > 1:
            failures.append(
                f"ulysses {p.ulysses} x all-gather ring {p.ring} cannot be expressed: Transformer Engine has no "
                "hierarchical a2a + all_gather (--cp-comm-type takes p2p, all_gather, a2a or a2a+p2p); use "
                "ulysses 1 for all-gather CP, or cp_comm p2p")
        notes.append("--cp-comm-type all_gather needs Transformer Engine >= 1.10 (Megatron passes cp_comm_type "
                     "from TE 1.10, megatron/core/extensions/transformer_engine.py); the help text's "
                     "'allgather' spelling is not accepted by TE.")
        return ["--cp-comm-type all_gather"], failures, notes
    if p.ulysses > 1 and p.ring > 1:
        # Hierarchical CP: first size is the a2a (inner, adjacent CP ranks) level, the second the p2p
        # level; the product must equal CP (arguments.py:580-585; parallel_state.py
        # create_hierarchical_groups).
        flags = ["--cp-comm-type a2a+p2p", f"--hierarchical-context-parallel-sizes {p.ulysses} {p.ring}"]
        notes.append("a2a+p2p needs Transformer Engine >= 1.12 and does not support the packed thd "
                     "format.")
    elif p.ulysses > 1:
        flags = ["--cp-comm-type a2a"]
        notes.append("--cp-comm-type a2a needs Transformer Engine >= 1.10.")
    else:
        flags = ["--cp-comm-type p2p"]
    return flags, failures, notes


def render(request: FlagRequest) -> FrameworkFlags:
    cp_flags, cp_failures, cp_notes = _cp_flags(request)
    dp_flags, dp_failures, dp_notes = data_parallel_flags(request)
    refused = refusal("megatron", request, lambda: megatron_tp_head_failures(request.model, request.plan.tp)
                      + dp_failures + cp_failures + position_failures(request) + expert_bias_failures(request)
                      + router_failures(request) + megatron_non_causal_failures(request))
    if refused is not None:
        return refused
    # The kernel sp-plan --attention-kernel timed, where Megatron-LM has a backend for it (none by
    # default: auto, Transformer Engine's choice, is the kernel the plan was timed with).
    kernel: FlagGroup = ("attention kernel the plan was timed with", megatron_backend_flags(request.attention_kernel))
    args = bash_array("MEGATRON_ARGS", [*common_groups(request, cp_flags, dp_flags), kernel,
                                        *dsa_groups(request.model)])
    text = "\n".join([*env_lines(request), EXPANDABLE_SEGMENTS, args])
    return supported("megatron", text, [*common_notes(request, "MEGATRON_ARGS"), *cp_notes, *dp_notes,
                                        *softmax_notes(request), *dsa_notes(request.model)])
