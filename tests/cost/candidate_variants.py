"""Candidate sets the per-distinct-row tests of cost.memory and cost.step_bound share."""

import dataclasses

import numpy as np

from sp_planner.candidates import Candidates


def with_fixed_choices_flipped(c: Candidates) -> Candidates:
    """`c` and its copy with the choices one search holds fixed flipped (Adam's moments, FP8
    attention, the ring layout, CPU offloading at pp 1): a per-distinct-row key must read them."""
    flipped = dataclasses.replace(c, adam_moments_bf16=~c.adam_moments_bf16, fp8_attention=~c.fp8_attention,
                                  zigzag=~c.zigzag, cpu_offload_layers=np.where(c.pp == 1, 2, 0))
    return Candidates.concat([c, flipped])
