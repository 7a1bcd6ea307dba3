"""torchao Float8Linear's casts under tensorwise dynamic scaling, run eagerly: the FP8 cast work of a
runtime whose linears are torchao's (TpGathers.eager_float8_casts: torchtitan 0.2.x, whose TOML
sp-plan writes with recipe_name "tensorwise" and without [compile], off by default: v0.2.2 73a0e69
config/job_config.py line 722), in place of Transformer Engine's casts (cost.precision) and its
once-a-step weight cast (cost.fp8_params.weight_cast_s). Vectorized over candidates.

What casts, torchao v0.16.0 (3c1065c):
- float8/float8_linear.py matmul_with_hp_or_float8_args: forward casts its input (lines 51-66) and
  its weight (68-83), each unless it arrives in float8, and saves both as it received them (line
  45); backward casts the output gradient for the input gradient (107-123), the saved weight again
  (125-141), the output gradient again for the weight gradient (158-177) and the saved input again
  (179-195), each unless already float8. Under "tensorwise" (config.py lines 331-332, the default
  config) the backward's casts take the forward's settings (config.py lines 255-266).
- float8/float8_tensor_parallel.py (tp > 1, sequence parallelism): PrepareFloat8ModuleInput and the
  styles' _prepare_input_fn cast the input shard once before the gather (lines 218-241, 49-72,
  114-135), one cast for wq/wk/wv and one for w1/w3; both styles' _prepare_output_fn wrap the output
  in NoopFwToFloat8BwDynamic (lines 75-90, 138-153), which casts its gradient once. Float8Linear
  then finds its input, and its output gradient, in float8 and casts neither, forward or backward:
  the GEMM inputs forward and output gradients backward once each, TE's count (cost.precision).
  Without the styles (tp 1) each linear casts what it receives: the attention norm's output for
  each of wq, wk, wv (torchtitan's llama3 has three, v0.2.2 models/llama3/model/model.py lines
  203-208), the FFN norm's for each of w1, w3 (lines 338-340); backward every output gradient twice
  and every saved input again.
- Weights: every Float8Linear casts its weight in forward and again in backward, each micro-batch
  (TE's is_first_microbatch cache has no counterpart). torchtitan v0.2.2
  components/quantization/float8.py lines 65-69 refuse enable_fsdp_float8_all_gather beside
  recipe_name, so FSDP gathers bf16 weights; with that option (not what sp-plan writes) the FSDP
  pre-all-gather hook would cast the weight shard instead and Float8Linear none.
- A cast, hp_tensor_to_float8_dynamic (float8/float8_scaling_utils.py lines 29-72), in eager one
  kernel an op: the amax, torch.max(torch.abs(x)) (float8_utils.py line 65): abs reads and writes
  bf16, max reads it (6 bytes an element); the cast, tensor.to(torch.float32) * scale
  (float8_training_tensor.py line 153), then clamp and .to(float8) (float8_utils.py lines 131-132):
  2 + 4, 4 + 4, 4 + 4, 4 + 1 (27). 33 bytes an element, at the profile's memory-bound rate.
MoE models: the counts follow cost.precision's (mlp_input_copies); torchtitan's float8 converter
swaps nn.Linear only, which its routed experts are not (not modelled here).
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.dtypes import BF16_BYTES
from sp_planner.cost.gathered_transpose import fp8_gathers
from sp_planner.cost.params import layer_params_per_rank
from sp_planner.cost.precision import FP8, FP8_ELEM_BYTES, gemm_inputs_per_token, gemm_output_grads_per_token, \
    mlp_input_copies
from sp_planner.cost.tp_gathers import TpGathers
from sp_planner.specs.model import ModelSpec

FP32_BYTES = 4
# Eager amax, torch.max(torch.abs(x)): abs reads and writes bf16, max reads it.
EAGER_AMAX_BYTES_PER_ELEM = 3 * BF16_BYTES
# Eager cast: to fp32, multiply by the scale, clamp, to float8 (module docstring).
EAGER_CAST_BYTES_PER_ELEM = ((BF16_BYTES + FP32_BYTES) + 2 * FP32_BYTES + 2 * FP32_BYTES
                             + (FP32_BYTES + FP8_ELEM_BYTES))
EAGER_FLOAT8_CAST_BYTES_PER_ELEM = EAGER_AMAX_BYTES_PER_ELEM + EAGER_CAST_BYTES_PER_ELEM  # 33
QKV_LINEARS = 3  # torchtitan's llama3 attention: wq, wk, wv, each reading the attention norm's output
WEIGHT_CASTS_PER_PASS = 1  # each Float8Linear casts its weight once in forward and once in backward


def eager_float8_cast_elements(model: ModelSpec, *, tokens, tp, ep, etp, ffn: float, precision,
                               gathers: TpGathers, sequence_parallel: bool = True):
    """(forward, backward) elements one rank casts per layer and micro-batch (module docstring), 0
    where the runtime's linears are not torchao's eager ones or the precision is not per-tensor FP8.
    `tokens`: micro-batch x sequence / cp; `ffn`: the layer's active FFN width."""
    precision = np.asarray(precision)
    on = (precision == FP8) & gathers.eager_float8_casts
    shards = np.asarray(tokens, dtype=np.float64) / np.asarray(tp, dtype=np.float64)
    # The float8 TP styles cast each GEMM input and output gradient once, before the collective.
    styles = fp8_gathers(tp=tp, precision=precision, gathers=gathers, sequence_parallel=sequence_parallel)
    inputs = gemm_inputs_per_token(model, ffn) * shards
    grads = gemm_output_grads_per_token(model, ffn) * shards
    # Without them each linear casts its own input: two more casts of the attention norm's output,
    # num_mlp_matrices - 2 more of the FFN norm's (one for SwiGLU's w1/w3 pair).
    repeats = ((QKV_LINEARS - 1) + (model.num_mlp_matrices - 2) * mlp_input_copies(model)) * model.hidden_size
    own_inputs = inputs + repeats * shards
    weights = WEIGHT_CASTS_PER_PASS * (layer_params_per_rank(model, tp, ep, etp) - model.norm_params_per_layer)
    fwd = np.where(styles, inputs, own_inputs) + weights
    # Backward: the output gradients twice and the saved inputs again, unless the styles cast them.
    bwd = np.where(styles, grads, 2 * grads + own_inputs) + weights
    return np.where(on, fwd, 0.0), np.where(on, bwd, 0.0)
