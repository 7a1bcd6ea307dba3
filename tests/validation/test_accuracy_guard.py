"""CI accuracy guard: the shipped corpus against validation/thresholds.yaml.

The issue's targets (corpus MAPE <= 10%, every group's Spearman >= 0.5) live in the thresholds
file with, where the cost model misses them today, a ratchet at today's accuracy. Nothing in
the cost model is fitted to the corpus; this only catches regressions.
"""

from __future__ import annotations

from sp_planner.validation.thresholds import check, default_thresholds_path, load_thresholds, target_gaps

LIMITS = load_thresholds(default_thresholds_path())


def test_targets_are_the_issues():
    t = LIMITS.targets
    assert (t.mape_percent, t.group_mape_percent, t.group_spearman_min) == (10, 10, 0.5)


def test_ratchet_is_never_stricter_than_the_targets():
    assert LIMITS.enforced_mape_percent is None or LIMITS.enforced_mape_percent >= LIMITS.targets.mape_percent
    for name, ratchet in LIMITS.enforced_groups.items():
        assert ratchet.mape_percent is None or ratchet.mape_percent >= LIMITS.targets.group_mape_percent, name
        assert ratchet.spearman_min is None or ratchet.spearman_min <= LIMITS.targets.group_spearman_min, name


def test_shipped_corpus_within_the_enforced_limits(scored):
    assert check(scored, LIMITS) == []


def test_every_ratchet_entry_is_still_needed(scored):
    # A group that meets the targets must lose its ratchet entry, so the guard tightens.
    gaps = " ".join(target_gaps(scored, LIMITS))
    for name in LIMITS.enforced_groups:
        assert f"group {name}:" in gaps, f"{name} meets the targets: delete its entry in thresholds.yaml"
    if LIMITS.enforced_mape_percent is not None:
        assert "corpus MAPE" in gaps, "the corpus meets the MAPE target: delete enforced_mape_percent"
