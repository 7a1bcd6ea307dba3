"""Which low-precision recipes a framework's TP all-gathers move in their low precision, by runtime.

Transformer Engine (Megatron-LM, Megatron-Bridge, NeMo, MindSpeed) quantizes before it gathers:
per-tensor FP8 (delayed or current scaling) and MXFP8 both (cost.gathered_transpose's sources).

torchtitan (torchao's Float8Linear / MX linears on DTensor TP) casts after the gather, except where
it applies torchao's float8 TP styles, and those only for tensorwise scaling:
- torchtitan 0.2.2 (73a0e69) models/llama3/infra/parallelize.py lines 76-96: "float8 all-gather
  with TP is only supported for tensorwise float8 scaling recipes. For rowwise recipes, we use
  regular TP and all-gather happens in high precision"; lines 192-210 pick Float8ColwiseParallel,
  Float8RowwiseParallel and PrepareFloat8ModuleInput for tensorwise (the recipe sp-plan's 0.2.x
  TOML emits, flags.torchtitan_v02), plain ColwiseParallel / RowwiseParallel / PrepareModuleInput
  otherwise: rowwise, rowwise_with_gw_hp and the mx converter (enable_float8_linear is "float8" in
  model.converters). qwen3 and llama4 the same; deepseek_v3 refuses tensorwise TP (its
  parallelize.py lines 82-87).
- torchao v0.16.0 (3c1065c) float8/float8_tensor_parallel.py: PrepareFloat8ModuleInput and the
  styles' _prepare_input_fn cast the sharded input to float8 before redistribute (Shard -> Replicate,
  lines 218-241 and 49-72), and Float8RowwiseParallel's _prepare_output_fn wraps its output in
  NoopFwToFloat8BwDynamic (lines 138-153), so the output gradient is cast before the backward's
  all-gather; float8_ops.py allgather_fp8 (lines 466-491) gathers the float8 _data with one tensorwise
  scale: 1 byte an element for the QKV/FC1 inputs forward and the wo/w2 output gradients backward.
- torchtitan 0.3.0 (the PyPI wheel, the version sp-plan emits by default): Float8LinearConverter
  offers rowwise and rowwise_with_gw_hp only (components/quantization/float8.py line 58), and the
  linears' inputs are gathered at the attention / feed-forward module boundary
  (models/common/decoder_sharding.py set_gqa_attention_sharding, set_dense_ffn_sharding:
  in_dst_shardings Replicate) before Float8Linear or MXFP8Linear casts: every gather bf16.
Neither gathers the saved inputs again for the weight gradients: autograd keeps the gathered input
(torchao float8_linear.py matmul_with_hp_or_float8_args saves input_hp, line 45). The cost model
counts Megatron's re-gathers for every runtime (cost.tp_calls); their bytes follow the forward's.
Where torchao gathers float8 its weight gradient transposes the gathered tensors on Hopper as TE
does (float8_ops.py preprocess_addmm lines 342-345, contiguous copies for _scaled_mm's layout), so
cost.gathered_transpose charges them by the same rule; where it gathers bf16 it casts the gathered
tensors, on every token of the group, which cost.precision (casts on the rank's shard) leaves out.

DeepSpeed refuses FP8 (flags.deepspeed) and yunchang tp > 1 (flags.yunchang): their runtimes keep
the default, which none of their expressible plans reaches.
"""

from __future__ import annotations

from sp_planner.specs.base import FrozenModel


class TpGathers(FrozenModel):
    """The recipes whose TP all-gathers move low-precision data (module docstring); bf16 otherwise."""

    fp8: bool  # per-tensor FP8 (delayed or tensorwise current scaling): 1 byte an element
    mxfp8: bool  # MXFP8: data and E8M0 scales by usage (cost.gathered_transpose)


TE_TP_GATHERS = TpGathers(fp8=True, mxfp8=True)
TORCHAO_TENSORWISE_TP_GATHERS = TpGathers(fp8=True, mxfp8=False)  # torchtitan 0.2.x and earlier
BF16_TP_GATHERS = TpGathers(fp8=False, mxfp8=False)  # torchtitan 0.3.x: rowwise float8, MXFP8
