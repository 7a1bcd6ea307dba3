"""The named choices sp-plan's options offer, defined once here with the typing module alone, so that
`sp-plan --help` and the option parser's errors load neither numpy nor pandas nor the cost model
(benchmarks/startup.py). The modules that use them import them from here: plan (Precision,
Fp8Recipe, CpComm, MAX_DEGREE), recompute (Recompute), cost.attention_kernels (AttentionKernel),
flags.base (Framework), flags.launch (Launcher); and the FP8 recipe each framework runs where
--fp8-recipe is not given (own_fp8_recipe: cli.option_checks, flags.own_recipe).
"""

from __future__ import annotations

from typing import Literal

# GEMM precision: bf16, or FP8 through Transformer Engine (per-tensor scaling, Hopper and later),
# or MXFP8 (1x32 blocks with E8M0 scales, Blackwell only). Attention stays bf16 in all three.
Precision = Literal["bf16", "fp8", "mxfp8"]
# How per-tensor FP8 (precision "fp8") sets its scales, as Megatron's --fp8-recipe names them:
# delayed (Megatron's default) scales each tensor by the amax recorded in an earlier step;
# tensorwise (current scaling, TE Float8CurrentScaling) takes the tensor's own amax in a pass
# before the cast (cost/precision.py); blockwise (TE Float8BlockScaling, Hopper) scales each 1x128
# block of an activation or gradient and each 128x128 block of a weight, as DeepSeek-V3 trained
# (cost/precision.py). MXFP8 is its own precision; ignored for bf16 and mxfp8.
Fp8Recipe = Literal["delayed", "tensorwise", "blockwise"]
# How the ring axis moves K/V: p2p passes blocks round the ring while computing (Ring Attention);
# allgather gathers every rank's K/V before attention and reduce-scatters dK/dV after it (Llama 3
# paper, arXiv 2407.21783 section 3.3.2; Transformer Engine cp_comm_type "all_gather").
CpComm = Literal["p2p", "allgather"]
# The activation-recompute choices (what each re-runs: recompute.py).
Recompute = Literal["none", "selective", "full", "mla_up_proj", "moe_act", "moe_act+layernorm", "mlp",
                    "mla_up_proj+mlp"]
# The attention kernels whose published curves time attention (cost.attention_kernels).
AttentionKernel = Literal["fa2", "fa3", "cudnn", "sdpa", "npu"]
# The frameworks whose flags sp-plan writes (flags/).
Framework = Literal["megatron", "mindspeed", "deepspeed", "yunchang", "torchtitan"]
# The launch scripts sp-plan writes (flags.launch).
Launcher = Literal["torchrun", "slurm"]

# Far above any cluster (the largest runs use about 2**15 GPUs), small enough that every product of
# degrees stays exact in int64.
MAX_DEGREE = 2**20


def own_fp8_recipe(framework: str) -> Fp8Recipe:
    """The per-tensor FP8 recipe `framework` runs by default, which sp-plan --framework `framework`
    pins where --fp8-recipe is not given (cli.option_checks.resolve_fp8_recipe) and flags.own_recipe
    asks its flags with: torchtitan's torchao float8 scales each tensor from its own amax
    (recipe_name tensorwise, rowwise or rowwise_with_gw_hp: torchtitan 0.2.2 config/job_config.py
    line 738); Megatron-LM's (and MindSpeed's) fp8_recipe defaults to delayed
    (megatron/core/transformer/transformer_config.py line 594 at d98e8a64). DeepSpeed and yunchang
    have no FP8 recipe (their flags refuse FP8 or read no recipe): delayed, the plan's default."""
    return "tensorwise" if framework == "torchtitan" else "delayed"
