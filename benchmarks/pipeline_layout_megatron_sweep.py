"""Random pipeline splits against megatron-core's own layout parser: which splits the layers rule
(pipeline.split_breaks) refuses that Megatron would run, and whether every split it accepts runs.

Run: .venv/bin/python benchmarks/pipeline_layout_megatron_sweep.py [seed] [splits]
Splits of 16-128 layers over pp 2-16 and vpp 1-8 with 0-2 MTP depths (a third near the even
split); a split is placeable where every stage holds a layer and the middle stages alike. Each
placeable split's --pipeline-model-parallel-layout (flags.stages.layout_string) must parse in
megatron-core (PipelineParallelLayerLayout, validate_layer_layout) to the planned stages. Prints
the refused placeable splits by what does not divide by vpp (none since Stop 55; 3,683 of 5,051
before, seed 0).
"""

from __future__ import annotations

import collections
import random
import sys
import warnings
from types import SimpleNamespace

import numpy as np

from sp_planner.flags.stages import layout_string
from sp_planner.pipeline import split_breaks

warnings.filterwarnings("ignore")
from megatron.core.transformer.pipeline_parallel_layer_layout import (  # noqa: E402
    LayerType,
    PipelineParallelLayerLayout,
)


def megatron_stages(num_layers: int, pp: int, vpp: int, first: int, last: int, mtp: int) -> list[int]:
    """Decoder layers per pipeline rank of the plan's layout string, as megatron-core parses it."""
    req = SimpleNamespace(plan=SimpleNamespace(pp=pp, vpp=vpp, first_stage_layers=first, last_stage_layers=last),
                          model=SimpleNamespace(num_layers=num_layers, mtp_layers=mtp))
    parsed = PipelineParallelLayerLayout(layout_string(req), pp)
    assert parsed.virtual_pipeline_model_parallel_size == vpp
    parsed.validate_layer_layout(num_layers, mtp or None)
    return [sum(chunk.count(LayerType.decoder) for chunk in parsed.layout[p]) for p in range(pp)]


def main(seed: int = 0, splits: int = 20000) -> None:
    rng = random.Random(seed)
    refused: collections.Counter[str] = collections.Counter()
    placeable = 0
    for _ in range(splits):
        num_layers, pp, vpp, mtp = rng.randint(16, 128), rng.randint(2, 16), rng.randint(1, 8), rng.randint(0, 2)
        if rng.random() < 0.3:
            per = num_layers // pp
            first, last = max(1, per + rng.randint(-3, 3)), max(1, per + rng.randint(-3, 3))
            last = num_layers - first if pp == 2 else last
        else:
            first = rng.randint(1, num_layers - 1)
            last = rng.randint(1, max(1, num_layers - first)) if pp > 2 else num_layers - first
        middle_layers = num_layers - first - last
        middle, rest = divmod(middle_layers, max(pp - 2, 1))
        if last < 1 or middle_layers < 0 or rest or (middle_layers > 0) != (pp > 2):
            continue
        placeable += 1
        assert megatron_stages(num_layers, pp, vpp, first, last, mtp) == [first, *[middle] * (pp - 2), last]
        if split_breaks(num_layers, np.array([pp]), np.array([vpp]), np.array([first]), np.array([last]))[0]:
            why = [name for name, n in (("first", first), ("middle", middle if pp > 2 else 0), ("last", last))
                   if n % vpp]
            refused[("pp 2 " if pp == 2 else "") + (" ".join(why) or "all divide") + " by vpp"] += 1
    print(f"{placeable} placeable splits, megatron-core parses each; {sum(refused.values())} refused")
    for why, n in refused.most_common():
        print(f"{n:6d}  {why}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
