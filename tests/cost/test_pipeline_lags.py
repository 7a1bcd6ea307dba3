"""cost.pipeline_lags: the interleaved first stage's drain phases by hand, against sim.pipeline's
blocks (the stages' finish lags are tested with cost.pipeline_tails, which reads them)."""

import numpy as np
import pytest

from sp_planner.cost.pipeline_lags import finish_lags_s, first_stage_phases_s
from sp_planner.cost.pipeline_path import StageBlocks


def _stage(num, cycle, first_bwd, last_bwd):
    a = np.array
    return StageBlocks(num, a([cycle]), a([0.0]), a([0.0]), a([first_bwd]), a([last_bwd]), 0.0, a([0.0]))


def test_the_first_stage_waits_for_the_middle_stages_full_chunk_after_their_empty_one():
    # Llama-3-8B on 64 L40S, tp 4, 1K tokens, pp 4 x vpp 4 at 12 / 8, 4 micro-batches (one group):
    # chunk backwards of 11.29 ms on the first stage (14.04 ms its chunk 0), 7.53 ms on a middle
    # stage's full chunks (2 layers; its chunk 3 empty) and on the last stage's (12.20 ms its last).
    # From its last chunk-3 backward, the last stage's chunk-2 ones start J b_L - d after it
    # (4 x 7.53 - 11.29 = 18.83 ms, its chunk 3 came down empty middle chunks), the middle
    # stages pass them on (33.88 ms), and the first stage's four pile up behind them (11.29 +
    # 3 x 3.76): D_top 56.46 ms, as sim.pipeline runs it (0.18922 -> 0.24568 s), where its own four
    # backwards take 45.17 ms. D_full alike with full middle chunks: no wait (45.17 ms).
    first, middle, last = _stage(1.0, 0.0765, 0.014044, 0.011293), _stage(2.0, 0.0367, 0.0075288, 0.0), \
        _stage(1.0, 0.0559, 0.0075288, 0.012203)
    d1, full, top = first_stage_phases_s((first, middle, last), np.array([2.0]), np.array([4]))
    assert top == pytest.approx(0.05646, abs=2e-5)
    assert full == pytest.approx(4 * 0.011293, rel=1e-9)
    # Past one group the first stage, whose cycle paces, runs its backwards from its backlog.
    assert first_stage_phases_s((first, middle, last), np.array([2.0]), np.array([8]))[2] == 0.0


@pytest.mark.parametrize("m, lags", [(4, (0.17, 0.19)), (5, (0.21, 0.23)), (7, (0.29, 0.31)), (9, (0.17, 0.19))])
def test_the_first_stage_drains_the_last_micro_batch_group(m, lags):
    # pp 4, vpp 2, 5 ms chunk forwards; the first stage's chunk-0 backward (50 ms, the embedding's)
    # the slowest, every other 10 ms: the first stage runs its last group's J chunk-0 backwards
    # after its last chunk-1 one, J x 50 ms, while the last micro-batch's chunk-0 backward leaves the
    # last stage 10 ms and the first middle one 30 ms after that (tests/cost/test_pipeline_tails.py).
    # J is the last micro-batch group's (pipeline_order.last_group): 4 at m 4; one group of 5 or 7 at m 5
    # and 7 (pipeline_order.micro_batch_group), 4 at m 9 (5 + 4); as a walk of Megatron's order gives.
    blocks = tuple(StageBlocks(1.0, None, None, np.array([f * 2]), np.array([b0]), np.array([b1]), 0.0, np.array([f]))
                   for f, b0, b1 in ((0.005, 0.05, 0.01), (0.005, 0.01, 0.01), (0.005, 0.01, 0.01)))
    got = finish_lags_s(blocks, np.array([2.0]), np.array([m]), np.array([2]))
    assert (float(got[1][0]), float(got[2][0])) == pytest.approx(lags)
