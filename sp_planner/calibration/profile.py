"""Turn calibration data into a HardwareProfile that sp-plan uses like any built-in one.

The cost model reads busbw = line rate x efficiency per collective and link tier, per-hop latency,
and kernel efficiency = achieved FLOP/s / peak (sp_planner.cost.links and .kernels). A calibrated
profile keeps the base profile's line rates and peak (spec-sheet figures) and sets efficiencies so
those products equal the measured rates. A figure that was not measured comes from the base
profile, with a warning naming it; with no base profile it is an error (except inter-node links
on one node, see `_links`). Measured on GPUs (NCCL), the profile names the base's GPU
(base_profile: cost.families.profile_key), so that the cost model's tables for that GPU (kernel
benchmarks, best published MFU, GEMM and host tables) apply to it; a CPU measurement names none.
The profile as a YAML file: calibration.profile_file.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sp_planner.cost.collective_sizes import latency_steps
from sp_planner.catalog import builtin_gpu
from sp_planner.cost.runtime_memory import FRAGMENTATION_RESERVE_FRACTION
from sp_planner.errors import UserInputError
from sp_planner.specs.calibration import COLLECTIVES, CalibrationData, CollectiveFit
from sp_planner.specs.hardware import (
    CollectiveEfficiency,
    CurvePoint,
    EfficiencySpec,
    FabricSpec,
    GroupEfficiency,
    MEMORY_BOUND_DEFAULT,
    HardwareProfile,
    InterNodeLink,
    IntraNodeLink,
    LinkSpec,
)

# Each tier's link type (it names the kinds the tier allows).
LINK_TYPES: dict[str, type[LinkSpec]] = {"intra": IntraNodeLink, "inter": InterNodeLink}
# Placeholder link kinds for a profile with no base (the schema has no "loopback" or "unknown").
PLACEHOLDER_KIND = {"intra": "pcie", "inter": "ethernet"}


@dataclass(frozen=True)
class CalibratedProfile:
    profile: HardwareProfile
    warnings: tuple[str, ...]  # one line each: what was not measured and where its figure came from


def _sig(value: float) -> float:
    """Four significant digits: the profile stays readable; the calibration section keeps all digits."""
    return float(f"{value:.4g}")


class _Builder:
    def __init__(self, data: CalibrationData, base: HardwareProfile | None, date: str):
        self.data, self.base, self.date = data, base, date
        self.warnings: list[str] = []
        self.sources: dict[str, str] = {}

    def measured(self, field: str, how: str) -> None:
        self.sources[field] = f"sp-calibrate {self.date}: {how}"

    def fallback(self, field: str, why: str, *, warn: bool = True):
        """The base profile's value of `field` (dotted path), with a warning (unless a caller warns
        for several fields at once); an error without a base."""
        if self.base is None:
            raise UserInputError(f"{field}: {why} and there is no base profile to take it from; "
                                 "pass --base NAME (a built-in profile of a similar machine)")
        value = self.base
        for part in field.split("."):
            value = getattr(value, part)
        if warn:
            self.warnings.append(f"{field}: {why}; using {self.base.name}'s spec-sheet figure")
        self.sources[field] = f"from {self.base.name}: {self.base.sources.get(field, 'built-in profile')}"
        return value

    def peak(self) -> float:
        rates = [p.flops_per_s for c in self.data.attention if not c.causal for p in c.points]
        rates += [_gemm_rate(self.data)] if self.data.gemm else []
        best = max(rates, default=None)
        if self.base is not None:
            self.sources["peak_bf16_flops"] = f"from {self.base.name}: {self.base.sources.get('peak_bf16_flops', '')}"
            if best is None or best <= self.base.peak_bf16_flops:
                return self.base.peak_bf16_flops
            self.warnings.append(f"peak_bf16_flops: a measured rate ({best / 1e12:.1f} TFLOP/s) beats "
                                 f"{self.base.name}'s peak; the peak is raised to it")
        elif best is None:
            raise UserInputError("peak_bf16_flops: no compute was measured and there is no base profile; "
                                 "pass --base NAME")
        self.measured("peak_bf16_flops", "no spec-sheet peak: the fastest measured rate (efficiencies relative to it)")
        return best

    def efficiency(self, peak: float, intra: CollectiveEfficiency, inter: CollectiveEfficiency) -> EfficiencySpec:
        if self.data.gemm:
            gemm = _sig(min(_gemm_rate(self.data) / peak, 1.0))
            shapes = ", ".join(f"{g.name} {g.m}x{g.k}x{g.n}" for g in self.data.gemm)
            self.measured("efficiency.gemm", f"FLOPs / time summed over {shapes}, / peak")
        else:
            gemm = self.fallback("efficiency.gemm", "no GEMM was measured")
        curves = {}
        for direction in ("fwd", "bwd"):
            field = f"efficiency.attention_{direction}"
            curve = next((c for c in self.data.attention if c.direction == direction and not c.causal), None)
            if curve is None:
                curves[direction] = self.fallback(field, f"no full-mask attention {direction} curve was measured")
                continue
            curves[direction] = tuple(CurvePoint(tokens=p.tokens, efficiency=_sig(min(p.flops_per_s / peak, 1.0)))
                                      for p in curve.points)
            self.measured(field, f"flash attention {direction}, full mask, {curve.heads} heads x head_dim "
                                 f"{curve.head_dim}, FlashAttention-2 FLOP convention, / peak")
        ratios = {direction: self.causal_ratio(direction) for direction in ("fwd", "bwd")}
        return EfficiencySpec(gemm=gemm, attention_fwd=curves["fwd"], attention_bwd=curves["bwd"],
                              attention_causal_fwd=ratios["fwd"], attention_causal_bwd=ratios["bwd"],
                              intra_node=intra, inter_node=inter, memory_bound=self.memory_bound(),
                              sustained_fraction=self.sustained_fraction())

    def sustained_fraction(self) -> float:
        """The base profile's share of short-run compute rates its chip sustains in training
        (cost.kernels.sustained_fraction): sp-calibrate's GEMM and attention timings are short runs
        as the base's figures are; 1 without a base, or where the base states none."""
        field = "efficiency.sustained_fraction"
        if self.base is not None and self.base.efficiency.sustained_fraction != 1.0:
            self.sources[field] = f"from {self.base.name}: {self.base.sources.get(field, 'built-in profile')}"
            return self.base.efficiency.sustained_fraction
        return 1.0

    def memory_bound(self) -> float:
        """The base profile's share of HBM bandwidth for memory-bound kernels (not measured here: the
        device copy sp-calibrate times is not a normalization kernel); MEMORY_BOUND_DEFAULT without one."""
        field = "efficiency.memory_bound"
        if self.base is not None:
            self.sources[field] = f"from {self.base.name}: {self.base.sources.get(field, 'built-in profile')}"
            return self.base.efficiency.memory_bound
        self.sources[field] = (f"{MEMORY_BOUND_DEFAULT} (sp_planner.specs.hardware.MEMORY_BOUND_DEFAULT, an "
                               "assumption): no base profile, and sp-calibrate does not time normalization kernels")
        return MEMORY_BOUND_DEFAULT

    def causal_ratio(self, direction: str) -> tuple[CurvePoint, ...] | None:
        """Causal / full-mask rate at the block lengths both were measured at, on the same heads and
        head_dim (cost.kernels times causal blocks with it); None when not both were measured (then
        cost.attention_kernels.causal_ratio's default applies). Above 1 is noise: held at 1."""
        curves = [c for c in self.data.attention if c.direction == direction]
        for full in (c for c in curves if not c.causal):
            shape = (full.heads, full.head_dim)
            causal = next((c for c in curves if c.causal and (c.heads, c.head_dim) == shape), None)
            if causal is None:
                continue
            full_rate = {p.tokens: p.flops_per_s for p in full.points}
            points = tuple(CurvePoint(tokens=p.tokens,
                                      efficiency=_sig(min(p.flops_per_s / full_rate[p.tokens], 1.0)))
                           for p in causal.points if p.tokens in full_rate)
            if points:
                self.measured(f"efficiency.attention_causal_{direction}",
                              f"flash attention {direction}, causal / full-mask rate, {full.heads} heads x "
                              f"head_dim {full.head_dim}")
                return points
        return None

    def link(self, tier: str, intra: tuple[LinkSpec, CollectiveEfficiency] | None = None
             ) -> tuple[LinkSpec, CollectiveEfficiency]:
        node = f"{tier}_node"
        fits = _tier_fits(self.data, tier)
        if not fits:
            if self.base is not None:
                why = f"no {tier}-node collective was measured"
                self.warnings.append(f"{node} and efficiency.{node}: {why}; using {self.base.name}'s figures")
                return self.fallback(node, why, warn=False), self.fallback(f"efficiency.{node}", why, warn=False)
            if tier == "inter" and intra is not None:
                # One node: plans on it never cross nodes, so the copy only matters for larger plans.
                self.warnings.append("inter_node: one node was measured and there is no base profile; "
                                     "copying the intra-node figures (plans across nodes will be optimistic)")
                self.measured(node, "copied from intra_node (one node measured)")
                self.measured(f"efficiency.{node}", "copied from efficiency.intra_node (one node measured)")
                copied = InterNodeLink(**{**intra[0].model_dump(), "kind": PLACEHOLDER_KIND["inter"]})
                return copied, intra[1]
            raise UserInputError(f"{node}: no collective was measured (launch 2+ ranks) and there is no base "
                                 "profile; pass --base NAME")
        best = max(f.busbw_bytes_per_s for f in fits.values())
        if self.base is not None:
            base_link = getattr(self.base, node)
            rate, kind = base_link.bandwidth_bytes_per_s, base_link.kind
            self.sources[node] = f"line rate and kind from {self.base.name}: {self.base.sources.get(node, '')}"
            if best > rate:
                self.warnings.append(f"{node}.bandwidth_bytes_per_s: measured busbw {best / 1e9:.1f} GB/s beats "
                                     f"{self.base.name}'s line rate {rate / 1e9:.1f} GB/s; raised to it")
                rate = best
        else:
            rate, kind = best, PLACEHOLDER_KIND[tier]
        latencies = [f.alpha_s / latency_steps(f.collective, f.group_size)
                     for f in self.data.collectives if f.link == tier]
        link = LINK_TYPES[tier](kind=kind, bandwidth_bytes_per_s=_sig(rate),
                                latency_s=_sig(statistics.median(latencies)))
        self.measured(f"{node}.latency_s", "median over the fitted collectives of alpha / latency steps")
        if self.base is None:
            self.measured(node, f"no line rate known: the best measured busbw; kind {kind!r} is a placeholder")
        effs = {}
        for collective in COLLECTIVES:
            fit = fits.get(collective)
            if fit is None:
                effs[collective] = self.fallback(f"efficiency.{node}.{collective}", f"{collective} was not measured")
            else:
                effs[collective] = _sig(min(fit.busbw_bytes_per_s / link.bandwidth_bytes_per_s, 1.0))
        self.measured(f"efficiency.{node}", "fitted busbw (alpha-beta, nccl-tests bus factors) / line rate, "
                      f"groups of {sorted({f.group_size for f in fits.values()})} ranks")
        return link, CollectiveEfficiency(**effs, all_to_all_by_group_size=self.a2a_by_size(tier, link))

    def a2a_by_size(self, tier: str, link: LinkSpec) -> tuple[GroupEfficiency, ...]:
        """Inside a node, all-to-all against group size when several sizes were timed (its busbw
        changes with the group on PCIe trees and per-peer links). Across nodes the groups mix NIC
        and node-local traffic, so only the scalar figure is kept."""
        fits = sorted((f for f in self.data.collectives if f.link == "intra" and f.collective == "all_to_all"),
                      key=lambda f: f.group_size)
        if tier != "intra" or len(fits) < 2:
            return ()
        return tuple(GroupEfficiency(group_size=f.group_size,
                                     efficiency=_sig(min(f.busbw_bytes_per_s / link.bandwidth_bytes_per_s, 1.0)))
                     for f in fits)


