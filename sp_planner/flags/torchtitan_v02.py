"""torchtitan 0.2.x TOML job-config sections for a plan (shared reference framework_flags.md, section 4;
keys from torchtitan v0.2.2 torchtitan/config/job_config.py), and the rules every torchtitan
version shares (`failures`). sp-plan --framework-version 0.2.2 selects this form; 0.3.0 is
flags/torchtitan.py.

torchtitan's context parallelism is PyTorch's ring attention (torch.distributed.tensor.experimental
context_parallel): there is no Ulysses all-to-all, so plans with ulysses > 1 cannot be expressed.
"""

from __future__ import annotations

from sp_planner.cost import compiled_layers
from sp_planner.flags.base import (
    FlagRequest,
    FrameworkFlags,
    describe_degrees,
    refusal,
    supported,
)
from sp_planner.flags.experts import torchtitan_debug_items, torchtitan_failures, torchtitan_items
from sp_planner.flags.torchtitan_notes import expert_notes, fsdp_enabled, shared_notes
from sp_planner.flags.torchtitan_router import router_failures
from sp_planner.plan import PRECISIONS

# ZeRO stage -> fsdp_reshard_after_forward. FSDP2 always shards gradients (reduce-scatter), so it has
# no ZeRO-1; "never" keeps the gathered parameters from forward to backward (ZeRO-2), "always"
# re-shards them after forward (ZeRO-3) (torchtitan/models/llama3/infra/parallelize.py apply_fsdp).
# Zero 0 reaches FSDP only when cp > 1 forces it; "never" stays closest to unsharded parameters.
_RESHARD = {0: "never", 1: "never", 2: "never", 3: "always"}


def failures(request: FlagRequest) -> list[str]:
    """Rules of torchtitan 0.2.x and 0.3.x alike (CP, TP and data-parallel checks)."""
    p, m, s = request.plan, request.model, request.workload.seq_len
    failures = []
    if p.fp8_attention:
        # torchao's float8/MX converters swap nn.Linear only; SDPA stays bf16.
        failures.append("fp8_attention cannot be expressed: torchtitan's float8/MX converters quantize the "
                        "linear layers only; plan without --fp8-attention")
    if p.fp8_blockwise:
        failures.append("fp8_recipe blockwise cannot be expressed: torchtitan's float8 converter scales per tensor "
                        "or per row (torchao), not Transformer Engine's 1x128 / 128x128 blocks; plan with "
                        "--fp8-recipe tensorwise")
    if p.precision == "fp8" and p.fp8_recipe == "delayed":
        # torchao float8 scales dynamically only: recipe_name tensorwise, rowwise or rowwise_with_gw_hp
        # in 0.2.2 (config/job_config.py line 738), rowwise or rowwise_with_gw_hp in 0.3
        # (components/quantization/float8.py line 58 at b5bcd76c); none records amax history.
        failures.append("fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao) scales each tensor "
                        "from its own amax, it has no delayed scaling (its recipes: tensorwise, rowwise, "
                        "rowwise_with_gw_hp); plan with --fp8-recipe tensorwise")
    if p.ulysses > 1:
        failures.append(
            f"ulysses {p.ulysses} cannot be expressed: torchtitan's context parallelism is ring attention "
            "only (PyTorch context_parallel; context_parallel_rotate_method only picks how KV shards "
            "rotate), with no Ulysses all-to-all; use ulysses 1 and put the degree into ring"
        )
    # seq_len % (tp * 2*cp) == 0 (ParallelDims.seq_len_divisor; v0.2.2
    # models/llama3/infra/parallelize.py:69-74).
    if s % (2 * p.ring * p.tp) != 0:
        failures.append(f"seq_len {s} is not divisible by tp*2*cp = {p.tp}*2*{p.ring} (torchtitan)")
    # TP shards wk/wv column-wise by whole KV heads, with no replication (apply_tp): G % TP == 0.
    if m.num_kv_heads % p.tp != 0:
        failures.append(
            f"num_kv_heads {m.num_kv_heads} is not divisible by tp {p.tp} "
            "(torchtitan does not replicate KV heads)"
        )
    # Without FSDP (dp_shard = 1 and cp = 1) data parallelism is DDP, which raises "DDP has not
    # supported > 1D parallelism" when combined with TP or PP (parallelize.py).
    if not fsdp_enabled(request) and p.dp > 1 and p.tp * p.pp > 1:
        what = f"zero 0 with dp {p.dp}" if p.zero == 0 else f"dp_replicate {p.dp_replicate} = dp {p.dp} (no FSDP shard)"
        failures.append(
            f"{what} and {describe_degrees(p, ('tp', 'pp'))} cannot be expressed: "
            "torchtitan's plain DDP only runs alone (1D); use zero >= 1 (FSDP) with dp_shard > 1"
        )
    if m.tie_word_embeddings and p.pp > 1:
        # 0.3.x raises NotImplementedError("Weight tying is not supported with Pipeline Parallel.")
        # (models/common/decoder.py b5bcd76 168-171, since 8953d2e llama3/model.py:128); 0.2.2's
        # split deep-copies the whole model per stage (distributed/pipeline_parallel.py:392), so the
        # first stage's embedding and the last stage's output would train apart, untied.
        failures.append(f"tie_word_embeddings with pp {p.pp} cannot be expressed: torchtitan does not tie "
                        "the embedding and the output across pipeline stages; use pp 1")
    return failures + pipeline_failures(request) + torchtitan_failures(request) + router_failures(request)


