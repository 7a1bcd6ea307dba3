"""cost.mfu_ceiling: no plan is predicted above the best MFU published for its GPU and precision."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.cost.mfu_ceiling import BEST_PUBLISHED_MFU, best_published_mfu
from sp_planner.search import search
from sp_planner.specs.workload import Workload

CASES = [(model, nodes, seq) for model in ("llama2-7b", "llama3-8b", "llama3.1-70b", "qwen2.5-32b")
         for nodes, seq in ((1, 4096), (1, 32768), (4, 131072), (16, 8192))]


@pytest.mark.parametrize("hardware", ["a100-80gb", "a800", "h100-sxm", "h200", "h800"])
def test_no_plan_above_the_best_published_mfu(hardware):
    hw = load_hardware(hardware)
    ceiling = best_published_mfu(hw)
    assert ceiling in (0.72, 0.47)  # FA2 paper Table 1 (A100); Megatron-LM README (H100)
    capped = 0
    for model, nodes, seq in CASES:
        frame = search(load_model(model), hw, Workload(seq_len=seq, global_batch=max(64, 32 * nodes)),
                       num_nodes=nodes, gpus_per_node=8, top_k=1).frame
        frame = frame[frame.fits | frame.reason.str.startswith("oom")]
        assert frame.hardware_mfu.max() <= ceiling + 1e-9
        # The stretch is exactly what brings a plan down to the ceiling.
        held = frame[frame.time_mfu_ceiling_s > 0]
        assert held.hardware_mfu.to_numpy() == pytest.approx(ceiling, rel=1e-9)
        capped += len(held)
    assert capped > 0  # the bound binds somewhere, so the test can fail


def test_ranking_keeps_the_uncapped_order():
    # On H100 many plans sit at the ceiling; the search orders them by their time before it.
    frame = search(load_model("llama3-8b"), load_hardware("h100-sxm"), Workload(seq_len=4096, global_batch=64),
                   num_nodes=1, gpus_per_node=8).frame
    fits = frame[frame.fits]
    uncapped = (fits.step_time_s - fits.time_mfu_ceiling_s).to_numpy()
    tied = fits.step_time_s.to_numpy() == fits.step_time_s.to_numpy()[0]
    assert tied.sum() > 1
    assert list(uncapped[tied]) == sorted(uncapped[tied])


def test_every_ceiling_names_its_source():
    for (family, precision), (mfu, source) in BEST_PUBLISHED_MFU.items():
        assert 0 < mfu < 1 and ("MFU" in source or "utilization" in source.lower()), (family, precision)
