"""Bytes per element of the dtypes the cost model counts, named once for every cost module.

bf16 (bfloat16: 1 sign, 8 exponent and 7 mantissa bits) is what Megatron-LM, Transformer Engine and
torch mixed precision keep activations, their gradients and the compute copy of the weights in;
fp32 (IEEE 754 binary32) is the master weights', the optimizer's and fp32-reduced gradients' width,
and the width of softmax statistics. torch.bfloat16.itemsize == 2, torch.float32.itemsize == 4.
An element's width in a role that depends on the run (a framework's gradient width, cost.states;
FP8's, cost.precision) is named with that role, not here.
"""

from __future__ import annotations

BF16_BYTES = 2
FP32_BYTES = 4
