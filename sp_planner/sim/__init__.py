"""The simulator: the cluster as a graph, collectives as flows sharing links max-min, and an event
timeline of one training step (compute and communication streams, 1F1B, critical path)."""

from sp_planner.sim.cluster import Cluster, build_cluster
from sp_planner.sim.result import SimResult
from sp_planner.sim.simulate import AnalyticStep, simulate

__all__ = ["AnalyticStep", "Cluster", "SimResult", "build_cluster", "simulate"]
