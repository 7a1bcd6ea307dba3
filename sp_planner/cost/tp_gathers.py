"""How a framework's TP all-gathers run, by runtime: which low-precision recipes they move in their low
precision, and whether backward gathers the linears' saved inputs again.

Transformer Engine (Megatron-LM, Megatron-Bridge, NeMo, MindSpeed) quantizes before it gathers (per-tensor
FP8 and MXFP8) and gathers a column-parallel linear's saved sequence shard again in backward.
torchtitan (torchao's linears on DTensor TP) gathers FP8 only through torchao's tensorwise float8 TP
styles (0.2.x), bf16 otherwise (0.3.x: rowwise float8, MXFP8), casting after the gather, and keeps the
gathered inputs for the weight gradients (no backward re-gathers). DeepSpeed and yunchang keep the
default, which none of their expressible plans reaches. The sources (torchtitan 0.2.2 73a0e69 and
0.3.0, torchao v0.16.0 3c1065c and v0.18.0 5f2baf9, torch 2.13), file by file and line by line:
docs/cost-model.md, "TP all-gathers by runtime".
"""

from __future__ import annotations

from sp_planner.specs.base import FrozenModel


class TpGathers(FrozenModel):
    """The recipes whose TP all-gathers move low-precision data (module docstring), bf16 otherwise,
    and what the linears keep of the gathered inputs for their weight gradients."""

    fp8: bool  # per-tensor FP8 (delayed or tensorwise current scaling): 1 byte an element
    mxfp8: bool  # MXFP8: data and E8M0 scales by usage (cost.gathered_transpose)
    # True: the linears save their sequence shard (quantized under FP8) and backward gathers it again
    # (Megatron-Core / Transformer Engine); False: autograd keeps the gathered input as the linear
    # received it, whole, and a saved input is quantized only where the framework gathers it so
    # (torchtitan's DTensor TP with torchao; module docstring).
    regathers_saved_inputs: bool = True


TE_TP_GATHERS = TpGathers(fp8=True, mxfp8=True)
# torchtitan 0.2.x and earlier (tensorwise float8 TP styles)
TORCHAO_TENSORWISE_TP_GATHERS = TpGathers(fp8=True, mxfp8=False, regathers_saved_inputs=False)
# torchtitan 0.3.x: rowwise float8, MXFP8
BF16_TP_GATHERS = TpGathers(fp8=False, mxfp8=False, regathers_saved_inputs=False)
