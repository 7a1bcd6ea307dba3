"""torchtitan 0.3.x flags (the default; shared reference moe_fp8_pipeline_frameworks.md section 3):
--module/--config name a shipped config function, --section.field overrides and the activation
checkpoint subcommand adjust it. torchtitan 0.3.0's own ConfigManager accepted these argument lists
during development, and its _get_pipeline_metadata / _generate_llm_fqn_per_model_part gave every rank
the planned layers (see the commit adding this file); here the arguments and the split arithmetic."""

from __future__ import annotations

import math
import shlex

import pytest

from sp_planner.catalog import load_model
from sp_planner.flags import render_flags, torchtitan

LLAMA31_405B = load_model("llama3.1-405b")


def _args(text: str) -> dict[str, str | None]:
    body = text.split("TORCHTITAN_ARGS=(", 1)[1].rsplit(")", 1)[0]
    words = shlex.split(body)
    found: dict[str, str | None] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
            found[word] = value
        elif word.startswith("activation-checkpoint:"):
            found["activation-checkpoint"] = word.split(":", 1)[1]
    return found


def test_ring_tp_pp_overrides(build):
    flags = render_flags("torchtitan", build.cases["llama3_70b_256k_ring_tp8_pp2"])
    assert flags.supported, flags.reason
    args = _args(flags.text)
    assert (args["--module"], args["--config"]) == ("llama3", "llama3_70b")
    assert args["--training.seq_len"] == "262144" and args["--training.local_batch_size"] == "16"
    assert "--training.disable_cuda_graphs" in args  # CUDA graphs refuse PP (trainer.py)
    assert args["--parallelism.pipeline_parallel_schedule"] == "1F1B"
    assert args["--parallelism.context_parallel_degree"] == "4"
    assert "--parallelism.context_parallel_rotate_method" not in args  # removed in 0.3.0
    assert args["activation-checkpoint"] == "full"


def _split_per_rank(layers: int, pp: int, lps: int, first_less: int, last_less: int) -> list[int]:
    """torchtitan's split: ceil((L + first_less + last_less) / lps) stages, the effective layers spread
    evenly (the remainder to the first stages), the embedding weighing first_less on stage 0 and the
    output last_less on the last stage (distributed/pipeline_parallel.py); stage s on rank s % pp."""
    effective = layers + first_less + last_less
    stages = math.ceil(effective / lps)
    base, extra = divmod(effective, stages)
    sizes = [base + (1 if s < extra else 0) for s in range(stages)]
    sizes[0] -= first_less
    sizes[-1] -= last_less
    return [sum(sizes[s] for s in range(r, stages, pp)) for r in range(pp)]


@pytest.mark.parametrize("vpp,first,last,expected", [
    (4, 7, 7, [7] + [8] * 14 + [7]),  # the Llama 3 paper's 126 layers over 16 stages, interleaved
    (2, 6, 8, [6] + [8] * 15),  # an explicit split
    (1, 7, 7, [7] + [8] * 14 + [7]),
])
def test_405b_split_gives_each_rank_the_planned_layers(build, vpp, first, last, expected):
    request = build.request(LLAMA31_405B, 8192, 64, tp=8, pp=16, vpp=vpp, precision="fp8",
                            fp8_recipe="tensorwise", first_stage_layers=first, last_stage_layers=last)
    flags = render_flags("torchtitan", request)
    assert flags.supported, flags.reason
    args = _args(flags.text)
    assert args["--config"] == "llama3_405b"  # its float8 converter
    assert args["--parallelism.pipeline_parallel_schedule"] == ("Interleaved1F1B" if vpp > 1 else "1F1B")
    lps = int(args["--parallelism.pipeline_parallel_layers_per_stage"])
    first_less = int(args["--parallelism.pipeline_parallel_first_stage_less_layers"])
    last_less = int(args["--parallelism.pipeline_parallel_last_stage_less_layers"])
    assert math.ceil((126 + first_less + last_less) / lps) == 16 * vpp
    assert _split_per_rank(126, 16, lps, first_less, last_less) == expected


def test_405b_float8_refuses_delayed_scaling(build):
    # llama3_405b's Float8LinearConverter takes rowwise or rowwise_with_gw_hp (float8.py line 58 at
    # b5bcd76c), both scaled from each tensor's own amax: no delayed scaling.
    request = build.request(LLAMA31_405B, 8192, 64, tp=8, pp=16, precision="fp8", fp8_recipe="delayed",
                            first_stage_layers=7, last_stage_layers=7)
    flags = render_flags("torchtitan", request)
    assert not flags.supported
    assert flags.reason.startswith("fp8_recipe delayed cannot be expressed: torchtitan's float8 (torchao)")
    current = request.model_copy(update={"plan": request.plan.model_copy(update={"fp8_recipe": "tensorwise"})})
    assert render_flags("torchtitan", current).supported


def test_precision_picks_the_config_function(build):
    mx = render_flags("torchtitan", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="mxfp8"))
    assert _args(mx.text)["--config"] == "llama3_8b_mxfp8"
    fp8 = render_flags("torchtitan", build.request(build.llama3_8b, 8192, 64, tp=2, dp=4, precision="fp8"))
    assert not fp8.supported and "no config function for Llama-3-8B in fp8" in fp8.reason
    assert "llama3_8b (bf16), llama3_8b_mxfp8 (mxfp8)" in fp8.reason


def test_model_without_a_config_function(build):
    flags = render_flags("torchtitan", build.request(build.llama2_7b, 4096, 16, dp=8))
    assert not flags.supported and "--framework-version 0.2.2" in flags.reason
    v02 = render_flags("torchtitan", build.request(build.llama2_7b, 4096, 16, dp=8).model_copy(
        update={"framework_version": "0.2.2"}))
    assert v02.supported and "[parallelism]" in v02.text


def test_a_model_without_a_config_function_is_named_beside_the_plans_own_failures(build):
    # sp-plan --framework torchtitan prints plan 1's reason when no plan can be expressed: Ulysses
    # alone sent the user to ulysses 1, where the missing config function (every plan's) came next.
    flags = render_flags("torchtitan", build.request(build.llama2_7b, 4096, 16, ulysses=2, dp=4))
    assert not flags.supported
    assert "no config function for Llama-2-7B in bf16" in flags.reason
    assert "ulysses 2 cannot be expressed" in flags.reason


def test_the_chunked_loss_needs_each_ranks_tokens_in_eight_equal_chunks(build):
    # 8200 tokens over cp 2: 4100 a rank, 4100 % 8 = 4; 8208 / 2 = 4104 = 8 x 513 divides
    odd = render_flags("torchtitan", build.request(build.llama3_8b, 8200, 8, ring=2, dp=4))
    assert not odd.supported and "each rank's 4100 tokens (seq_len / cp) into 8 equal chunks" in odd.reason
    assert "a multiple of 16" in odd.reason
    assert render_flags("torchtitan", build.request(build.llama3_8b, 8208, 8, ring=2, dp=4)).supported
    v02 = build.request(build.llama3_8b, 8200, 8, ring=2, dp=4).model_copy(update={"framework_version": "0.2.2"})
    assert render_flags("torchtitan", v02).supported  # 0.2.x's loss is not chunked


def test_unknown_version():
    with pytest.raises(ValueError, match="0.3.0 .default. or 0.2.2"):
        torchtitan.resolve_version("0.1")
