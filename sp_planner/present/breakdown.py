"""--explain's tables: the first plan's memory, step time and bytes sent, and the pruned candidates.

Each is a `FitTable` that `present.fit.fitted_tables` lays out for the console: boxed where its
words fit, compact or in column groups on a narrow terminal, never a figure or a word cut.
"""

from __future__ import annotations

from collections.abc import Mapping

from sp_planner.estimate import PlanEstimate
from sp_planner.present.fit import FitColumn, FitTable
from sp_planner.present.labels import MEMORY_LABELS, TIME_LABELS
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.units import format_bytes, format_seconds

# What each prune rule means (keys from sp_planner.plan.violations and the search).
PRUNE_REASONS: dict[str, str] = {
    "heads": "num_heads not divisible by tp*ulysses",
    "kv_heads": "num_kv_heads and tp*ulysses do not divide one another",
    "seq_len": "seq_len not divisible by the sequence split (2*ring for zigzag x ulysses x tp)",
    "layers": "num_layers not divisible by pp",
    "batch": "global_batch not divisible by dp*micro_batch",
    "experts": "num_experts not divisible by ep (or ep/etp on a dense model)",
    "expert_grid": "ep*etp does not divide the GPUs of a pipeline stage",
    "ffn": "MLP width not divisible by tp (an expert's by etp)",
    "window_ring": "ring over sliding-window or chunked local layers (not modelled)",
    "dsa_cp": "sparse attention (DSA) with ulysses or ring p2p (all-gather CP only)",
    "vpp": "vpp > 1 without pp > 1 and micro-batches a multiple of pp",
    "offload": "CPU-offloaded layers not below num_layers",
    "mla_up_proj": "recompute mla_up_proj on a model without MLA",
    "moe_act": "recompute moe_act on a model without MoE layers",
    "mlp": "recompute mlp on a model without dense layers",
    "deepep_group": "etp x ep is a group size DeepEP has no config for",
    "expert_replicas": "HSDP replicas do not divide the expert-DP degree",
    "oom": "peak memory above the GPU's HBM",
}



def memory_table(est: PlanEstimate, hardware: HardwareProfile) -> FitTable:
    parts = est.memory.model_dump().items()
    rows = [(MEMORY_LABELS.get(name, name), format_bytes(num_bytes), f"{num_bytes / hardware.hbm_bytes:.1%}")
            for name, num_bytes in parts]
    rows.append(("peak", format_bytes(est.memory_peak_bytes), f"{est.memory_peak_bytes / hardware.hbm_bytes:.1%}"))
    return FitTable(title="Memory per GPU of the first plan",
                    columns=(FitColumn("part", prose=True), FitColumn("size", "right"), FitColumn("of HBM", "right")),
                    rows=tuple(rows), row_styles=(*(None for _ in parts), "bold"))


def time_table(est: PlanEstimate) -> FitTable:
    parts = est.time.model_dump().items()
    rows = [(TIME_LABELS.get(name, name), format_seconds(seconds) if seconds else "0",
             f"{seconds / est.step_time_s:.1%}") for name, seconds in parts]
    rows.append(("step", format_seconds(est.step_time_s), "100.0%"))
    return FitTable(title="Step time of the first plan",
                    columns=(FitColumn("part", prose=True), FitColumn("time", "right"), FitColumn("of step", "right")),
                    rows=tuple(rows), row_styles=(*(None for _ in parts), "bold"))


def comm_table(est: PlanEstimate) -> FitTable:
    links = est.comm_links.model_dump()
    rows = tuple((name, format_bytes(num_bytes), links[name])
                 for name, num_bytes in est.comm_bytes.model_dump().items())
    return FitTable(title="Bytes sent per GPU per step by the first plan",
                    columns=(FitColumn("collective"), FitColumn("bytes", "right"), FitColumn("link")), rows=rows)


def prune_table(prune_counts: Mapping[str, int], candidates_evaluated: int) -> FitTable:
    rows = tuple((rule, f"{count:,}", PRUNE_REASONS.get(rule, rule))
                 for rule, count in sorted(prune_counts.items(), key=lambda item: -item[1]))
    return FitTable(title=f"Pruned candidates (of {candidates_evaluated:,} evaluated)",
                    columns=(FitColumn("rule"), FitColumn("pruned", "right"), FitColumn("reason", prose=True)),
                    rows=rows)
