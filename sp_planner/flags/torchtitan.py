"""torchtitan flags for a plan: 0.3.x command-line overrides by default, 0.2.x TOML sections behind
--framework-version (flags/torchtitan_v02.py, which also holds the rules both versions share).

torchtitan 0.3.0 (the newest on PyPI; shared reference moe_fp8_pipeline_frameworks.md section 3)
has no TOML job config: `--module M --config F` are both required and name a Python config
function (torchtitan/config/manager.py), and tyro overrides `--section.field value` adjust it;
activation checkpointing is a subcommand (`activation-checkpoint:full`, ...). Float8 / MXFP8 are
model converters chosen inside the config function, so the precision picks the config function.
"""

from __future__ import annotations

from sp_planner.cost.loss_memory import CHUNKED_LOSS_CHUNKS
from sp_planner.flags import torchtitan_v02
from sp_planner.flags.experts import torchtitan_debug_items
from sp_planner.flags.base import FlagRequest, FrameworkFlags, refusal, supported, unsupported
from sp_planner.flags.torchtitan_notes import shared_notes
from sp_planner.flags.torchtitan_v02 import parallelism_items, training_items

# The torchtitan versions whose config interface is emitted; "0.3" is the default.
VERSIONS: dict[str, str] = {"0.3.0": "0.3", "0.3": "0.3", "0.3.x": "0.3", "0.2.2": "0.2", "0.2": "0.2", "0.2.x": "0.2"}
DEFAULT_VERSION = "0.3.0"

# (model name, precision) -> (module, config function) shipped in torchtitan 0.3.0
# (torchtitan/models/<module>/config_registry.py). llama3_405b converts every Linear but lm_head to
# float8 rowwise (Float8LinearConverter); llama3_8b_mxfp8 to MXFP8 (MXFP8LinearConverter, SM100+).
CONFIGS: dict[tuple[str, str], tuple[str, str]] = {
    ("Llama-3-8B", "bf16"): ("llama3", "llama3_8b"),
    ("Llama-3.1-8B", "bf16"): ("llama3", "llama3_8b"),
    ("Llama-3-8B", "mxfp8"): ("llama3", "llama3_8b_mxfp8"),
    ("Llama-3.1-8B", "mxfp8"): ("llama3", "llama3_8b_mxfp8"),
    ("Llama-3-70B", "bf16"): ("llama3", "llama3_70b"),
    ("Llama-3.1-70B", "bf16"): ("llama3", "llama3_70b"),
    ("Llama-3.1-405B", "fp8"): ("llama3", "llama3_405b"),
    ("Qwen3-32B", "bf16"): ("qwen3", "qwen3_32b"),
}
# tyro subcommand per recompute (torchtitan/distributed/activation_checkpoint.py).
CHECKPOINT = {"none": "activation-checkpoint:none", "selective": "activation-checkpoint:selective",
              "full": "activation-checkpoint:full"}


def resolve_version(version: str | None) -> str:
    """'0.3' or '0.2' for a --framework-version value (None: the default)."""
    key = VERSIONS.get(version or DEFAULT_VERSION)
    if key is None:
        raise ValueError(f"torchtitan version {version!r} is not supported; choose 0.3.0 (default) or 0.2.2")
    return key


def _config_failure(request: FlagRequest) -> str | None:
    name, precision = request.model.name, request.plan.precision
    if (name, precision) in CONFIGS:
        return None
    shipped = [f"{c} ({p})" for (n, p), (_, c) in CONFIGS.items() if n == name]
    known = f"; it ships {', '.join(shipped)}" if shipped else ""
    return (f"torchtitan 0.3.0 has no config function for {name} in {precision}{known}: --module/--config must name "
            "a Python config function, and its float8/MXFP8 converters are set inside it, not on the command "
            "line; write one (see torchtitan/models/llama3/config_registry.py) or use --framework-version 0.2.2 "
            "for TOML sections to merge into your own config")


def _chunk_failure(request: FlagRequest) -> str | None:
    """The llama3 configs' ChunkedLossWrapper splits each rank's sequence into equal chunks and
    refuses one that does not divide (components/loss.py, torchtitan 5ab3a0f lines 668-677:
    "sequence length must be divisible by num_chunks"); the rank holds seq_len / cp tokens."""
    local_tokens = request.workload.seq_len // request.plan.ring
    if local_tokens % CHUNKED_LOSS_CHUNKS == 0:
        return None
    return (f"torchtitan 0.3.0's chunked loss splits each rank's {local_tokens} tokens (seq_len / cp) into "
            f"{CHUNKED_LOSS_CHUNKS} equal chunks and refuses a remainder; use a --seq-len that gives a multiple of "
            f"{CHUNKED_LOSS_CHUNKS * request.plan.ring}, or --framework-version 0.2.2")


