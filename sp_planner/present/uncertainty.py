"""The band each prediction carries, from the validation corpus (sp_planner/data/prediction_band.json,
written from `sp-validate`'s scored rows by validation.band and kept in step by a test)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

from sp_planner.cost.families import gpu_generation
from sp_planner.estimate import PlanEstimate
from sp_planner.units import format_significant, seconds_unit
from sp_planner.validation.band import ClassBand, PredictionBand, band_for

GENERATION_NAMES = {"ampere": "Ampere", "hopper": "Hopper", "blackwell": "Blackwell", "ascend": "Ascend"}


def generation_name(generation: str) -> str:
    """'Blackwell' for cost.families.gpu_generation's 'blackwell' (the key itself if unnamed)."""
    return GENERATION_NAMES.get(generation, generation)


def generation_devices(generation: str) -> str:
    """'Blackwell GPUs', 'Ascend NPUs': the generation's chips by their vendor's word."""
    return f"{generation_name(generation)} {'NPUs' if generation == 'ascend' else 'GPUs'}"


@cache
def shipped_band() -> PredictionBand:
    text = (resources.files("sp_planner") / "data" / "prediction_band.json").read_text(encoding="utf-8")
    return PredictionBand.model_validate_json(text)


def fallback_note(band: ClassBand, hardware_name: str, gpu_key: str | None = None) -> str:
    """Why a plan on `hardware_name` takes a band over every GPU ("" when it has its generation's):
    its generation has too few validation runs for a band of its own, or it has no generation.
    `gpu_key`: the profile's GPU where its name is not it (cost.families.profile_key)."""
    if band.generation is not None:
        return ""
    generation = gpu_generation(gpu_key or hardware_name)
    if generation is None:
        return f"none on {hardware_name}"
    return f"too few of them on {generation_devices(generation)} for a band of their own"


def plan_band(hardware_name: str, *, moe: bool) -> ClassBand:
    """The shipped band for plans on `hardware_name` of a dense or MoE model (validation.band_for)."""
    return band_for(shipped_band(), hardware_name=hardware_name, moe=moe)


def ties_with_first(ranked: Sequence[PlanEstimate], band: ClassBand) -> int:
    """How many plans after the first fit and are slower by less than the ranking band."""
    if not ranked or not ranked[0].fits:
        return 0
    limit = ranked[0].step_time_s * (1.0 + band.ranking_band_percent / 100.0)
    count = 0
    for est in ranked[1:]:
        if not est.fits or est.step_time_s >= limit:
            break
        count += 1
    return count


def runs_described(band: ClassBand) -> str:
    """'21 validation runs of dense models on Blackwell GPUs', '19 ... of MoE models', '140 ...'."""
    text = f"{band.rows} validation runs"
    if band.moe is not None:
        text += f" of {'MoE' if band.moe else 'dense'} models"
    if band.generation is not None:
        text += f" on {generation_devices(band.generation)}"
    return text


def band_clause(ranked: Sequence[PlanEstimate], band: ClassBand, *, hardware_name: str = "",
                gpu_key: str | None = None) -> str:
    """A sentence on the first plan's likely step range and the plans it cannot be told apart from
    ("" if none). The range scales the step by the measured-over-predicted step ratios (10th-90th
    percentile) of the validation runs of the plan's class (validation.band), in the step's unit;
    the ratios are said as percentages off the prediction (0.98-1.12x: -2% to +12%); with `hardware_name`,
    a band over every GPU says why the plan's GPU has none of its own (fallback_note)."""
    if not ranked or not ranked[0].fits:
        return ""
    first, span = ranked[0], band.step_range
    note = fallback_note(band, hardware_name, gpu_key) if hardware_name else ""
    runs = f"{runs_described(band)}, {note}," if note else runs_described(band)
    unit, scale, _ = seconds_unit(first.step_time_s)  # the step's own unit, as why_this_plan gives it
    low, high = (format_significant(first.step_time_s * ratio / scale) for ratio in (span.low_ratio, span.high_ratio))
    # The ratios as percentages off the prediction, as the median error beside them.
    off = "% to ".join(f"{round((ratio - 1) * 100):+d}" for ratio in (span.low_ratio, span.high_ratio))
    text = (f"Its step may be {low}-{high} {unit} (in 80% of {runs} the measured step was {off}% off the "
            f"predicted one; their median error is {band.absolute_band_percent:g}%).")
    ties = ties_with_first(ranked, band)
    if ties:
        which = "plan 2" if ties == 1 else f"plans 2-{ties + 1}"
        text += (f" {which.capitalize()} {'is' if ties == 1 else 'are'} within {band.ranking_band_percent:g}% of it, "
                 "inside the model's ranking band (the median error of the predicted ratio between two "
                 f"runs of one validation group, over {band.pairs} pairs of those runs): treat them as ties; "
                 "`sp-calibrate` on this cluster or `sp-run` of each plan would separate them.")
    return text


def band_table_markdown(band: PredictionBand) -> str:
    """The shipped classes and the whole corpus as a Markdown table (docs/cost-model.md holds it
    between markers; scripts/regen_validation.py rewrites it)."""
    lines = ["| runs | rows | pairs | median error | step range (10th-90th) | ranking band |",
             "|---|---|---|---|---|---|"]
    for c in (*band.classes, band.corpus):
        kind = "every run" if c.moe is None else ("MoE models" if c.moe else "dense models")
        where = f", {generation_name(c.generation)}" if c.generation else ""
        lines.append(f"| {kind}{where} | {c.rows} | {c.pairs} | {c.absolute_band_percent:.1f}% | "
                     f"{c.step_range.low_ratio:.2f}-{c.step_range.high_ratio:.2f} | {c.ranking_band_percent:.1f}% |")
    return "\n".join(lines)