def _gemm_rate(data: CalibrationData) -> float:
    """Layer GEMMs together: total FLOPs / total time (the rate a layer's GEMMs achieve)."""
    return sum(2.0 * g.m * g.n * g.k for g in data.gemm) / sum(g.time_s for g in data.gemm)


def _tier_fits(data: CalibrationData, tier: str) -> dict[str, CollectiveFit]:
    """Per collective, the fit the profile's one figure comes from: inside a node the largest group
    (the node, what TP and Ulysses groups use); across nodes the one-rank-per-node group, whose
    busbw is the per-GPU NIC rate that sp_planner.cost.links scales, else the largest group."""
    env = data.environment
    num_nodes = env.world_size // env.ranks_per_node
    chosen: dict[str, CollectiveFit] = {}
    for fit in data.collectives:
        if fit.link != tier:
            continue
        old = chosen.get(fit.collective)
        preferred = lambda f: (tier == "inter" and f.group_size == num_nodes, f.group_size)  # noqa: E731
        if old is None or preferred(fit) > preferred(old):
            chosen[fit.collective] = fit
    return chosen


def measured_gpu(data: CalibrationData, base: HardwareProfile | None) -> str | None:
    """The built-in profile whose GPU was measured (the profile's base_profile): the base's GPU when
    the measurements ran on GPUs (NCCL); None on CPU (gloo), which is not the base's GPU, or for a base
    of no built-in GPU."""
    if base is None or data.environment.backend != "nccl":
        return None
    return builtin_gpu(base)