def _expert_tp_failure(request: FlagRequest) -> str | None:
    """0.3.0 removed expert_tensor_parallel_degree: its experts fold over dp_shard x cp x tp (efsdp x
    ep, shared reference moe_fp8_pipeline_frameworks.md section 3.2), with no TP of their own."""
    etp = request.plan.etp
    if request.model.moe is None or etp == 1:
        return None
    return (f"etp {etp} cannot be expressed on torchtitan 0.3.0: it removed expert_tensor_parallel_degree (its "
            "experts fold over dp_shard x cp x tp); use etp 1 or --framework-version 0.2.2")


def _flag_value(value: object) -> str:
    return str(value)


def command_args(request: FlagRequest) -> list[str]:
    module, config = CONFIGS[(request.model.name, request.plan.precision)]
    p = request.plan
    args = [f"--module {module}", f"--config {config}"]
    args += [f"--training.{key} {_flag_value(v)}" for key, v in training_items(request)]
    if p.pp > 1:
        # CUDA graphs are on by default and refuse pipeline parallelism (trainer.py:179-187).
        args.append("--training.disable_cuda_graphs")
    args += [f"--parallelism.{key} {_flag_value(v)}" for key, v in parallelism_items(request, rotate_method=False)]
    # tyro takes a bare --section.flag for True.
    args += [f"--debug.{key}" for key, _ in torchtitan_debug_items(request)]
    args.append(CHECKPOINT[p.recompute])
    return args


def _text(request: FlagRequest) -> str:
    p = request.plan
    lines = [f"# {request.world_size} GPUs = dp {p.dp} x cp {p.ring} x tp {p.tp} x pp {p.pp}; torchtitan 0.3.x",
             "TORCHTITAN_ARGS=("]
    lines += [f"    {arg}" for arg in command_args(request)]
    lines.append(")")
    return "\n".join(lines)


def render(request: FlagRequest, version: str | None = None) -> FrameworkFlags:
    if resolve_version(version) == "0.2":
        return torchtitan_v02.render(request)
    # A missing config function refuses every plan of the model: named first, beside the plan's own
    # failures, so that a search none of whose plans torchtitan expresses names it.
    no_config = [text for text in (_config_failure(request),) if text is not None]
    refused = refusal("torchtitan", request, lambda: [*no_config, *torchtitan_v02.failures(request)])
    if refused is not None:
        return refused
    failure = _chunk_failure(request) or _expert_tp_failure(request)
    if failure is not None:
        return unsupported("torchtitan", [failure])
    p = request.plan
    module, config = CONFIGS[(request.model.name, p.precision)]
    notes = [
        f'Pass "${{TORCHTITAN_ARGS[@]}}" to python -m torchtitan.train (torchtitan 0.3.x; the overrides '
        f"adjust the {module}.{config} config function, keeping its data, tokenizer and optimizer settings).",
        "Launch with PYTORCH_ALLOC_CONF=expandable_segments:True as torchtitan's run_train.sh does.",
        # model_registry(attn_backend="flex") in models/llama3 and models/qwen3 __init__.py, and
        # get_attention_config in models/common/config_utils.py, on release/0.3 (4f9e9a47).
        f"torchtitan 0.3.0's {module} configs run FlexAttention (attn_backend \"flex\", block-causal), which no "
        "published benchmark measures: by default the plans are timed with PyTorch SDPA's flash curve in its "
        "place (torchtitan 0.2.2, --framework-version 0.2.2, runs SDPA with cuDNN first).",
        *shared_notes(request),
    ]
    if p.ring > 1 and not p.allgather:
        notes.append("torchtitan 0.3.0 has no context_parallel_rotate_method: PyTorch's context parallel then "
                     "all-gathers K/V (its default rotate method), not the planned p2p ring; plan with "
                     "--cp-comm allgather to match it.")
    if p.precision == "fp8":
        notes.append("llama3_405b runs float8 rowwise scaling (torchao) with torch.compile and async TP; the plan "
                     "models per-tensor FP8 GEMMs, with TP all-gathers in bf16 as rowwise runs them (the cast "
                     "after the gather).")
    if p.precision == "mxfp8":
        notes.append("llama3_8b_mxfp8 enables torch.compile, which MXFP8LinearConverter requires (SM100+).")
    return supported("torchtitan", _text(request), notes)
