"""cost.pipeline_fill: ZeRO-1's chunk gathers in an interleaved pipeline's fill, by hand (the
first two cases are also the simulator's blocks, sim.pipeline, for the same work)."""

import numpy as np
import pytest

from sp_planner.cost.pipeline_fill import FillStage, fill_s


def _stage(first_s=0.0, chunk_s=0.0, head_s=0.0, fwd_s=3.0, stream_s=None):
    a = np.array
    return FillStage(a([first_s]), a([first_s if stream_s is None else stream_s]), a([chunk_s]), a([head_s]),
                     a([fwd_s]))


@pytest.mark.parametrize("chunk0_s,last_s,first_s", [(2.0, 3.0, 0.0), (5.0, 5.0, 2.0)])
def test_the_last_stage_waits_for_its_last_chunks_gather_with_the_output_layer(chunk0_s, last_s, first_s):
    """pp 2, vpp 3, 3 s chunk forwards; the last stage gathers chunk 0 (g0), chunks 1 and 2 (2 s
    each) and its output layer (10 s, with chunk 2). Without gathers chunk c's first forward
    starts at 3 + 6c there (6c on the first stage). g0 = 2: chunks 0 and 1 in by 4 s; chunk 2's
    goes at the stage's forward of chunk 0, micro-batch 1 (6 s), ends at 18 s, and its first
    forward, due at 15 s, starts then: 3 s late, the first stage not. g0 = 5: the stage starts
    at 5 s, dispatches at 8 s, [8, 20] against 17: 5 s late, and the first stage's chunk 2,
    after the last stage's chunk-1 forward (11 + 3), 2 s late."""
    delays, _ = fill_s(_stage(), _stage(), _stage(chunk0_s, 2.0, 10.0), middles=np.array([0.0]),
                       pp=np.array([2]), vpp=np.array([3]))
    assert delays[0] == pytest.approx([first_s])
    assert delays[2] == pytest.approx([last_s])


def test_the_first_stages_gathers_pace_every_chunk():
    """pp 2, vpp 3, 1 s chunk forwards, gathers on the first stage only: chunk 0 exposed 4 s in
    its first forward (out at 5 s), chunk 1 (3 s) behind it on the stream, in at 7 s, chunk 2
    dispatched when chunk 1's first forward starts (7 s), in at 10 s. Both stages start their
    last chunk 6 s late (first 4 -> 10 s, last 5 -> 11 s)."""
    delays, _ = fill_s(_stage(4.0, 3.0, fwd_s=1.0), _stage(fwd_s=1.0), _stage(fwd_s=1.0),
                       middles=np.array([0.0]), pp=np.array([2]), vpp=np.array([3]))
    assert (delays[0], delays[2]) == (pytest.approx([6.0]), pytest.approx([6.0]))


def test_a_middle_stage_dispatches_one_forward_later_than_the_last():
    """pp 3 (one middle stage), vpp 3, 1 s chunk forwards, only the middle stage gathering: chunk 0
    1 s, chunks 1 and 2 4 s each. Without gathers chunk c starts at 1 + 3c there. With them: chunk
    0 at 1 s, chunk 1 in at 5 s, due at 4 s: 1 s late (5 s); chunk 2 dispatched at its forward of
    chunk 0, micro-batch pp - 1 = 2 (1 + 2 = 3 s), queued behind chunk 1 to 9 s, due at 8 s (the
    stage's own three chunk-1 forwards after 5 s): 2 s late."""
    delays, _ = fill_s(_stage(fwd_s=1.0), _stage(1.0, 4.0, fwd_s=1.0), _stage(fwd_s=1.0),
                       middles=np.array([1.0]), pp=np.array([3]), vpp=np.array([3]))
    assert delays[1] == pytest.approx([2.0])


@pytest.mark.parametrize("chunk0_s,vpp,before_s", [(2.0, 3, 3.0), (5.0, 3, 5.0), (2.0, 2, 3.0), (0.5, 3, 2.5)])
def test_a_later_stages_gathers_before_its_first_forward_run_beside_idle_time(chunk0_s, vpp, before_s):
    """pp 2, 3 s chunk forwards, the last stage gathering chunk 0 (g0), the later chunks 2 s each
    and its output layer 10 s with the last chunk. Chunks 0 and 1 leave at the step's start; its
    first forward starts at max(3, g0) (micro-batch 0 through the first stage, and chunk 0's
    gather): g0 2, [0, 4] on the stream, 3 s of it before that forward; g0 5, 5 s; vpp 2, chunk 1
    with the output layer, [0, 14], 3 s; g0 0.5, [0, 2.5] all before it. The rest runs beside
    the stage's forwards (sim.pipeline charges only that)."""
    _, before = fill_s(_stage(), _stage(), _stage(chunk0_s, 2.0, 10.0), middles=np.array([0.0]),
                       pp=np.array([2]), vpp=np.array([vpp]))
    assert before[2] == pytest.approx([before_s])