def build_profile(data: CalibrationData, *, base: HardwareProfile | None, name: str, date: str) -> CalibratedProfile:
    """The profile of the measured machine; `base` supplies spec-sheet figures (peak, line rates)."""
    b = _Builder(data, base, date)
    env = data.environment
    peak = b.peak()
    intra = b.link("intra")
    inter = b.link("inter", intra=intra)
    efficiency = b.efficiency(peak, intra[1], inter[1])
    if base is None:
        b.warnings.insert(0, f"no built-in profile matches {env.device_name!r} and no --base was given: peak FLOP/s, "
                             "line rates and memory bandwidth are the best measured rates")
    if base is not None:
        hbm_bw = base.hbm_bandwidth_bytes_per_s
        b.sources["hbm_bandwidth_bytes_per_s"] = f"from {base.name} (datasheet; the cost model derates it)"
    elif data.copy_bytes_per_s is not None:
        hbm_bw = _sig(data.copy_bytes_per_s)
        b.measured("hbm_bandwidth_bytes_per_s", "device copy, read + write bytes / time")
    else:
        raise UserInputError("hbm_bandwidth_bytes_per_s: no memory copy was measured and there is no base profile")
    if base is not None:
        reserve = base.memory_reserve_bytes
        b.sources["memory_reserve_bytes"] = f"from {base.name}: {base.sources.get('memory_reserve_bytes', '')}"
    else:
        # The CUDA context, workspaces and NCCL buffers (what sp-calibrate measures outside torch's
        # allocator) are counted per plan by cost.runtime_memory; the profile keeps only the
        # fragmentation share, or the measured runtime would be counted twice.
        reserve = _sig(FRAGMENTATION_RESERVE_FRACTION * env.device_memory_bytes)
        b.sources["memory_reserve_bytes"] = (
            f"{FRAGMENTATION_RESERVE_FRACTION:.0%} of the measured device memory for allocator fragmentation "
            "(the built-in profiles' assumption); context, workspaces and NCCL buffers are counted per plan")
    b.measured("hbm_bytes", "total device memory reported by the runtime")
    b.measured("gpus_per_node", "devices on the measured node")
    based = f"; figures not measured come from {base.name}" if base is not None else ""
    profile = HardwareProfile(
        name=name, base_profile=measured_gpu(data, base),
        description=(f"Measured by sp-calibrate on {date}: {env.world_size} x {env.device_name} ({env.backend}, "
                     f"torch {env.torch_version}){based}"),
        peak_bf16_flops=peak, hbm_bytes=env.device_memory_bytes, hbm_bandwidth_bytes_per_s=hbm_bw,
        gpus_per_node=env.devices_per_node, intra_node=intra[0], inter_node=inter[0], efficiency=efficiency,
        memory_reserve_bytes=reserve, fabric=base.fabric if base is not None else FabricSpec(), measured_on=date,
        sources=dict(sorted(b.sources.items())), calibration=data,
    )
    return CalibratedProfile(profile=profile, warnings=tuple(b.warnings))
