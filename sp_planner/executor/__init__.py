"""Real torch.distributed attention: Ulysses, Ring and USP (Ulysses x Ring), validated and measured.

The only package of sp_planner that imports torch. Modules that the CLI needs before launching
(config, kernel_rules, result, predict, launch, rank, devices) are torch-free or import torch
lazily; the rest import torch at module level and are
only imported inside worker processes.
"""
