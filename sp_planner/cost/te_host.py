"""Host time of Transformer Engine module calls beyond the one op cost.host counts for each.

cost.host prices every launch at the CPU time of one torch.nn.Linear forward. The same benchmark
(NVIDIA/TransformerEngine issue #2053, 2025-08-11: one Linear forward, BF16, hidden 2048, 8192
tokens, average CPU time per call) also timed te.Linear: 99.66 us on GB200 against nn.Linear's
37.08 us, and 90.53 us against 33.17 us on GH200 (the same Grace cores; ratio 2.69 and 2.73). A BF16
te.Linear forward launches the one GEMM nn.Linear launches, so the difference, 99.66 - 37.08 =
62.58 us, is TE's Python module overhead per forward call on Grace (TE_MODULE_EXTRA_S_GRACE),
added to the op count's time of each TE module call. GB300 NVL72 trays carry the same Grace CPUs
(cost.families GRACE_PROFILES) and take the figure too.

x86 hosts: no extra. The issue's table has a TE row for the H100 DGX (Xeon 8480C), but the stored
copy is cut after its torch row and no other published x86 te.Linear CPU time was found; carrying
the Grace ratio over to x86 would be an assumption, not a measurement, so the x86 TE call is
priced as nn.Linear's (an understatement, stated). Backward: the benchmark times the forward
only, so no extra is counted for a module's backward; under full recompute the recomputed
forward's calls count again. The figure was measured with the TransformerEngine of August 2025;
the 25.11 containers ship v2.9 (cost.host), before TE's CPU-overhead PR #2559 (merged
2026-03-03), and TE issue #2126 (a maintainer, 2026-01-03) reports a BF16 te.Linear on main then
near a plain torch Linear, so the figure overstates newer TE.

TE module calls per layer and micro-batch, forward: Megatron-Core core_v0.15.0 (0d7e02bd) TE
spec (megatron/core/models/gpt/gpt_layer_specs.py, moe_module_specs.py,
extensions/transformer_engine_spec_provider.py):
  attention (cost.cuda_graphs "attn"), 3: TELayerNormColumnParallelLinear (QKV),
    TEDotProductAttention, TERowParallelLinear (projection); 2 more with a QK norm (its q and k
    TENorm, cost.qk_norm).
  dense MLP ("mlp"), 2: TELayerNormColumnParallelLinear (fc1), TERowParallelLinear (fc2).
  MoE layer instead of the dense MLP: the pre-MLP TENorm (1) and the shared experts'
    TEColumnParallelLinear and TERowParallelLinear (2) in the router part ("moe_router"), the
    experts' TEColumnParallelGroupedLinear and TERowParallelGroupedLinear (2), "moe" graphing all.
  Not counted: the activation (a TE op only with use_te_activation_func, default False), the
  logits' linear.
A graphed part's calls cost nothing beyond its replay (cost.host); a full-iteration graph leaves
none.
"""

from __future__ import annotations

import numpy as np

from sp_planner.cost.cuda_graphs import ATTN, FULL_ITERATION, MLP, MOE, MOE_ROUTER, NO_GRAPHS
from sp_planner.cost.families import GRACE_PROFILES, profile_key
from sp_planner.cost.moe import moe_layer_fraction
from sp_planner.cost.qk_norm import qk_norm_te_calls
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.specs.model import ModelSpec

# te.Linear minus torch.nn.Linear forward CPU time on GB200 (Grace), TE issue #2053.
TE_MODULE_EXTRA_S_GRACE = 99.66e-6 - 37.08e-6

# TE module calls per layer forward (module docstring).
ATTENTION_TE_CALLS = 3
DENSE_MLP_TE_CALLS = 2
MOE_ROUTER_TE_CALLS = 1  # the pre-MLP norm
SHARED_EXPERT_TE_CALLS = 2
GROUPED_EXPERT_TE_CALLS = 2


def te_module_extra_s(hardware: HardwareProfile) -> float:
    """Host seconds a TE module forward call takes beyond one op on the profile's host CPU:
    62.58 us on Grace, none on x86 (no published figure; module docstring)."""
    return TE_MODULE_EXTRA_S_GRACE if profile_key(hardware) in GRACE_PROFILES else 0.0


def layer_te_calls(model: ModelSpec, *, full_recompute, cuda_graphs: frozenset[str] = NO_GRAPHS):
    """(forward, backward) TE module calls of the model's average layer per micro-batch that are
    not inside a CUDA graph; backward counts only the forward re-run by full recompute."""
    recompute = np.asarray(full_recompute, dtype=bool)
    if FULL_ITERATION in cuda_graphs:
        return np.zeros(recompute.shape), np.zeros(recompute.shape)
    attention = 0 if ATTN in cuda_graphs else ATTENTION_TE_CALLS + qk_norm_te_calls(model)
    dense = attention + (0 if MLP in cuda_graphs else DENSE_MLP_TE_CALLS)
    fwd = float(dense)
    if model.moe is not None:
        shared = SHARED_EXPERT_TE_CALLS if model.moe.num_shared_experts > 0 else 0
        router = 0 if MOE in cuda_graphs or MOE_ROUTER in cuda_graphs else MOE_ROUTER_TE_CALLS + shared
        experts = 0 if MOE in cuda_graphs else GROUPED_EXPERT_TE_CALLS
        share = moe_layer_fraction(model)
        fwd = (1 - share) * dense + share * (attention + router + experts)
    fwd_calls = np.full(recompute.shape, fwd)
    return fwd_calls, np.where(recompute, fwd_calls, 0.0)