def v02_failures(request: FlagRequest) -> list[str]:
    """Rules of torchtitan 0.2.x alone. Multi-latent attention runs torchtitan's deepseek_v3 model,
    whose parallelize raises NotImplementedError("Currently, float8 tensorwise TP is not tested for
    deepseekv3") where float8 is on with TP and the recipe is not rowwise (v0.2.2 73a0e69
    models/deepseek_v3/infra/parallelize.py lines 75-87): this TOML's tensorwise float8 at tp > 1."""
    p, m = request.plan, request.model
    if m.mla is not None and p.precision == "fp8" and p.tp > 1:
        return [f"fp8 with tp {p.tp} cannot be expressed for {m.name} on torchtitan 0.2.2: its deepseek_v3 model "
                "(multi-latent attention) raises NotImplementedError for tensorwise float8 with tensor parallelism "
                "(models/deepseek_v3/infra/parallelize.py); use tp 1 (expert and data parallelism) or bf16"]
    return []


def _toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"  # TOML booleans are lower case
    return f'"{value}"' if isinstance(value, str) else str(value)


def pipeline_items(request: FlagRequest) -> list[tuple[str, object]]:
    """Schedule and split (torchtitan distributed/pipeline_parallel.py _get_pipeline_metadata and
    generate_llm_fqn_per_model_part): (layers + first_less + last_less) effective layers spread
    evenly over pp x vpp stages, the embedding weighing first_less layers on the first stage and
    the output last_less on the last. With first_less = middle - first and last_less = middle -
    last (middle = a middle rank's layers) every rank runs the plan's layers; layers_per_stage =
    middle / vpp makes the stage count exactly pp x vpp."""
    p = request.plan
    first, middle, last = _rank_layers(request)
    return [
        ("pipeline_parallel_schedule", "Interleaved1F1B" if p.vpp > 1 else "1F1B"),
        ("pipeline_parallel_layers_per_stage", middle // p.vpp),
        ("pipeline_parallel_first_stage_less_layers", middle - first),
        ("pipeline_parallel_last_stage_less_layers", middle - last),
    ]


def _rank_layers(request: FlagRequest) -> tuple[int, int, int]:
    """The first, a middle and the last pipeline rank's decoder layers (pipeline_items)."""
    p, layers = request.plan, request.model.num_layers
    first = p.first_stage_layers or layers // p.pp
    last = p.last_stage_layers or layers // p.pp
    middle = (layers - first - last) // (p.pp - 2) if p.pp > 2 else max(first, last)
    return first, middle, last


def pipeline_failures(request: FlagRequest) -> list[str]:
    """Splits torchtitan's even spread of effective layers cannot reproduce."""
    p = request.plan
    if p.pp == 1:
        return []
    if p.vpp == 1 and request.num_micro_batches < p.pp:
        # torch.distributed.pipelining Schedule1F1B raises "Number of microbatches (n) must be greater
        # than or equal to the number of stages" (schedules.py, Schedule1F1B.__init__); torchtitan
        # builds it from local_batch_size / pipeline_parallel_microbatch_size (pipeline_parallel.py).
        return [f"{request.num_micro_batches} micro-batches per step with pp {p.pp} cannot be expressed: torch's "
                "Schedule1F1B, torchtitan's 1F1B, needs at least one micro-batch per stage; use a larger "
                "--global-batch, a smaller --micro-batch or a smaller pp"]
    middle = _rank_layers(request)[1]
    if middle % p.vpp:
        # torchtitan counts ceil(pp x middle / (middle // vpp)) virtual stages (pipeline_parallel.py
        # _get_pipeline_metadata): pp x vpp only where vpp divides a rank's layers; else it raises
        # (a count pp does not divide, or layers_per_stage 0) or runs another schedule than the plan's.
        return [f"vpp {p.vpp} with {middle} layers a pipeline rank cannot be expressed: torchtitan's "
                f"pipeline_parallel_layers_per_stage ({middle} // {p.vpp} = {middle // p.vpp}) makes pp x vpp "
                "virtual stages only where vpp divides a rank's layers; use such a vpp or another split"]
    items = {key: int(value) for key, value in pipeline_items(request) if isinstance(value, int)}
    chunk = items["pipeline_parallel_layers_per_stage"]
    less = (items["pipeline_parallel_first_stage_less_layers"], items["pipeline_parallel_last_stage_less_layers"])
    if min(less) < 0 or max(less) > chunk:
        return [f"the {p.first_stage_layers}/{p.last_stage_layers} first/last stage layers cannot be expressed: "
                "torchtitan spreads layers evenly over its stages and only takes layers off the first and last "
                f"(at most one virtual stage's {chunk}); use a split with more layers in the middle"]
    return []


def _section(name: str, items: list[tuple[str, object]]) -> list[str]:
    return [f"[{name}]", *(f"{key} = {_toml_value(value)}" for key, value in items)]


def training_items(request: FlagRequest) -> list[tuple[str, object]]:
    p, w = request.plan, request.workload
    # Batch: global_batch_size % (local_batch_size * dp) == 0 sets gradient accumulation (train.py);
    # with PP the local batch is split into pipeline micro-batches instead.
    local_batch = p.micro_batch * request.num_micro_batches if p.pp > 1 else p.micro_batch
    return [("seq_len", w.seq_len), ("local_batch_size", local_batch), ("global_batch_size", w.global_batch)]


def parallelism_items(request: FlagRequest, *, rotate_method: bool) -> list[tuple[str, object]]:
    """[parallelism] keys; `rotate_method` (0.2.x only: 0.3.0 removed it and
    expert_tensor_parallel_degree) sets the ring's rotation and the experts' TP degree."""
    p = request.plan
    # HSDP: replicas outermost, FSDP over dp_shard x cp (ParallelDims mesh dp_replicate, fsdp, tp).
    parallelism: list[tuple[str, object]] = (
        [("data_parallel_replicate_degree", p.dp), ("data_parallel_shard_degree", 1)]
        if p.zero == 0
        else [("data_parallel_replicate_degree", p.dp_replicate), ("data_parallel_shard_degree", p.dp_shard)]
    )
    if fsdp_enabled(request):
        reshard = _RESHARD[p.zero] if p.reshard_after_forward else "never"
        parallelism.append(("fsdp_reshard_after_forward", reshard))
    parallelism += [("tensor_parallel_degree", p.tp), ("pipeline_parallel_degree", p.pp)]
    if p.pp > 1:
        parallelism.append(("pipeline_parallel_microbatch_size", p.micro_batch))
        parallelism += pipeline_items(request)
    parallelism.append(("context_parallel_degree", p.ring))
    # Expert degrees (MoE models): [parallelism] expert_parallel_degree in 0.2.2 and 0.3.0 alike,
    # expert_tensor_parallel_degree in 0.2.2 only (shared reference moe_fp8_pipeline_frameworks.md
    # section 3.2: 0.3.0 removed it).
    parallelism += torchtitan_items(request, expert_tp=rotate_method)
    if p.ring > 1 and rotate_method:
        # "alltoall" passes KV shards round the ring; "allgather" (the default) gathers them all at once
        # (torch.distributed.tensor.experimental._attention set_rotate_method; v0.2.2 distributed/utils.py).
        parallelism.append(("context_parallel_rotate_method", "allgather" if p.allgather else "alltoall"))
    return parallelism


def compiles(precision: str, tp: int) -> bool:
    """Whether the TOML turns torch.compile on for the model and loss (the [compile] section; off by
    default, v0.2.2 73a0e69 config/job_config.py lines 721-727): for every float8 and MX plan but
    MXFP8 with TP. torchtitan's float8 needs it "for competitive performance", compile fusing the
    float8 scaling and casts (components/quantization/float8.md, b5bcd76), and the cost model prices
    those casts compiled (cost.tp_gathers, as traced; docs/cost-model.md stop 47); MXLinearConverter
    asserts "TP not yet supported with torch.compile for mxfp8" (components/quantization/mx.py lines
    46-52), so MXFP8 at tp > 1 runs eagerly. bf16 runs stay uncompiled, as sp-plan wrote them. One
    source with the cost model's activations (cost.compiled_layers.TORCHTITAN_V02_COMPILED)."""
    return bool(compiled_layers.compiles(compiled_layers.TORCHTITAN_V02_COMPILED, PRECISIONS.index(precision), tp))


def job_config(request: FlagRequest) -> str:
    p = request.plan
    training = training_items(request)
    parallelism = parallelism_items(request, rotate_method=True)
    checkpoint: list[tuple[str, object]] = [("mode", p.recompute)]
    if p.recompute == "selective":
        checkpoint.append(("selective_ac_option", "op"))
    low_precision = []
    if p.precision != "bf16":
        # float8 / mx converters (job_config.py Model.converters, Float8Linear, MXLinear); the output
        # layer stays bf16 as planned. tensorwise = per-tensor scales, as the cost model's FP8,
        # and torchao's float8 TP styles gathering FP8 (cost.tp_gathers).
        converter, section, recipe = (("float8", "float8", "tensorwise") if p.precision == "fp8"
                                      else ("mx", "mx", "mxfp8_cublas"))
        low_precision = ["", *_section("model", [("converters", [converter])]), "",
                         *_section(f"quantize.linear.{section}", [("recipe_name", recipe),
                                                                  ("filter_fqns", ["output"])])]
    if compiles(p.precision, p.tp):
        # Per TransformerBlock (models/llama3/infra/parallelize.py lines 121-123, apply_compile) and
        # the loss (components/loss.py line 33): components as Compile's default.
        low_precision += ["", *_section("compile", [("enable", True), ("components", ["model", "loss"])])]
    debug_items = torchtitan_debug_items(request)
    debug = ["", *_section("debug", debug_items)] if debug_items else []
    return "\n".join([
        f"# {request.world_size} GPUs = dp {p.dp} x cp {p.ring} x tp {p.tp} x pp {p.pp}",
        *_section("training", training), "",
        *_section("parallelism", parallelism), "",
        *_section("activation_checkpoint", checkpoint),
        *low_precision,
        *debug,
    ])


def render(request: FlagRequest) -> FrameworkFlags:
    refused = refusal("torchtitan", request, lambda: failures(request) + v02_failures(request))
    if refused is not None:
        return refused
    notes = [
        "Keys are torchtitan v0.2.2's TOML job config (supported: 0.2.x): merge these sections into your "
        "model's train config (or pass them as --<section>.<key> overrides).",
        "Launch with PYTORCH_ALLOC_CONF=expandable_segments:True as torchtitan's run_train.sh does.",
        *shared_notes(request),
        *compile_notes(request),
        *expert_notes(request),
    ]
    return supported("torchtitan", job_config(request), notes)


def compile_notes(request: FlagRequest) -> list[str]:
    """float8 and MX plans: what the plan prices of torch.compile (`compiles`) and what it leaves out."""
    p = request.plan
    if p.precision == "bf16":
        return []
    if compiles(p.precision, p.tp):
        return ["torch.compile is on ([compile]): torchtitan's float8/MX linears need it to fuse their scaling and "
                "casts, which the plan prices fused; compile's other fusions (norms, SwiGLU, residual adds) are "
                "not modelled: the plan times those passes unfused."]
    return [f"torch.compile stays off: torchtitan 0.2.2 refuses it for MXFP8 with TP (tp {p.tp}; "
            "components/quantization/mx.py lines 46-52), so MXLinear's casts run eagerly, without compile's fusion, "
            "where the plan prices them fused: expect a slower step than planned, or pin --tp 1 to compile."]
