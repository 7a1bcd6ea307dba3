"""Validation against published training runs: the corpus (validation/), scoring, thresholds, report."""
