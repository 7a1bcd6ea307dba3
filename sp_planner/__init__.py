"""sp-planner: plan, simulate and run sequence parallelism for long-context training."""

__version__ = "0.1.0"
