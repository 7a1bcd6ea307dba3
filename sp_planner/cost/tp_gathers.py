"""How a framework's TP all-gathers run, by runtime: which low-precision recipes they move in their low
precision, and whether backward gathers the linears' saved inputs again.

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
Saved inputs (TpGathers.regathers_saved_inputs). Megatron-Core / Transformer Engine save a column-parallel
linear's sequence shard (quantized under FP8) and gather it again in backward for the weight gradient
(cost.tp_calls, cost.gathered_transpose's sources). torchtitan gathers nothing again: the gather is
a DTensor redistribute (Shard(1) -> Replicate) before the linears, an autograd function that saves
nothing (torch 2.13 distributed/tensor/_redistribute.py Redistribute.forward, line 1876 on: ctx keeps
the spec alone; its backward redistributes the gradient to Shard(1), the reduce-scatter), and the
linears keep the gathered tensor they received for their weight gradients:
- 0.2.2 (73a0e69) models/llama3/infra/parallelize.py lines 219-240: "attention" and "feed_forward"
  take PrepareModuleInput(input Shard(1), desired Replicate) with use_local_output False (torch
  tensor/parallel/style.py line 495), so wq, wk, wv (and w1, w3) get one Replicate DTensor whose
  ColwiseParallel input layout (Replicate, style.py line 90) needs no redistribute; plain nn.Linear
  under autograd saves that full-sequence input, one tensor the three linears share. The norms
  (SequenceParallel, nn.RMSNorm, model/model.py lines 382-383) keep their sharded input; their
  sharded output is saved by nothing. The output layer (ColwiseParallel(input_layouts=Shard(1)),
  lines 182-186) gathers its input the same way and keeps it.
- Float8 tensorwise (PrepareFloat8ModuleInput, Float8ColwiseParallel / Float8RowwiseParallel, torchao
  v0.16.0 float8_tensor_parallel.py lines 49-72, 114-135, 218-241): the shard is cast to float8
  before the redistribute, so Float8Linear receives, and matmul_with_hp_or_float8_args saves
  (float8_linear.py line 45, ctx.save_for_backward(input_hp, ...)), the gathered float8 tensor
  (1 byte an element, every token of the group); the projection's and FC2's inputs, cast in the
  styles' _prepare_input_fn, are saved in float8, the rank's columns alone, as Transformer Engine's are.
- 0.3.0 (the wheel): models/common/decoder_sharding.py set_gqa_attention_sharding and
  set_dense_ffn_sharding declare in_dst_shardings Replicate for the attention's x_BLD and the
  feed-forward's x (lines 189-200, 285-291), applied by protocols/module.py _redistribute_inputs
  (line 518 on) before the module's forward; pre_lm_head_norm_config gathers the output layer's
  input likewise (lines 119-139). The "dist_gemm" backend that gathers inside fused GEMMs is used by
  llama3_debugmodel_dist_gemm alone (config_registry.py line 80). Float8Linear (rowwise) and
  MXFP8Linear (torchao v0.18.0 5f2baf9, the first tag with the mxfp8_linear.py 0.3.0's mx converter
  imports: float8/float8_linear.py line 45, prototype/moe_training/mxfp8_linear.py line 108) save
  the bf16 input they receive and cast it again in backward: every GEMM input is saved in bf16, the
  gathered ones whole.
So with sequence parallelism a layer saves its QKV and FC1 inputs tp times larger (cost.activations)
and makes 2 backward all-gathers fewer, the output layer one fewer (cost.tp_calls); and torchao's
linears save a quantized input only where a float8 TP style cast it before them (tp > 1, the recipes
it gathers in FP8): at tp 1, and under rowwise or MXFP8, they save bf16.
Where torchao gathers float8 its weight gradient transposes the gathered tensors on Hopper as TE
does (float8_ops.py preprocess_addmm lines 342-345, contiguous copies for _scaled_mm's layout), so
cost.gathered_transpose charges them by the same rule; where it gathers bf16 it casts the gathered
tensors, on every token of the group: tp times the shard cost.precision's casts charge
(cost.gathered_transpose.cast_after_gather_elements), and, the tensor whole on every rank, without
current scaling's amax all-reduce over the TP group (cost.amax_reduce).

DeepSpeed refuses FP8 (flags.deepspeed) and yunchang tp > 1 (flags.yunchang): their runtimes keep
the default, which none of their expressible plans reaches.
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
